"""Items 1-2 for Python's sysv_ipc (Debian python3-sysv-ipc), for comparison.
usage: python3 sysv_ipc_bench.py copy write|read SIZE ITER | small OP ITER
prints nanoseconds per operation"""
import sys
import time

import sysv_ipc


def main():
    kind = sys.argv[1]
    if kind == "copy":
        mode, size, it = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    else:
        mode, size, it = sys.argv[2], 4096, int(sys.argv[3])
    m = sysv_ipc.SharedMemory(None, sysv_ipc.IPC_CREX, mode=0o600, size=size)
    m.remove()
    data = b"x" * size
    s64 = b"s" * 64
    t0 = time.perf_counter()
    if kind == "copy" and mode == "write":
        for _ in range(it):
            m.write(data, 0)
    elif kind == "copy":
        for _ in range(it):
            m.read(size, 0)
    elif mode == "floor":
        for _ in range(it):
            s64[0:63]
    elif mode == "read64":
        for _ in range(it):
            m.read(64, 0)
    elif mode == "write64":
        for _ in range(it):
            m.write(s64, 0)
    t1 = time.perf_counter()
    m.detach()
    print("%.3f" % ((t1 - t0) * 1e9 / it))


main()

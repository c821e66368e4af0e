"""Items 1-2 for Python's sysv_ipc (Debian python3-sysv-ipc), for comparison.
usage: python3 sysv_ipc_bench.py copy write|read SIZE ITER | small OP ITER
       | sem uncontended|pingpong ITER
prints nanoseconds per operation (sem: per acquire+release pair, per round trip)"""
import os
import sys
import time

import sysv_ipc


def sem(mode, it):
    """bench/sem.lua's loops with sysv_ipc.Semaphore."""
    if mode == "uncontended":
        s = sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, 0o600, 1)
        t0 = time.perf_counter()
        for _ in range(it):
            s.acquire()
            s.release()
        t1 = time.perf_counter()
        s.remove()
    else:
        ping = sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, 0o600, 0)
        pong = sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, 0o600, 0)
        pid = os.fork()
        if pid == 0:
            pong.release()
            for _ in range(it):
                ping.acquire()
                pong.release()
            os._exit(0)
        pong.acquire()
        t0 = time.perf_counter()
        for _ in range(it):
            ping.release()
            pong.acquire()
        t1 = time.perf_counter()
        os.waitpid(pid, 0)
        ping.remove()
        pong.remove()
    print("%.3f" % ((t1 - t0) * 1e9 / it))


def main():
    kind = sys.argv[1]
    if kind == "sem":
        sem(sys.argv[2], int(sys.argv[3]))
        return
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

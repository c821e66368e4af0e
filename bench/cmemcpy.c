/* The physical limit for item 1 of make bench: memcpy into (write) or out of
 * (read, into a buffer allocated once) a System V segment of SIZE bytes,
 * ITER times.  Prints nanoseconds per copy.
 * usage: cmemcpy write|read SIZE ITER */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  size_t size, iter, i;
  int id, wr;
  char *seg, *buf;
  volatile char sink = 0;
  double t0, t1;
  if (argc != 4) return 2;
  wr = strcmp(argv[1], "write") == 0;
  size = strtoull(argv[2], NULL, 0);
  iter = strtoull(argv[3], NULL, 0);
  id = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);
  if (id < 0) { perror("shmget"); return 1; }
  seg = shmat(id, NULL, 0);
  shmctl(id, IPC_RMID, NULL);
  if (seg == (void *)-1) { perror("shmat"); return 1; }
  buf = malloc(size);
  if (buf == NULL) return 1;
  memset(buf, 'x', size);
  memset(seg, 'y', size); /* fault the pages in, as the Lua side does */
  t0 = now();
  for (i = 0; i < iter; i++) {
    if (wr) { buf[0] = (char)i; memcpy(seg, buf, size); }
    else { seg[0] = (char)i; memcpy(buf, seg, size); sink ^= buf[size - 1]; }
    __asm__ __volatile__("" ::: "memory");
  }
  t1 = now();
  printf("%.3f\n", (t1 - t0) * 1e9 / (double)iter);
  shmdt(seg);
  free(buf);
  return sink == 42 ? 0 : 0;
}

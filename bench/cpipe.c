/* Item 3's floor: SIZE-byte messages from a writer process to a reader
 * process over a pipe, one write() per message.  The reader checks each
 * message's sequence number and prints messages per second (timed from the
 * first message to the last).
 * usage: cpipe SIZE COUNT */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int readall(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

int main(int argc, char **argv) {
  size_t size, count, i;
  int fds[2];
  char *buf;
  pid_t pid;
  double t0 = 0, t1;
  if (argc != 3) return 2;
  size = strtoull(argv[1], NULL, 0);
  count = strtoull(argv[2], NULL, 0);
  if (size < 8 || pipe(fds) != 0) return 1;
  buf = calloc(1, size);
  pid = fork();
  if (pid == 0) {
    close(fds[0]);
    for (i = 0; i < count; i++) {
      uint64_t seq = i;
      memcpy(buf, &seq, 8);
      if (write(fds[1], buf, size) != (ssize_t)size) _exit(1);
    }
    _exit(0);
  }
  close(fds[1]);
  for (i = 0; i < count; i++) {
    uint64_t seq;
    if (readall(fds[0], buf, size) != 0) { fprintf(stderr, "short read\n"); return 1; }
    memcpy(&seq, buf, 8);
    if (seq != i) { fprintf(stderr, "bad sequence\n"); return 1; }
    if (i == 0) t0 = now();
  }
  t1 = now();
  waitpid(pid, NULL, 0);
  printf("%.1f\n", (double)(count - 1) / (t1 - t0));
  return 0;
}

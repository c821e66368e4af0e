/* Semaphores in C, the floor for bench/sem.lua: the same loops with semop(2)
 * and sem_wait(3)/sem_post(3).
 * usage: csem uncontended|pingpong sysv|posix COUNT
 * prints nanoseconds per acquire+release pair, or per round trip (two
 * processes, each releasing the other's semaphore and acquiring its own) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* One semaphore of either kind: a private System V set, or an unlinked POSIX name. */
typedef struct { int id; sem_t *s; } csem;

static csem make(int posix, int tag) {
  csem c = {-1, NULL};
  if (posix) {
    char name[64];
    snprintf(name, sizeof name, "/lshm-csem-%d-%d", (int)getpid(), tag);
    c.s = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    if (c.s == SEM_FAILED) { perror("sem_open"); exit(1); }
    sem_unlink(name); /* the mapping stays, shared with a forked child */
  } else {
    c.id = semget(IPC_PRIVATE, 1, 0600);
    if (c.id < 0) { perror("semget"); exit(1); }
  }
  return c;
}

static void op(csem *c, int n) {
  if (c->s != NULL) {
    if ((n > 0 ? sem_post(c->s) : sem_wait(c->s)) != 0) { perror("sem"); exit(1); }
  } else {
    struct sembuf b = {0, (short)n, 0};
    if (semop(c->id, &b, 1) != 0) { perror("semop"); exit(1); }
  }
}

static void drop(csem *c) {
  if (c->s != NULL) sem_close(c->s);
  else semctl(c->id, 0, IPC_RMID);
}

int main(int argc, char **argv) {
  long i, count;
  int posix;
  double t0, t1;
  if (argc != 4) return 2;
  posix = strcmp(argv[2], "posix") == 0;
  count = atol(argv[3]);
  if (strcmp(argv[1], "uncontended") == 0) {
    csem s = make(posix, 0);
    op(&s, 1);
    t0 = now();
    for (i = 0; i < count; i++) {
      op(&s, -1);
      op(&s, 1);
    }
    t1 = now();
    drop(&s);
  } else {
    csem ping = make(posix, 1), pong = make(posix, 2);
    pid_t pid = fork();
    if (pid == 0) {
      op(&pong, 1);
      for (i = 0; i < count; i++) {
        op(&ping, -1);
        op(&pong, 1);
      }
      _exit(0);
    }
    op(&pong, -1);
    t0 = now();
    for (i = 0; i < count; i++) {
      op(&ping, 1);
      op(&pong, -1);
    }
    t1 = now();
    waitpid(pid, NULL, 0);
    drop(&ping);
    drop(&pong);
  }
  printf("%.1f\n", (t1 - t0) * 1e9 / (double)count);
  return 0;
}

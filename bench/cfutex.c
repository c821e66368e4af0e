/* The floor for bench/events.lua's wake latency: the same measurement with
 * nothing but a futex.  Two processes share an anonymous MAP_SHARED page; the
 * waiter sleeps in FUTEX_WAIT on a word there; the waker naps 2 ms (a futex
 * wait with a timeout, as events.lua's publisher does), stamps
 * CLOCK_MONOTONIC into the page, changes the word and calls FUTEX_WAKE; the
 * waiter stamps the clock as its FUTEX_WAIT returns.  No Lua, no ring, no
 * copy: what the machine (its scheduler, its virtual CPUs' wake-ups) costs.
 * usage: cfutex ROUNDS
 * prints the median microseconds from the wake call to the waiter's return */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct shared {
  uint32_t word;   /* the futex: the round number last woken */
  uint32_t done;   /* the round number the waiter has recorded */
  double stamp;    /* the waker's clock just before FUTEX_WAKE (before word) */
  double lat[];    /* microseconds, one per round */
} shared;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long futex(uint32_t *w, int op, uint32_t val, const struct timespec *t) {
  return syscall(SYS_futex, w, op, val, t, NULL, 0);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  long rounds, i;
  shared *s;
  pid_t pid;
  uint32_t nap = 0;
  struct timespec nap_t = {0, 2000000};
  if (argc != 2 || (rounds = atol(argv[1])) < 1) return 2;
  s = mmap(NULL, sizeof *s + (size_t)rounds * sizeof(double), PROT_READ | PROT_WRITE,
           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) { perror("mmap"); return 1; }
  pid = fork();
  if (pid < 0) { perror("fork"); return 1; }
  if (pid == 0) { /* the waiter: a shared (not private) futex, as lua-shm's */
    for (i = 1; i <= rounds; i++) {
      while (__atomic_load_n(&s->word, __ATOMIC_ACQUIRE) != (uint32_t)i) {
        if (futex(&s->word, FUTEX_WAIT, (uint32_t)(i - 1), NULL) != 0 && errno != EAGAIN && errno != EINTR) {
          perror("futex wait");
          _exit(1);
        }
      }
      s->lat[i - 1] = (now() - s->stamp) * 1e6;
      __atomic_store_n(&s->done, (uint32_t)i, __ATOMIC_RELEASE);
    }
    _exit(0);
  }
  for (i = 1; i <= rounds; i++) {
    do { /* the waiter goes to sleep (and has recorded the last round) */
      futex(&nap, FUTEX_WAIT_PRIVATE, 0, &nap_t);
    } while (__atomic_load_n(&s->done, __ATOMIC_ACQUIRE) != (uint32_t)(i - 1));
    s->stamp = now(); /* published by the release store below */
    __atomic_store_n(&s->word, (uint32_t)i, __ATOMIC_RELEASE);
    futex(&s->word, FUTEX_WAKE, 1, NULL);
  }
  waitpid(pid, NULL, 0);
  qsort(s->lat, (size_t)rounds, sizeof(double), cmp);
  printf("%.3f\n", rounds % 2 ? s->lat[rounds / 2] : (s->lat[rounds / 2 - 1] + s->lat[rounds / 2]) / 2);
  return 0;
}

/*
 * Futexes and deadlines: what every blocking call (seg:wait, the locks, the
 * queue) sleeps on.  Shared futexes, not private ones: the futex key is the
 * page of the shared object, so a wake-up reaches other processes.
 * Plain C: no lua_State here.
 */
#include "shm.h"

#include <errno.h>
#include <linux/futex.h>
#include <math.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NS 1000000000L

void shm_deadline_after(shm_deadline *d, double seconds) {
  double whole;
  d->forever = !(seconds <= 1e9); /* about 30 years, inf and NaN: forever */
  if (d->forever) return;
  if (seconds < 0) seconds = 0;
  clock_gettime(CLOCK_MONOTONIC, &d->at);
  whole = floor(seconds);
  d->at.tv_sec += (time_t)whole;
  d->at.tv_nsec += (long)((seconds - whole) * 1e9);
  if (d->at.tv_nsec >= NS) {
    d->at.tv_sec += 1;
    d->at.tv_nsec -= NS;
  }
}

int shm_deadline_expired(const shm_deadline *d) {
  struct timespec now;
  if (d->forever) return 0;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > d->at.tv_sec || (now.tv_sec == d->at.tv_sec && now.tv_nsec >= d->at.tv_nsec);
}

int shm_futex_wait(uint32_t *addr, uint32_t val, const shm_deadline *d) {
  long r = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, val, d->forever ? NULL : &d->at, NULL,
                   FUTEX_BITSET_MATCH_ANY);
  return r == 0 ? 0 : errno;
}

int shm_futex_wake(uint32_t *addr, int n) {
  return (int)syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}

uint32_t *shm_futex_word(int64_t *p) {
  const union { int one; char little; } u = {1};
  return (uint32_t *)(void *)p + (u.little ? 0 : 1);
}

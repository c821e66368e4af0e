/*
 * A robust lock on one 64-bit word of shared memory, and the per-state
 * context that says who "this process" is.  Plain C: no lua_State here
 * except in shm_open_ctx/shm_getctx.
 *
 * The word
 *   0                      free
 *   bits 0-29              owner pid (getpid(), the thread group)
 *   bit 30                 unused (any value is tolerated)
 *   bit 31                 WAITERS: somebody sleeps, or slept, on the word
 *   bits 32-63             tag: the low 32 bits of the owner's start time
 *                          (field 22 of /proc/PID/stat), never 0
 * The low 32-bit half is the futex word.  Every transition is a 64-bit CAS
 * or exchange, so pid and tag are always written together.
 *
 * The protocol (Drepper, "Futexes are tricky", mutex2, plus takeover)
 *   acquire   CAS(0 -> self).  Else set WAITERS (CAS) and futex-wait on the
 *             low half for a bounded slice (SLICE, never beyond the caller's
 *             deadline); after a slice that timed out, look at the owner: if
 *             it is dead, CAS(seen -> self|WAITERS) and report SHM_OWNERDIED
 *             (the caller repairs what the lock guards).  A waiter that slept
 *             takes a free lock as self|WAITERS, so that its release wakes the
 *             next sleeper.
 *   release   exchange(0); FUTEX_WAKE one if WAITERS was set.
 *   try       CAS(0 -> self); else one look at the owner: dead -> taken over
 *             (SHM_OWNERDIED), alive -> SHM_BUSY.
 * An owner is dead when: its pid field is 0 (garbage: nobody can own it);
 * kill(pid, 0) fails with ESRCH (this includes any pid above pid_max); its
 * /proc/PID/stat says zombie; or its start time does not match the tag (the
 * pid was reused).  A pid equal to ours is alive when the tag is ours too
 * (another Lua state, or this one: the callers refuse to lock twice), dead
 * otherwise (a previous process with our pid).  A /proc entry that cannot be
 * read means alive (a wait for the deadline, never a wrong takeover).
 *
 * So any bytes are a valid lock: a scribbled word costs a wait for the
 * deadline (it names a live process) or a takeover (it names nobody alive),
 * never a crash and never a wait without a bound (forever waits sleep in
 * slices and look again).  No pointers live in shared memory.
 *
 * Limits
 *  - Owners in another pid namespace are judged by the pid as seen from ours:
 *    processes sharing a lock must share a pid namespace (a container that
 *    maps the segment from outside would see a stranger's pid as dead).
 *  - The owner is a process, not a thread: a thread that dies holding the
 *    lock while its process lives on is not detected (the lock stays held).
 *  - Without /proc, liveness rests on kill(pid, 0) alone (no pid-reuse check).
 */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PIDMASK 0x3fffffffu
#define WAITERS 0x80000000u
#define TAG_UNKNOWN 0xffffffffu /* our own /proc was unreadable: never compared */
#define SLICE 0.015             /* seconds a waiter sleeps before it looks again */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define CAS(p, e, v) \
  __atomic_compare_exchange_n((p), (e), (v), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

/* ---- who a process is ---- */

/* State and start time of a process from /proc/PID/stat; 0, or -1 if it
 * cannot be read.  The command name (field 2) may hold spaces and ')': the
 * fields are counted from the last ')'. */
static int procstat(pid_t pid, char *state, unsigned long long *start) {
  char path[32], buf[1024], *p, *end;
  ssize_t n;
  int fd, field;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  do fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return -1;
  do n = read(fd, buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  p = strrchr(buf, ')');
  if (p == NULL || p[1] != ' ') return -1;
  p += 2; /* field 3, the state */
  *state = *p;
  for (field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (p == NULL) return -1;
    p++;
  }
  errno = 0;
  *start = strtoull(p, &end, 10);
  if (end == p || errno != 0) return -1;
  return 0;
}

/* The tag of a start time: its low 32 bits, never 0. */
static uint32_t tagof(unsigned long long start) {
  uint32_t t = (uint32_t)start;
  return t == 0 ? 1 : t;
}

static uint64_t compute_self(void) {
  pid_t pid = getpid();
  char state;
  unsigned long long start;
  uint32_t tag = procstat(pid, &state, &start) == 0 ? tagof(start) : TAG_UNKNOWN;
  return (uint64_t)tag << 32 | ((uint32_t)pid & PIDMASK);
}

/* Is the owner named by word v dead (given that we are self)? */
static int owner_dead(uint64_t v, uint64_t self) {
  pid_t pid = (pid_t)(v & PIDMASK);
  uint32_t tag = (uint32_t)(v >> 32);
  char state;
  unsigned long long start;
  if (pid == 0) return 1;                            /* nobody: garbage */
  if ((uint32_t)pid == (uint32_t)(self & PIDMASK)) return tag != (uint32_t)(self >> 32);
  if (kill(pid, 0) != 0 && errno == ESRCH) return 1; /* gone (or above pid_max) */
  if (procstat(pid, &state, &start) != 0) return 0;  /* cannot tell: alive */
  if (state == 'Z' || state == 'X') return 1;        /* dead, not yet reaped */
  return tag != TAG_UNKNOWN && tag != tagof(start);  /* pid reused */
}

/* ---- the context: one per Lua state ---- */

typedef struct ctxpage {
  uint64_t self; /* 0 until computed; zeroed by fork (MADV_WIPEONFORK) */
} ctxpage;

struct shm_ctx {
  ctxpage *page;  /* a private anonymous page, or &fallback */
  size_t pagelen; /* its mmap length, 0 for the fallback */
  int wipes;      /* the page is wiped in a fork's child */
  ctxpage fallback;
};

static const char ctx_key = 0; /* registry[&ctx_key] = the context */

uint64_t shm_ctx_self(shm_ctx *c) {
  uint64_t s = c->page->self;
  /* without WIPEONFORK, a fork is noticed by the pid (a system call) */
  if (s == 0 || (!c->wipes && (uint32_t)(s & PIDMASK) != ((uint32_t)getpid() & PIDMASK))) {
    s = compute_self();
    c->page->self = s;
  }
  return s;
}

static int ctx_gc(lua_State *L) {
  shm_ctx *c = (shm_ctx *)lua_touserdata(L, 1);
  if (c != NULL && c->pagelen != 0) {
    munmap(c->page, c->pagelen);
    c->page = &c->fallback;
    c->pagelen = 0;
    c->wipes = 0;
  }
  return 0;
}

void shm_open_ctx(lua_State *L) {
  shm_ctx *c = (shm_ctx *)lua_newuserdatauv(L, sizeof *c, 0);
  long psz = sysconf(_SC_PAGESIZE);
  void *p;
  memset(c, 0, sizeof *c);
  c->page = &c->fallback;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  p = mmap(NULL, (size_t)(psz > 0 ? psz : 4096), PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) {
    c->page = (ctxpage *)p;
    c->pagelen = (size_t)(psz > 0 ? psz : 4096);
#ifdef MADV_WIPEONFORK
    c->wipes = madvise(p, c->pagelen, MADV_WIPEONFORK) == 0;
#endif
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);
}

shm_ctx *shm_getctx(lua_State *L) {
  shm_ctx *c;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  c = (shm_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (c == NULL) luaL_error(L, "shm: no context (shm.core not opened in this state)");
  return c;
}

/* ---- the lock ---- */

/* The earlier of two deadlines (a is never forever). */
static const shm_deadline *earlier(const shm_deadline *a, const shm_deadline *b) {
  if (!b->forever && (b->at.tv_sec < a->at.tv_sec ||
                      (b->at.tv_sec == a->at.tv_sec && b->at.tv_nsec < a->at.tv_nsec)))
    return b;
  return a;
}

/* The lock is held (v != 0): wait for it, or take it over from a dead owner.
 * `trying`: never sleep. */
static shm_status contended(shm_lock *l, uint64_t self, const shm_deadline *d, int trying) {
  uint64_t *w = &l->word;
  uint32_t *fw = shm_futex_word((int64_t *)(void *)w);
  uint64_t want = self; /* self|WAITERS once we have slept */
  int look = trying || shm_deadline_expired(d); /* look at the owner now */
  for (;;) {
    uint64_t v = LOAD(w);
    shm_deadline slice;
    int r;
    if (v == 0) {
      if (CAS(w, &v, want)) return SHM_OK;
      continue; /* taken meanwhile */
    }
    if (look) {
      if (owner_dead(v, self)) {
        if (CAS(w, &v, self | WAITERS)) return SHM_OWNERDIED;
        continue; /* changed meanwhile: look again */
      }
      if (trying) return SHM_BUSY;
      if (shm_deadline_expired(d)) return SHM_TIMEOUT;
      look = 0;
    }
    if (!((uint32_t)v & WAITERS)) {
      uint64_t nv = v | WAITERS;
      if (!CAS(w, &v, nv)) continue;
      v = nv;
    }
    shm_deadline_after(&slice, SLICE);
    r = shm_futex_wait(fw, (uint32_t)v, earlier(&slice, d)); /* EINTR, EAGAIN, woken: look again */
    want = self | WAITERS;
    if (r == ETIMEDOUT || shm_deadline_expired(d)) look = 1;
  }
}

shm_status shm_lock_acquire(shm_lock *l, uint64_t self, const shm_deadline *d) {
  uint64_t v = 0;
  if (CAS(&l->word, &v, self)) return SHM_OK;
  return contended(l, self, d, 0);
}

shm_status shm_lock_try(shm_lock *l, uint64_t self) {
  uint64_t v = 0;
  shm_deadline now;
  if (CAS(&l->word, &v, self)) return SHM_OK;
  shm_deadline_after(&now, 0);
  return contended(l, self, &now, 1);
}

shm_status shm_lock_wait(shm_lock *l, uint64_t self, const shm_deadline *d) {
  uint32_t *fw = shm_futex_word((int64_t *)(void *)&l->word);
  for (;;) {
    uint64_t v = LOAD(&l->word);
    shm_deadline slice;
    if (v == 0) return SHM_OK;
    if (owner_dead(v, self)) return SHM_OWNERDIED;
    if (shm_deadline_expired(d)) return SHM_TIMEOUT;
    /* the WAITERS bit is not ours to set: the release wakes nobody for us */
    shm_deadline_after(&slice, SLICE / 8);
    shm_futex_wait(fw, (uint32_t)v, earlier(&slice, d));
  }
}

void shm_lock_release(shm_lock *l) {
  uint64_t v = __atomic_exchange_n(&l->word, 0, __ATOMIC_RELEASE);
  if ((uint32_t)v & WAITERS) shm_futex_wake(shm_futex_word((int64_t *)(void *)&l->word), 1);
}

shm_status shm_lock_init_once(shm_lock *l, const uint64_t *magic, uint64_t self, int create, double wait,
                              void (*init)(void *), shm_status (*repair)(void *), void *arg) {
  shm_deadline d;
  shm_status st;
  if (LOAD(magic) != 0) return SHM_OK;
  shm_deadline_after(&d, wait);
  if (!create) { /* open only: wait while somebody initialises */
    if (LOAD(&l->word) == 0) return SHM_OK;
    return shm_lock_wait(l, self, &d) == SHM_TIMEOUT ? SHM_TIMEOUT : SHM_OK;
  }
  st = shm_lock_try(l, self);
  if (st == SHM_BUSY) st = shm_lock_acquire(l, self, &d);
  if (st == SHM_TIMEOUT) return st;
  if (LOAD(magic) == 0) {
    init(arg);
    st = SHM_OK;
  } else {
    st = st == SHM_OWNERDIED ? repair(arg) : SHM_OK; /* made, then its owner died */
  }
  shm_lock_release(l);
  return st;
}

int shm_lock_owned(const shm_lock *l, uint64_t self) {
  return (LOAD(&l->word) & ~(uint64_t)WAITERS) == self;
}

/* ---- internal bindings for shm.lock (lua/shm/lock.lua) ----
 * A lock of shm.lock is a dict key whose value names its holder: the pid and
 * start-time tag of this file's owner word, so that a waiter can tell a dead
 * holder as the robust lock does. */

/* shm.core._self() -> pid, tag: this process as the robust lock records it
 * (the tag: the low 32 bits of its start time, never 0). */
static int l_self(lua_State *L) {
  uint64_t s = shm_ctx_self(shm_getctx(L));
  lua_pushinteger(L, (lua_Integer)(s & PIDMASK));
  lua_pushinteger(L, (lua_Integer)(s >> 32));
  return 2;
}

/* An integer in [0, max] at arg (read from shared memory by the caller:
 * anything else is garbage), or -1. */
static lua_Integer wordpart(lua_State *L, int arg, lua_Number max) {
  lua_Number n = luaL_checknumber(L, arg);
  if (!(n >= 0 && n <= max) || n != (lua_Number)(lua_Integer)n) return -1;
  return (lua_Integer)n;
}

/* shm.core._dead(pid, tag) -> boolean: is that process dead, as owner_dead
 * judges a lock's owner (gone, a zombie, or its pid reused)?  Values out of
 * range (read from shared memory: garbage) name nobody: true. */
static int l_dead(lua_State *L) {
  lua_Integer pid = wordpart(L, 1, (lua_Number)PIDMASK);
  lua_Integer tag = wordpart(L, 2, 4294967295.0);
  uint64_t self = shm_ctx_self(shm_getctx(L));
  lua_pushboolean(L, pid <= 0 || tag < 0 || owner_dead((uint64_t)tag << 32 | (uint64_t)pid, self));
  return 1;
}

/* shm.core._now() -> seconds on the monotonic clock (a lock's elapsed time) */
static int l_now(lua_State *L) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  lua_pushnumber(L, (lua_Number)t.tv_sec + (lua_Number)t.tv_nsec * 1e-9);
  return 1;
}

void shm_open_owner(lua_State *L, int module, int methods) {
  static const luaL_Reg funcs[] = {
    {"_self", l_self}, {"_dead", l_dead}, {"_now", l_now}, {NULL, NULL}};
  (void)methods;
  lua_pushvalue(L, module);
  luaL_setfuncs(L, funcs, 0);
  lua_pop(L, 1);
}

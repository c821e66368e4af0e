/*
 * seg:mutex(off): a process-shared, robust, error-checking pthread mutex
 * living in the segment at `off` (shm.MUTEX_SIZE bytes, 8-byte aligned).
 *
 * The first 8 bytes are a state word that makes initialisation safe when
 * several processes call seg:mutex(off) on fresh (zeroed) memory at once:
 *   0                 fresh
 *   INIT_TAG | pid    being initialised by pid
 *   READY             initialised
 * The pthread_mutex_t follows.  glibc links a robust mutex held by this
 * process into a per-thread list through the mutex itself, so a segment is
 * never unmapped while this process holds a mutex in it (s->held).
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define MUTEX_MT "shm.mutex"
#define INIT_TAG 0x4c53484d00000000LL /* "LSHM" << 32 */
#define READY 0x4c53484d52454459LL    /* "LSHMREDY" */

_Static_assert(8 + sizeof(pthread_mutex_t) <= SHM_MUTEX_SIZE, "SHM_MUTEX_SIZE too small");

typedef struct shm_mutex {
  size_t off; /* of the state word */
  int held;   /* locked through this object */
} shm_mutex;

static int64_t *stateword(shm_segment *s, size_t off) {
  return (int64_t *)(void *)(s->addr + off);
}

static pthread_mutex_t *mutexof(shm_segment *s, size_t off) {
  return (pthread_mutex_t *)(void *)(s->addr + off + 8);
}


/* A process-shared, robust mutex (error-checking if asked); 0 or an errno. */
int shm_init_mutex(pthread_mutex_t *m, int errorcheck) {
  pthread_mutexattr_t a;
  int r = pthread_mutexattr_init(&a);
  if (r == 0) r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (r == 0) r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (r == 0 && errorcheck) r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  if (r == 0) r = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return r;
}

/* Make sure the mutex at off is initialised; returns 0, an errno, or -1 if
 * the memory holds something else. */
static int ensure_init(shm_segment *s, size_t off) {
  int64_t *st = stateword(s, off);
  int64_t mine = INIT_TAG | (int64_t)getpid();
  for (;;) {
    int64_t v = __atomic_load_n(st, __ATOMIC_ACQUIRE);
    int64_t expect = v;
    if (v == READY) return 0;
    if (v != 0 && (v & (int64_t)0xffffffff00000000LL) != INIT_TAG) return -1;
    if (v != 0) {
      /* someone is initialising: wait a little, take over if it died */
      shm_deadline d;
      pid_t pid = (pid_t)(v & 0xffffffff);
      d.forever = 0;
      clock_gettime(CLOCK_MONOTONIC, &d.at);
      d.at.tv_nsec += 10000000L;
      if (d.at.tv_nsec >= 1000000000L) { d.at.tv_sec++; d.at.tv_nsec -= 1000000000L; }
      shm_futex_wait(shm_futex_word(st), (uint32_t)(v & 0xffffffff), &d);
      if (__atomic_load_n(st, __ATOMIC_ACQUIRE) != v || pid == getpid() ||
          kill(pid, 0) == 0 || errno != ESRCH)
        continue;
    }
    if (__atomic_compare_exchange_n(st, &expect, mine, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      int r = shm_init_mutex(mutexof(s, off), 1);
      __atomic_store_n(st, r == 0 ? READY : 0, __ATOMIC_RELEASE);
      shm_futex_wake(shm_futex_word(st), 1 << 30);
      return r;
    }
  }
}

/***
A process-shared, robust, error-checking mutex living at `offset`
(`shm.MUTEX_SIZE` bytes, 8-byte aligned).  Several processes may call this on
fresh zeroed memory at once: it is initialised exactly once.
@function segment:mutex
@within segment
@tparam integer offset
@treturn mutex
@raise if the memory there holds something else
@usage local m = seg:mutex(0); assert(m:lock(5)); ...; m:unlock()
*/
static int seg_mutex(lua_State *L) {
  shm_segment *s = shm_checkwritable(L, 1);
  lua_Integer off = luaL_checkinteger(L, 2);
  shm_mutex *m;
  int r;
  if (off < 0 || s->size < SHM_MUTEX_SIZE || (lua_Unsigned)off > s->size - SHM_MUTEX_SIZE)
    luaL_argerror(L, 2, lua_pushfstring(L, "offset %I out of range (a mutex takes %d bytes, segment size %I)",
                                        off, SHM_MUTEX_SIZE, (lua_Integer)s->size));
  if (off % 8 != 0)
    luaL_argerror(L, 2, lua_pushfstring(L, "offset %I is not 8-byte aligned", off));
  m = (shm_mutex *)lua_newuserdatauv(L, sizeof *m, 1);
  m->off = (size_t)off;
  m->held = 0;
  luaL_setmetatable(L, MUTEX_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1); /* keeps the segment alive */
  r = ensure_init(s, (size_t)off);
  if (r == -1)
    return luaL_error(L, "offset %I does not hold a lua-shm mutex (corrupted or used for other data)", off);
  if (r != 0) return shm_fail(L, r, "seg:mutex(%lld)", (long long)off);
  return 1;
}

/* The mutex object at idx and its (attached) segment. */
static shm_mutex *checkmutex(lua_State *L, int idx, shm_segment **ps) {
  shm_mutex *m = (shm_mutex *)luaL_checkudata(L, idx, MUTEX_MT);
  lua_getiuservalue(L, idx, 1);
  *ps = (shm_segment *)lua_touserdata(L, -1);
  lua_pop(L, 1); /* the mutex's user value keeps it alive */
  if (*ps == NULL || (*ps)->addr == NULL) luaL_error(L, "attempt to use a detached segment");
  if (__atomic_load_n(stateword(*ps, m->off), __ATOMIC_ACQUIRE) != READY)
    luaL_error(L, "the mutex at offset %I was overwritten", (lua_Integer)m->off);
  return m;
}

/* After a successful lock: bookkeeping, and the "owner died" report. */
static int locked(lua_State *L, shm_mutex *m, shm_segment *s, int r) {
  if (r == EOWNERDEAD) pthread_mutex_consistent(mutexof(s, m->off));
  m->held++;
  s->held++;
  lua_pushboolean(L, 1);
  if (r == EOWNERDEAD) {
    lua_pushliteral(L, "owner died");
    return 2;
  }
  return 1;
}

static int lockresult(lua_State *L, shm_mutex *m, shm_segment *s, int r, const char *op) {
  switch (r) {
  case 0:
  case EOWNERDEAD:
    return locked(L, m, s, r);
  case ETIMEDOUT:
  case EBUSY:
    lua_pushboolean(L, 0);
    lua_pushstring(L, r == ETIMEDOUT ? "timeout" : "busy");
    return 2;
  case EDEADLK:
    return luaL_error(L, "mutex at offset %I is already locked by this process", (lua_Integer)m->off);
  default:
    return shm_fail(L, r, "mutex:%s(%lld)", op, (long long)m->off);
  }
}

/***
A mutex in a segment (see `segment:mutex`).
@type mutex
*/

/***
Lock.  If the holder died, this succeeds and says so, after making the mutex
consistent again: check the data it protects.
@function mutex:lock
@tparam[opt] number timeout seconds; `nil` waits forever
@treturn boolean `true`
@treturn[opt] string `"owner died"`
@treturn[2] boolean `false`
@treturn[2] string `"timeout"`
@raise if this process holds it already
@usage local ok, why = m:lock(5)
if why == "owner died" then repair() end
m:unlock()
*/
static int m_lock(lua_State *L) {
  shm_segment *s;
  shm_mutex *m = checkmutex(L, 1, &s);
  shm_deadline d;
  int r;
  shm_optdeadline(L, 2, &d);
  if (d.forever) r = pthread_mutex_lock(mutexof(s, m->off));
  else r = pthread_mutex_clocklock(mutexof(s, m->off), CLOCK_MONOTONIC, &d.at);
  return lockresult(L, m, s, r, "lock");
}

/***
Lock if free.
@function mutex:trylock
@treturn boolean `true` (and `"owner died"` as for lock), or `false, "busy"`
@usage if m:trylock() then work() m:unlock() end
*/
static int m_trylock(lua_State *L) {
  shm_segment *s;
  shm_mutex *m = checkmutex(L, 1, &s);
  return lockresult(L, m, s, pthread_mutex_trylock(mutexof(s, m->off)), "trylock");
}

/***
Unlock.
@function mutex:unlock
@treturn boolean true
@raise if this process does not hold it
@usage m:unlock()
*/
static int m_unlock(lua_State *L) {
  shm_segment *s;
  shm_mutex *m = checkmutex(L, 1, &s);
  int r = pthread_mutex_unlock(mutexof(s, m->off));
  if (r == EPERM)
    return luaL_error(L, "attempt to unlock a mutex this process does not hold");
  if (r != 0) return shm_fail(L, r, "mutex:unlock(%lld)", (long long)m->off);
  if (m->held > 0) m->held--;
  if (s->held > 0) s->held--;
  lua_pushboolean(L, 1);
  return 1;
}

/* Collected while held: unlock, so the segment can be unmapped safely. */
static int m_gc(lua_State *L) {
  shm_mutex *m = (shm_mutex *)luaL_checkudata(L, 1, MUTEX_MT);
  shm_segment *s;
  lua_getiuservalue(L, 1, 1);
  s = (shm_segment *)lua_touserdata(L, -1);
  while (m->held > 0 && s != NULL && s->addr != NULL) {
    if (pthread_mutex_unlock(mutexof(s, m->off)) != 0) break;
    m->held--;
    if (s->held > 0) s->held--;
  }
  return 0;
}

static int m_tostring(lua_State *L) {
  shm_mutex *m = (shm_mutex *)luaL_checkudata(L, 1, MUTEX_MT);
  lua_pushfstring(L, "shm.mutex(offset=%I%s)", (lua_Integer)m->off, m->held ? " held" : "");
  return 1;
}

static const luaL_Reg mutex_methods[] = {
  {"lock", m_lock}, {"trylock", m_trylock}, {"unlock", m_unlock}, {NULL, NULL}};

static const luaL_Reg mutex_meta[] = {
  {"__gc", m_gc}, SHM_CLOSE_ENTRY(m_gc) {"__tostring", m_tostring}, {NULL, NULL}};

void shm_open_mutex(lua_State *L, int methods, int module) {
  luaL_newmetatable(L, MUTEX_MT);
  luaL_setfuncs(L, mutex_meta, 0);
  luaL_newlib(L, mutex_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, seg_mutex);
  lua_setfield(L, methods, "mutex");
  lua_pushinteger(L, SHM_MUTEX_SIZE);
  lua_setfield(L, module, "MUTEX_SIZE");
}

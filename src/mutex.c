/*
 * seg:mutex(off): a robust inter-process mutex living in the segment at `off`
 * (shm.MUTEX_SIZE bytes, 8-byte aligned), on lock.c's shm_lock.
 *
 * Layout (all in shared memory, so all untrusted):
 *   +0   state word: 0 fresh, READY once used (CAS 0 -> READY: initialising
 *        is one instruction, so it is bounded whatever the bytes say)
 *   +8   the lock word (lock.c)
 *   +16  reserved (zero), up to SHM_MUTEX_SIZE
 * There are no pointers in shared memory: a segment could be unmapped while
 * a mutex in it is held, but detach still refuses (the lock would stay held
 * with nobody able to unlock it until this process exits).
 *
 * Bookkeeping is per object: the object that locked holds it, and only it
 * can unlock; the segment it was made through counts it (s->held), so that
 * segment cannot be detached meanwhile.
 */
/***
@module shm
*/
/***
@type segment
*/
#include "shm.h"

#include <unistd.h>

#define MUTEX_MT "shm.mutex"
#define READY 0x4c53484d52454459LL /* "LSHMREDY" */
#define LOCK_OFF 8

_Static_assert(LOCK_OFF + sizeof(shm_lock) <= SHM_MUTEX_SIZE, "SHM_MUTEX_SIZE too small");

typedef struct shm_mutex {
  shm_segment *seg; /* made through it; kept alive by the user value */
  shm_ctx *ctx;     /* who we are */
  size_t off;       /* of the state word */
  uint64_t owner;   /* the word it was locked with (while held) */
  pid_t pid;        /* the process that locked it (while held) */
  int held;         /* locked through this object */
} shm_mutex;

static int64_t *stateword(const shm_mutex *m) {
  return (int64_t *)(void *)(m->seg->addr + m->off);
}

static shm_lock *lockof(const shm_mutex *m) {
  return (shm_lock *)(void *)(m->seg->addr + m->off + LOCK_OFF);
}

/***
A robust inter-process mutex living at `offset` (`shm.MUTEX_SIZE` bytes,
8-byte aligned, zero before first use).  Several processes may call this on
fresh zeroed memory at once: it is initialised exactly once.  Any bytes there
later (a peer's scribble) cost a timeout or a takeover, never a crash.
@function segment:mutex
@tparam integer offset
@treturn mutex
@raise if the memory there holds something else (`offset N does not hold a lua-shm mutex`)
@usage local m = seg:mutex(0); assert(m:lock(5)); ...; m:unlock()
*/
static int seg_mutex(lua_State *L) {
  shm_segment *s = shm_checkwritable(L, 1);
  lua_Integer off = luaL_checkinteger(L, 2);
  int64_t v = 0;
  shm_mutex *m;
  if (off < 0 || s->size < SHM_MUTEX_SIZE || (lua_Unsigned)off > s->size - SHM_MUTEX_SIZE)
    luaL_argerror(L, 2, lua_pushfstring(L, "offset %I out of range (a mutex takes %d bytes, segment size %I)",
                                        off, SHM_MUTEX_SIZE, (lua_Integer)s->size));
  if (off % 8 != 0)
    luaL_argerror(L, 2, lua_pushfstring(L, "offset %I is not 8-byte aligned", off));
  m = (shm_mutex *)lua_newuserdatauv(L, sizeof *m, 1);
  m->seg = s;
  m->ctx = shm_getctx(L);
  m->off = (size_t)off;
  m->owner = 0;
  m->pid = 0;
  m->held = 0;
  luaL_setmetatable(L, MUTEX_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1); /* keeps the segment alive */
  if (!__atomic_compare_exchange_n(stateword(m), &v, READY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
      v != READY)
    return luaL_error(L, "offset %I does not hold a lua-shm mutex (corrupted or used for other data)", off);
  return 1;
}

/* The mutex object at idx, its segment attached. */
static shm_mutex *checkmutex(lua_State *L, int idx) {
  shm_mutex *m = (shm_mutex *)shm_checkclass(L, idx, MUTEX_MT);
  if (m->seg->addr == NULL) luaL_error(L, "attempt to use a detached segment");
  return m;
}

/* lock and trylock: refuse a second lock by this process, then bookkeeping
 * and results. */
static uint64_t beforelock(lua_State *L, shm_mutex *m) {
  uint64_t self = shm_ctx_self(m->ctx);
  if (__atomic_load_n(stateword(m), __ATOMIC_ACQUIRE) != READY)
    luaL_error(L, "the mutex at offset %I was overwritten", (lua_Integer)m->off);
  if (m->held || shm_lock_owned(lockof(m), self))
    luaL_error(L, "mutex at offset %I is already locked by this process", (lua_Integer)m->off);
  return self;
}

static int lockresult(lua_State *L, shm_mutex *m, uint64_t self, shm_status st) {
  if (st == SHM_OK || st == SHM_OWNERDIED) {
    m->held = 1;
    m->owner = self;
    m->pid = getpid();
    m->seg->held++;
    lua_pushboolean(L, 1);
    if (st == SHM_OK) return 1;
    lua_pushliteral(L, "owner died");
    return 2;
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, st == SHM_TIMEOUT ? "timeout" : "busy");
  return 2;
}

/* Forget that this object holds the lock; release it if the word still
 * names us.  Returns whether it did. */
static int release(shm_mutex *m) {
  int mine = m->pid == getpid() && shm_lock_owned(lockof(m), m->owner);
  if (mine) shm_lock_release(lockof(m));
  m->held = 0;
  m->owner = 0;
  if (m->seg->held > 0) m->seg->held--;
  return mine;
}

/***
A mutex in a segment (see `segment:mutex`).  It belongs to the process, not
to a thread; the object that locked it is the one that unlocks it.
@type mutex
*/

/***
Lock.  If the holder died (or the lock word was overwritten with the name of a
process that is not running), this succeeds and says so: check the data it
protects.
@function mutex:lock
@tparam[opt] number timeout seconds; `nil` waits forever
@treturn boolean `true`
@treturn[opt] string `"owner died"`
@treturn[2] boolean `false`
@treturn[2] string `"timeout"`
@raise if this process holds it already (through this object or another), or
the state word was overwritten
@usage local ok, why = m:lock(5)
if why == "owner died" then repair() end
m:unlock()
*/
static int m_lock(lua_State *L) {
  shm_mutex *m = checkmutex(L, 1);
  shm_deadline d;
  uint64_t self;
  shm_optdeadline(L, 2, &d);
  self = beforelock(L, m);
  return lockresult(L, m, self, shm_lock_acquire(lockof(m), self, &d));
}

/***
Lock if free.
@function mutex:trylock
@treturn boolean `true` (and `"owner died"` as for lock), or `false, "busy"`
@raise as `mutex:lock`
@usage if m:trylock() then work() m:unlock() end
*/
static int m_trylock(lua_State *L) {
  shm_mutex *m = checkmutex(L, 1);
  uint64_t self = beforelock(L, m);
  return lockresult(L, m, self, shm_lock_try(lockof(m), self));
}

/***
Unlock.
@function mutex:unlock
@treturn boolean true
@raise if this object did not lock it (`attempt to unlock a mutex this process
does not hold`), or if the lock word was overwritten while held (the object
then no longer holds it)
@usage m:unlock()
*/
static int m_unlock(lua_State *L) {
  shm_mutex *m = checkmutex(L, 1);
  if (!m->held || m->owner != shm_ctx_self(m->ctx)) /* not ours (or a fork's child) */
    return luaL_error(L, "attempt to unlock a mutex this process does not hold");
  if (!release(m))
    return luaL_error(L, "the mutex at offset %I was overwritten while held", (lua_Integer)m->off);
  lua_pushboolean(L, 1);
  return 1;
}

/* __gc and __close: unlock if held (never a fork parent's lock). */
static int m_gc(lua_State *L) {
  shm_mutex *m = (shm_mutex *)shm_checkclass(L, 1, MUTEX_MT);
  if (m->held && m->seg->addr != NULL) release(m);
  return 0;
}

static int m_tostring(lua_State *L) {
  shm_mutex *m = (shm_mutex *)shm_checkclass(L, 1, MUTEX_MT);
  lua_pushfstring(L, "shm.mutex(offset=%I%s)", (lua_Integer)m->off, m->held ? " held" : "");
  return 1;
}

static const luaL_Reg mutex_methods[] = {
  {"lock", m_lock}, {"trylock", m_trylock}, {"unlock", m_unlock}, {NULL, NULL}};

static const luaL_Reg mutex_meta[] = {
  {"__gc", m_gc}, SHM_CLOSE_ENTRY(m_gc) {"__tostring", m_tostring}, {NULL, NULL}};

void shm_open_mutex(lua_State *L, int module, int methods) {
  shm_newclass(L, MUTEX_MT, mutex_methods, mutex_meta);
  lua_pushcfunction(L, seg_mutex);
  lua_setfield(L, methods, "mutex");
  lua_pushinteger(L, SHM_MUTEX_SIZE);
  lua_setfield(L, module, "MUTEX_SIZE");
}

/*
 * Atomic 64-bit integers in a segment (sequentially consistent), and
 * wait/notify on them with Linux futexes (see futex.c).
 */
/***
@module shm
*/
/***
@type segment
*/
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <unistd.h>

/* ---- the methods ---- */

/* An 8-byte aligned, in-range offset: the address of an int64 in s. */
static int64_t *checkslot(lua_State *L, shm_segment *s, int arg) {
  lua_Integer off = luaL_checkinteger(L, arg);
  if (off < 0 || s->size < 8 || (lua_Unsigned)off > s->size - 8)
    luaL_argerror(L, arg, lua_pushfstring(L, "offset %I out of range (segment size %I)", off,
                                          (lua_Integer)s->size));
  if (off % 8 != 0)
    luaL_argerror(L, arg, lua_pushfstring(L, "offset %I is not 8-byte aligned", off));
  return (int64_t *)(void *)(s->addr + off);
}


/***
Atomically read the 64-bit signed integer at an 8-byte aligned offset
(sequentially consistent, like all the atomics).
@function segment:load
@tparam integer offset
@treturn integer
@usage local n = seg:load(8)
*/
static int a_load(lua_State *L) {
  int64_t *p = checkslot(L, shm_checkopen(L, 1), 2);
  lua_pushinteger(L, (lua_Integer)__atomic_load_n(p, __ATOMIC_SEQ_CST));
  return 1;
}

/***
Atomically write a 64-bit integer.  Send `notify` if someone may `wait` on it.
@function segment:store
@tparam integer offset
@tparam integer value
@treturn segment itself
@usage seg:store(0, 1):notify(0)
*/
static int a_store(lua_State *L) {
  int64_t *p = checkslot(L, shm_checkwritable(L, 1), 2);
  int64_t v = (int64_t)luaL_checkinteger(L, 3);
  __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
  lua_settop(L, 1);
  return 1;
}

/***
Atomically add (wrapping around like Lua integers).
@function segment:add
@tparam integer offset
@tparam integer delta
@treturn integer the new value
@usage local n = seg:add(0, 1)
*/
static int a_add(lua_State *L) {
  int64_t *p = checkslot(L, shm_checkwritable(L, 1), 2);
  /* wraps around in two's complement, like Lua's own integer arithmetic */
  uint64_t d = (uint64_t)luaL_checkinteger(L, 3);
  uint64_t v = __atomic_add_fetch((uint64_t *)p, d, __ATOMIC_SEQ_CST);
  lua_pushinteger(L, (lua_Integer)v);
  return 1;
}

/***
Compare and swap.
@function segment:cas
@tparam integer offset
@tparam integer expected
@tparam integer desired
@treturn boolean whether it swapped
@treturn integer the value found (`expected` on success)
@usage local ok, cur = seg:cas(0, 0, 1)
*/
/* ok, current: current is the value found (the expected one on success). */
static int a_cas(lua_State *L) {
  int64_t *p = checkslot(L, shm_checkwritable(L, 1), 2);
  int64_t expected = (int64_t)luaL_checkinteger(L, 3);
  int64_t desired = (int64_t)luaL_checkinteger(L, 4);
  int ok = __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
  lua_pushboolean(L, ok);
  lua_pushinteger(L, (lua_Integer)expected);
  return 2;
}

/***
Sleep in the kernel (a futex, no busy loop) while the value at `offset` equals
`expected`.
@function segment:wait
@tparam integer offset
@tparam integer expected
@tparam[opt] number timeout seconds; `nil` waits forever
@treturn boolean `true` when it changed or was notified
@treturn[2] boolean `false`
@treturn[2] string `"timeout"` or `"interrupted"`
@usage while seg:load(0) == 0 do seg:wait(0, 0, 1) end
@see futex(2)
*/
static int a_wait(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  int64_t *p = checkslot(L, s, 2);
  int64_t expected = (int64_t)luaL_checkinteger(L, 3);
  uint32_t *w = shm_futex_word(p);
  uint32_t wv = (uint32_t)((uint64_t)expected & 0xffffffffu);
  shm_deadline d;
  shm_optdeadline(L, 4, &d);
  for (;;) {
    int en;
    if (__atomic_load_n(p, __ATOMIC_SEQ_CST) != expected) break;
    en = shm_futex_wait(w, wv, &d);
    if (en == 0) break; /* notified */
    if (en == EAGAIN) continue;
    if (en == ETIMEDOUT || en == EINTR) {
      if (__atomic_load_n(p, __ATOMIC_SEQ_CST) != expected) break;
      lua_pushboolean(L, 0);
      lua_pushstring(L, en == ETIMEDOUT ? "timeout" : "interrupted");
      return 2;
    }
    return shm_fail(L, en, "seg:wait(%lld)", (long long)((unsigned char *)p - s->addr));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/***
Wake up waiters on `offset`.
@function segment:notify
@tparam integer offset
@tparam[opt] integer n default: all
@treturn integer how many were woken
@usage seg:store(0, 1):notify(0)
@see futex(2)
*/
static int a_notify(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  int64_t *p = checkslot(L, s, 2);
  lua_Integer n = luaL_optinteger(L, 3, INT_MAX);
  int woken;
  luaL_argcheck(L, n >= 0, 3, "count must not be negative");
  if (n > INT_MAX) n = INT_MAX;
  woken = n == 0 ? 0 : shm_futex_wake(shm_futex_word(p), (int)n);
  if (woken < 0) {
    int en = errno;
    return shm_fail(L, en, "seg:notify(%lld)", (long long)((unsigned char *)p - s->addr));
  }
  lua_pushinteger(L, woken);
  return 1;
}

static const luaL_Reg atomic_methods[] = {
  {"load", a_load}, {"store", a_store}, {"add", a_add}, {"cas", a_cas},
  {"wait", a_wait}, {"notify", a_notify}, {NULL, NULL}};

void shm_open_atomics(lua_State *L, int module, int methods) {
  (void)module;
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, atomic_methods, 0);
  lua_pop(L, 1);
}

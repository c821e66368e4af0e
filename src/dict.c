/*
 * shm.dict: ngx.shared.DICT's API for any set of processes, in one segment.
 *
 * Four files (dict.h lists what each holds).  The core (dictheap.c,
 * dicttable.c) is plain C that never sees a lua_State: it takes pointers and
 * lengths and returns a status, and every locked section has one unlock path
 * (txn_end).  This file is the binding: it checks arguments, encodes values
 * (dictval.c), calls the core and turns its statuses into Lua results, and
 * it holds the entry points LuaJIT's FFI calls.  No Lua call, no Lua
 * allocation and no error happen while the lock is held.
 *
 * Layout of the segment (offsets, never pointers: processes map it at
 * different addresses):
 *   header (dhdr)   configuration, the lock, the state guarded by the lock
 *                   (the "to free" chain among it), the wake words of
 *                   shm.lock, and the undo journal
 *   buckets         nbuckets x (u32 head of a hash chain (a block ref), u32 its
 *                   sequence word: odd while a writer changes that chain)
 *   refs            nbuckets x u8: "read since last looked at" bits
 *   heap            nunits x D_UNIT bytes, a binary buddy allocator
 * A block ref is a unit index into the heap; D_NIL is none.  A block starts
 * with a header word (magic | kind | order).  Free blocks are on one doubly
 * linked free list per order.  An entry (key and value) is one block; a list
 * value keeps its elements in blocks of their own, doubly linked.
 *
 * Writers serialise on a robust lock (lock.c), waiting for it no longer than
 * the handle's timeout.  Every write to a word that is reachable in the
 * committed state goes through the undo journal: the old value is appended
 * before the word changes (the buckets' sequence words excepted: a writer
 * lists the buckets it opens in the header before making them odd, and a
 * rollback makes every listed one even).  A process killed at any
 * instruction leaves a journal that the next locker (who gets
 * SHM_OWNERDIED) rolls back: only the key being changed is affected, and it
 * keeps its old value.  New data is
 * written into freshly allocated blocks, which are linked (journalled) only
 * once complete; a block freed in a transaction is never refilled in it.
 * No call is limited by the journal: an operation that touches many blocks
 * commits in steps, each consistent on its own (an eviction, a second
 * chance, an expired item freed); a list's elements, however many, are set
 * aside on the "to free" chain in one step and freed in committed batches
 * once the operation is done (by the next locker, if this process dies).
 *
 * Readers (get, get_stale, ttl, llen) take no lock.  Each hash chain has a
 * sequence word, odd while a writer changes that chain (or an entry on it):
 * a reader reads it, looks the key up and copies the value out, and keeps
 * the copy only if the word did not change.  A writer changing other chains,
 * even one stopped or killed inside its change, never makes a reader wait.
 * Every ref, length and chain a reader follows is validated and bounded, so a
 * read racing with a writer (or a hostile segment) is memory-safe; after
 * D_SPINS failed tries a reader takes the lock (with the timeout).  Reads
 * refresh LRU order through the refs bits (a reader sets its bucket's bit;
 * eviction gives an entry whose bit is set a second chance), so readers write
 * nothing but that byte, and only when it is clear.
 *
 * Everything read from the segment is untrusted: the configuration is
 * validated once at attach and kept in the process-local handle; every ref
 * is checked against the heap and the block header before use; every walk
 * is bounded by the number of units and checked for cycles (Brent).
 * Corruption is SHM_CORRUPT with a reason, never an access outside the
 * mapping.
 */
/***
@module shm
*/
#include "dict.h"

/* ---- entry points for LuaJIT's FFI ----
 * The front module (lua/shm.lua under LuaJIT) calls these through a table of
 * function pointers (shm.dict._ffi, a light userdata), never by symbol: only
 * luaopen_shm_core is exported.  `ud` is a dict's userdata, whose metatable
 * the caller checked; each call checks that it is still attached.  They
 * return a status as the core does (shm_status, then the SHM_DICT_ ones), or
 * FFI_DETACHED, or FFI_NOMEM.  Values cross as (type, bytes): DV_ types. */

typedef struct ldict {
  shm_dict d;
  shm_segment *seg; /* kept alive by the user value */
} ldict;

#define FFI_DETACHED (-1)
#define FFI_NOMEM (-2)
#define FFI_BUSY (-3) /* the handle's buffer is lent out: use the C API */

static shm_dict *ffi_dict(void *ud) {
  ldict *ld = (ldict *)ud;
  return ld != NULL && ld->seg != NULL && ld->seg->addr != NULL && ld->seg->addr == ld->d.base
             ? &ld->d
             : NULL;
}

/* get: a value other than a table stays in the handle's buffer, which is
 * then lent to the caller until it calls done (making the Lua string can run
 * a finalizer that calls this dict: that call must not move the buffer, so
 * it takes the C API's path, which then copies into a buffer of its own).
 * Every result but the pointer is a number (reading them makes no Lua
 * object, so no finalizer runs before all are read). */
static int ffi_get(void *ud, const char *k, size_t kl, int stale, int *type, const char **ptr,
                   uint32_t *len, uint32_t *flags, int *isstale) {
  shm_dict *d = ffi_dict(ud);
  dval v;
  int r, tries;
  if (d == NULL) return FFI_DETACHED;
  if (d->lent) return FFI_BUSY;
  v.len = 0;
  for (tries = 0;; tries++) {
    if (shm_buf_reserve(&d->buf, v.len) != 0) return FFI_NOMEM;
    r = shm_dict_get(d, k, kl, stale, &v, d->buf.p, d->buf.size);
    if (r != SHM_DICT_BUFSMALL || tries > 16) break;
  }
  if (r == SHM_OK) {
    *type = v.type;
    *ptr = v.ptr;
    *len = (uint32_t)v.len; /* (a value is at most 4 GiB) */
    *flags = v.flags;
    *isstale = v.stale;
    d->lent = v.type != DV_TABLE; /* (a table: the C API decodes it) */
  }
  return r;
}

/* The caller of get made its value: the buffer is the handle's again. */
static void ffi_done(void *ud) {
  if (ud != NULL) ((ldict *)ud)->d.lent = 0;
}

static int ffi_store(void *ud, int op, int safe, const char *k, size_t kl, int type,
                     const char *v, size_t vlen, uint32_t flags, double exptime, int *forcible) {
  shm_dict *d = ffi_dict(ud);
  dval val;
  if (d == NULL) return FFI_DETACHED;
  val.type = type;
  val.ptr = v;
  val.len = vlen;
  val.flags = flags;
  val.stale = 0;
  return shm_dict_store(d, op, safe, k, kl, &val, exptime, NULL, 0, forcible);
}

/* incr: *type and the 8 bytes at val are the step in, the new value out;
 * inittype 0: no init. */
static int ffi_incr(void *ud, const char *k, size_t kl, int *type, char *val, int inittype,
                    const char *init, double init_ttl, int *forcible) {
  shm_dict *d = ffi_dict(ud);
  dval io, in;
  int r;
  if (d == NULL) return FFI_DETACHED;
  io.type = *type;
  io.ptr = val;
  io.len = 8;
  in.type = inittype;
  in.ptr = init;
  in.len = 8;
  r = shm_dict_incr(d, k, kl, &io, inittype != 0 ? &in : NULL, init_ttl, forcible);
  *type = io.type;
  return r;
}

static int ffi_ttl(void *ud, const char *k, size_t kl, double *ttl) {
  shm_dict *d = ffi_dict(ud);
  return d == NULL ? FFI_DETACHED : shm_dict_ttl(d, k, kl, ttl);
}

static int ffi_expire(void *ud, const char *k, size_t kl, double exptime) {
  shm_dict *d = ffi_dict(ud);
  return d == NULL ? FFI_DETACHED : shm_dict_expire(d, k, kl, exptime);
}

static const char *ffi_why(void *ud) {
  ldict *ld = (ldict *)ud;
  return ld != NULL && ld->d.why != NULL ? ld->d.why : "?";
}

/* The table the front module casts shm.dict._ffi to (keep in step with the
 * cdef in lua/shm.lua). */
typedef struct shm_dict_ffi_api {
  int version;
  int (*get)(void *, const char *, size_t, int, int *, const char **, uint32_t *, uint32_t *, int *);
  int (*store)(void *, int, int, const char *, size_t, int, const char *, size_t, uint32_t, double,
               int *);
  int (*incr)(void *, const char *, size_t, int *, char *, int, const char *, double, int *);
  int (*ttl)(void *, const char *, size_t, double *);
  int (*expire)(void *, const char *, size_t, double);
  const char *(*why)(void *);
  void (*done)(void *);
} shm_dict_ffi_api;

static const shm_dict_ffi_api dict_ffi = {2,       ffi_get,    ffi_store, ffi_incr,
                                          ffi_ttl, ffi_expire, ffi_why,   ffi_done};

/* ======================================================================
 * The binding: arguments, values, results.  Everything here runs outside
 * the lock; the core above never sees a lua_State.
 * ====================================================================== */

/* The dict at 1, attached.  The methods carry the metatable as their first
 * upvalue: a type check by metatable identity without a registry lookup. */
static shm_dict *checkdict(lua_State *L) {
  /* shm_checkupclass, with one lua_rawequal for its two lua_topointer */
  ldict *ld = (ldict *)lua_touserdata(L, 1);
  if (ld == NULL || !lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1)))
    luaL_typeerror(L, 1, DICT_MT);
  lua_pop(L, 1);
  if (ld->seg->addr == NULL || ld->seg->addr != ld->d.base)
    luaL_error(L, "attempt to use a detached dict");
  return &ld->d;
}

static int raise_corrupt(lua_State *L, shm_dict *d) {
  return luaL_error(L, "shm.dict: corrupted dict (%s)", d->why != NULL ? d->why : "?");
}

/* The key at idx: NULL after pushing `nil, msg` (2 results) for a key ngx
 * refuses with a message.  Numbers (and, unless strict, anything else) are
 * converted with tostring, as ngx does; strict (the list methods) raises
 * for other types, as ngx's C methods do. */
static const char *checkkey(lua_State *L, int idx, size_t *kl, int strict) {
  const char *k;
  const char *err = NULL;
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING) { /* (the common case first) */
    k = lua_tolstring(L, idx, kl);
    if (*kl - 1 < D_MAXKEY) return k;
    err = *kl == 0 ? "empty key" : "key too long";
  } else if (t == LUA_TNONE || t == LUA_TNIL) err = "nil key";
  else if (t == LUA_TNUMBER)
    k = lua_tolstring(L, idx, kl);
  else if (strict)
    k = luaL_checklstring(L, idx, kl);
  else {
    k = luaL_tolstring(L, idx, kl);
    lua_replace(L, idx);
  }
  if (err == NULL && *kl == 0) err = "empty key";
  if (err == NULL && *kl > D_MAXKEY) err = "key too long";
  if (err == NULL) return k;
  lua_pushnil(L);
  lua_pushstring(L, err);
  return NULL;
}

/* A buffer of at least n bytes for the core to copy into (*cap: its size):
 * the handle's (grown outside the lock), or, while an FFI get holds that one
 * (a finalizer called us in the middle of it), a userdata pushed here. */
static char *dictbuf(lua_State *L, shm_dict *d, size_t n, size_t *cap) {
  if (d->lent) {
    *cap = n < 256 ? 256 : n;
    return (char *)lua_newuserdatauv(L, *cap, 0);
  }
  if (shm_buf_reserve(&d->buf, n) != 0) luaL_error(L, "not enough memory");
  *cap = d->buf.size;
  return d->buf.p;
}

/* The handle's buffer, lent to a caller that makes Lua values from what the
 * core copied into it: making a value can run a finalizer that calls this
 * dict again, which then grows a buffer of its own instead of moving this
 * one.  give_buf puts it back (or frees it, if a nested call made another). */
static void take_buf(shm_dict *d, shm_buf *lent) {
  *lent = d->buf;
  if (d->lent) { /* (the value is in a userdata of dictbuf's, not here) */
    lent->p = NULL;
    lent->size = 0;
    return;
  }
  d->buf.p = NULL;
  d->buf.size = 0;
}

static void give_buf(shm_dict *d, shm_buf *lent) {
  if (lent->p == NULL) return;
  if (d->buf.p == NULL) d->buf = *lent;
  else shm_buf_free(lent);
}

/* Push a value copied out of the dict (into `lent`, given back if it raises). */
static void pushvalue(lua_State *L, shm_dict *d, const dval *v, shm_buf *lent) {
  switch (v->type) {
  case DV_BOOL:
    lua_pushboolean(L, v->len > 0 && v->ptr[0] != 0);
    break;
  case DV_INT: {
    int64_t i = 0;
    if (v->len == 8) memcpy(&i, v->ptr, 8);
    lua_pushinteger(L, (lua_Integer)i);
    break;
  }
  case DV_NUM: {
    double n = 0;
    if (v->len == 8) memcpy(&n, v->ptr, 8);
    lua_pushnumber(L, (lua_Number)n);
    break;
  }
  case DV_TABLE: {
    dsrc s;
    int top = lua_gettop(L);
    s.p = (const unsigned char *)v->ptr;
    s.end = s.p + v->len;
    if (s.p == s.end || *s.p++ != '{' || !decode_table(L, &s, 1) || s.p != s.end) {
      lua_settop(L, top);
      if (lent != NULL) give_buf(d, lent);
      d->why = "bad table value";
      raise_corrupt(L, d);
    }
    break;
  }
  default:
    lua_pushlstring(L, v->ptr, v->len);
    break;
  }
}

/* Flags are pushed only when non-zero (as ngx), as the int32 ngx gives. */
static int pushflags(lua_State *L, uint32_t flags, int always) {
  if (flags == 0 && !always) return 0;
  if (flags == 0) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)(int32_t)flags);
  return 1;
}

/* Raise for a core failure that is not a result (a timeout is one: nil,
 * "timeout"). */
static int fail(lua_State *L, shm_dict *d, int r) {
  if (r == SHM_CORRUPT) return raise_corrupt(L, d);
  if (r == SHM_TIMEOUT) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  return luaL_error(L, "shm.dict: unexpected status %d", r);
}

/* nil and ngx's message for a status that is a result; raises otherwise. */
static int nilerr(lua_State *L, shm_dict *d, int r) {
  const char *msg;
  switch (r) {
  case SHM_DICT_NOTFOUND: msg = "not found"; break;
  case SHM_DICT_NOTNUM: msg = "not a number"; break;
  case SHM_DICT_NOMEM: msg = "no memory"; break;
  case SHM_DICT_NOTLIST: msg = "value not a list"; break;
  case SHM_DICT_ISLIST: msg = "value is a list"; break;
  default: return fail(L, d, r);
  }
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* ---- reads ---- */

/* the result of a get that found the value */
static int pushgot(lua_State *L, shm_dict *d, const dval *v, shm_buf *lent, int stale) {
  pushvalue(L, d, v, lent);
  if (lent != NULL) give_buf(d, lent);
  if (!stale) return 1 + pushflags(L, v->flags, 0);
  pushflags(L, v->flags, 1);
  lua_pushboolean(L, v->stale);
  return 3;
}

static int l_get_common(lua_State *L, int stale) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k = checkkey(L, 2, &kl, 0);
  char small[D_SMALLGET]; /* a small value is copied here: no buffer to lend */
  dval v;
  int r, tries;
  if (k == NULL) return 2;
  r = shm_dict_get(d, k, kl, stale, &v, small, sizeof small);
  if (r == SHM_OK) return pushgot(L, d, &v, NULL, stale);
  for (tries = 0; r == SHM_DICT_BUFSMALL; tries++) {
    size_t cap;
    char *buf = dictbuf(L, d, v.len, &cap);
    r = shm_dict_get(d, k, kl, stale, &v, buf, cap);
    if (r != SHM_DICT_BUFSMALL || tries > 16) break;
  }
  switch (r) {
  case SHM_OK: {
    shm_buf lent;
    take_buf(d, &lent);
    return pushgot(L, d, &v, &lent, stale);
  }
  case SHM_DICT_NOTFOUND:
    lua_pushnil(L);
    return 1;
  default:
    return nilerr(L, d, r);
  }
}

/***
A dictionary in shared memory with ngx.shared.DICT's API (see `shm.dict.create`).
@type dict
*/

/***
The value of a key, and its flags when they are not 0.
@function dict:get
@tparam string key (a number is converted with `tostring`)
@return the value (string, number, boolean or table), or `nil` when missing or expired
@treturn[opt] integer flags
@treturn[2] nil
@treturn[2] string `"nil key"`, `"empty key"`, `"key too long"` or `"value is a list"`
@usage local v, flags = d:get("user:42")
*/
static int l_get(lua_State *L) { return l_get_common(L, 0); }

/***
As `get`, but an expired value that is still in memory is returned too.
@function dict:get_stale
@tparam string key
@return the value
@treturn integer|nil flags
@treturn boolean stale: whether it has expired
@usage local v, _, stale = d:get_stale("config")
*/
static int l_get_stale(lua_State *L) { return l_get_common(L, 1); }

/* ---- stores ---- */

/* exptime at idx: nil/false = 0; raises for a negative or non-number. */
static double optexptime(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx) || (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)))
    return 0;
  if (lua_type(L, idx) != LUA_TNUMBER || lua_tonumber(L, idx) < 0)
    luaL_error(L, "bad \"exptime\" argument");
  return (double)lua_tonumber(L, idx);
}

static uint32_t optflags(lua_State *L, int idx) {
  lua_Number f;
  if (lua_isnoneornil(L, idx) || (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)))
    return 0;
  if (lua_type(L, idx) != LUA_TNUMBER) luaL_error(L, "bad \"flags\" argument");
  f = lua_tonumber(L, idx);
  /* as ngx, whose flags are a C int converted from the number: truncated, and
   * anything outside the int's range (or NaN) is -2^31 */
  if (!(f > -2147483649.0 && f < 2147483648.0)) return 0x80000000u;
  return (uint32_t)(int32_t)f;
}

static int store(lua_State *L, int op, int safe) {
  shm_dict *d = checkdict(L);
  double exptime = optexptime(L, 4);
  uint32_t flags = optflags(L, 5);
  size_t kl;
  const char *k;
  unsigned char num[8];
  dval v;
  int r, forcible = 0;
  if ((k = checkkey(L, 2, &kl, 0)) == NULL) return 2;
  if (!tovalue(L, 3, &v, num, 0)) {
    lua_pushnil(L);
    lua_pushliteral(L, "bad value type");
    return 2;
  }
  if (v.type == DV_NIL && op != OP_SET) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "attempt to add or replace nil values");
    lua_pushboolean(L, 0);
    return 3;
  }
  v.flags = flags;
  r = shm_dict_store(d, op, safe, k, kl, &v, exptime, NULL, 0, &forcible);
  if (r == SHM_CORRUPT || r == SHM_ERRNO) return fail(L, d, r);
  if (r == SHM_TIMEOUT) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "timeout");
    lua_pushboolean(L, 0);
    return 3;
  }
  lua_pushboolean(L, r == SHM_OK);
  switch (r) {
  case SHM_OK: lua_pushnil(L); break;
  case SHM_DICT_EXISTS: lua_pushliteral(L, "exists"); break;
  case SHM_DICT_NOTFOUND: lua_pushliteral(L, "not found"); break;
  case SHM_DICT_NOMEM: lua_pushliteral(L, "no memory"); break;
  default: return fail(L, d, r);
  }
  lua_pushboolean(L, forcible);
  return 3;
}

/***
Store a value (`nil` deletes), evicting least recently used items when full.
Values: strings (binary-safe), numbers (integers stay integers on Lua 5.3+),
booleans, and plain tables of those (nested; no cycles, functions or userdata).
@function dict:set
@tparam string key
@param value
@tparam[opt=0] number exptime seconds (millisecond resolution); 0 never expires
@tparam[opt=0] integer flags user flags, returned by `get`
@treturn boolean ok
@treturn string|nil err `"no memory"`
@treturn boolean forcible: whether live items were evicted to make room
@usage local ok, err, forcible = d:set("session:1", {user = "ann"}, 3600)
*/
static int l_set(lua_State *L) { return store(L, OP_SET, 0); }

/***
As `set`, but never evicts: `false, "no memory"` when full.
@function dict:safe_set
@tparam string key
@param value
@tparam[opt=0] number exptime seconds; 0 never expires
@tparam[opt=0] integer flags
@treturn boolean ok
@treturn string|nil err `"no memory"`
@treturn boolean forcible (always `false`)
@usage assert(d:safe_set("k", "v"))
*/
static int l_safe_set(lua_State *L) { return store(L, OP_SET, 1); }

/***
As `set`, only if the key is missing (or expired): else `false, "exists"`.
@function dict:add
@tparam string key
@param value (not `nil`)
@tparam[opt=0] number exptime seconds; 0 never expires
@tparam[opt=0] integer flags
@treturn boolean ok
@treturn string|nil err `"exists"`, `"no memory"`
@treturn boolean forcible
@usage if d:add("lock:job", true, 30) then run() end
*/
static int l_add(lua_State *L) { return store(L, OP_ADD, 0); }

/***
As `add`, but never evicts.
@function dict:safe_add
@tparam string key
@param value (not `nil`)
@tparam[opt=0] number exptime seconds; 0 never expires
@tparam[opt=0] integer flags
@treturn boolean ok
@treturn string|nil err `"exists"`, `"no memory"`
@treturn boolean forcible (always `false`)
@usage d:safe_add("k", 1)
*/
static int l_safe_add(lua_State *L) { return store(L, OP_ADD, 1); }

/***
As `set`, only if the key is there (and live): else `false, "not found"`.
@function dict:replace
@tparam string key
@param value (not `nil`)
@tparam[opt=0] number exptime seconds; 0 never expires
@tparam[opt=0] integer flags
@treturn boolean ok
@treturn string|nil err `"not found"`, `"no memory"`
@treturn boolean forcible
@usage d:replace("config", new)
*/
static int l_replace(lua_State *L) { return store(L, OP_REPLACE, 0); }

/***
Compare-and-set: store `value` only if the key holds `old_value` (and
`old_flags`, when given): `old_value` nil means "only if the key is missing".
Tables compare by content, numbers as Lua compares them (`1 == 1.0`).  The
comparison and the store are one atomic step with every other method, and a
process killed inside it leaves the old or the new value.  `value` nil deletes
the key (compare-and-delete).  Never evicts (as `safe_set`).
@function dict:cas
@tparam string key
@param value the new value (`nil`: delete)
@tparam[opt=0] number exptime
@tparam[opt=0] integer flags
@param old_value the value expected (`nil`: the key must be missing)
@tparam[opt] integer old_flags the flags expected (not compared when `nil`)
@treturn boolean true when stored
@treturn string|nil `"changed"` (the key holds something else; the current
value and flags follow), `"not found"` (the key is missing), `"no memory"`
@treturn boolean forcible (always `false`: cas never evicts)
@return the current value, when `"changed"`
@treturn integer|nil the current flags, when `"changed"`
@usage
repeat
  local v = d:get("config") or {}
  local new = update(v)
until d:cas("config", new, 0, 0, next(v) and v or nil)
*/
static int l_cas(lua_State *L) {
  shm_dict *d = checkdict(L);
  double exptime;
  uint32_t flags, oflags;
  int cmpflags, r, forcible = 0, tries, top;
  size_t kl;
  const char *k;
  unsigned char num[8], onum[8];
  dval v, x;
  lua_settop(L, 7); /* self key value exptime flags old_value old_flags */
  exptime = optexptime(L, 4);
  flags = optflags(L, 5);
  cmpflags = !lua_isnil(L, 7);
  oflags = optflags(L, 7);
  if ((k = checkkey(L, 2, &kl, 0)) == NULL) return 2;
  if (!tovalue(L, 3, &v, num, 0)) { /* (a table's bytes stay on the stack) */
    lua_pushnil(L);
    lua_pushliteral(L, "bad value type");
    return 2;
  }
  v.flags = flags;
  top = lua_gettop(L);
  for (tries = 0;; tries++) {
    lua_settop(L, top);
    if (lua_type(L, 6) == LUA_TTABLE) {
      /* a table compares by content: copy out what is there, compare it
       * here, then cas against exactly those bytes (again if they change) */
      dval cur;
      cur.len = 0;
      do {
        size_t cap;
        char *buf = dictbuf(L, d, cur.len, &cap);
        r = shm_dict_get(d, k, kl, 0, &cur, buf, cap);
      } while (r == SHM_DICT_BUFSMALL);
      if (r == SHM_OK && cur.type != DV_TABLE) r = SHM_DICT_CHANGED;
      if (r != SHM_OK) break;
      lua_pushlstring(L, cur.ptr, cur.len); /* top + 1: the bytes */
      x = cur;
      x.ptr = lua_tostring(L, top + 1);
      pushvalue(L, d, &x, NULL); /* top + 2: decoded */
      if (!sameluavalue(L, 6, top + 2, 1) || (cmpflags && cur.flags != oflags)) {
        r = SHM_DICT_CHANGED;
        break;
      }
    } else if (!tovalue(L, 6, &x, onum, 0)) {
      r = SHM_DICT_CHANGED; /* a value a dict never holds */
      break;
    }
    x.flags = oflags;
    r = shm_dict_store(d, OP_SET, 1, k, kl, &v, exptime, &x, cmpflags, &forcible);
    if (r != SHM_DICT_CHANGED || lua_type(L, 6) != LUA_TTABLE || tries >= 100) break;
  }
  lua_settop(L, top);
  if (r == SHM_CORRUPT || r == SHM_ERRNO) return fail(L, d, r);
  lua_pushboolean(L, r == SHM_OK);
  switch (r) {
  case SHM_OK: lua_pushnil(L); break;
  case SHM_DICT_CHANGED: lua_pushliteral(L, "changed"); break;
  case SHM_DICT_NOTFOUND: lua_pushliteral(L, "not found"); break;
  case SHM_DICT_NOMEM: lua_pushliteral(L, "no memory"); break;
  case SHM_TIMEOUT: lua_pushliteral(L, "timeout"); break;
  case SHM_DICT_ISLIST: lua_pushliteral(L, "changed"); r = SHM_DICT_CHANGED; break;
  default: return fail(L, d, r);
  }
  lua_pushboolean(L, forcible);
  if (r != SHM_DICT_CHANGED) return 3;
  /* what is there now, as get gives it (nil for a list) */
  lua_getfield(L, 1, "get");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2)) {
    lua_pushnil(L);
    lua_replace(L, -2);
  }
  return 5;
}

/***
Delete a key (as `set(key, nil)`).
@function dict:delete
@tparam string key
@treturn boolean true
@usage d:delete("session:1")
*/
static int l_delete(lua_State *L) {
  lua_settop(L, 2);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushnil(L);
  return store(L, OP_SET, 0);
}

/* A number at idx (numeric strings converted): 0 if none. */
static int tonum(lua_State *L, int idx, dval *v, unsigned char *num) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    lua_Number n;
#if LUA_VERSION_NUM >= 503
    if (lua_stringtonumber(L, lua_tostring(L, idx)) != 0) {
      lua_replace(L, idx);
      return tovalue(L, idx, v, num, 1);
    }
    return 0;
#else
    if (!lua_isnumber(L, idx)) return 0;
    n = lua_tonumber(L, idx);
    lua_pushnumber(L, n);
    lua_replace(L, idx);
#endif
    (void)n;
  }
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  return tovalue(L, idx, v, num, 1);
}

/***
Add `step` to a number: integers stay integers (Lua 5.3+), anything else adds as
floats.  A missing (or expired) key is made `init + step` when `init` is given.
@function dict:incr
@tparam string key
@tparam number step
@tparam[opt] number init
@tparam[opt] number init_ttl seconds, for a key made from `init`
@treturn number the new value
@treturn[opt] nil
@treturn[opt] boolean forcible (when `init` is given)
@treturn[2] nil
@treturn[2] string `"not found"`, `"not a number"`, `"no memory"`
@usage local hits = d:incr("hits", 1, 0)
*/
static int l_incr(lua_State *L) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k;
  unsigned char sb[8], ib[8];
  dval step, init;
  int hasinit, r, forcible = 0;
  double init_ttl = 0;
  lua_settop(L, 5);
  if ((k = checkkey(L, 2, &kl, 0)) == NULL) return 2;
  if (!tonum(L, 3, &step, sb))
    return luaL_error(L, "bad step arg: number expected, got %s", luaL_typename(L, 3));
  hasinit = lua_toboolean(L, 4);
  if (hasinit && !tonum(L, 4, &init, ib))
    return luaL_error(L, "bad init arg: number expected, got %s", luaL_typename(L, 4));
  if (!lua_isnil(L, 5)) {
    if (lua_type(L, 5) != LUA_TNUMBER && !lua_isnumber(L, 5))
      return luaL_error(L, "bad init_ttl arg: number expected, got %s", luaL_typename(L, 5));
    init_ttl = (double)lua_tonumber(L, 5);
    if (init_ttl < 0) return luaL_error(L, "bad \"init_ttl\" argument");
    if (!hasinit) return luaL_error(L, "must provide \"init\" when providing \"init_ttl\"");
  }
  r = shm_dict_incr(d, k, kl, &step, hasinit ? &init : NULL, init_ttl, &forcible);
  switch (r) {
  case SHM_OK:
    pushvalue(L, d, &step, NULL);
    if (!hasinit) return 1;
    lua_pushnil(L);
    lua_pushboolean(L, forcible);
    return 3;
  default: return nilerr(L, d, r);
  }
}

/* ---- lists ---- */

static void checkargs(lua_State *L, int n) {
  int top = lua_gettop(L);
  if (top != n) luaL_error(L, "expecting %d arguments, but only seen %d", n, top);
}

static int push(lua_State *L, int left) {
  shm_dict *d;
  size_t kl;
  const char *k;
  unsigned char num[8];
  dval v;
  uint32_t n = 0;
  int r;
  checkargs(L, 3);
  d = checkdict(L);
  if ((k = checkkey(L, 2, &kl, 1)) == NULL) return 2;
  if (!tovalue(L, 3, &v, num, 1)) {
    lua_pushnil(L);
    lua_pushliteral(L, "bad value type");
    return 2;
  }
  r = shm_dict_push(d, k, kl, left, &v, &n);
  switch (r) {
  case SHM_OK: lua_pushinteger(L, (lua_Integer)n); return 1;
  default: return nilerr(L, d, r);
  }
}

/***
Push to the head of a list (made when missing); lists hold strings and numbers.
@function dict:lpush
@tparam string key
@tparam string|number value
@treturn integer the list's length
@treturn[2] nil
@treturn[2] string `"value not a list"`, `"bad value type"`, `"no memory"`
@usage d:lpush("jobs", "job 1")
*/
static int l_lpush(lua_State *L) { return push(L, 1); }

/***
Push to the tail of a list.
@function dict:rpush
@tparam string key
@tparam string|number value
@treturn integer the list's length
@treturn[2] nil
@treturn[2] string `"value not a list"`, `"bad value type"`, `"no memory"`
@usage d:rpush("jobs", "job 2")
*/
static int l_rpush(lua_State *L) { return push(L, 0); }

static int pop(lua_State *L, int left) {
  shm_dict *d;
  size_t kl;
  const char *k;
  dval v;
  int r, tries;
  checkargs(L, 2);
  d = checkdict(L);
  if ((k = checkkey(L, 2, &kl, 1)) == NULL) return 2;
  v.len = 0;
  for (tries = 0;; tries++) {
    size_t cap;
    char *buf = dictbuf(L, d, v.len, &cap);
    r = shm_dict_pop(d, k, kl, left, &v, buf, cap);
    if (r != SHM_DICT_BUFSMALL || tries > 16) break;
  }
  switch (r) {
  case SHM_OK: {
    shm_buf lent;
    take_buf(d, &lent);
    pushvalue(L, d, &v, &lent);
    give_buf(d, &lent);
    return 1;
  }
  case SHM_DICT_NOTFOUND: lua_pushnil(L); return 1;
  default: return nilerr(L, d, r);
  }
}

/***
Pop from the head of a list; the last element takes the key with it.
@function dict:lpop
@tparam string key
@return the element, or `nil` when the list is empty or missing
@usage local job = d:lpop("jobs")
*/
static int l_lpop(lua_State *L) { return pop(L, 1); }

/***
Pop from the tail of a list.
@function dict:rpop
@tparam string key
@return the element, or `nil` when the list is empty or missing
@usage local last = d:rpop("jobs")
*/
static int l_rpop(lua_State *L) { return pop(L, 0); }

/***
The length of a list (0 when missing).  Takes no lock.
@function dict:llen
@tparam string key
@treturn integer
@usage print(d:llen("jobs"))
*/
static int l_llen(lua_State *L) {
  shm_dict *d;
  size_t kl;
  const char *k;
  uint32_t n = 0;
  int r;
  checkargs(L, 2);
  d = checkdict(L);
  if ((k = checkkey(L, 2, &kl, 1)) == NULL) return 2;
  r = shm_dict_llen(d, k, kl, &n);
  if (r == SHM_OK) {
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
  }
  return nilerr(L, d, r);
}

/* ---- expiry ---- */

/* seconds as an integer when whole (ttl 2^31 prints as ngx prints it) */
static void pushseconds(lua_State *L, double s) {
  if (s == floor(s) && fabs(s) < 9007199254740992.0) lua_pushinteger(L, (lua_Integer)s);
  else lua_pushnumber(L, (lua_Number)s);
}

/***
Seconds until a key expires (millisecond resolution): `0` if it never does; an
expired key still in memory gives a negative number (as ngx).  Takes no lock.
@function dict:ttl
@tparam string key
@treturn number
@treturn[2] nil
@treturn[2] string `"not found"`
@usage local left = d:ttl("session:1")
*/
static int l_ttl(lua_State *L) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k = checkkey(L, 2, &kl, 0);
  double t = 0;
  int r;
  if (k == NULL) return 2;
  r = shm_dict_ttl(d, k, kl, &t);
  if (r == SHM_OK) {
    pushseconds(L, t);
    return 1;
  }
  return nilerr(L, d, r);
}

/***
Set a key's time to live (`0`: never expires).
@function dict:expire
@tparam string key
@tparam number exptime seconds
@treturn boolean true
@treturn[2] nil
@treturn[2] string `"not found"`
@usage d:expire("session:1", 60)
*/
static int l_expire(lua_State *L) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k;
  double t;
  int r;
  if (lua_isnoneornil(L, 3) || (lua_type(L, 3) == LUA_TBOOLEAN && !lua_toboolean(L, 3)) ||
      !lua_isnumber(L, 3))
    return luaL_error(L, "bad \"exptime\" argument");
  t = (double)lua_tonumber(L, 3);
  if ((k = checkkey(L, 2, &kl, 0)) == NULL) return 2;
  r = shm_dict_expire(d, k, kl, t);
  if (r == SHM_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  return nilerr(L, d, r);
}

/***
Mark every item expired (`get_stale` still sees them until they are freed).
@function dict:flush_all
@usage d:flush_all()
*/
static int l_flush_all(lua_State *L) {
  shm_dict *d = checkdict(L);
  int r = shm_dict_flush_all(d);
  if (r != SHM_OK) return fail(L, d, r);
  return 0;
}

/* the optional max of flush_expired and get_keys: count checked as ngx */
static uint32_t optmax(lua_State *L, uint32_t def) {
  int top = lua_gettop(L);
  lua_Number m;
  if (top < 1 || top > 2) luaL_error(L, "expecting 1 or 2 argument(s), but saw %d", top);
  if (top == 1) return def;
  m = luaL_checknumber(L, 2); /* (a fraction truncated, as ngx's C int) */
  return !(m >= 1) ? 0 : m >= (lua_Number)UINT32_MAX ? UINT32_MAX : (uint32_t)m;
}

/***
Free expired items.
@function dict:flush_expired
@tparam[opt=0] integer max at most this many (0: all)
@treturn integer how many were freed
@usage d:flush_expired()
*/
static int l_flush_expired(lua_State *L) {
  uint32_t max = optmax(L, 0), n = 0;
  shm_dict *d = checkdict(L);
  int r = shm_dict_flush_expired(d, max, &n);
  if (r != SHM_OK) return fail(L, d, r);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/***
Live keys, least recently used first.  The keys are copied out under the lock
and turned into Lua strings after it is released.
@function dict:get_keys
@tparam[opt=1024] integer max at most this many (0: all)
@treturn {string,...}
@usage for _, k in ipairs(d:get_keys(0)) do print(k) end
*/
static int l_get_keys(lua_State *L) {
  uint32_t max = optmax(L, 1024), n = 0, i;
  shm_dict *d = checkdict(L);
  size_t need = 0, at = 0;
  shm_buf lent;
  int r, tries;
  char *buf = NULL;
  for (tries = 0;; tries++) {
    size_t cap;
    buf = dictbuf(L, d, need, &cap);
    r = shm_dict_keys(d, max, buf, cap, &need, &n);
    if (r != SHM_DICT_BUFSMALL || tries > 16) break;
  }
  if (r != SHM_OK) return fail(L, d, r);
  take_buf(d, &lent);
  lua_createtable(L, (int)(n < 1u << 24 ? n : 1u << 24), 0);
  for (i = 0; i < n && at + 2 <= need; i++) {
    uint16_t kl;
    memcpy(&kl, buf + at, 2);
    if (at + 2 + kl > need) break;
    lua_pushlstring(L, buf + at + 2, kl);
    lua_rawseti(L, -2, (int)i + 1);
    at += 2 + (size_t)kl;
  }
  give_buf(d, &lent);
  return 1;
}

/***
The dict's size in bytes (its segment's).
@function dict:capacity
@treturn integer
@usage print(d:capacity())
*/
static int l_capacity(lua_State *L) {
  shm_dict *d = checkdict(L);
  lua_pushinteger(L, (lua_Integer)d->size);
  return 1;
}

/***
Bytes in free blocks (a new dict's figure comes back when every key is deleted).
@function dict:free_space
@treturn integer
@usage print(d:free_space())
*/
static int l_free_space(lua_State *L) {
  shm_dict *d = checkdict(L);
  lua_pushinteger(L, (lua_Integer)((uint64_t)LOAD(&d->h->free_units) << D_UNITSHIFT));
  return 1;
}

/***
Figures: `count` (live keys), `capacity`, `free` (bytes), `evicted`, `expired`
(items freed after expiring), `recovered` (locks taken over from a process that
died holding them).  It checks the whole structure first (free lists against
the free space, the LRU list against the count): an inconsistency raises
`shm.dict: corrupted dict (...)`.
@function dict:stat
@treturn table
@usage print(d:stat().count)
*/
static int l_stat(lua_State *L) {
  shm_dict *d = checkdict(L);
  dstat st;
  int r = shm_dict_stat(d, &st);
  if (r != SHM_OK) return fail(L, d, r);
  lua_createtable(L, 0, 6);
  shm_setfield_int(L, "count", (lua_Integer)st.count);
  shm_setfield_int(L, "capacity", (lua_Integer)st.capacity);
  shm_setfield_int(L, "free", (lua_Integer)st.free);
  shm_setfield_int(L, "evicted", (lua_Integer)st.evicted);
  shm_setfield_int(L, "expired", (lua_Integer)st.expired);
  shm_setfield_int(L, "recovered", (lua_Integer)st.recovered);
  return 1;
}

/***
Remove the dict's segment from the system (as `segment:remove`).
@function dict:remove
@usage d:remove()
*/
static int l_remove(lua_State *L) { return shm_inseg_call(L, DICT_MT, "remove"); }

/***
Detach the dict's segment (as `segment:detach`); `<close>` does this (Lua 5.4).
@function dict:detach
@usage d:detach()
*/
static int l_detach(lua_State *L) { return shm_inseg_call(L, DICT_MT, "detach"); }

/***
The segment the dict lives in.
@function dict:segment
@treturn segment
@usage print(d:segment():stat().nattch)
*/
static int l_segment(lua_State *L) { return shm_inseg_segment(L, DICT_MT); }

/***
How long this handle's calls wait for the writers' lock when another process
holds it (a process that died holding it is detected at once and its change
rolled back; this bounds the wait for one that is alive but stopped, e.g. by
SIGSTOP or a debugger).  Past it a call returns `nil, "timeout"` (`set` and
its kind: `false, "timeout", false`).  Readers of keys the stopped writer is
not changing never wait.  Process-local; the default is 10 seconds.
@function dict:settimeout
@tparam number|nil seconds `nil` or a negative number: wait forever
@treturn dict the dict
@usage d:settimeout(0.5)
*/
static int l_settimeout(lua_State *L) {
  shm_dict *d = checkdict(L);
  lua_Number t = luaL_optnumber(L, 2, -1);
  d->timeout = t != t || t < 0 ? -1 : (double)t;
  lua_settop(L, 1);
  return 1;
}

/* d:_wake_offset(key): the byte offset in the dict's segment of the wake
 * word for key (a 64-bit counter for seg:wait/seg:notify; shm.lock uses it) */
static int l_wake_offset(lua_State *L) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k = luaL_checklstring(L, 2, &kl);
  uint32_t i = dict_hash(d->seed, k, kl) % D_NWAKE;
  lua_pushinteger(L, (lua_Integer)((unsigned char *)&d->h->wake[i] - d->base));
  return 1;
}

static int l_gc(lua_State *L) {
  ldict *ld = (ldict *)luaL_checkudata(L, 1, DICT_MT);
  shm_buf_free(&ld->d.buf);
  return 0;
}

static int l_tostring(lua_State *L) { return shm_inseg_tostring(L, DICT_MT); }

/* ---- constructors ---- */

/* Call the module's function `fn` (upvalue 2) with the n values on top of
 * the stack; leaves the segment and returns 1, or leaves nil, msg, errno
 * with the message renamed to `who` and returns 0. */
static int callseg(lua_State *L, const char *fn, int n, const char *who) {
  shm_segment_call(L, fn, n, sizeof(dhdr)); /* the heap: reserved as it is used */
  if (shm_inseg_failure(L, who)) return 0; /* (its hint says "pass a capacity") */
  lua_pop(L, 2);
  return 1;
}

/* Memory for what dict_format writes: everything before the heap, and the
 * header of each block it carves.  0 or an errno. */
static int reserve_format(shm_segment *s, const dgeom *g) {
  uint32_t at = 0, o;
  int en = shm_segment_reserve(s, 0, g->heap_off);
  for (o = g->maxorder + 1; en == 0 && o-- > 0;)
    if (g->nunits - at >= (1u << o)) {
      en = shm_segment_reserve(s, g->heap_off + ((size_t)at << D_UNITSHIFT), 3 * sizeof(uint32_t));
      at += 1u << o;
    }
  return en;
}

/* Wrap the segment on top of the stack as a dict, formatting fresh memory
 * when `init`; waits out another process's initialisation. */
static int newdict(lua_State *L, int init, const char *who, int objidx) {
  shm_segment *s = shm_checkopen(L, -1);
  int seg = lua_gettop(L), tries;
  dhdr *h = (dhdr *)(void *)s->addr;
  const char *why = NULL;
  shm_ctx *ctx = shm_getctx(L);
  ldict *ld;
  if (s->size < sizeof(dhdr)) why = "segment too small for a dict";
  else if (s->readonly) why = "a dict needs read-write access"; /* even readers write (the lock) */
  for (tries = 0; why == NULL && LOADACQ(&h->magic) != D_MAGIC; tries++) {
    shm_deadline dl;
    int r;
    if (s->readonly || LOADACQ(&h->magic) != 0) {
      why = "not a dict (bad magic)";
      break;
    }
    /* fresh memory, or someone formatting it: the lock serialises that */
    shm_deadline_after(&dl, 10);
    r = shm_lock_acquire(&h->lock, shm_ctx_self(ctx), &dl);
    if (r == SHM_TIMEOUT) { why = "initialisation timed out"; break; }
    if (LOADACQ(&h->magic) == 0 && init) {
      unsigned char *p = s->addr + D_CACHELINE * 2; /* everything after the lock line */
      dgeom g;
      if (!geometry(s->size, &g)) {
        why = "capacity out of range";
      } else if (reserve_format(s, &g) != 0) {
        why = "no memory to format it"; /* (the tmpfs or disk is full) */
      } else {
        uint32_t seed = (uint32_t)now_ms() ^ (uint32_t)getpid() * 2654435761u;
        memset(p, 0, sizeof(dhdr) - D_CACHELINE * 2);
        dict_format(s->addr, s->size, seed);
      }
    }
    shm_lock_release(&h->lock);
    if (why != NULL || LOADACQ(&h->magic) == D_MAGIC) break;
    if (tries >= 100) { why = "not a dict (bad magic)"; break; }
    /* created, not yet formatted by its creator: give it a moment */
    shm_deadline_after(&dl, 0.01);
    shm_futex_wait(shm_futex_word((int64_t *)(void *)&h->lock.word), 0, &dl);
  }
  ld = (ldict *)lua_newuserdatauv(L, sizeof *ld, 1);
  memset(ld, 0, sizeof *ld);
  if (why == NULL) why = dict_attach(&ld->d, s->addr, s->size);
  if (why != NULL) {
    const char *obj = shm_inseg_name(L, objidx);
    lua_pushnil(L);
    lua_pushfstring(L, "%s(%s): %s", who, obj, why);
    lua_pushinteger(L, EINVAL);
    return 3;
  }
  ld->d.ctx = ctx;
  ld->d.seg = s;
  ld->d.timeout = D_TIMEOUT;
  ld->seg = s;
  luaL_setmetatable(L, DICT_MT);
  lua_pushvalue(L, seg);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* a capacity argument, as a size the module's segment functions take */
static void checkcapacity(lua_State *L, int idx) {
  lua_Integer c = luaL_checkinteger(L, idx);
  dgeom g;
  if (c < (lua_Integer)D_MINCAP || !geometry((uint64_t)c, &g))
    luaL_argerror(L, idx, lua_pushfstring(L, "capacity out of range (%d bytes to 16 GiB)", (int)D_MINCAP));
}

/***
Make a dict in a new segment of `capacity` bytes (System V key or POSIX name, as
`shm.create`).  ngx.shared.DICT's methods, for any processes.
@function dict.create
@tparam integer|string key_or_name
@tparam integer capacity bytes (at least 16 KiB)
@tparam[opt="0600"] integer|string mode
@treturn dict
@error `nil, message, errno` (`EEXIST` if it exists)
@usage local d = assert(shm.dict.create("/cache", 16 * 1024 * 1024))
*/
static int l_create(lua_State *L) {
  lua_settop(L, 3);
  checkcapacity(L, 2);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  if (!callseg(L, "create", 3, "shm.dict.create")) return 3;
  if (newdict(L, 1, "shm.dict.create", 1) == 1) return 1;
  shm_inseg_drop(L, 4, 1); /* not made: leave nothing behind */
  return 3;
}

/***
Attach a dict; with `capacity`, a missing one is created (racing processes end
up on one dict, and one being initialised by another process is waited for).
@function dict.open
@tparam integer|string key_or_name
@tparam[opt] integer capacity
@tparam[opt="0600"] integer|string mode
@treturn dict
@error `nil, message, errno` (`ENOENT`; `EINVAL`: not a dict)
@usage local d = assert(shm.dict.open("/cache", 16 * 1024 * 1024))
*/
static int l_open(lua_State *L) {
  lua_settop(L, 3);
  if (!lua_isnil(L, 2)) checkcapacity(L, 2);
  shm_optmode(L, 3, 0600); /* checked here: shm.open's own position for it is #4 */
  lua_pushvalue(L, 1);
  lua_pushliteral(L, "rw");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  if (!callseg(L, "open", 4, "shm.dict.open")) return 3;
  if (newdict(L, !lua_isnil(L, 2), "shm.dict.open", 1) == 1) return 1;
  shm_inseg_drop(L, 4, 0);
  return 3;
}

/***
A dict in a shared file map: it outlives every process (and a reboot, after
`segment:sync`).  With `capacity` the file is created (or grown) and formatted
when new.
@function dict.map
@tparam string path
@tparam[opt] integer capacity
@treturn dict
@error `nil, message, errno`
@usage local d = assert(shm.dict.map("/var/lib/app/cache.dict", 1024 * 1024))
*/
static int l_map(lua_State *L) {
  lua_settop(L, 2);
  if (!lua_isnil(L, 2)) checkcapacity(L, 2);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  if (!callseg(L, "map", 2, "shm.dict.map")) return 3;
  if (newdict(L, !lua_isnil(L, 2), "shm.dict.map", 1) == 1) return 1;
  shm_inseg_drop(L, 3, 0);
  return 3;
}

static const luaL_Reg dict_methods[] = {
  {"get", l_get},         {"get_stale", l_get_stale},   {"set", l_set},
  {"safe_set", l_safe_set}, {"add", l_add},             {"safe_add", l_safe_add},
  {"replace", l_replace}, {"delete", l_delete},         {"incr", l_incr},
  {"lpush", l_lpush},     {"rpush", l_rpush},           {"lpop", l_lpop},
  {"rpop", l_rpop},       {"llen", l_llen},             {"ttl", l_ttl},
  {"expire", l_expire},   {"flush_all", l_flush_all},   {"flush_expired", l_flush_expired},
  {"get_keys", l_get_keys}, {"capacity", l_capacity},   {"free_space", l_free_space},
  {"stat", l_stat},       {"remove", l_remove},         {"detach", l_detach},
  {"segment", l_segment}, {"cas", l_cas}, {"settimeout", l_settimeout},
  {"_wake_offset", l_wake_offset}, {NULL, NULL}};

static const luaL_Reg dict_meta[] = {
  {"__gc", l_gc}, SHM_CLOSE_ENTRY(l_detach) {"__tostring", l_tostring}, {NULL, NULL}};

static const luaL_Reg dict_funcs[] = {
  {"create", l_create}, {"open", l_open}, {"map", l_map}, {NULL, NULL}};

void shm_open_dict(lua_State *L, int module, int methods) {
  int mt;
  (void)methods;
  shm_newclass(L, DICT_MT, NULL, dict_meta);
  luaL_getmetatable(L, DICT_MT);
  mt = lua_gettop(L);
  lua_newtable(L); /* methods: upvalue 1 the metatable (the type check) */
  lua_pushvalue(L, mt);
  luaL_setfuncs(L, dict_methods, 1);
  lua_setfield(L, mt, "__index");
  lua_newtable(L); /* shm.dict: upvalues the metatable and the module */
  lua_pushvalue(L, mt);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, dict_funcs, 2);
  /* where things are, for tools and specs (shm.dict.layout) */
  lua_createtable(L, 0, 8);
  shm_setfield_int(L, "lock", (lua_Integer)offsetof(dhdr, lock));
  shm_setfield_int(L, "gc_head", (lua_Integer)offsetof(dhdr, gc_head));
  shm_setfield_int(L, "nbuckets", (lua_Integer)offsetof(dhdr, nbuckets));
  shm_setfield_int(L, "nopen", (lua_Integer)offsetof(dhdr, nopen));
  shm_setfield_int(L, "count", (lua_Integer)offsetof(dhdr, count));
  shm_setfield_int(L, "lru_tail", (lua_Integer)offsetof(dhdr, lru_tail));
  shm_setfield_int(L, "freelist", (lua_Integer)offsetof(dhdr, freelist));
  shm_setfield_int(L, "jn", (lua_Integer)offsetof(dhdr, jn));
  shm_setfield_int(L, "journal", (lua_Integer)offsetof(dhdr, journal));
  shm_setfield_int(L, "heap_off", (lua_Integer)offsetof(dhdr, heap_off));
  shm_setfield_int(L, "header", (lua_Integer)HDRSIZE);
  shm_setfield_int(L, "entry", (lua_Integer)sizeof(dentry));
  shm_setfield_int(L, "unit", (lua_Integer)D_UNIT);
  lua_setfield(L, -2, "layout");
  /* for the LuaJIT FFI path: the entry points, the codes and the types */
  lua_pushlightuserdata(L, (void *)&dict_ffi);
  lua_setfield(L, -2, "_ffi");
  lua_createtable(L, 0, 24);
  shm_setfield_int(L, "OK", SHM_OK);
  shm_setfield_int(L, "CORRUPT", SHM_CORRUPT);
  shm_setfield_int(L, "TIMEOUT", SHM_TIMEOUT);
  shm_setfield_int(L, "NOTFOUND", SHM_DICT_NOTFOUND);
  shm_setfield_int(L, "EXISTS", SHM_DICT_EXISTS);
  shm_setfield_int(L, "NOMEM", SHM_DICT_NOMEM);
  shm_setfield_int(L, "NOTNUM", SHM_DICT_NOTNUM);
  shm_setfield_int(L, "NOTLIST", SHM_DICT_NOTLIST);
  shm_setfield_int(L, "ISLIST", SHM_DICT_ISLIST);
  shm_setfield_int(L, "DETACHED", FFI_DETACHED);
  shm_setfield_int(L, "OOM", FFI_NOMEM);
  shm_setfield_int(L, "BUSY", FFI_BUSY);
  shm_setfield_int(L, "NIL", DV_NIL);
  shm_setfield_int(L, "BOOL", DV_BOOL);
  shm_setfield_int(L, "NUM", DV_NUM);
  shm_setfield_int(L, "INT", DV_INT);
  shm_setfield_int(L, "STR", DV_STR);
  shm_setfield_int(L, "TABLE", DV_TABLE);
  shm_setfield_int(L, "LIST", DV_LIST);
  shm_setfield_int(L, "SET", OP_SET);
  shm_setfield_int(L, "ADD", OP_ADD);
  shm_setfield_int(L, "REPLACE", OP_REPLACE);
  lua_setfield(L, -2, "_ffi_codes");
  lua_setfield(L, module, "dict");
  lua_pop(L, 1);
}

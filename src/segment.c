/*
 * The segment object: a userdata owning one mapping of shared memory.
 * Modelled on liolib's streams: a closed (detached) state, one idempotent
 * closer used by detach, __close and __gc.  What differs between kinds
 * (System V, POSIX, file) is in the kind's table of operations (s->ops,
 * exported by sysv.c, posix.c and file.c): this file knows no kind.
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <string.h>

shm_segment *shm_newsegment(lua_State *L, const shm_ops *ops) {
  shm_segment *s = (shm_segment *)lua_newuserdatauv(L, sizeof(shm_segment), 1);
  memset(s, 0, sizeof *s);
  s->addr = NULL; /* detached until the caller maps it */
  s->ops = ops;
  s->fd = -1;
  s->shmid = -1;
  luaL_setmetatable(L, SHM_SEGMENT_MT);
  return s;
}

/* The class's metatable (class.c: in the registry, hidden behind
 * __metatable) serves detached segments.  An attached segment gets a
 * metatable of its own at its first indexing, whose __index is a plain table
 * of the methods and its fields, so that `seg:read(...)` costs a table
 * lookup rather than a call of an __index function (bench: small read64 and
 * pack, 60-80% dearer with the function).  Every one of those metatables,
 * and the class's, holds mt[&segment_key] = true: a light-userdata key that
 * Lua code cannot make, in tables Lua code cannot reach (__metatable hides
 * them: getmetatable gives the class name).  So the check below is as
 * unforgeable as a comparison of identities (both fall only to the debug
 * library, which can set any metatable), at the cost of one lookup. */
static const char segment_key = 0;

shm_segment *shm_checksegment(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    int ok = lua_rawgetp(L, -1, &segment_key) == LUA_TBOOLEAN;
    lua_pop(L, 2);
    if (ok) return (shm_segment *)p;
  }
  luaL_typeerror(L, idx, SHM_SEGMENT_MT);
  return NULL;
}

shm_segment *shm_checkopen(lua_State *L, int idx) {
  shm_segment *s = shm_checksegment(L, idx);
  if (s->addr == NULL) luaL_error(L, "attempt to use a detached segment");
  return s;
}

shm_segment *shm_checkwritable(lua_State *L, int idx) {
  shm_segment *s = shm_checkopen(L, idx);
  if (s->readonly) luaL_error(L, "attempt to write to a read-only segment");
  return s;
}

/* The one closer.  Idempotent; returns 0 or the errno of the failing call.
 * While pinned (shm_pin) the mapping is only parked: hidden now, unmapped
 * at the last unpin. */
static int closesegment(shm_segment *s) {
  s->resv_lo = s->resv_hi = 0; /* (shm_segment_reserve: EBADF from now on) */
  if (s->pins > 0) {
    if (s->addr != NULL) s->parked = s->addr;
    s->addr = NULL;
    return 0;
  }
  if (s->parked != NULL) {
    s->addr = s->parked;
    s->parked = NULL;
  }
  return s->addr != NULL || s->fd >= 0 ? s->ops->unmap(s) : 0;
}

void shm_unpin(shm_segment *s) {
  if (s->pins > 0 && --s->pins == 0 && s->parked != NULL) closesegment(s);
}

void shm_pushbuf(lua_State *L, shm_buf *b, int lent, shm_buf *own, size_t len) {
  if (!lent) {
    *own = *b;
    b->p = NULL;
    b->size = 0;
  }
  lua_pushlstring(L, own->p, len);
  if (!lent && b->p == NULL) *b = *own;
  else shm_buf_free(own);
}

/* (shm_pushbytes of a big string, protected) */
static int pushbig(lua_State *L) {
  lua_pushlstring(L, (const char *)lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
  return 1;
}

void shm_pushbytes(lua_State *L, shm_segment *s, const void *p, size_t n) {
  int r;
  if (n < 65536) {
    shm_pin(s);
    lua_pushlstring(L, (const char *)p, n); /* (5.1, 5.2, LuaJIT: may collect first) */
    shm_unpin(s);
    return;
  }
  /* A big string can fail (no memory; LuaJIT's length limit): the pin must
   * not outlive the failure (a later detach would only park the mapping). */
  luaL_checkstack(L, 3, NULL);
  shm_pin(s);
  lua_pushcfunction(L, pushbig);
  lua_pushlightuserdata(L, (void *)p);
  lua_pushinteger(L, (lua_Integer)n);
  r = lua_pcall(L, 2, 1, 0);
  shm_unpin(s);
  if (r != 0) lua_error(L);
}

/* shm_segment_reserve (shm.h) past its test of the range kept.  A request
 * that starts inside the kept range (or at its end) extends it to the end of
 * a step (on ENOSPC, only to what was asked): one system call per step for a
 * structure growing through its memory.  Any other is reserved as asked and
 * kept instead (the next request is likely near it).  A file system that
 * cannot reserve (EOPNOTSUPP) is taken as done, as at open.
 * @see fallocate(2) */
int shm_segment_reserve_more(shm_segment *s, size_t off, size_t len) {
  size_t end;
  int en;
  if (s->addr == NULL || s->readonly) return EBADF;
  if (off > s->size || len > s->size - off) return EINVAL;
  if (len == 0) return 0;
  end = off + len;
  if (off >= s->resv_lo && off <= s->resv_hi) { /* growing the kept range */
    size_t step = end + (SHM_RESERVE_STEP - end % SHM_RESERVE_STEP) % SHM_RESERVE_STEP;
    if (step > s->size) step = s->size;
    en = s->ops->reserve(s, s->resv_hi, step - s->resv_hi);
    if (en == ENOSPC && step > end) en = s->ops->reserve(s, s->resv_hi, (step = end) - s->resv_hi);
    if (en == 0) s->resv_hi = step;
  } else {
    en = s->ops->reserve(s, off, len);
    if (en == 0) {
      s->resv_lo = off;
      s->resv_hi = end;
    }
  }
  if (en == EOPNOTSUPP) {
    s->resv_lo = 0;
    s->resv_hi = s->size;
    return 0;
  }
  return en;
}

/* ---- data access ---- */

/***
A segment: one attachment of shared memory.
Fields: `size`, `kind` (`"sysv"`, `"posix"`, `"file"`), `readonly`, `key`, `id`
(System V), `name` (POSIX), `path` (file). `#seg` is its size;
`tostring(seg)` e.g. `shm.segment(sysv key=0x46010004 id=3 size=4096 rw)`.
`__close` and `__gc` detach it (never remove it).

Truncation: a POSIX object or a file that another process shrinks (`ftruncate`,
`truncate`) while it is mapped here leaves pages with nothing behind them, and the
kernel answers a touch of one with SIGBUS, which kills the process.  The calls that
touch the bytes can fault that way: `read`, `write`, `fill`, `pack`, `unpack`, `load`,
`store`, `add`, `cas`, `wait`, `mutex` and every mutex method, a queue's `push`, `pop`,
`stat` and `close`.  The others only make system calls on the object and return:
`stat` (its `size` shows the truncation), `sync`, `chmod`, `chown`, `remove`, `detach`,
`notify`, the fields, `#` and `tostring`.  Catching SIGBUS would take a process-wide
signal handler, which a library must not install, and checking the size before each
access would still race with the truncation: so this is not caught.  Share POSIX
objects and files only with processes trusted not to shrink them (mode `0600`), or
use System V segments, which cannot be resized.
@type segment
*/

/***
Read bytes.
@function segment:read
@tparam[opt=0] integer offset
@tparam[opt] integer length default: to the end
@treturn string
@raise on an offset or length out of range
@usage local header = seg:read(0, 16)
*/
static int seg_read(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  size_t off = shm_optoffset(L, 2, s, 0);
  size_t len = shm_optlength(L, 3, s, off);
  shm_pushbytes(L, s, s->addr + off, len);
  return 1;
}

/***
Copy a string in.  Never truncates: raises if it does not fit (nothing is written).
@function segment:write
@tparam string data
@tparam[opt=0] integer offset
@treturn segment itself
@usage seg:write("hello", 0):write("world", 5)
*/
static int seg_write(lua_State *L) {
  shm_segment *s = shm_checkwritable(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  size_t off = shm_optoffset(L, 3, s, 0);
  if (len > s->size - off)
    return luaL_error(L, "write of %I bytes at offset %I does not fit (segment size %I)",
                      (lua_Integer)len, (lua_Integer)off, (lua_Integer)s->size);
  memcpy(s->addr + off, data, len);
  lua_settop(L, 1);
  return 1;
}

/***
Set a range to one byte value.
@function segment:fill
@tparam integer|string byte 0 to 255, or a one-character string
@tparam[opt=0] integer offset
@tparam[opt] integer length default: to the end
@treturn segment itself
@usage seg:fill(0)
@see memset(3)
*/
static int seg_fill(lua_State *L) {
  shm_segment *s = shm_checkwritable(L, 1);
  int byte = shm_checkbyte(L, 2, "byte value");
  size_t off = shm_optoffset(L, 3, s, 0);
  size_t len = shm_optlength(L, 4, s, off);
  memset(s->addr + off, byte, len);
  lua_settop(L, 1);
  return 1;
}

/* ---- management ---- */

/***
Information about the object: always `kind`, `size`, `mode`, `uid`, `gid`;
System V adds `key id cuid cgid cpid lpid nattch atime dtime ctime removed`;
POSIX and file maps add `name`/`path`, `atime mtime ctime`.
@function segment:stat
@treturn table
@error `nil, message, errno`
@usage print(seg:stat().nattch)
@see shmctl(2), fstat(2)
*/
static int seg_stat(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  return s->ops->stat(L, s);
}

/***
Remove the object from the system (`IPC_RMID`, `shm_unlink`, `unlink`).  The memory
stays valid for every process still attached.
@function segment:remove
@treturn boolean true
@error `nil, message, errno`
@usage seg:remove()
@see shmctl(2), shm_unlink(3), unlink(2)
*/
static int seg_remove(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  return s->ops->remove(L, s);
}

static void checknotheld(lua_State *L, shm_segment *s) {
  if (s->held > 0 && s->addr != NULL)
    luaL_error(L, "cannot detach: this process holds %d mutex(es) in the segment (unlock first)",
               s->held);
}

/***
Unmap now; any later use raises `attempt to use a detached segment`.  Harmless to
repeat.  Raises while this process holds a mutex in the segment.  A detach made
while a `read` or `unpack` of the segment is making its strings (by a finalizer
that the allocation ran) takes effect at once for every later call, and the
memory is unmapped when that read ends.
@function segment:detach
@treturn boolean true
@usage seg:detach()
@see shmdt(2), munmap(2)
*/
static int seg_detach(lua_State *L) {
  shm_segment *s = shm_checksegment(L, 1);
  int en;
  checknotheld(L, s);
  en = closesegment(s);
  lua_settop(L, 1); /* (__close passes an error object too) */
  luaL_setmetatable(L, SHM_SEGMENT_MT); /* the class's again: fields raise */
  if (en != 0) {
    s->ops->describe(L, s);
    return shm_fail(L, en, "seg:detach(%s)", lua_tostring(L, -1));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/***
`msync` a file map to its file; nothing for other kinds.
@function segment:sync
@treturn boolean true
@error `nil, message, errno`
@usage seg:write(data):sync()
@see msync(2)
*/
static int seg_sync(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  return s->ops->sync(L, s);
}

/***
Change the permission bits (`IPC_SET` or `fchmod`).
@function segment:chmod
@tparam integer|string mode
@treturn boolean true
@error `nil, message, errno`
@usage seg:chmod("0640")
@see shmctl(2), fchmod(2)
*/
static int seg_chmod(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  return s->ops->chmod(L, s, shm_checkmode(L, 2));
}

/* uid/gid: an integer, or nil to leave it unchanged. */
static unsigned optid(lua_State *L, int arg) {
  lua_Integer v;
  if (lua_isnoneornil(L, arg)) return (unsigned)-1;
  v = luaL_checkinteger(L, arg);
  luaL_argcheck(L, v >= 0 && v < (lua_Integer)UINT32_MAX, arg, "id out of range");
  return (unsigned)v;
}

/***
Change the owner (`IPC_SET` or `fchown`); `nil` leaves an id unchanged.
@function segment:chown
@tparam[opt] integer uid
@tparam[opt] integer gid
@treturn boolean true
@error `nil, message, errno`
@usage seg:chown(1000, nil)
@see shmctl(2), fchown(2)
*/
static int seg_chown(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  uid_t uid = (uid_t)optid(L, 2);
  gid_t gid = (gid_t)optid(L, 3);
  return s->ops->chown(L, s, uid, gid);
}

/* ---- metamethods ---- */

/* __gc: a segment holding a locked mutex of ours stays mapped (glibc's
 * robust list points into it); mutex objects unlock when collected, and
 * they are collected before the segment they keep alive. */
static int seg_gc(lua_State *L) {
  shm_segment *s = shm_checksegment(L, 1);
  s->pins = 0; /* (no read of it runs now: one an error ended left its pin) */
  if (s->held == 0) closesegment(s);
  return 0;
}


static int seg_len(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  lua_pushinteger(L, (lua_Integer)s->size);
  return 1;
}

static int seg_tostring(lua_State *L) {
  shm_segment *s = shm_checksegment(L, 1);
  const char *rw = s->readonly ? "r" : "rw";
  if (s->addr == NULL) {
    lua_pushfstring(L, "shm.segment(%s detached)", s->ops->kind);
    return 1;
  }
  s->ops->describe(L, s);
  if (s->ops->namefield != NULL)
    lua_pushfstring(L, "shm.segment(%s %s=%s size=%I %s)", s->ops->kind, s->ops->namefield,
                    lua_tostring(L, -1), (lua_Integer)s->size, rw);
  else
    lua_pushfstring(L, "shm.segment(%s %s size=%I %s)", s->ops->kind, lua_tostring(L, -1),
                    (lua_Integer)s->size, rw);
  return 1;
}

/* The fields: the same for every kind, then the kind's own (key and id,
 * name, path), nil for a kind that has not this one. */
static const char *const fieldnames[] = {"size", "kind", "readonly", "key", "id", "name", "path", NULL};

static void pushfield(lua_State *L, shm_segment *s, const char *k) {
  if (strcmp(k, "size") == 0) lua_pushinteger(L, (lua_Integer)s->size);
  else if (strcmp(k, "kind") == 0) lua_pushstring(L, s->ops->kind);
  else if (strcmp(k, "readonly") == 0) lua_pushboolean(L, s->readonly);
  else if (!s->ops->field(L, s, k)) lua_pushnil(L);
}

/* to[k] = from[k] for every k (raw). */
static void copyfields(lua_State *L, int from, int to) {
  for (lua_pushnil(L); lua_next(L, from);) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, to);
  }
}

/* __index of the class metatable (upvalues: the methods, the metatable).  An attached segment gets its own metatable here; a detached one
 * finds its methods (which raise when called) and raises for its fields. */
static int seg_index(lua_State *L) {
  shm_segment *s = shm_checksegment(L, 1);
  int i;
  lua_settop(L, 2);
  if (s->addr == NULL) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL || lua_type(L, 2) != LUA_TSTRING) return 1;
    for (i = 0; fieldnames[i] != NULL; i++)
      if (strcmp(lua_tostring(L, 2), fieldnames[i]) == 0)
        return luaL_error(L, "attempt to use a detached segment");
    return 1;
  }
  lua_createtable(L, 0, 8);                /* 3: the segment's metatable */
  copyfields(L, lua_upvalueindex(2), 3);
  lua_createtable(L, 0, 32);               /* 4: its __index */
  copyfields(L, lua_upvalueindex(1), 4);
  for (i = 0; fieldnames[i] != NULL; i++) {
    pushfield(L, s, fieldnames[i]);
    lua_setfield(L, 4, fieldnames[i]);
  }
  lua_pushvalue(L, 4);
  lua_setfield(L, 3, "__index");           /* (the key came with the class's fields) */
  lua_pushvalue(L, 3);
  lua_setmetatable(L, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, 4);
  return 1;
}

static const luaL_Reg seg_methods[] = {
  {"read", seg_read},       {"write", seg_write},   {"fill", seg_fill},
  {"stat", seg_stat},       {"remove", seg_remove}, {"detach", seg_detach},
  {"sync", seg_sync},       {"chmod", seg_chmod},   {"chown", seg_chown},
  {NULL, NULL}};

static const luaL_Reg seg_meta[] = {
  {"__gc", seg_gc},   SHM_CLOSE_ENTRY(seg_detach) {"__len", seg_len},
  {"__tostring", seg_tostring}, {NULL, NULL}};

/* The class (metatable hidden behind __metatable, class.c); leaves the
 * methods table on the stack so that what lives in a segment (atomics,
 * pack, mutexes) can add to it. */
void shm_open_segment(lua_State *L) {
  shm_newclass(L, SHM_SEGMENT_MT, NULL, seg_meta);
  luaL_getmetatable(L, SHM_SEGMENT_MT);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &segment_key);
  luaL_newlib(L, seg_methods);
  lua_pushvalue(L, -1);
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, seg_index, 2);
  lua_setfield(L, -3, "__index");
  lua_remove(L, -2); /* metatable */
}

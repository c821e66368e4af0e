/*
 * The segment object: a userdata owning one mapping of shared memory.
 * Modelled on liolib's streams: a closed (detached) state, one idempotent
 * closer used by detach, __close and __gc.
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

static const char *const kindnames[] = {"sysv", "posix", "file"};

shm_segment *shm_newsegment(lua_State *L, int kind) {
  shm_segment *s = (shm_segment *)lua_newuserdatauv(L, sizeof(shm_segment), 1);
  memset(s, 0, sizeof *s);
  s->addr = NULL; /* detached until the caller maps it */
  s->kind = kind;
  s->fd = -1;
  s->shmid = -1;
  luaL_setmetatable(L, SHM_SEGMENT_MT);
  return s;
}

/* Every segment metatable carries mt[&segment_key] = true, and the shared
 * one is also in the registry under that address.  An attached segment gets
 * a metatable of its own on first indexing, whose __index is a plain table of
 * the methods and its fields, so that `seg:read(...)` costs a table lookup
 * rather than a call of an __index function. */
static const char segment_key = 0;

shm_segment *shm_checksegment(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    int marked = lua_rawgetp(L, -1, &segment_key) == LUA_TBOOLEAN;
    lua_pop(L, 2);
    if (marked) return (shm_segment *)p;
  }
  luaL_typeerror(L, idx, SHM_SEGMENT_MT);
  return NULL;
}

/* Back to the shared metatable (after detach: fields raise again). */
static void shared_metatable(lua_State *L, int idx) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &segment_key);
  lua_setmetatable(L, idx);
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

/* The one closer.  Idempotent; returns 0 or the errno of the failing call. */
int shm_detach_segment(shm_segment *s) {
  int en = 0;
  if (s->addr != NULL) {
    if (s->kind == SHM_SYSV) {
      if (shmdt(s->addr) != 0) en = errno;
    } else if (munmap(s->addr, s->maplen) != 0) {
      en = errno;
    }
    s->addr = NULL;
  }
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  return en;
}

/* Push a short description of the object for messages: "0x1234", "/name", "path". */
void shm_describe(lua_State *L, int idx) {
  shm_segment *s = shm_checksegment(L, idx);
  if (s->kind == SHM_SYSV) {
    char buf[48];
    snprintf(buf, sizeof buf, "key=0x%x id=%d", (unsigned)s->key, s->shmid);
    lua_pushstring(L, buf);
  } else {
    lua_getiuservalue(L, idx, 1);
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "?");
    }
  }
}

/* ---- data access ---- */

/***
A segment: one attachment of shared memory.
Fields: `size`, `kind` (`"sysv"`, `"posix"`, `"file"`), `readonly`, `key`, `id`
(System V), `name` (POSIX), `path` (file). `#seg` is its size;
`tostring(seg)` e.g. `shm.segment(sysv key=0x46010004 id=3 size=4096 rw)`.
`__close` and `__gc` detach it (never remove it).
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
  size_t off = shm_checkoffset(L, 2, s, 0);
  size_t len = shm_checklength(L, 3, s, off);
  lua_pushlstring(L, (const char *)s->addr + off, len);
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
  size_t off = shm_checkoffset(L, 3, s, 0);
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
*/
static int seg_fill(lua_State *L) {
  shm_segment *s = shm_checkwritable(L, 1);
  int byte;
  size_t off, len;
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t l;
    const char *c = lua_tolstring(L, 2, &l);
    luaL_argcheck(L, l == 1, 2, "a one-character string or a byte value expected");
    byte = (unsigned char)c[0];
  } else {
    lua_Integer b = luaL_checkinteger(L, 2);
    luaL_argcheck(L, b >= 0 && b <= 255, 2, "byte value out of range (0 to 255)");
    byte = (int)b;
  }
  off = shm_checkoffset(L, 3, s, 0);
  len = shm_checklength(L, 4, s, off);
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
*/
static int seg_stat(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  return s->kind == SHM_SYSV ? shm_sysv_stat(L, s) : shm_fd_stat(L, s);
}

/***
Remove the object from the system (`IPC_RMID`, `shm_unlink`, `unlink`).  The memory
stays valid for every process still attached.
@function segment:remove
@treturn boolean true
@error `nil, message, errno`
@usage seg:remove()
*/
static int seg_remove(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  return s->kind == SHM_SYSV ? shm_sysv_remove(L, s) : shm_fd_remove(L, s);
}

static void checknotheld(lua_State *L, shm_segment *s) {
  if (s->held > 0 && s->addr != NULL)
    luaL_error(L, "cannot detach: this process holds %d mutex(es) in the segment (unlock first)",
               s->held);
}

/***
Unmap now; any later use raises `attempt to use a detached segment`.  Harmless to
repeat.  Raises while this process holds a mutex in the segment.
@function segment:detach
@treturn boolean true
@usage seg:detach()
*/
static int seg_detach(lua_State *L) {
  shm_segment *s = shm_checksegment(L, 1);
  int en;
  checknotheld(L, s);
  en = shm_detach_segment(s);
  shared_metatable(L, 1);
  if (en != 0) {
    lua_settop(L, 1);
    shm_describe(L, 1);
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
*/
static int seg_sync(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  if (s->kind == SHM_FILE) return shm_fd_sync(L, s);
  lua_pushboolean(L, 1);
  return 1;
}

/***
Change the permission bits (`IPC_SET` or `fchmod`).
@function segment:chmod
@tparam integer|string mode
@treturn boolean true
@error `nil, message, errno`
@usage seg:chmod("0640")
*/
static int seg_chmod(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  int mode;
  luaL_checkany(L, 2);
  mode = shm_checkmode(L, 2, 0);
  return s->kind == SHM_SYSV ? shm_sysv_chmod(L, s, mode) : shm_fd_chmod(L, s, mode);
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
*/
static int seg_chown(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  uid_t uid = (uid_t)optid(L, 2);
  gid_t gid = (gid_t)optid(L, 3);
  return s->kind == SHM_SYSV ? shm_sysv_chown(L, s, uid, gid) : shm_fd_chown(L, s, uid, gid);
}

/* ---- metamethods ---- */

/* __gc: a segment holding a locked mutex of ours stays mapped (glibc's
 * robust list points into it); mutex objects unlock when collected, and
 * they are collected before the segment they keep alive. */
static int seg_gc(lua_State *L) {
  shm_segment *s = shm_checksegment(L, 1);
  if (s->held == 0) shm_detach_segment(s);
  return 0;
}


static int seg_len(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  lua_pushinteger(L, (lua_Integer)s->size);
  return 1;
}

static int seg_tostring(lua_State *L) {
  shm_segment *s = shm_checksegment(L, 1);
  if (s->addr == NULL) {
    lua_pushfstring(L, "shm.segment(%s detached)", kindnames[s->kind]);
    return 1;
  }
  if (s->kind == SHM_SYSV) {
    shm_describe(L, 1);
    lua_pushfstring(L, "shm.segment(sysv %s size=%I %s)", lua_tostring(L, -1),
                    (lua_Integer)s->size, s->readonly ? "r" : "rw");
  } else {
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "shm.segment(%s %s=%s size=%I %s)", kindnames[s->kind],
                    s->kind == SHM_POSIX ? "name" : "path", lua_tostring(L, -1),
                    (lua_Integer)s->size, s->readonly ? "r" : "rw");
  }
  return 1;
}

/* Push the value of field k of an attached segment (nil if not a field). */
static void pushfield(lua_State *L, shm_segment *s, const char *k) {
  if (strcmp(k, "size") == 0) lua_pushinteger(L, (lua_Integer)s->size);
  else if (strcmp(k, "kind") == 0) lua_pushstring(L, kindnames[s->kind]);
  else if (strcmp(k, "readonly") == 0) lua_pushboolean(L, s->readonly);
  else if (strcmp(k, "key") == 0 && s->kind == SHM_SYSV) lua_pushinteger(L, (lua_Integer)(uint32_t)s->key);
  else if (strcmp(k, "id") == 0 && s->kind == SHM_SYSV) lua_pushinteger(L, s->shmid);
  else if ((strcmp(k, "name") == 0 && s->kind == SHM_POSIX) ||
           (strcmp(k, "path") == 0 && s->kind == SHM_FILE))
    lua_getiuservalue(L, 1, 1);
  else lua_pushnil(L);
}

/* to[k] = from[k] for every k (raw). */
static void copyfields(lua_State *L, int from, int to) {
  for (lua_pushnil(L); lua_next(L, from);) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, to);
  }
}

static const char *const fieldnames[] = {"size", "kind", "readonly", "key", "id", "name", "path", NULL};

/* __index of the shared metatable (upvalues: the methods, the metatable).
 * An attached segment gets its own metatable here; a detached one finds its
 * methods (which raise when called) and raises for its fields. */
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
  lua_setfield(L, 3, "__index");
  lua_pushvalue(L, 3);
  lua_setmetatable(L, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, 4);
  return 1;
}

static const luaL_Reg seg_methods[] = {
  {"read", seg_read},       {"write", seg_write},   {"fill", seg_fill},
  {"pack", shm_seg_pack},   {"unpack", shm_seg_unpack},
  {"stat", seg_stat},       {"remove", seg_remove}, {"detach", seg_detach},
  {"sync", seg_sync},       {"chmod", seg_chmod},   {"chown", seg_chown},
  {NULL, NULL}};

static const luaL_Reg seg_meta[] = {
  {"__gc", seg_gc},   SHM_CLOSE_ENTRY(seg_detach) {"__len", seg_len},
  {"__tostring", seg_tostring}, {NULL, NULL}};

/* Creates the metatable; leaves the methods table on the stack so that other
 * parts (atomics, mutex) can add to it. */
void shm_open_segment_mt(lua_State *L) {
  luaL_newmetatable(L, SHM_SEGMENT_MT);
  luaL_setfuncs(L, seg_meta, 0);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &segment_key);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &segment_key);
  luaL_newlib(L, seg_methods);
  lua_pushvalue(L, -1);
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, seg_index, 2);
  lua_setfield(L, -3, "__index");
  lua_remove(L, -2); /* metatable */
}

/*
 * Argument checking and the `nil, message, errno` convention.
 */
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

/* Push nil, "<what>: <strerror(en)>", en.  `en` must have been saved by the
 * caller right after the failing call, before any Lua API call. */
static int pusherror(lua_State *L, int en, const char *fmt, va_list ap) {
  char what[512]; /* printf formats (%x for keys), unlike lua_pushfstring */
  vsnprintf(what, sizeof what, fmt, ap);
  luaL_checkstack(L, 3, NULL);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(en));
  lua_pushinteger(L, en);
  return 3;
}

int shm_fail(lua_State *L, int en, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = pusherror(L, en, fmt, ap);
  va_end(ap);
  return n;
}

/* luaL_fileresult with a formatted object description: true or nil, msg, errno. */
int shm_ok(lua_State *L, int ok, int en, const char *fmt, ...) {
  va_list ap;
  int n;
  if (ok) {
    lua_pushboolean(L, 1);
    return 1;
  }
  va_start(ap, fmt);
  n = pusherror(L, en, fmt, ap);
  va_end(ap);
  return n;
}

int shm_hint(lua_State *L, const char *hint) {
  lua_pushfstring(L, "%s (%s)", lua_tostring(L, -2), hint);
  lua_replace(L, -3);
  return 3;
}

/* ---- argument errors, named as the user called the function ----
 * lauxlib's luaL_argerror names the function from the call information
 * (ar.name): "?" or the name the caller's frame gives when one C function of
 * ours calls another (shm.dict.open calls shm.open: "bad argument #1 to
 * 'shm.open'", no position), when a Lua wrapper calls it (LuaJIT's FFI
 * layer), when it is called through pcall.  Here the name comes from the
 * function itself: luaopen_shm_core names every function of the module once
 * (shm_open_names: registry[&names_key][f] = "shm.dict.open", "dict:set"),
 * and an error raised in a chain of C functions calling each other is
 * reported for the outermost of ours (the one the user called), at its
 * caller's position.  shm.h routes luaL_argerror, luaL_typeerror and the luaL_check*
 * functions the module uses here, in every file. */
static const char names_key = 0;

/* names[f] = prefix .. sep .. k for every function f = t[k] with a string key
 * (the first name found for a function is kept). */
static void namefuncs(lua_State *L, int names, int t, const char *prefix, const char *sep) {
  for (lua_pushnil(L); lua_next(L, t);) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TFUNCTION) {
      lua_pushvalue(L, -1);
      if (lua_rawget(L, names) == LUA_TNIL) {
        lua_pushvalue(L, -2);
        lua_pushfstring(L, "%s%s%s", prefix, sep, lua_tostring(L, -4));
        lua_rawset(L, names);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

void shm_open_names(lua_State *L, int module) {
  int names;
  lua_newtable(L);
  names = lua_gettop(L);
  /* shm.create, ... and shm.queue.create, shm.dict.open, ... */
  namefuncs(L, names, module, "shm", ".");
  for (lua_pushnil(L); lua_next(L, module);) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
      lua_pushfstring(L, "shm.%s", lua_tostring(L, -2));
      namefuncs(L, names, lua_gettop(L) - 1, lua_tostring(L, -1), ".");
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  /* the methods of every class (shm_newclass: registry["shm.X"], __name "shm.X"):
   * "segment:read", "dict:set"; __index is the methods table, or a function
   * whose first upvalue is (the segment's) */
  for (lua_pushnil(L); lua_next(L, LUA_REGISTRYINDEX);) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    if (k != NULL && strncmp(k, "shm.", 4) == 0 && lua_istable(L, -1)) {
      int mt = lua_gettop(L);
      lua_getfield(L, mt, "__name");
      if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), k) == 0) {
        lua_getfield(L, mt, "__index");
        if (lua_iscfunction(L, -1) && lua_getupvalue(L, -1, 1) != NULL) lua_remove(L, -2);
        if (lua_istable(L, -1)) namefuncs(L, names, lua_gettop(L), k + 4, ":");
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &names_key);
}

int shm_argerror(lua_State *L, int arg, const char *extramsg) {
  lua_Debug ar;
  const char *name = NULL;
  int level, outer = -1, names;
  luaL_checkstack(L, 4, NULL);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &names_key);
  names = lua_gettop(L);
  /* the C frames above the first Lua one: the outermost of ours named there
   * (one of ours may call another through a helper closure of no name) */
  for (level = 0; lua_istable(L, names) && lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sf", &ar);
    if (strcmp(ar.what, "C") != 0) {
      lua_pop(L, 1);
      break;
    }
    if (lua_rawget(L, names) == LUA_TSTRING) {
      name = lua_tostring(L, -1); /* (stays on the stack) */
      outer = level;
    } else {
      lua_pop(L, 1);
    }
  }
  if (outer < 0) { /* not one of the module's functions: lauxlib's way */
    if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.namewhat != NULL &&
        strcmp(ar.namewhat, "method") == 0)
      arg--;
    name = ar.name != NULL ? ar.name : "?";
    outer = 0;
  } else if (strchr(name, ':') != NULL) {
    arg--; /* a method: self is not counted */
  }
  luaL_where(L, outer + 1);
  if (arg == 0)
    lua_pushfstring(L, "calling '%s' on bad self (%s)", name, extramsg);
  else
    lua_pushfstring(L, "bad argument #%d to '%s' (%s)", arg, name, extramsg);
  lua_concat(L, 2);
  return lua_error(L);
}

/* 5.4's message: "<tname> expected, got <type or __name>". */
int shm_typeerror(lua_State *L, int arg, const char *tname) {
  const char *typearg;
  if (luaL_getmetafield(L, arg, "__name") && lua_type(L, -1) == LUA_TSTRING)
    typearg = lua_tostring(L, -1);
  else if (lua_type(L, arg) == LUA_TLIGHTUSERDATA)
    typearg = "light userdata";
  else
    typearg = luaL_typename(L, arg);
  return shm_argerror(L, arg, lua_pushfstring(L, "%s expected, got %s", tname, typearg));
}

/* lauxlib's checks, with the 5.4 behaviour on every Lua (strict integers). */
lua_Integer shm_checkinteger(lua_State *L, int arg) {
  int isnum = 0;
  lua_Integer v = lua_tointegerx(L, arg, &isnum);
  if (!isnum) {
    if (lua_isnumber(L, arg)) shm_argerror(L, arg, "number has no integer representation");
    shm_typeerror(L, arg, "number");
  }
  return v;
}

lua_Integer shm_optinteger(lua_State *L, int arg, lua_Integer def) {
  return lua_isnoneornil(L, arg) ? def : shm_checkinteger(L, arg);
}

lua_Number shm_checknumber(lua_State *L, int arg) {
  if (!lua_isnumber(L, arg)) shm_typeerror(L, arg, "number");
  return lua_tonumber(L, arg);
}

const char *shm_checklstring(lua_State *L, int arg, size_t *len) {
  const char *s = lua_tolstring(L, arg, len);
  if (s == NULL) shm_typeerror(L, arg, "string");
  return s;
}

const char *shm_optlstring(lua_State *L, int arg, const char *def, size_t *len) {
  if (!lua_isnoneornil(L, arg)) return shm_checklstring(L, arg, len);
  if (len != NULL) *len = def != NULL ? strlen(def) : 0;
  return def;
}

void shm_checktype(lua_State *L, int arg, int t) {
  if (lua_type(L, arg) != t) shm_typeerror(L, arg, lua_typename(L, t));
}

void shm_checkany(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TNONE) shm_argerror(L, arg, "value expected");
}

int shm_checkoption(lua_State *L, int arg, const char *def, const char *const lst[]) {
  const char *name = def != NULL ? shm_optlstring(L, arg, def, NULL) : shm_checklstring(L, arg, NULL);
  int i;
  for (i = 0; lst[i] != NULL; i++)
    if (strcmp(lst[i], name) == 0) return i;
  return shm_argerror(L, arg, lua_pushfstring(L, "invalid option '%s'", name));
}

static lua_Integer checkint(lua_State *L, int arg, const char *what) {
  int isnum = 0;
  lua_Integer v = lua_tointegerx(L, arg, &isnum);
  if (!isnum) {
    if (lua_type(L, arg) == LUA_TNUMBER)
      luaL_argerror(L, arg, lua_pushfstring(L, "%s has no integer representation", what));
    luaL_typeerror(L, arg, "integer");
  }
  return v;
}

size_t shm_checksize(lua_State *L, int arg) {
  lua_Integer v = checkint(L, arg, "size");
  if (v <= 0) luaL_argerror(L, arg, "size must be positive");
  if ((lua_Unsigned)v > (lua_Unsigned)PTRDIFF_MAX)
    luaL_argerror(L, arg, "size too large");
  return (size_t)v;
}

uint64_t shm_checkcapacity(lua_State *L, int arg, uint64_t min, uint64_t max) {
  int isint = 0;
  lua_Integer c = lua_tointegerx(L, arg, &isint);
  if (!isint || lua_type(L, arg) != LUA_TNUMBER)
    luaL_argerror(L, arg, lua_pushfstring(L, "integer capacity expected, got %s",
                                          lua_type(L, arg) == LUA_TNUMBER
                                              ? "a number with no integer representation"
                                              : luaL_typename(L, arg)));
  if (c < (lua_Integer)min || (uint64_t)c > max)
    luaL_argerror(L, arg, lua_pushfstring(L, "capacity out of range (%I to %I)", (lua_Integer)min,
                                          (lua_Integer)max));
  return (uint64_t)c;
}

/* A size, or 0 for none/nil (open: attach only, never create). */
size_t shm_optsize(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? 0 : shm_checksize(L, arg);
}

/* Does the integer v read as an octal literal typed without its quotes?
 * Lua has no octal literals: 0444 is the decimal 444 (octal 0674).  The rule:
 * 100 <= v <= 777 and every decimal digit 0-7.  Such an integer is refused,
 * never taken as a mode it was perhaps not meant to be (a decimal in that
 * range, 420 for 0644, is written as its octal string, "0644"). */
static int octal_lookalike(lua_Integer v) {
  lua_Integer d;
  if (v < 100 || v > 777) return 0;
  for (d = v; d > 0; d /= 10)
    if (d % 10 > 7) return 0;
  return 1;
}

/* Permission bits: an integer (384) or an octal string ("0600", "640"); an
 * integer that reads as an octal literal (octal_lookalike) raises. */
int shm_checkmode(lua_State *L, int arg) {
  lua_Integer v;
  switch (lua_type(L, arg)) {
  case LUA_TNUMBER:
    v = checkint(L, arg, "mode");
    if (octal_lookalike(v)) {
      char dec[48] = ", out of range"; /* what the decimal is as a mode */
      if (v <= 0777) snprintf(dec, sizeof dec, " = 0%o; if that is meant, write \"0%o\"", (unsigned)v, (unsigned)v);
      luaL_argerror(L, arg, lua_pushfstring(L,
        "mode %d reads as an octal number typed without its quotes: write \"0%d\" or "
        "tonumber(\"%d\", 8) (Lua has no octal literals: %d is decimal%s)",
        (int)v, (int)v, (int)v, (int)v, dec));
    }
    break;
  case LUA_TSTRING: {
    size_t len, i;
    const char *p = lua_tolstring(L, arg, &len);
    if (len == 0 || len > 4)
      luaL_argerror(L, arg, "mode must be an octal string such as \"0600\"");
    v = 0;
    for (i = 0; i < len; i++) {
      if (p[i] < '0' || p[i] > '7')
        luaL_argerror(L, arg, "mode must be an octal string such as \"0600\"");
      v = v * 8 + (p[i] - '0');
    }
    break;
  }
  case LUA_TNONE:
    return luaL_argerror(L, arg, "value expected");
  default:
    return luaL_typeerror(L, arg, "integer or octal string");
  }
  if (v < 0 || v > 0777) luaL_argerror(L, arg, "mode out of range (0 to 0777)");
  return (int)v;
}

int shm_optmode(lua_State *L, int arg, int def) {
  return lua_isnoneornil(L, arg) ? def : shm_checkmode(L, arg);
}

/* "rw" (default) -> 0, "r" -> 1 (read-only). */
int shm_optaccess(lua_State *L, int arg) {
  const char *a = luaL_optstring(L, arg, "rw");
  if (strcmp(a, "rw") == 0) return 0;
  if (strcmp(a, "r") == 0) return 1;
  return luaL_argerror(L, arg, lua_pushfstring(L, "access must be \"rw\" or \"r\", got \"%s\"", a));
}

/* A byte: an integer 0 to 255 or a one-character string (fill, ftok). */
int shm_checkbyte(lua_State *L, int arg, const char *what) {
  lua_Integer b;
  if (lua_type(L, arg) == LUA_TSTRING) {
    size_t l;
    const char *c = lua_tolstring(L, arg, &l);
    if (l != 1)
      luaL_argerror(L, arg, lua_pushfstring(L, "a one-character string or a %s expected", what));
    return (unsigned char)c[0];
  }
  b = luaL_checkinteger(L, arg);
  if (b < 0 || b > 255)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s out of range (0 to 255)", what));
  return (int)b;
}

/* The kind of segment a key_or_name argument names: SHM_SYSV for an integer
 * key, SHM_POSIX for a "/name"; raises otherwise. */
int shm_checkkind(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TNUMBER) return SHM_SYSV;
  if (lua_type(L, arg) == LUA_TSTRING && lua_tostring(L, arg)[0] == '/') return SHM_POSIX;
  if (lua_type(L, arg) == LUA_TSTRING)
    return luaL_argerror(L, arg, "a POSIX name must start with '/'");
  return luaL_typeerror(L, arg, "integer key or '/name'");
}

/* A key_t: any 32-bit pattern, given signed or unsigned (0xFFFFFFFF). */
int32_t shm_checkkey(lua_State *L, int arg) {
  lua_Integer v = checkint(L, arg, "key");
  if (v < INT32_MIN || v > (lua_Integer)UINT32_MAX)
    luaL_argerror(L, arg, "key out of range (32 bits)");
  return (int32_t)(uint32_t)(v & 0xffffffff);
}

const char *shm_checkname(lua_State *L, int arg) {
  size_t len;
  const char *name = luaL_checklstring(L, arg, &len);
  if (name[0] != '/') luaL_argerror(L, arg, "a POSIX name must start with '/'");
  if (len < 2) luaL_argerror(L, arg, "a POSIX name needs characters after '/'");
  if (len > NAME_MAX) luaL_argerror(L, arg, "POSIX name too long");
  if (strlen(name) != len) luaL_argerror(L, arg, "POSIX name contains a zero byte");
  if (strchr(name + 1, '/') != NULL)
    luaL_argerror(L, arg, "a POSIX name has no '/' after the first");
  if (strcmp(name, "/.") == 0 || strcmp(name, "/..") == 0)
    luaL_argerror(L, arg, "invalid POSIX name");
  return name;
}

/* A file path: a string (a number is not a path), with no zero byte. */
const char *shm_checkpath(lua_State *L, int arg) {
  size_t len;
  const char *path;
  if (lua_type(L, arg) != LUA_TSTRING) luaL_typeerror(L, arg, "string");
  path = lua_tolstring(L, arg, &len);
  if (len == 0) luaL_argerror(L, arg, "empty path");
  if (strlen(path) != len) luaL_argerror(L, arg, "path contains a zero byte");
  return path;
}

static size_t offsetarg(lua_State *L, int arg, const shm_segment *s) {
  lua_Integer off = checkint(L, arg, "offset");
  if (off < 0 || (lua_Unsigned)off > s->size)
    luaL_argerror(L, arg, lua_pushfstring(L, "offset %I out of range (segment size %I)",
                                          off, (lua_Integer)s->size));
  return (size_t)off;
}

/* An offset in [0, size]: required. */
size_t shm_checkoffset(lua_State *L, int arg, const shm_segment *s) {
  if (lua_isnoneornil(L, arg)) luaL_typeerror(L, arg, "number"); /* as luaL_checkinteger */
  return offsetarg(L, arg, s);
}

size_t shm_optoffset(lua_State *L, int arg, const shm_segment *s, size_t def) {
  return lua_isnoneornil(L, arg) ? def : offsetarg(L, arg, s);
}

/* A length that fits from `off` to the end; none/nil: to the end. */
size_t shm_optlength(lua_State *L, int arg, const shm_segment *s, size_t off) {
  lua_Integer len;
  if (lua_isnoneornil(L, arg)) return s->size - off;
  len = checkint(L, arg, "length");
  if (len < 0 || (lua_Unsigned)len > s->size - off)
    luaL_argerror(L, arg, lua_pushfstring(L, "length %I out of range (offset %I, segment size %I)",
                                          len, (lua_Integer)off, (lua_Integer)s->size));
  return (size_t)len;
}

/* A timeout in seconds at `arg`: none, nil or more than 1e9 (math.huge) =
 * forever; negative or NaN raises. */
double shm_opttimeout(lua_State *L, int arg) {
  lua_Number t;
  if (lua_isnoneornil(L, arg)) return -1;
  t = luaL_checknumber(L, arg);
  luaL_argcheck(L, t >= 0, arg, "timeout must be a non-negative number of seconds");
  return (double)t;
}

void shm_optdeadline(lua_State *L, int arg, shm_deadline *d) {
  double t = shm_opttimeout(L, arg);
  if (t < 0) d->forever = 1;
  else shm_deadline_after(d, t);
}

void shm_setfield_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

void shm_setfield_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

void shm_setfield_bool(lua_State *L, const char *k, int v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}

/*
 * The Lua 5.4 C API functions compat.h maps for Lua 5.1/5.2/5.3/LuaJIT.
 * Empty when built against Lua 5.4.
 */
#include "shm.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if LUA_VERSION_NUM < 503

#if LUA_VERSION_NUM < 502
#define getuv lua_getfenv
#define setuv lua_setfenv
static int absindex(lua_State *L, int idx) {
  return idx > 0 || idx <= LUA_REGISTRYINDEX ? idx : lua_gettop(L) + idx + 1;
}
#else
#define getuv lua_getuservalue
#define setuv lua_setuservalue
#define absindex lua_absindex
#endif

void *shm_compat_newuserdatauv(lua_State *L, size_t sz, int nuv) {
  void *u = lua_newuserdata(L, sz);
  lua_createtable(L, nuv, 0);
  setuv(L, -2);
  return u;
}

int shm_compat_getiuservalue(lua_State *L, int idx, int n) {
  getuv(L, idx);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return LUA_TNONE;
  }
  lua_rawgeti(L, -1, n);
  lua_remove(L, -2);
  return lua_type(L, -1);
}

int shm_compat_setiuservalue(lua_State *L, int idx, int n) {
  idx = absindex(L, idx);
  getuv(L, idx);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 2);
    return 0;
  }
  lua_insert(L, -2);
  lua_rawseti(L, -2, n);
  lua_pop(L, 1);
  return 1;
}

/* A number is an integer when it is whole and inside [-2^63, 2^63). */
lua_Integer shm_compat_tointegerx(lua_State *L, int idx, int *isnum) {
  lua_Number n = lua_tonumber(L, idx);
  int ok = (n != 0 || lua_isnumber(L, idx)) && n >= -0x1p63 && n < 0x1p63 &&
           (lua_Number)(lua_Integer)n == n;
  if (isnum != NULL) *isnum = ok;
  return ok ? (lua_Integer)n : 0;
}

/* lua_pushvfstring with 5.4's %I (and %s %d %c %f %p %%). */
static const char *pushvfstring(lua_State *L, const char *fmt, va_list ap) {
  int n = 0;
  const char *e;
  char buf[64];
  luaL_checkstack(L, 4, NULL);
  while ((e = strchr(fmt, '%')) != NULL) {
    lua_pushlstring(L, fmt, (size_t)(e - fmt));
    switch (e[1]) {
    case 's': {
      const char *s = va_arg(ap, const char *);
      lua_pushstring(L, s != NULL ? s : "(null)");
      break;
    }
    case 'd': snprintf(buf, sizeof buf, "%d", va_arg(ap, int)); lua_pushstring(L, buf); break;
    case 'I': snprintf(buf, sizeof buf, "%lld", (long long)va_arg(ap, lua_Integer)); lua_pushstring(L, buf); break;
    case 'c': buf[0] = (char)va_arg(ap, int); lua_pushlstring(L, buf, 1); break;
    case 'f': snprintf(buf, sizeof buf, "%.14g", (double)va_arg(ap, lua_Number)); lua_pushstring(L, buf); break;
    case 'p': snprintf(buf, sizeof buf, "%p", va_arg(ap, void *)); lua_pushstring(L, buf); break;
    default: lua_pushlstring(L, e + 1, e[1] != '\0'); break; /* %% and anything else */
    }
    lua_concat(L, 3 - (n == 0));
    n = 1;
    fmt = e[1] != '\0' ? e + 2 : e + 1;
  }
  lua_pushstring(L, fmt);
  if (n) lua_concat(L, 2);
  return lua_tostring(L, -1);
}

const char *shm_compat_pushfstring(lua_State *L, const char *fmt, ...) {
  const char *s;
  va_list ap;
  va_start(ap, fmt);
  s = pushvfstring(L, fmt, ap);
  va_end(ap);
  return s;
}

int shm_compat_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  luaL_where(L, 1);
  va_start(ap, fmt);
  pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

#endif

#if LUA_VERSION_NUM < 502

int shm_compat_rawgetp(lua_State *L, int idx, const void *p) {
  idx = absindex(L, idx);
  lua_pushlightuserdata(L, (void *)p);
  lua_rawget(L, idx);
  return lua_type(L, -1);
}

void shm_compat_rawsetp(lua_State *L, int idx, const void *p) {
  idx = absindex(L, idx);
  lua_pushlightuserdata(L, (void *)p);
  lua_insert(L, -2);
  lua_rawset(L, idx);
}

void shm_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

const char *shm_compat_tolstring(lua_State *L, int idx, size_t *len) {
  if (luaL_callmeta(L, idx, "__tostring")) {
    if (!lua_isstring(L, -1)) luaL_error(L, "'__tostring' must return a string");
  } else {
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
    case LUA_TSTRING: lua_pushvalue(L, idx); break;
    case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNIL: lua_pushliteral(L, "nil"); break;
    default:
      lua_pushfstring(L, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
      break;
    }
  }
  return lua_tolstring(L, -1, len);
}

#endif

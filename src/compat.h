/*
 * lua-shm: the parts of the Lua 5.4 C API the core uses, for Lua 5.1, 5.2,
 * 5.3 and LuaJIT 2.1 (which reports itself as 5.1).  Included by shm.h after
 * lua.h and lauxlib.h; the sources are written against 5.4.
 *
 * Where an older Lua differs in behaviour, the 5.4 behaviour wins:
 *  - integers are checked strictly ("number has no integer representation"
 *    for 1.5, and for numbers outside the 64-bit range), not truncated;
 *  - lua_pushfstring and luaL_error understand %I;
 *  - lua_Unsigned is as wide as lua_Integer (5.2's is 32 bits).
 */
#ifndef LUA_SHM_COMPAT_H
#define LUA_SHM_COMPAT_H

#if LUA_VERSION_NUM < 504


/* Userdata with one user value.  5.3 takes any value as its user value; 5.1
 * (environment) and 5.2 take a table only, so there the value lives at [n]
 * of a table made with the userdata. */
#if LUA_VERSION_NUM >= 503
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata(L, sz)
#define lua_getiuservalue(L, idx, n) lua_getuservalue(L, idx)
#define lua_setiuservalue shm_compat_setiuservalue
static inline int shm_compat_setiuservalue(lua_State *L, int idx, int n) {
  (void)n;
  lua_setuservalue(L, idx);
  return 1;
}
#else
#define lua_newuserdatauv shm_compat_newuserdatauv
#define lua_getiuservalue shm_compat_getiuservalue
#define lua_setiuservalue shm_compat_setiuservalue
void *shm_compat_newuserdatauv(lua_State *L, size_t sz, int nuv);
int shm_compat_getiuservalue(lua_State *L, int idx, int n);
int shm_compat_setiuservalue(lua_State *L, int idx, int n);
#endif

#endif /* < 5.4 */

#if LUA_VERSION_NUM < 503

/* Integers: strict conversions of the (double) numbers. */
#define lua_Unsigned shm_compat_Unsigned
typedef size_t shm_compat_Unsigned; /* lua_Integer is ptrdiff_t here */
#define lua_tointegerx shm_compat_tointegerx
lua_Integer shm_compat_tointegerx(lua_State *L, int idx, int *isnum);

/* %I in formats. */
#define lua_pushfstring shm_compat_pushfstring
#define luaL_error shm_compat_error
const char *shm_compat_pushfstring(lua_State *L, const char *fmt, ...);
int shm_compat_error(lua_State *L, const char *fmt, ...);

/* Getters that return the type of the value pushed (a macro does not expand
 * itself: the inner call is the library's). */
#define lua_rawget(L, idx) (lua_rawget(L, idx), lua_type(L, -1))
#define lua_getfield(L, idx, k) (lua_getfield(L, idx, k), lua_type(L, -1))
#if LUA_VERSION_NUM == 502
#define lua_rawgetp(L, idx, p) (lua_rawgetp(L, idx, p), lua_type(L, -1))
#endif

#endif /* < 5.3 */

#if LUA_VERSION_NUM < 502

#define lua_rawgetp shm_compat_rawgetp
#define lua_rawsetp shm_compat_rawsetp
#define luaL_setfuncs shm_compat_setfuncs
#define luaL_tolstring shm_compat_tolstring
int shm_compat_rawgetp(lua_State *L, int idx, const void *p);
void shm_compat_rawsetp(lua_State *L, int idx, const void *p);
void shm_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
const char *shm_compat_tolstring(lua_State *L, int idx, size_t *len);

#undef luaL_setmetatable
#define luaL_setmetatable(L, tname) (luaL_getmetatable(L, tname), (void)lua_setmetatable(L, -2))
#ifndef luaL_newlibtable
#define luaL_newlibtable(L, l) lua_createtable(L, 0, sizeof(l) / sizeof((l)[0]) - 1)
#define luaL_newlib(L, l) (luaL_newlibtable(L, l), luaL_setfuncs(L, l, 0))
#endif

#endif /* < 5.2 */

#endif

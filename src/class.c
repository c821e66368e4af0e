/*
 * One way to define and check a class (as luasocket's auxiliar.c).
 *
 * A class is a metatable in the registry under its name.  The type check is
 * metatable identity (as luaL_testudata): Lua code cannot forge it, since no
 * metatable of ours is reachable from Lua (__metatable hides it from
 * getmetatable, and setmetatable refuses to replace it).
 */
#include "shm.h"

#include <stdio.h>
#include <string.h>

void shm_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                  const luaL_Reg *meta) {
  luaL_newmetatable(L, name);
  if (meta != NULL) luaL_setfuncs(L, meta, 0);
  if (methods != NULL) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__metatable"); /* getmetatable(obj) gives the name only */
  lua_pop(L, 1);
}

void *shm_testclass(lua_State *L, int idx, const char *name) {
  void *p = lua_touserdata(L, idx);
  int same;
  if (p == NULL || !lua_getmetatable(L, idx)) return NULL;
  luaL_getmetatable(L, name);
  same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? p : NULL;
}

void *shm_checkclass(lua_State *L, int idx, const char *name) {
  void *p = shm_testclass(L, idx, name);
  if (p == NULL) luaL_typeerror(L, idx, name);
  return p;
}

/* ---- objects that live in a segment (queues, dicts), which is their first
 * user value: each checks the class, then works on the segment ---- */

/* obj:remove(), obj:detach(): the segment's own method, its results. */
int shm_inseg_call(lua_State *L, const char *name, const char *method) {
  shm_checkclass(L, 1, name);
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);
  lua_getfield(L, -1, method);
  lua_insert(L, -2);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - 1;
}

/* obj:segment() */
int shm_inseg_segment(lua_State *L, const char *name) {
  shm_checkclass(L, 1, name);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* tostring(obj): "shm.queue(shm.segment(...))" */
int shm_inseg_tostring(lua_State *L, const char *name) {
  shm_checkclass(L, 1, name);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, "%s(%s)", name, luaL_tolstring(L, -1, NULL));
  return 1;
}

/* The segment layer's results (a segment, or nil, message, errno) on top of
 * the stack, from the function a constructor of such an object called: 0 if
 * a segment came; else the message renamed ("shm.open(0x1234): ..." ->
 * "shm.queue.open(0x1234): ...": `to` replaces what precedes the first '(';
 * and the hint of a missing segment is about a capacity, as the constructors
 * take one, not a size) and 3, the results to return. */
int shm_inseg_failure(lua_State *L, const char *to) {
  static const char size_hint[] = " (pass a size to create it)";
  const size_t hl = sizeof size_hint - 1;
  const char *msg, *p;
  size_t len;
  if (!lua_isnil(L, -3)) return 0;
  msg = lua_tostring(L, -2);
  p = msg != NULL ? strchr(msg, '(') : NULL;
  if (p != NULL) {
    len = strlen(p);
    lua_pushstring(L, to);
    if (len >= hl && strcmp(p + len - hl, size_hint) == 0) {
      lua_pushlstring(L, p, len - hl);
      lua_pushliteral(L, " (pass a capacity to create it)");
    } else {
      lua_pushstring(L, p);
      lua_pushliteral(L, "");
    }
    lua_concat(L, 3);
    lua_replace(L, -3);
  }
  return 3;
}

void shm_newupclass(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta) {
  int mt;
  shm_newclass(L, name, NULL, meta);
  luaL_getmetatable(L, name);
  mt = lua_gettop(L);
  lua_newtable(L);
  lua_pushvalue(L, mt);
  luaL_setfuncs(L, methods, 1); /* upvalue: the metatable */
  lua_setfield(L, mt, "__index");
  lua_pop(L, 1);
}

void shm_inseg_constructors(lua_State *L, lua_CFunction create, lua_CFunction open) {
  lua_createtable(L, 0, 4);
  lua_pushcfunction(L, create);
  lua_setfield(L, -2, "create");
  lua_pushcfunction(L, open);
  lua_setfield(L, -2, "open");
}

int shm_inseg_make(lua_State *L, int create, lua_Integer size, size_t prefix, const char *fname) {
  lua_settop(L, 3);
  lua_pushvalue(L, 1);
  if (!create) lua_pushliteral(L, "rw");
  if (size != 0) lua_pushinteger(L, size);
  else lua_pushnil(L);
  lua_pushvalue(L, 3);
  shm_segment_call(L, create ? "create" : "open", create ? 3 : 4, prefix);
  if (shm_inseg_failure(L, fname)) return 3;
  lua_pop(L, 2);
  return 0;
}

int shm_inseg_refuse(lua_State *L, int idx, int keyidx, int created, const char *fname, const char *why,
                     int en) {
  const char *name;
  shm_inseg_drop(L, idx, created);
  name = shm_inseg_name(L, keyidx);
  lua_pushnil(L);
  lua_pushfstring(L, "%s(%s): %s", fname, name, why);
  lua_pushinteger(L, en);
  return 3;
}

/* After a failed wrap: remove (if asked) and detach the segment at idx. */
void shm_inseg_drop(lua_State *L, int idx, int remove) {
  if (remove) {
    lua_getfield(L, idx, "remove");
    lua_pushvalue(L, idx);
    lua_call(L, 1, 0);
  }
  lua_getfield(L, idx, "detach");
  lua_pushvalue(L, idx);
  lua_call(L, 1, 0);
}

/* Push the key_or_name (or path) at idx as messages show it ("0x1234",
 * "/name"); returns it. */
const char *shm_inseg_name(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    char key[16];
    snprintf(key, sizeof key, "0x%x", (unsigned)(uint32_t)lua_tointeger(L, idx));
    lua_pushstring(L, key);
    return lua_tostring(L, -1);
  }
  return luaL_tolstring(L, idx, NULL);
}

/* Push the name of the segment of the object at idx (attached) as messages
 * show it ("0x1234", "/name", "/path"); returns it. */
const char *shm_inseg_objname(lua_State *L, int idx) {
  static const char *const fields[] = {"key", "name", "path", NULL};
  int i, seg;
  lua_getiuservalue(L, idx, 1);
  seg = lua_gettop(L);
  for (i = 0; fields[i] != NULL; i++) {
    lua_getfield(L, seg, fields[i]);
    if (!lua_isnil(L, -1)) break;
    lua_pop(L, 1);
  }
  if (fields[i] == NULL) lua_pushliteral(L, "?");
  shm_inseg_name(L, -1);
  lua_replace(L, seg);
  lua_settop(L, seg);
  return lua_tostring(L, -1);
}

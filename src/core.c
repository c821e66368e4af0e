/*
 * luaopen_shm_core: the module table of shm.core.  The kind of segment
 * follows the first argument: an integer key is System V, a string starting
 * with '/' is a POSIX shared memory name.
 */
#include "shm.h"

#include <sys/ipc.h>
#include <unistd.h>

static int l_create(lua_State *L) {
  return shm_iskey(L, 1) ? shm_sysv_create(L) : shm_posix_create(L);
}

static int l_open(lua_State *L) {
  return shm_iskey(L, 1) ? shm_sysv_open(L) : shm_posix_open(L);
}

static int l_unlink(lua_State *L) {
  return shm_iskey(L, 1) ? shm_sysv_unlink(L) : shm_posix_unlink(L);
}

static int l_list(lua_State *L) {
  lua_Integer n = 0;
  int r;
  lua_settop(L, 0);
  lua_newtable(L);
  r = shm_sysv_list(L, 1, &n);
  if (r == 0) r = shm_posix_list(L, 1, &n);
  return r == 0 ? 1 : r;
}

static const luaL_Reg funcs[] = {
  {"create", l_create},       {"open", l_open},         {"attach", shm_sysv_attach},
  {"map", shm_file_map},      {"ftok", shm_sysv_ftok},  {"list", l_list},
  {"unlink", l_unlink},       {NULL, NULL}};

int luaopen_shm_core(lua_State *L) {
  int methods, module;
  shm_open_segment_mt(L); /* leaves the methods table */
  methods = lua_gettop(L);
  luaL_newlib(L, funcs);
  module = lua_gettop(L);
  shm_open_atomics(L, methods);
  shm_open_mutex(L, methods, module);
  shm_open_queue(L, module);
  lua_remove(L, methods);
  lua_pushinteger(L, IPC_PRIVATE);
  lua_setfield(L, -2, "PRIVATE");
  lua_pushinteger(L, (lua_Integer)sysconf(_SC_PAGESIZE));
  lua_setfield(L, -2, "pagesize");
  lua_pushliteral(L, SHM_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}

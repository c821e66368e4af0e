/*
 * luaopen_shm_core: the module table of shm.core.  The kind of segment
 * follows the first argument (shm_checkkind): an integer key is System V, a
 * string starting with '/' is a POSIX shared memory name.
 */
#include "shm.h"

#include <sys/ipc.h>
#include <unistd.h>

/***
Shared memory for Lua: System V, POSIX and file segments, atomics, a robust mutex,
a message queue (`shm.queue`), a dictionary with ngx.shared.DICT's API
(`shm.dict`) and broadcast events (`shm.events`).  `local shm = require "shm"`.

Conventions: offsets are 0-based and lengths in bytes; a failing system call
returns `nil, message, errno` (the message names the call and the object); misuse
(a bad argument, an offset out of range, a write that does not fit, a write to a
read-only attachment, any use of a detached segment) raises an error.
`mode` is permission bits, an integer (`384`) or an octal string (`"0600"`); the
default is `0600`.  Lua has no octal literals (`0644` is the decimal 644), so an
integer mode from 100 to 777 whose digits are all 0-7 is refused with an error
showing both ways to write it (`"0644"` or `tonumber("644", 8)`): it never
silently means something else.  A decimal in that range (420 for `0644`) is
written as its octal string.

Argument errors name the function as it was called (`shm.dict.open`; methods as
`segment:read`, `dict:set`, counting arguments after `self`) and the caller's
position: `t.lua:2: bad argument #1 to 'shm.dict.open' (a POSIX name must start
with '/')`.

Runs on Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1.  Integer arguments are checked the
5.4 way everywhere (a whole number in the 64-bit range, else "no integer
representation"); where numbers are doubles (5.1, 5.2, LuaJIT) integer results
are exact up to 2^53.  `__close` (to-be-closed variables) exists on 5.4 only.
@module shm
*/

/***
Make a new segment, zero-filled.
An integer key makes a System V segment (`shm.PRIVATE`: always a new private one),
a string starting with `/` a POSIX shared memory object.
@function create
@tparam integer|string key_or_name
@tparam integer size bytes (at least 1)
@tparam[opt="0600"] integer|string mode applied exactly, whatever the umask
@treturn segment
@error `nil, message, errno`: `EEXIST` if it exists, `ENOSPC`, `EINVAL` (above kernel.shmmax)...
@usage local seg = assert(shm.create(0x1234, 4096, "0640"))
@see shmget(2), shm_open(3)
*/
static int l_create(lua_State *L) {
  return shm_segment_new(L, SHM_CREATE, SHM_RESERVE_ALL);
}

/***
Attach an existing segment; with `size`, a missing one is created atomically
(racing processes all end up on one segment).
An existing segment is never resized, whatever its kind: one smaller than
`size` fails with `EINVAL` and a message saying what exists and what was asked
(`shm.open(/x): exists with 4096 bytes, 8192 asked`); a larger one opens with
its real size (see `seg.size`).  The pages of a writable POSIX mapping are
reserved (`ENOSPC` here, never SIGBUS at a later write on a full tmpfs).
@function open
@tparam integer|string key_or_name
@tparam[opt="rw"] string access `"rw"` or `"r"` (a read-only mapping)
@tparam[opt] integer size create it with this size if it is missing
@tparam[opt="0600"] integer|string mode for a segment this call creates
@treturn segment
@error `nil, message, errno`: `ENOENT` (the message says a size creates it),
`EINVAL` (smaller than `size`; an empty POSIX object), `EACCES`, `ENOSPC`...
@usage local seg = assert(shm.open("/jobs", "rw", 1024 * 1024))
@see shmget(2), shmat(2), shm_open(3), fallocate(2), mmap(2)
*/
static int l_open(lua_State *L) {
  return shm_segment_new(L, SHM_OPEN, SHM_RESERVE_ALL);
}

/***
Remove a segment by key or name without attaching it (like `ipcrm -M`, `shm_unlink`).
@function unlink
@tparam integer|string key_or_name
@treturn boolean true
@error `nil, message, errno`
@usage shm.unlink(0x1234)
@see shmctl(2), shm_unlink(3)
*/
static int l_unlink(lua_State *L) {
  return shm_checkkind(L, 1) == SHM_SYSV ? shm_sysv_unlink(L) : shm_posix_unlink(L);
}

/***
Every System V segment and POSIX object the caller can see, as info tables
(the fields of `segment:stat`).
@function list
@treturn {table,...}
@usage for _, i in ipairs(shm.list()) do print(i.kind, i.key or i.name, i.size) end
@see shmctl(2)
*/
static int l_list(lua_State *L) {
  lua_Integer n = 0;
  int r;
  lua_settop(L, 0);
  lua_newtable(L);
  r = shm_sysv_list(L, 1, &n);
  if (r == 0) r = shm_posix_list(L, 1, &n);
  return r == 0 ? 1 : r;
}

/***
Constants.
@table constants
@field PRIVATE the System V key `IPC_PRIVATE`: `shm.create(shm.PRIVATE, size)` always makes a new segment
@field pagesize the system's page size in bytes
@field MUTEX_SIZE bytes a `segment:mutex` takes (64)
@field _VERSION `"lua-shm 0.2.0"` (this release)
*/

/* (documented in file.c) */
static int l_map(lua_State *L) { return shm_segment_new(L, SHM_MAP, SHM_RESERVE_ALL); }

static const luaL_Reg funcs[] = {
  {"create", l_create},       {"open", l_open},         {"attach", shm_sysv_attach},
  {"map", l_map},             {"ftok", shm_sysv_ftok},  {"list", l_list},
  {"unlink", l_unlink},       {NULL, NULL}};

/* The parts that add to the module and to the segment's methods, each
 * opened with the same arguments (as luasocket's mod[]). */
static shm_openf *const mod[] = {shm_open_pack,   shm_open_atomics, shm_open_mutex, shm_open_owner,
                                  shm_open_queue,  shm_open_dict,    shm_open_events, shm_open_sem,
                                  shm_open_ffi,    NULL};

int luaopen_shm_core(lua_State *L) {
  int i, methods, module;
  shm_open_ctx(L);
  shm_open_segment(L); /* leaves the methods table */
  methods = lua_gettop(L);
  luaL_newlib(L, funcs);
  module = lua_gettop(L);
  for (i = 0; mod[i] != NULL; i++) mod[i](L, module, methods);
  lua_remove(L, methods);
  lua_pushinteger(L, IPC_PRIVATE);
  lua_setfield(L, -2, "PRIVATE");
  lua_pushinteger(L, (lua_Integer)sysconf(_SC_PAGESIZE));
  lua_setfield(L, -2, "pagesize");
  lua_pushliteral(L, SHM_VERSION);
  lua_setfield(L, -2, "_VERSION");
  shm_open_names(L, lua_gettop(L)); /* last: every function is in place */
  return 1;
}

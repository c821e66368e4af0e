-- lua-shm from a checkout: luarocks make rockspec/lua-shm-scm-1.rockspec
-- (make rock writes the versioned rockspec beside this one from it, and a
-- source rock that luarocks installs offline).
rockspec_format = "3.0"
package = "lua-shm"
version = "0.2.0-1"
source = {
  url = "lua-shm-0.2.0.tar.gz", -- the tarball beside this rockspec (make rock)
  dir = "lua-shm-0.2.0",
}
description = {
  summary = "Shared memory for Lua: System V, POSIX and file segments, atomics, mutexes, queues",
  detailed = [[
    Shared-memory segments as userdata: System V (shmget/shmat), POSIX (shm_open)
    and shared file maps, with checked reads and writes, string.pack formats in
    place, stat/remove/chmod, atomics and futex waits, a robust mutex, a
    multi-process message queue, and a command-line tool, lshm.
  ]],
  license = "MIT",
  labels = { "ipc", "shm", "shared-memory", "linux" },
}
supported_platforms = { "linux" }
dependencies = {
  "lua >= 5.1, < 5.5",
}
build = {
  type = "builtin",
  modules = {
    shm = "lua/shm.lua",
    ["shm.ffi"] = "lua/shm/ffi.lua",
    ["shm.lock"] = "lua/shm/lock.lua",
    ["shm.fetch"] = "lua/shm/fetch.lua",
    ["shm.core"] = {
      sources = {
        "src/args.c",
        "src/atomic.c",
        "src/class.c",
        "src/compat.c",
        "src/core.c",
        "src/dict.c",
        "src/dictheap.c",
        "src/dicttable.c",
        "src/dictval.c",
        "src/events.c",
        "src/ffi.c",
        "src/file.c",
        "src/futex.c",
        "src/lock.c",
        "src/mutex.c",
        "src/pack.c",
        "src/posix.c",
        "src/queue.c",
        "src/segment.c",
        "src/sem.c",
        "src/sysv.c",
      },
      incdirs = { "src" },
    },
  },
  install = {
    bin = { lshm = "bin/lshm" },
  },
}

--- shm: shared memory for Lua (the reference is in src/*.c and here: make docs).
-- @module shm
-- The C core (shm.core) does the work, shm.queue included; this front module
-- is what users require.  Under LuaJIT the hot methods of segments, dicts and
-- queues go through the FFI (lua/shm/ffi.lua), with the same results and
-- errors; SHM_NO_FFI=1 in the environment keeps the Lua C API methods.
local core = require "shm.core"

local shm = {}
for k, v in pairs(core) do shm[k] = v end

if rawget(_G, "jit") ~= nil and os.getenv("SHM_NO_FFI") ~= "1" and pcall(require, "ffi") then
  require("shm.ffi").install(core)
end

-- shm.lock (lua/shm/lock.lua), and d:fetch (lua/shm/fetch.lua) as a method of
-- every dict: Lua functions over the dict's methods (so the FFI ones where installed)
shm.lock = require "shm.lock"
rawset(debug.getregistry()["shm.dict"].__index, "fetch", require("shm.fetch").fetch)

return shm

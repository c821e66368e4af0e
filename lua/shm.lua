--- shm: shared memory for Lua (the reference is in src/*.c and here: make docs).
-- @module shm
-- The C core (shm.core) does the work, shm.queue included; this front module
-- is what users require.
local core = require "shm.core"

local shm = {}
for k, v in pairs(core) do shm[k] = v end

return shm

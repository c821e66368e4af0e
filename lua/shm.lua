--- shm: shared memory for Lua.
-- The C core (shm.core) does the work; this front module is what users
-- require, and the place for the parts written in Lua.
local core = require "shm.core"

local shm = {}
for k, v in pairs(core) do shm[k] = v end

return shm

--- shm: shared memory for Lua (the reference is in src/*.c and here: make docs).
-- @module shm
-- The C core (shm.core) does the work; this front module is what users
-- require, and the home of the parts written in Lua (shm.queue's constructors).
local core = require "shm.core"

local shm = {}
for k, v in pairs(core) do
  if k ~= "queue_new" and k ~= "QUEUE_HEADER" then shm[k] = v end
end

local queue_new, HEADER = core.queue_new, core.QUEUE_HEADER

-- "shm.create(0x1234): File exists" -> "shm.queue.create(0x1234): File exists"
local function rename(msg, from, to)
  return msg and (msg:gsub("^" .. from:gsub("%.", "%%."), to, 1))
end

-- An integer value (Lua 5.3+: an integer or a float with an integer value,
-- as the C functions take; 5.1/5.2/LuaJIT: a whole number), or nil.
local tointeger = math.tointeger or function(x)
  if type(x) == "number" and x == math.floor(x) and x >= -2 ^ 63 and x < 2 ^ 63 then return x end
end

local function describe(key_or_name)
  return type(key_or_name) == "number" and string.format("0x%x", key_or_name % 0x100000000)
    or tostring(key_or_name)
end

shm.queue = {}

--- Make a queue: a bounded queue of variable-size messages in one segment, for
-- any number of writer and reader processes (no message lost, duplicated, torn
-- or reordered per writer).
-- @function queue.create
-- @tparam integer|string key_or_name as for `create`
-- @tparam integer capacity bytes for messages (each takes 4 bytes more), 16 to 2^32-1
-- @tparam[opt="0600"] integer|string mode
-- @treturn queue
-- @error `nil, message, errno`
-- @usage local q = assert(shm.queue.create("/jobs", 1024 * 1024))
function shm.queue.create(key_or_name, capacity, mode)
  local c = tointeger(capacity)
  if not c then
    error("bad argument #2 to 'shm.queue.create' (integer capacity expected, got "
      .. (type(capacity) == "number" and "a number with no integer representation" or type(capacity)) .. ")", 2)
  end
  capacity = c
  if capacity < 16 or capacity > 0xffffffff then
    error("bad argument #2 to 'shm.queue.create' (capacity out of range (16 to 4294967295))", 2)
  end
  local seg, msg, en = core.create(key_or_name, HEADER + capacity, mode)
  if not seg then return nil, rename(msg, "shm.create", "shm.queue.create"), en end
  local q
  q, msg, en = queue_new(seg, capacity)
  if not q then
    seg:remove()
    seg:detach()
    return nil, "shm.queue.create(" .. describe(key_or_name) .. "): " .. msg, en
  end
  return q
end

--- Attach an existing queue; its header is validated first.
-- @function queue.open
-- @tparam integer|string key_or_name
-- @treturn queue
-- @error `nil, message, errno` (`EINVAL`: not a valid queue)
-- @usage local q = assert(shm.queue.open("/jobs"))
function shm.queue.open(key_or_name)
  local seg, msg, en = core.open(key_or_name)
  if not seg then return nil, rename(msg, "shm.open", "shm.queue.open"), en end
  local q
  q, msg, en = queue_new(seg)
  if not q then
    seg:detach()
    return nil, "shm.queue.open(" .. describe(key_or_name) .. "): " .. msg, en
  end
  return q
end

return shm

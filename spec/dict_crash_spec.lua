-- shm.dict under kill -9: writers doing size-changing safe_set/delete/incr are
-- killed every few milliseconds (and once, on purpose, while holding the
-- lock); readers check every value they see; at the end every key must hold
-- its last acknowledged value or the one its killed writer was storing, and
-- deleting everything gives all the space back.
local shm = require "shm"
local H = require "helpers"

local W, KEYS = 3, 40

-- value(k, v): what version v of key k is (nil: a delete), in writers and readers
local VALUE = [[
local function value(k, v)
  if v % 4 == 0 then return nil end
  local h = 0
  for i = 1, #k do h = (h * 31 + k:byte(i)) % 1000003 end
  h = (h + v * 7919) % 1000003
  return k .. ":" .. v .. ":" .. string.rep(string.char(97 + h % 26), h % 400)
end
]]

-- acked(path): the last acknowledged version of each key in a writer's log
-- ("key version ." lines; a torn last line is ignored), in writers and here
local ACKED = [[
local function acked(path)
  local ver = {}
  local f = io.open(path)
  if f then
    for line in f:lines() do
      local k, v = line:match("^(%S+) (%d+) %.$")
      if k then ver[k] = tonumber(v) end
    end
    f:close()
  end
  return ver
end
]]

local WRITER = VALUE .. ACKED .. [[
local shm = require "shm"
local key, w, logpath = tonumber(arg[1]), arg[2], arg[3]
local d = assert(shm.dict.open(key))
local ver = acked(logpath) -- resume from the acknowledged log
-- compacted (a temp file renamed over it: a kill here loses nothing)
local tmp = assert(io.open(logpath .. ".tmp", "w"))
for k, v in pairs(ver) do tmp:write(k, " ", v, " .\n") end
tmp:close()
assert(os.rename(logpath .. ".tmp", logpath))
local log = assert(io.open(logpath, "a"))
log:setvbuf("no")
print("ready") io.stdout:flush()
math.randomseed(os.time() + tonumber(w) * 1000 + #logpath)
while true do
  local k = "w" .. w .. ":" .. math.random(1, ]] .. KEYS .. [[)
  local v = (ver[k] or 0) + 1
  local val = value(k, v)
  if val == nil then assert(d:delete(k)) else assert(d:safe_set(k, val)) end
  ver[k] = v
  log:write(k, " ", v, " .\n")
  local c = "c" .. w
  local n = assert(d:incr(c, 1, 0))
  ver[c] = n
  log:write(c, " ", n, " .\n")
end
]]

local READER = VALUE .. [[
local shm = require "shm"
local d = assert(shm.dict.open(tonumber(arg[1])))
print("ready") io.stdout:flush()
local reads = 0
while true do
  for w = 1, ]] .. W .. [[ do
    for i = 1, ]] .. KEYS .. [[ do
      local k = "w" .. w .. ":" .. i
      local val = d:get(k)
      if val ~= nil then
        local k2, v = val:match("^(w%d+:%d+):(%d+):")
        if k2 ~= k or val ~= value(k, tonumber(v)) then
          print("BAD " .. k .. " " .. val:sub(1, 40)) io.stdout:flush() os.exit(1)
        end
      end
      reads = reads + 1
    end
    local c = d:get("c" .. w)
    if c ~= nil and type(c) ~= "number" then print("BAD counter") io.stdout:flush() os.exit(1) end
  end
  if reads % 12000 == 0 then print("reads " .. reads) io.stdout:flush() end
end
]]

local acked = H.load(ACKED .. "return acked")()

describe("shm.dict under kill -9", function()
  after_each(H.cleanup)

  it("stays consistent: every key holds its acknowledged or in-flight value, no space leaks", function()
    local key = H.key()
    local d = assert(shm.dict.create(key, 1024 * 1024))
    local raw = d:segment()
    local empty = d:free_space()
    local value = H.load(VALUE .. "return value")()
    local logs, writers, readers = {}, {}, {}
    finally(function()
      for _, h in pairs(writers) do H.kill(h.pid) end
      for _, h in pairs(readers) do H.kill(h.pid) end
      for w = 1, W do -- a writer killed while compacting its log
        if logs[w] then os.remove(logs[w] .. ".tmp") end
      end
    end)
    local function spawn_writer(w)
      local h = H.spawn(WRITER, { key, w, logs[w] })
      writers[w] = h -- (recorded first: the finally above kills it whatever happens)
      assert(h:line() == "ready")
    end
    for w = 1, W do
      logs[w] = H.tmpfile()
      spawn_writer(w)
    end
    for r = 1, 2 do
      local h = H.spawn(READER, { key })
      readers[r] = h
      assert(h:line() == "ready")
    end
    -- the storm: a random writer killed every 2 to 12 ms, and restarted
    local timer = shm.create(shm.PRIVATE, 8)
    timer:remove() -- (gone at detach or exit, whatever happens below)
    local kills, t0 = 0, H.now()
    while kills < 150 and H.now() - t0 < 5 do
      timer:wait(0, 0, math.random(2, 12) / 1000) -- a futex wait nobody notifies: a timer
      local w = math.random(1, W)
      H.kill(writers[w].pid)
      writers[w]:finish()
      kills = kills + 1
      d:stat() -- recovers if it died holding the lock, then checks the whole structure
      spawn_writer(w)
    end
    -- and once on purpose inside a method: stop a writer until it holds the lock
    local caught = false
    for _ = 1, 2000 do
      local w = writers[1]
      H.kill(w.pid, "STOP")
      if not H.until_true(function() return H.state(w.pid) == "T" end) then
        H.kill(w.pid)
        error("writer " .. w.pid .. " not stopped (" .. tostring(H.state(w.pid)) .. "): " .. w:finish())
      end
      if raw:unpack(shm.dict.layout.lock, "<I4") % 2 ^ 30 == w.pid then -- the owner's pid
        H.kill(w.pid)
        caught = true
        break
      end
      H.kill(w.pid, "CONT")
    end
    timer:detach()
    for w = 1, W do H.kill(writers[w].pid) writers[w]:finish() end
    writers = {}
    assert.is_true(caught, "never caught a writer holding the dict's lock")
    for _, h in ipairs(readers) do
      H.kill(h.pid)
      local out = h:finish()
      assert.is_nil(out:match("BAD[^\n]*"), out:match("BAD[^\n]*"))
      assert.is_truthy(out:match("reads %d+"), "a reader made no progress")
    end
    readers = {}
    -- every key: the acknowledged version, or the next one (in flight when killed)
    local checked = 0
    for w = 1, W do
      local ver = acked(logs[w])
      for i = 1, KEYS do
        local k = "w" .. w .. ":" .. i
        local v, got = ver[k] or 0, d:get(k)
        local ok = got == (v > 0 and value(k, v) or nil) or got == value(k, v + 1)
        assert.is_true(ok, string.format("%s: acked %d, found %s", k, v, tostring(got)))
        checked = checked + 1
      end
      local c, got = ver["c" .. w] or 0, d:get("c" .. w) or 0
      assert.is_true(got == c or got == c + 1, "counter " .. w)
    end
    local st = d:stat()
    print(string.format("\n    dict storm passed: %d writers killed (kill -9), %d keys all consistent, %d locks"
      .. " recovered", kills, checked, st.recovered))
    assert.is_true(st.recovered >= 1, "no lock was taken over")
    -- no space leaked: deleting everything gives a new dict's free space back
    for _, k in ipairs(d:get_keys(0)) do assert.is_true((d:delete(k))) end
    assert.equal(0, d:stat().count)
    assert.equal(empty, d:free_space())
    d:remove()
    d:detach()
  end)
end)

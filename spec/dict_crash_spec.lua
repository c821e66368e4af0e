-- shm.dict under kill -9: writers doing size-changing safe_set/delete/incr are
-- killed every few milliseconds (and once, on purpose, while holding the
-- lock); readers check every value they see; at the end every key must hold
-- its last acknowledged value or the one its killed writer was storing, and
-- deleting everything gives all the space back. The same storm over long
-- lists (hundreds of elements; 10^5 under SHM_PROVE=1) pushed, popped and deleted,
-- and over sets that evict. SHM_PROVE=1 (make prove): a storm of minutes.
local shm = require "shm"
local H = require "helpers"

local W, KEYS = 3, 40
local PROVE = os.getenv("SHM_PROVE") == "1"
local KILLS, SECONDS = PROVE and 20000 or 150, PROVE and 60 or 5

-- value(k, v): what version v of key k is (nil: a delete), in writers and readers
local VALUE = [[
local function value(k, v)
  if v % 4 == 0 then return nil end
  local h = 0
  for i = 1, #k do h = (h * 31 + k:byte(i)) % 1000003 end
  h = (h + v * 7919) % 1000003
  return k .. ":" .. v .. ":" .. string.rep(string.char(97 + h % 26), BIG and 200 + h % 3000 or h % 400)
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

-- (evicting writers store bigger values: BIG, their 4th argument, the readers' 2nd)
local WRITER = "local BIG = arg[4] == 'evict'\n" .. VALUE .. ACKED .. [[
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
  if val == nil then assert(d:delete(k))
  elseif BIG then assert(d:set(k, val)) -- (evicts)
  else assert(d:safe_set(k, val)) end
  ver[k] = v
  log:write(k, " ", v, " .\n")
  local c = "c" .. w
  local n = assert(d:incr(c, 1, 0))
  ver[c] = n
  log:write(c, " ", n, " .\n")
end
]]

local READER = "local BIG = arg[2] == 'evict'\n" .. VALUE .. [[
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


-- a list writer: rpush "w:n" (n increasing) and lpop from its list L<w>,
-- around a target length; logs "push n ." and "pop n ." once acknowledged
-- (and "del n ." after deleting the whole list, with arg[5] = "delete")
-- listlog(path): the last element pushed (P) and popped or deleted (Q) by a
-- list writer, from its log, in writers and here
local LISTLOG = [[
local function listlog(path)
  local P, Q, skipped = 0, 0, {}
  local f = io.open(path)
  if f then
    for line in f:lines() do
      local what, n = line:match("^(%a+) (%d+) %.$")
      if what == "push" then P = tonumber(n)
      elseif what == "pop" or what == "del" then Q = tonumber(n)
      elseif what == "skip" then skipped[tonumber(n)] = true end
    end
    f:close()
  end
  return P, Q, skipped
end
]]

local LISTER = LISTLOG .. [[
local shm = require "shm"
local key, w, logpath, target, deletes = tonumber(arg[1]), arg[2], arg[3], tonumber(arg[4]), arg[5] == "delete"
local d = assert(shm.dict.open(key))
local L = "L" .. w
local P, Q = listlog(logpath)
P = P + 1 -- (the push in flight when killed may have been made, or not: that number is skipped)
local log = assert(io.open(logpath, "a"))
log:setvbuf("no")
log:write("\nskip " .. P .. " .\n") -- (one write per line: a kill tears none but the last)
print("ready") io.stdout:flush()
math.randomseed(os.time() + tonumber(w) * 1000 + #logpath)
while true do
  local len = assert(d:llen(L))
  if deletes and len > target and math.random(1, 50) == 1 then
    assert(d:delete(L))
    log:write("del " .. P .. " .\n")
  elseif math.random() < (len < target and 0.6 or 0.4) then
    P = P + 1
    assert(d:rpush(L, w .. ":" .. P))
    log:write("push " .. P .. " .\n")
  else
    local x = d:lpop(L)
    if x then
      local n = assert(tonumber(x:match("^" .. w .. ":(%d+)$")), x)
      if n <= Q then print("BAD popped " .. x .. " after " .. Q) io.stdout:flush() os.exit(1) end
      Q = n
      log:write("pop " .. n .. " .\n")
    end
  end
end
]]

local acked = H.load(ACKED .. "return acked")()

local readlog = H.load(LISTLOG .. "return listlog")()

-- the storm: kill a random writer every 2 to 12 ms (with SIGKILL), check
-- the dict, start it again; `spawn(w)` starts writer w into writers[w]
local function storm(d, writers, spawn, n)
  local timer = shm.create(shm.PRIVATE, 8)
  timer:remove() -- (gone at detach or exit, whatever happens below)
  local kills, t0 = 0, H.now()
  while kills < KILLS and H.now() - t0 < SECONDS do
    timer:wait(0, 0, math.random(2, 12) / 1000) -- a futex wait nobody notifies: a timer
    local w = math.random(1, n)
    H.kill(writers[w].pid)
    local out = writers[w]:finish()
    assert(not out:find("BAD") and not out:find("traceback"), out) -- (a writer that failed by itself)
    kills = kills + 1
    d:stat() -- recovers if it died holding the lock, then checks the whole structure
    spawn(w)
  end
  timer:detach()
  return kills
end

local function killall(writers)
  for w, h in pairs(writers) do H.kill(h.pid) h:finish() writers[w] = nil end
end

describe("shm.dict under kill -9", function()
  after_each(H.cleanup)

  -- W writers of keys (safe_set/delete/incr, or evicting sets) and two readers
  local function keystorm(cap, mode)
    local key = H.key()
    local d = assert(shm.dict.create(key, cap))
    local raw = d:segment()
    local empty = d:free_space()
    local value = H.load("local BIG = ...\n" .. VALUE .. "return value")(mode == "evict")
    local logs, writers, readers = {}, {}, {}
    finally(function()
      for _, h in pairs(writers) do H.kill(h.pid) end
      for _, h in pairs(readers) do H.kill(h.pid) end
      for w = 1, W do -- a writer killed while compacting its log
        if logs[w] then os.remove(logs[w] .. ".tmp") end
      end
    end)
    local function spawn_writer(w)
      local h = H.spawn(WRITER, { key, w, logs[w], mode })
      writers[w] = h -- (recorded first: the finally above kills it whatever happens)
      assert(h:line() == "ready")
    end
    for w = 1, W do
      logs[w] = H.tmpfile()
      spawn_writer(w)
    end
    for r = 1, 2 do
      local h = H.spawn(READER, { key, mode })
      readers[r] = h
      assert(h:line() == "ready")
    end
    local kills = storm(d, writers, spawn_writer, W)
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
    killall(writers)
    assert.is_true(caught, "never caught a writer holding the dict's lock")
    for _, h in ipairs(readers) do
      H.kill(h.pid)
      local out = h:finish()
      assert.is_nil(out:match("BAD[^\n]*"), out:match("BAD[^\n]*"))
      assert.is_truthy(out:match("reads %d+"), "a reader made no progress")
    end
    readers = {}
    -- every key: the acknowledged version, or the next one (in flight when
    -- killed), or (evicting) nothing
    local checked = 0
    for w = 1, W do
      local ver = acked(logs[w])
      for i = 1, KEYS do
        local k = "w" .. w .. ":" .. i
        local v, got = ver[k] or 0, d:get(k)
        local ok = got == (v > 0 and value(k, v) or nil) or got == value(k, v + 1) or (mode == "evict" and got == nil)
        assert.is_true(ok, string.format("%s: acked %d, found %s", k, v, tostring(got)))
        checked = checked + 1
      end
      local c, got = ver["c" .. w] or 0, d:get("c" .. w) or 0
      assert.is_true(got == c or got == c + 1 or (mode == "evict" and got < c), "counter " .. w)
    end
    local st = d:stat()
    print(string.format("\n    dict storm%s passed: %d writers killed (kill -9), %d keys all consistent, %d locks"
      .. " recovered, %d evictions", mode and " (" .. mode .. ")" or "", kills, checked, st.recovered, st.evicted))
    assert.is_true(st.recovered >= 1, "no lock was taken over")
    if mode == "evict" then assert.is_true(st.evicted > 0, "nothing was evicted") end
    -- no space leaked: deleting everything gives a new dict's free space back
    for _, k in ipairs(d:get_keys(0)) do assert.is_true((d:delete(k))) end
    assert.equal(0, d:stat().count)
    assert.equal(empty, d:free_space())
    d:remove()
    d:detach()
  end

  it("stays consistent: every key holds its acknowledged or in-flight value, no space leaks #storm", function()
    keystorm(1024 * 1024)
  end)

  it("stays consistent while sets evict #storm", function()
    keystorm(256 * 1024, "evict")
  end)

  -- two list writers around a target length (hundreds, or 10^5), pushing
  -- and popping; every element acknowledged and not popped is still there,
  -- in order, and none comes back
  local function liststorm(target, deletes)
    local LW = 2
    local key = H.key()
    local d = assert(shm.dict.create(key, PROVE and 64 * 1024 * 1024 or 4 * 1024 * 1024))
    local empty = d:free_space()
    local logs, writers = {}, {}
    finally(function() for _, h in pairs(writers) do H.kill(h.pid) end end)
    for w = 1, LW do -- the lists start long
      logs[w] = H.tmpfile()
      for n = 1, target do assert(d:rpush("L" .. w, w .. ":" .. n)) end
      local f = assert(io.open(logs[w], "w"))
      f:write("push ", target, " .\n")
      f:close()
    end
    local function spawn(w)
      local h = H.spawn(LISTER, { key, w, logs[w], target, deletes and "delete" or "keep" })
      writers[w] = h
      assert(h:line() == "ready")
    end
    for w = 1, LW do spawn(w) end
    local kills = storm(d, writers, spawn, LW)
    killall(writers)
    local total = 0
    for w = 1, LW do
      local P, Q, skipped = readlog(logs[w])
      local L, last, seen = "L" .. w, Q, {}
      local len = d:llen(L)
      for _ = 1, len do
        local x = d:lpop(L)
        local n = tonumber(x:match("^" .. w .. ":(%d+)$"))
        assert.is_true(n > last, string.format("%s: %s after %d (popped up to %d)", L, x, last, Q))
        assert.is_true(n <= P + 1, string.format("%s: %s never pushed (acked up to %d)", L, x, P))
        seen[n], last = true, n
      end
      -- (a delete in flight when killed may have emptied the list: only the
      -- oldest elements may be missing then, or all of them when that
      -- delete was the writer's last call; what is left is then at most
      -- Q + 1 and P + 1, a pop and a push in flight, which the order and
      -- bounds checks above cover)
      local from = Q + 2
      if deletes then
        from = P + 1
        for n = Q + 2, P do if seen[n] then from = n break end end
      end
      for n = from, P do
        assert.is_true(seen[n] or skipped[n], string.format("%s: element %d lost (%d..%d)", L, n, Q, P))
      end
      total = total + len
    end
    local st = d:stat()
    print(string.format("\n    list storm%s passed: %d writers killed (kill -9), %d elements all in order, %d locks"
      .. " recovered",
      deletes and " (deletes)" or "", kills, total, st.recovered))
    assert.equal(0, st.count)
    assert.equal(empty, d:free_space())
    d:remove()
    d:detach()
  end

  it("keeps long lists whole and in order #storm", function()
    liststorm(PROVE and 100000 or 300)
  end)

  it("keeps long lists whole while they are deleted #storm", function()
    liststorm(PROVE and 100000 or 300, true)
  end)
end)

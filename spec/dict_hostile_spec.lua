-- shm.dict with hostile memory, and readers that take no lock.  Each case
-- runs in a child process, so that a crash shows as a signal in its exit
-- status and a hang as `timeout`'s 124.
local shm = require "shm"
local H = require "helpers"

local L = shm.dict.layout

-- Run `code` in a child (under `timeout`) with the dict's key as `...`;
-- returns its output and exit code.
local function child(code, key, secs)
  return H.run([[
    local shm = require "shm"
    local L = shm.dict.layout
    local key = tonumber((...))
    local d = assert(shm.dict.open(key))
    local raw = assert(shm.open(key))
    local function heap() return raw:unpack(L.heap_off, "<J") end
  ]] .. code, { key }, { interpreter = "timeout " .. (secs or 20) .. " " .. H.lua })
end

-- the first entry's offset in the segment (the dict has one key)
local FIRST = [[
local function first_entry()
  local off = heap()
  for u = 0, 4096 do
    local w = raw:unpack(off + u * L.unit, "<I4")
    if math.floor(w / 65536) == 0x4c44 and math.floor(w / 256) % 256 == 2 then
      return off + u * L.unit
    end
  end
end
]]

describe("shm.dict with hostile memory", function()
  local key, d
  before_each(function()
    key = H.key()
    d = assert(shm.dict.create(key, 64 * 1024))
  end)
  after_each(function()
    d:remove()
    d:detach()
    H.cleanup()
  end)

  it("gets past sequence words stuck odd (bounded, then under the lock)", function()
    d:set("k", "v")
    local out, rc = child([[
      local nb = raw:unpack(L.nbuckets, "<I4")
      local function seq(b) return L.header + 8 * b + 4 end -- (a bucket: head, sequence word)
      local function odd()
        local n = 0
        for b = 0, nb - 1 do n = n + raw:unpack(seq(b), "<I4") % 2 end
        return n
      end
      for b = 0, nb - 1 do raw:pack(seq(b), "<I4", 12345) end -- "a writer is inside", forever
      assert(d:get("k") == "v")
      assert(d:ttl("k") == 0)
      assert(d:set("k", "w"))
      assert(odd() == nb - 1, "the writer made its bucket's word even again")
      io.write(d:get("k"))
    ]], key)
    assert.equal(0, rc, out)
    assert.equal("w", out)
  end)

  it("reports scribbled chains, entries, free lists, LRU and journal as corrupted", function()
    local cases = {
      { "bucket", [[ for b = 0, 1023 do raw:pack(L.header + 4 * b, "<I4", 0x7ffffff0) end
                    return d:get("k") ]], "bad hash chain" },
      { "entry", FIRST .. [[ raw:pack(first_entry() + 24, "<I4", 0x7fffffff) -- vlen
                    return d:get("k") ]], "bad hash chain" },
      { "free list", [[ for o = 0, 31 do raw:pack(L.freelist + 4 * o, "<I4", 3) end
                    return d:set("other", string.rep("x", 100)) ]], "bad free list" },
      { "LRU", [[ raw:pack(L.lru_tail, "<I4", 5) return d:flush_expired() ]], "bad LRU list" },
      { "journal", [[
          raw:pack(L.jn, "<I4", 3)
          raw:pack(L.journal, "<I4I4", 1, 0)          -- word 1: inside the configuration
          raw:pack(L.lock, "<I4I4", 0x3ffffff0, 7)    -- held by a process that is no more
          return d:set("k", 1) ]], "bad journal entry" },
      { "table", FIRST .. [[ d:set("k", { a = 1 })
          local e = first_entry()
          raw:pack(e + L.entry + 8 + 1, "<I4", 0x7fffffff) -- the table's pair count
          return d:get("k") ]], "bad table value" },
    }
    for _, c in ipairs(cases) do
      d:flush_all() d:flush_expired()
      d:set("k", "value")
      local out, rc = child([[
        local ok, err = pcall(function() ]] .. c[2] .. [[ end)
        io.write(tostring(ok), " ", tostring(err))
      ]], key)
      assert.equal(0, rc, c[1] .. ": " .. out)
      assert.matches("false .*shm%.dict: corrupted dict %(" .. c[3]:gsub("%p", "%%%0") .. "%)", out, nil,
        c[1])
      -- start the next case from a fresh dict
      d:remove() d:detach()
      key = H.key()
      d = assert(shm.dict.create(key, 64 * 1024))
    end
  end)

  it("rolls back the journal of a writer that died inside set", function()
    d:set("k", "old")
    local out, rc = child([[
      -- a dead writer's half-done change: count bumped, journalled, lock held
      local count = raw:unpack(L.count, "<I4")
      raw:pack(L.journal, "<I4I4", L.count / 4, count)
      raw:pack(L.jn, "<I4", 1)
      raw:pack(L.count, "<I4", count + 7)
      raw:pack(L.lock, "<I4I4", 0x3ffffff0, 7)
      io.write(d:get("k"), " ", d:stat().count, " ", d:stat().recovered)
    ]], key)
    assert.equal(0, rc, out)
    assert.equal("old 1 1", out)
  end)

  it("lets readers read while another process holds the lock; writers wait", function()
    d:set("k", "v")
    d:lpush("l", "x")
    -- a live process (blocked on a FIFO) named as the lock's owner
    local fifo = H.fifo()
    local holder = H.spawn([[
      print("ready") io.stdout:flush()
      io.open((...)):read("*l")
    ]], { fifo })
    local pid = holder.pid
    assert(holder:line() == "ready")
    local f = assert(io.open("/proc/" .. pid .. "/stat"))
    local stat = f:read("*a")
    f:close()
    local fields = {}
    for w in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
    local tag = tonumber(fields[20]) % 4294967296 -- field 22: start time
    local raw = d:segment()
    raw:pack(L.lock, "<I4I4", pid, tag == 0 and 1 or tag)
    local out, rc = child([[
      io.write(d:get("k"), " ", tostring(d:get_stale("k")), " ", d:ttl("k"), " ", d:llen("l"))
    ]], key, 5)
    assert.equal(0, rc, out)
    assert.equal("v v 0 1", out)
    out, rc = child([[ d:set("k", "w") ]], key, 1)
    assert.equal(124, rc, "the writer did not wait for the lock: " .. out)
    raw:pack(L.lock, "<I4I4", 0, 0)
    H.release(fifo)
    holder:finish()
    assert.equal("v", d:get("k"))
  end)
end)

describe("shm.dict fuzzing", function()
  after_each(H.cleanup)

  it("survives random calls and random bytes over its header, buckets and heap", function()
    local seed = tonumber(os.getenv("FUZZ_SEED") or "20261124")
    local calls = tonumber(os.getenv("FUZZ_CALLS") or "60000")
    local key = H.key()
    local out, rc = H.run([[
      local shm = require "shm"
      local seed, calls, key = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
      math.randomseed(seed)
      local R = math.random
      local d = assert(shm.dict.create(key, 64 * 1024))
      local raw = assert(shm.open(key))
      local size = raw.size
      local keys = {}
      for i = 1, 50 do keys[i] = "k" .. i end
      keys[51] = string.rep("long", 200)
      local values = { "", "v", string.rep("x", 300), 1, -2.5, true, false, { 1, { a = "b" } }, nil }
      local methods = { "get", "get_stale", "set", "safe_set", "add", "safe_add", "replace",
        "delete", "incr", "lpush", "rpush", "lpop", "rpop", "llen", "ttl", "expire",
        "flush_expired", "get_keys", "stat", "free_space" }
      local made, raised = 0, 0
      for i = 1, calls do
        local r = R(100)
        if r <= 3 then
          -- scribble: mostly the state, the buckets and the heap; sometimes anywhere
          local at = R(3) == 1 and R(0, size - 9) or R(192, math.min(size - 9, 8192))
          if at < 64 or at >= 72 then -- (not the lock word: a live owner would be waited for)
            raw:pack(at, "<I4", R(0, 0xffff) * 65536 + R(0, 0xffff)) -- (5.1: 31-bit ranges)
          end
        elseif r == 4 then
          pcall(d.flush_all, d)
        else
          local m = methods[R(#methods)]
          local k = keys[R(#keys)]
          local a
          if m == "incr" then a = R(2) == 1 and 1 or 0.5
          elseif m == "expire" then a = R(0, 2) / 1000
          elseif m == "lpush" or m == "rpush" then a = R(2) == 1 and "e" or 7
          else a = values[R(#values + 1)] end
          made = made + 1
          local ok = pcall(d[m], d, k, a, R(0, 3) == 0 and 0.001 or 0, R(0, 3))
          if m == "flush_expired" or m == "get_keys" or m == "stat" or m == "free_space" then
            ok = pcall(d[m], d)
          end
          if not ok then
            raised = raised + 1
            -- a corrupted dict stays corrupted: start a new one now and then
            if R(20) == 1 then
              d:remove() d:detach() raw:detach()
              d = assert(shm.dict.create(key, 64 * 1024))
              raw = assert(shm.open(key))
            end
          end
        end
      end
      d:remove() d:detach() raw:detach()
      io.write(string.format("calls=%d raised=%d", made, raised))
    ]], { seed, calls, key }, { interpreter = "timeout 300 " .. H.lua })
    assert.equal(0, rc, out:sub(-2000))
    local made, raised = out:match("calls=(%d+) raised=(%d+)$")
    assert.is_truthy(made, out:sub(-500))
    assert.is_true(tonumber(raised) > 0 and tonumber(raised) < tonumber(made))
    print(string.format("\n    dict fuzz passed: seed %d, %s calls (%s raised an error, as they must), no crash",
      seed, made, raised))
  end)
end)

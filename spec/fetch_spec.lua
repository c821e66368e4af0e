-- d:fetch: read-through with one filler among all processes: the states it
-- reports, the callback's results and failures (raise, nil, nil + err, a ttl),
-- 16 processes missing one key at once (the callback runs once), a callback
-- past lock_timeout, a filler killed mid-callback, and a kill storm.
local shm = require "shm"
local H = require "helpers"

local newdict = H.dict

local OPEN = H.OPEN_DICT -- (children: the dict of arg[1] as d, say(...))

local function results(...) return { n = select("#", ...), ... } end

describe("d:fetch", function()
  local d, key
  before_each(function() d, key = newdict() end)
  after_each(function()
    d:remove() d:detach()
    H.cleanup()
  end)

  it("is a method of every dict (through the FFI methods table too)", function()
    assert.is_function(d.fetch)
    local m = shm.dict.open(key)
    assert.equal(d.fetch, m.fetch)
    m:detach()
  end)

  it("runs the callback on a miss and stores its value; a hit does not", function()
    local runs = 0
    local function cb(a, b)
      runs = runs + 1
      return a .. b
    end
    assert.same(results("xy", nil, "miss"), results(d:fetch("k", nil, cb, "x", "y")))
    assert.same(results("xy", nil, "hit"), results(d:fetch("k", nil, cb, "x", "z")))
    assert.equal(1, runs)
    assert.equal("xy", d:get("k"))
    assert.is_nil(d:get(require("shm.fetch").PREFIX .. "k")) -- the per-key lock is gone
    -- tables, numbers, booleans as values; numbers as keys
    local function tbl() return { a = { 1, 2 } } end
    assert.same(results({ a = { 1, 2 } }, nil, "miss"), results(d:fetch("t", {}, tbl)))
    assert.same(results(false, nil, "miss"), results(d:fetch(7, {}, function() return false end)))
    assert.same(results(false, nil, "hit"), results(d:fetch("7", {}, cb)))
    assert.same(results(1.5, nil, "miss"), results(d:fetch("n", {}, function() return 1.5 end)))
  end)

  it("keeps a value for ttl (or the callback's third result), a nil result for neg_ttl", function()
    local runs = 0
    local function cb(v, ttl)
      runs = runs + 1
      return v, nil, ttl
    end
    assert.same(results("v", nil, "miss"), results(d:fetch("k", { ttl = 0.05 }, cb, "v")))
    assert.is_true(d:ttl("k") > 0)
    assert.is_true(H.until_true(function() return d:get("k") == nil end))
    assert.same(results("w", nil, "miss"), results(d:fetch("k", { ttl = 0.05 }, cb, "w", 0)))
    assert.equal(0, d:ttl("k")) -- the callback's ttl won
    -- a nil result: remembered as a miss
    assert.same(results(nil, nil, "miss"), results(d:fetch("nil", { neg_ttl = 0.05 }, cb, nil)))
    assert.same(results(nil, nil, "hit"), results(d:fetch("nil", { neg_ttl = 0.05 }, cb, "x")))
    assert.equal(3, runs)
    assert.is_true(H.until_true(function() return d:get("nil") == nil end))
    assert.same(results("x", nil, "miss"), results(d:fetch("nil", {}, cb, "x")))
    assert.equal(4, runs)
  end)

  it("returns a callback's error (raised, or nil + err) and releases the key", function()
    assert.same(results(nil, "boom"), results(d:fetch("k", {}, error, "boom", 0)))
    assert.same(results(nil, "soft"), results(d:fetch("k", {}, function() return nil, "soft" end)))
    local e = {}
    assert.same(results(nil, e), results(d:fetch("k", {}, error, e)))
    assert.is_nil(d:get("k"))
    -- nothing is held: the next fetch runs its callback at once, even with no lock_timeout
    assert.same(results(1, nil, "miss"), results(d:fetch("k", { lock_timeout = 0 }, function() return 1 end)))
  end)

  it("serves the stale value when the callback fails and resurrect_ttl is set", function()
    assert(d:set("k", "old", 0.01))
    assert.is_true(H.until_true(function() return d:get("k") == nil end))
    assert.same(results("old", "boom", "stale"), results(d:fetch("k", { resurrect_ttl = 60 }, error, "boom", 0)))
    assert.same(results("old", nil, "hit"), results(d:fetch("k", {}, error, "boom", 0)))
    assert.is_true(d:ttl("k") > 1)
    -- no stale value: the error
    assert.same(results(nil, "boom"), results(d:fetch("none", { resurrect_ttl = 60 }, error, "boom", 0)))
  end)

  it("lets the callback use the dict, and fetch another key", function()
    local v, err, state = d:fetch("outer", {}, function()
      assert(d:set("side", 1))
      local inner = d:fetch("inner", {}, function() return "in" end)
      return "out:" .. inner .. ":" .. d:get("side")
    end)
    assert.same({ "out:in:1", nil, "miss" }, { v, err, state })
    assert.equal("in", d:get("inner"))
  end)

  it("checks its arguments, and returns the dict's errors", function()
    assert.has_error(function() d:fetch("k", 5, print) end, "bad argument #2 to 'fetch' (table expected, got number)")
    assert.has_error(function() d:fetch("k", {}, "x") end, "bad argument #3 to 'fetch' (function expected, got string)")
    assert.has_error(function() d:fetch("k", { ttl = -1 }, print) end)
    assert.has_error(function() d:fetch("k", { lock_timeout = "x" }, print) end)
    assert.has_error(function() d.fetch(nil, "k", {}, print) end)
    assert.has_error(function() d:fetch({}, {}, print) end)
    local callable = setmetatable({}, { __call = function(_, x) return x end })
    assert.same(results(3, nil, "miss"), results(d:fetch("c", {}, callable, 3)))
    assert.same(results(nil, "empty key"), results(d:fetch("", {}, print)))
    assert(d:rpush("list", 1))
    assert.same(results(nil, "value is a list"), results(d:fetch("list", {}, print)))
    assert.same(results(nil, "could not store the value: bad value type"),
      results(d:fetch("f", {}, function() return print end)))
    local d2 = newdict()
    d2:remove() d2:detach()
    assert.has_error(function() d2:fetch("k", {}, print) end)
  end)

  it("fills and hits 10^5 keys", function()
    local big = newdict(32 * 1024 * 1024)
    finally(function() big:remove() big:detach() end)
    local function cb(i) return i * 2 end
    local N = H.valgrind and 10000 or 100000 -- (10^4 under valgrind: ~50x slower there)
    for i = 1, N do
      local v, _, state = big:fetch("k" .. i, {}, cb, i)
      if v ~= i * 2 or state ~= "miss" then assert.equal(i * 2, v) assert.equal("miss", state) end
    end
    for i = 1, N do
      local v, _, state = big:fetch("k" .. i, {}, cb, -1)
      if v ~= i * 2 or state ~= "hit" then assert.equal(i * 2, v) assert.equal("hit", state) end
    end
    assert.equal(N, big:stat().count)
  end)

  it("runs the callback once when 16 processes miss one key at once", function()
    -- a barrier: each child counts itself in, and the callback waits for all
    -- 16 (they are all asking) before it returns
    local CHILD = OPEN .. [[
      local seg = d:segment()
      d:incr("started", 1, 0)
      local v, err, state = d:fetch("hot", { ttl = 0, lock_timeout = 60 }, function()
        d:incr("runs", 1, 0)
        local deadline = os.time() + 30
        while d:get("started") < 16 and os.time() < deadline do seg:wait(0, seg:load(0), 0.005) end
        return { value = "computed", by = "one" }
      end)
      say(v and v.value, err, state)
    ]]
    local children = {}
    for i = 1, 16 do children[i] = H.spawn(CHILD, { key }) end
    local states = {}
    for i = 1, 16 do
      local out, rc = children[i]:finish()
      assert.equal(0, rc, out)
      local v, err, state = out:match("^(%S+)\t(%S+)\t(%S+)\n$")
      assert.equal("computed", v, out)
      assert.equal("nil", err)
      states[state] = (states[state] or 0) + 1
    end
    assert.equal(1, d:get("runs"))
    assert.equal(1, states.miss)
    assert.equal(15, (states.shared or 0) + (states.hit or 0))
  end)

  it("gives up after lock_timeout while another process's callback runs (or serves the stale value)", function()
    local fifo = H.fifo()
    local filler = H.spawn(OPEN .. [[
      local v, err, state = d:fetch("slow", {}, function()
        say("in callback")
        io.open(arg[2]):read("*l")
        return "slow value"
      end)
      say(v, err, state)
    ]], { key, fifo })
    assert.equal("in callback", filler:line())
    assert.same(results(nil, "could not acquire callback lock: timeout"),
      results(d:fetch("slow", { lock_timeout = 0.05 }, error, "not me")))
    assert(d:set("slow", "stale one", 0.001))
    assert.is_true(H.until_true(function() return d:get("slow") == nil end))
    assert.same(results("stale one", "could not acquire callback lock: timeout", "stale"),
      results(d:fetch("slow", { lock_timeout = 0.05, resurrect_ttl = 0.001 }, error, "not me")))
    -- a waiter with time enough gets the filler's value
    local waiter = H.spawn(OPEN .. [[
      say("waiting")
      say(d:fetch("slow", { lock_timeout = 60 }, error, "not me either"))
    ]], { key })
    assert.equal("waiting", waiter:line())
    H.release(fifo)
    local out, rc = filler:finish()
    assert.equal(0, rc, out)
    assert.equal("slow value\tnil\tmiss\n", out)
    out, rc = waiter:finish()
    assert.equal(0, rc, out)
    assert.truthy(out == "slow value\tnil\tshared\n" or out == "slow value\tnil\thit\n", out)
  end)

  it("hands the key to the next process at once when the filler is killed mid-callback", function()
    local fifo = H.fifo()
    local filler = H.spawn(OPEN .. [[
      d:fetch("k", {}, function()
        d:incr("runs", 1, 0)
        say("in callback")
        io.open(arg[2]):read("*l")
        return "never"
      end)
    ]], { key, fifo })
    assert.equal("in callback", filler:line())
    -- lock_exptime 600: only the death of the filler lets the waiter in
    local waiter = H.spawn(OPEN .. [[
      say("waiting")
      say(d:fetch("k", { lock_timeout = 60, lock_exptime = 600 }, function()
        d:incr("runs", 1, 0)
        return "second"
      end))
    ]], { key })
    assert.equal("waiting", waiter:line())
    H.kill(filler.pid)
    filler:finish()
    local out, rc = waiter:finish()
    assert.equal(0, rc, out)
    assert.equal("second\tnil\tmiss\n", out)
    assert.equal(2, d:get("runs"))
  end)

  it("survives a kill storm: values are whole, callbacks never overlap on a key #storm", function()
    local WORKER = OPEN .. [[
      local core = require "shm.core"
      local me = string.format("%d %d", core._self())
      math.randomseed(tonumber(io.open("/proc/self/stat"):read("*n")))
      say("ready")
      while true do
        local k = "key" .. math.random(1, 4)
        local v, err = d:fetch(k, { ttl = 0.002 * math.random(1, 5), lock_timeout = 60, lock_exptime = 600 },
          function()
            -- the process inside a callback for k: none, or one that died in it
            local inside = d:get("in:" .. k)
            if inside then
              local pid, tag = inside:match("^(%d+) (%d+)$")
              if not core._dead(tonumber(pid), tonumber(tag)) then say("OVERLAP " .. k) os.exit(1) end
            end
            d:set("in:" .. k, me)
            d:incr("runs", 1, 0)
            local v = { key = k, pad = string.rep("x", math.random(0, 300)) }
            d:delete("in:" .. k)
            return v
          end)
        if v == nil or v.key ~= k then say("BAD " .. tostring(err)) os.exit(1) end
      end
    ]]
    H.kill_storm(WORKER, { key }, 4, 30, function(out)
      assert.is_nil(out:find("OVERLAP", 1, true) or out:find("BAD", 1, true), out)
    end)
    assert.is_true(d:get("runs") > 0)
    -- every key whole, and no per-key lock left to a dead filler (taken at once, or over)
    for k = 1, 4 do
      local v = d:get_stale("key" .. k)
      assert.is_true(v == nil or v.key == "key" .. k)
      local v2, err = d:fetch("key" .. k, { lock_timeout = 30 }, function() return { key = "key" .. k } end)
      assert.equal("key" .. k, v2 and v2.key, err)
    end
    print(string.format("\n    fetch storm: 30 kills, %d callbacks run", d:get("runs")))
  end)
end)

-- shm.dict: ngx.shared.DICT's behaviour, case by case (ported from
-- lua-nginx-module's t/043-shdict.t, t/144-shdict-incr-init.t,
-- t/145-shdict-list.t and lua-resty-core's t/shdict.t), then what it adds.
local shm = require "shm"
local H = require "helpers"

-- all the values a call returns (the count matters: ngx returns one nil, not two)
local function pack(...) return { n = select("#", ...), ... } end
local R = pack

local newdict, pause = H.private_dict, H.pause

describe("shm.dict", function()
  local d
  before_each(function() d = newdict() end)
  after_each(function() d:detach() H.cleanup() end)

  describe("values and keys", function()
    it("stores numbers, strings and booleans with their types", function()
      assert.same(R(true, nil, false), pack(d:set("foo", 32)))
      d:set("bah", 10502)
      d:set("baz", 1.28)
      d:set("baz", 3.96)
      d:set("t", true)
      d:set("f", false)
      d:set("empty", "")
      assert.equal(32, d:get("foo"))
      assert.equal(10502, d:get("bah"))
      assert.equal(3.96, d:get("baz"))
      assert.is_true(d:get("t"))
      assert.is_false(d:get("f"))
      assert.equal("", d:get("empty"))
      assert.equal("number", type(d:get("foo")))
      local big = string.rep("helloworld", 1024)
      d:set("big", big)
      assert.equal(big, d:get("big"))
      assert.same(R(big, nil, false), pack(d:get_stale("big")))
    end)

    it("keeps binary strings and overwrites with longer and shorter values", function()
      local bin = "a\0b\255\1"
      d:set("foo", bin)
      assert.equal(bin, d:get("foo"))
      d:set("foo", "hello, world")
      assert.equal("hello, world", d:get("foo"))
      d:set("foo", "hello")
      assert.equal("hello", d:get("foo"))
    end)

    it("converts number keys with tostring", function()
      assert.same(R(true, nil, false), pack(d:set(1234, "cat")))
      d:set("1234", "dog")
      assert.equal("dog", d:get(1234))
      d:set(256, "bird")
      assert.equal("bird", d:get("256"))
    end)

    it("takes keys of 1 to 65535 bytes", function()
      local k = string.rep("a", 65535)
      assert.is_true((d:set(k, "hello")))
      assert.equal("hello", d:get(k))
      local long = string.rep("a", 65536)
      for _, m in ipairs({ "get", "get_stale", "ttl", "delete" }) do
        assert.same(R(nil, "key too long"), pack(d[m](d, long)), m)
        assert.same(R(nil, "nil key"), pack(d[m](d, nil)), m)
        assert.same(R(nil, "empty key"), pack(d[m](d, "")), m)
      end
      assert.same(R(nil, "key too long"), pack(d:set(long, 1)))
      assert.same(R(nil, "nil key"), pack(d:set(nil, 32)))
      assert.same(R(nil, "empty key"), pack(d:set("", 32)))
      assert.same(R(nil, "nil key"), pack(d:incr(nil, 1)))
      assert.same(R(nil, "empty key"), pack(d:expire("", 1)))
    end)

    it("returns one nil for a missing key", function()
      assert.same(R(nil), pack(d:get("nonexistent")))
      assert.same(R(nil), pack(d:get_stale("nonexistent")))
    end)

    it("refuses functions, userdata and coroutines: nil, \"bad value type\"", function()
      for _, v in ipairs({ print, io.stdout, coroutine.create(function() end), d }) do
        assert.same(R(nil, "bad value type"), pack(d:set("foo", v)))
      end
      assert.is_nil(d:get("foo"))
    end)

    it("checks exptime and flags before the key", function()
      assert.has_error(function() d:set("foo", 32, -1) end, 'bad "exptime" argument')
      assert.has_error(function() d:set("foo", 32, "x") end, 'bad "exptime" argument')
      assert.has_error(function() d:set(nil, 32, -1) end, 'bad "exptime" argument')
      assert.has_error(function() d:set("foo", 32, 0, "x") end, 'bad "flags" argument')
    end)
  end)

  describe("tables (beyond ngx)", function()
    it("stores plain nested tables of strings, numbers and booleans", function()
      local v = { name = "ann", tags = { "a", "b" }, n = 3, f = 1.5, ok = true, [7] = false,
                  deep = { { { "x" } } } }
      assert.is_true((d:set("t", v)))
      local got = d:get("t")
      assert.same(v, got)
      assert.is_false(got == v) -- a copy
      assert.same({}, d:get((d:set("e", {}) and "e")))
    end)

    it("gives nil, \"bad value type\" for a cycle, a function, userdata or a table key", function()
      local cyc = {}
      cyc.self = cyc
      local bad = { cyc, { f = print }, { u = io.stdout }, { [{}] = 1 },
                    setmetatable({}, { __index = {} }) }
      for i, v in ipairs(bad) do
        assert.same(R(nil, "bad value type"), pack(d:set("t", v)), i)
      end
      local deep = {}
      local t = deep
      for _ = 1, 200 do t[1] = {} t = t[1] end
      assert.same(R(nil, "bad value type"), pack(d:set("t", deep)))
      -- a table used twice (no cycle) is fine: it comes back as two copies
      local shared = { 1 }
      d:set("t", { a = shared, b = shared })
      assert.same({ a = { 1 }, b = { 1 } }, d:get("t"))
    end)

    if H.int64 then it("keeps integers integers and floats floats (5.3+)", function()
      d:set("i", 3)
      d:set("f", 3.0)
      d:set("t", { 3, 3.0, H.maxint })
      assert.equal("integer", math.type(d:get("i")))
      assert.equal("float", math.type(d:get("f")))
      local t = d:get("t")
      assert.equal("integer", math.type(t[1]))
      assert.equal("float", math.type(t[2]))
      assert.equal(H.maxint, t[3])
    end) end
  end)

  describe("flags", function()
    it("returns flags only when non-zero", function()
      d:set("foo", 32, 0, 199)
      assert.same(R(32, 199), pack(d:get("foo")))
      d:set("bah", 10502, 202)
      assert.same(R(10502), pack(d:get("bah")))
      d:set("foo", "bar", 0, 72)
      assert.same(R("bar", 72, false), pack(d:get_stale("foo")))
      d:set("foo", false, 0, 325)
      assert.same(R(false, 325, false), pack(d:get_stale("foo")))
      d:set("neg", 1, 0, -1)
      assert.same(R(1, -1), pack(d:get("neg")))
      -- ngx's flags are a C int: 2^31 and above read back as -2^31 (the oracle
      -- spec compares these with ngx.shared.DICT itself)
      for _, f in ipairs({ 2147483647, -2147483648 }) do
        d:set("f", 1, 0, f)
        assert.same(R(1, f), pack(d:get("f")))
      end
      for _, f in ipairs({ 2147483648, 4294967295, 2 ^ 40, -2 ^ 40 }) do
        d:set("f", 1, 0, f)
        assert.same(R(1, -2147483648), pack(d:get("f")))
      end
      d:set("foo", 3.14, 0, 78)
      d:set("foo", nil)
      assert.same(R(nil), pack(d:get("foo")))
    end)
  end)

  describe("delete, add, replace", function()
    it("deletes", function()
      assert.same(R(true, nil, false), pack(d:delete("foo")))
      d:set("foo", 32)
      assert.same(R(true, nil, false), pack(d:delete("foo")))
      assert.is_nil(d:get("foo"))
      d:set("foo", "hello, world")
      assert.equal("hello, world", d:get("foo"))
    end)

    it("adds only missing or expired keys", function()
      d:set("foo", 32)
      assert.same(R(false, "exists", false), pack(d:add("foo", 10502)))
      assert.equal(32, d:get("foo"))
      assert.same(R(true, nil, false), pack(d:add("new", 10502)))
      assert.equal(10502, d:get("new"))
      d:set("exp", "hi", 0.001)
      pause(0.01)
      assert.same(R(true, nil, false), pack(d:add("exp", "hello")))
      assert.equal("hello", d:get("exp"))
      assert.same(R(false, "attempt to add or replace nil values", false), pack(d:add("x", nil)))
      assert.same(R(false, "attempt to add or replace nil values", false), pack(d:replace("x", nil)))
    end)

    it("replaces only live keys", function()
      d:set("foo", 32)
      assert.same(R(true, nil, false), pack(d:replace("foo", 10502)))
      assert.same(R(true, nil, false), pack(d:replace("foo", "hello")))
      assert.equal("hello", d:get("foo"))
      assert.same(R(false, "not found", false), pack(d:replace("missing", 1)))
      assert.is_nil(d:get("missing"))
      d:set("foo", 2, 0)
      d:replace("foo", 32, 0.01)
      assert.equal(32, d:get("foo"))
      pause(0.02)
      assert.same(R(false, "not found", false), pack(d:replace("foo", 10502)))
    end)
  end)

  describe("expiry", function()
    it("expires values; get_stale still sees them until they are freed", function()
      d:set("keep", 1) -- an older key at the LRU tail: the store sweep stops there
      d:set("foo", 32, 0.01, 255)
      d:set("blah", 33, 0.5)
      pause(0.02)
      assert.same(R(nil), pack(d:get("foo")))
      assert.same(R(32, 255, true), pack(d:get_stale("foo")))
      assert.same(R(33, nil, false), pack(d:get_stale("blah")))
      assert.equal(33, d:get("blah"))
    end)

    it("ttl: seconds left, 0 without expiry, negative once expired, not found", function()
      assert.same(R(nil, "not found"), pack(d:ttl("key")))
      d:set("key", true)
      assert.equal(0, d:ttl("key"))
      d:set("key", true, 0.2)
      local t = d:ttl("key")
      assert.is_true(t > 0.15 and t <= 0.2, t)
      d:set("old", true) -- (see above)
      d:set("gone", true, 0.01)
      pause(0.02)
      assert.is_true(d:ttl("gone") < 0)
      d:set("huge", true, 2 ^ 31)
      local h = d:ttl("huge") -- (a millisecond may pass between the two calls)
      assert.is_true(h <= 2 ^ 31 and h > 2 ^ 31 - 1, h)
    end)

    it("expire: sets, persists (0) and brings back an expired key", function()
      assert.has_error(function() d:expire("key") end, 'bad "exptime" argument')
      assert.same(R(nil, "not found"), pack(d:expire("key", 1)))
      d:set("key", true, 0.05)
      assert.is_true(d:expire("key", 0.3))
      pause(0.1)
      assert.is_true(d:get("key"))
      assert.is_true(d:expire("key", 0))
      assert.equal(0, d:ttl("key"))
      d:set("old", 1)
      d:set("back", "v", 0.01)
      pause(0.02)
      assert.is_nil(d:get("back"))
      assert.is_true(d:expire("back", 10))
      assert.equal("v", d:get("back"))
    end)

    it("flush_all expires everything, flush_expired frees what expired", function()
      for _, k in ipairs({ "a", "b", "c" }) do d:set(k, k) end
      d:set("foo", 32)
      assert.same(R(), pack(d:flush_all()))
      assert.is_nil(d:get("foo"))
      assert.same(R(32, nil, true), pack(d:get_stale("foo")))
      assert.is_true(d:ttl("foo") < 0)
      assert.same({}, d:get_keys())
      assert.equal(1, d:flush_expired()) -- flush_all freed the 3 least recently used
      assert.equal(0, d:flush_expired())
      -- (long enough that no store sweeps them while the loop runs, even under valgrind)
      for i = 1, 100 do d:set("e" .. i, i, 0.5) end
      d:set("live1", 1)
      d:set("live2", 2)
      pause(0.6)
      assert.equal(42, d:flush_expired(42))
      assert.equal(58, d:flush_expired())
      assert.equal(2, #d:get_keys(0))
      for _ = 1, 150 do d:flush_all() end
    end)
  end)

  describe("incr", function()
    it("adds to numbers and returns one value without init", function()
      d:set("foo", 32)
      assert.same(R(10534), pack(d:incr("foo", 10502)))
      assert.equal(10534, d:get("foo"))
      d:set("foo", 32)
      assert.equal(32, d:incr("foo", 0))
      assert.equal(32.14, d:incr("foo", 0.14))
      d:set("foo", 32)
      assert.equal(31.86, d:incr("foo", -0.14))
      d:set(56, 1)
      assert.equal(33, d:incr(56, "32"))
      d:set("foo", 56)
      for _ = 1, 100 do d:incr("foo", 2) end
      assert.equal(256, d:get("foo"))
    end)

    it("not found, not a number, init and init_ttl", function()
      assert.same(R(nil, "not found"), pack(d:incr("foo", 2)))
      d:set("foo", true)
      assert.same(R(nil, "not a number"), pack(d:incr("foo", -0.14)))
      assert.same(R(nil, "not a number"), pack(d:incr("foo", 1, 0)))
      assert.is_true(d:get("foo"))
      d:set("s", "32")
      assert.same(R(nil, "not a number"), pack(d:incr("s", 1)))
      assert.same(R(20, nil, false), pack(d:incr("new", 10, 10)))
      d:set("x", 32)
      assert.equal(10534, (d:incr("x", 10502, 1)))
      assert.equal(10503, (d:incr("y", 10502, 1)))
      d:set("keep", 1)
      d:set("z", "32", 0.001)
      pause(0.01)
      assert.equal(10502, (d:incr("z", 10502, 0)))
      d:set("w", 32)
      assert.equal(10534, (d:incr("w", 10502, 0, 0.01)))
      pause(0.02)
      assert.equal(10534, d:get("w")) -- init_ttl only for a key init makes
      assert.equal(10503, (d:incr("v", 10502, 1, "0.01")))
      pause(0.02)
      assert.is_nil(d:get("v"))
    end)

    it("checks step, init and init_ttl", function()
      assert.has_error(function() d:incr("foo", "bar") end)
      assert.has_error(function() d:incr("foo", 1, "bar") end, "bad init arg: number expected, got string")
      assert.has_error(function() d:incr("foo", 1, 0, -1) end, 'bad "init_ttl" argument')
      assert.has_error(function() d:incr("foo", 1, 0, "bar") end,
        "bad init_ttl arg: number expected, got string")
      assert.has_error(function() d:incr("foo", 1, nil, 0.01) end,
        'must provide "init" when providing "init_ttl"')
    end)

    if H.int64 then it("keeps integers integers, wrapping like Lua (5.3+)", function()
      assert.equal("integer", math.type(d:incr("i", 1, 0)))
      d:set("big", H.maxint)
      assert.equal(H.minint, d:incr("big", 1))
      assert.equal("float", math.type(d:incr("i", 0.5)))
      assert.equal(1.5, d:get("i"))
    end) end
  end)

  describe("lists", function()
    it("pushes and pops at both ends; the last pop removes the key", function()
      assert.equal(1, d:lpush("foo", "bar"))
      assert.equal(1, d:llen("foo"))
      assert.equal("bar", d:lpop("foo"))
      assert.equal(0, d:llen("foo"))
      assert.same(R(nil), pack(d:lpop("foo")))
      for i = 1, 3 do assert.equal(i, d:lpush("l", i)) end
      assert.same({ 3, 2, 1 }, { d:lpop("l"), d:lpop("l"), d:lpop("l") })
      for i = 1, 3 do d:lpush("l", i) end
      assert.same({ 1, 2, 3 }, { d:rpop("l"), d:rpop("l"), d:rpop("l") })
      for i = 1, 3 do d:rpush("l", i) end
      assert.same({ 1, 2, 3 }, { d:lpop("l"), d:lpop("l"), d:lpop("l") })
      assert.is_nil(d:get_keys(0)[1])
    end)

    it("keeps lists and other values apart", function()
      d:lpush("foo", "bar")
      assert.same(R(nil, "value is a list"), pack(d:get("foo")))
      assert.same(R(nil, "value is a list"), pack(d:get_stale("foo")))
      assert.same(R(false, "exists", false), pack(d:add("foo", 1)))
      assert.same(R(nil, "not a number"), pack(d:incr("foo", 1)))
      assert.equal("foo", d:get_keys()[1])
      assert.is_true((d:set("foo", "bar")))
      assert.equal("bar", d:get("foo"))
      assert.same(R(nil, "value not a list"), pack(d:lpush("foo", "x")))
      assert.same(R(nil, "value not a list"), pack(d:lpop("foo")))
      assert.same(R(nil, "value not a list"), pack(d:llen("foo")))
      assert.equal("bar", d:get("foo"))
      d:lpush("l", "x")
      assert.is_true((d:delete("l")))
      assert.is_nil(d:get("l"))
    end)

    it("resets an expired list, and checks its arguments as ngx does", function()
      d:lpush("cc", "1")
      d:lpush("aa", "1")
      d:expire("aa", 0.01)
      pause(0.02)
      assert.equal(1, d:lpush("aa", "2"))
      assert.equal(1, d:llen("aa"))
      assert.equal("2", d:lpop("aa"))
      assert.same(R(nil, "bad value type"), pack(d:lpush("k", true)))
      assert.same(R(nil, "bad value type"), pack(d:lpush("k", {})))
      assert.has_error(function() d:lpush("k") end, "expecting 3 arguments, but only seen 2")
      assert.has_error(function() d:llen() end, "expecting 2 arguments, but only seen 1")
      assert.has_error(function() d:lpush(true, "v") end)
      assert.same(R(nil, "nil key"), pack(d:rpush(nil, "v")))
    end)

    it("never evicts for a list: nil, \"no memory\"", function()
      local small = newdict(64 * 1024)
      local n, r, err = 0
      repeat
        n = n + 1
        r, err = small:lpush("foo", string.rep("x", 100))
      until not r
      assert.equal("no memory", err)
      assert.equal(n - 1, small:llen("foo"))
      assert.equal(0, small:stat().evicted)
      small:detach()
    end)
  end)

  describe("keys and memory", function()
    it("get_keys: live keys, 1024 by default, 0 for all", function()
      assert.same({}, d:get_keys())
      assert.same({}, d:get_keys(2))
      d:set("bah", 1)
      d:set("bar", 2)
      local ks = d:get_keys()
      table.sort(ks)
      assert.same({ "bah", "bar" }, ks)
      assert.equal(1, #d:get_keys(1))
      assert.equal(2, #d:get_keys(3))
      assert.equal(1, #d:get_keys(1.5)) -- a fraction truncated, as ngx
      assert.equal(2, #d:get_keys(0.5)) -- (0: all)
      assert.has_error(function() d:get_keys(nil) end)
      assert.has_error(function() d:get_keys(1, 2) end, "expecting 1 or 2 argument(s), but saw 3")
      for i = 1, 2048 do d:set("k" .. i, i) end
      assert.equal(1024, #d:get_keys())
      assert.equal(2050, #d:get_keys(0))
    end)

    it("capacity and free_space; deleting every key gives all the space back", function()
      local small = newdict(16 * 1024)
      assert.equal(16384, small:capacity())
      local empty = small:free_space()
      assert.is_true(empty > 0 and empty < 16384)
      for i = 1, 20 do small:set("k" .. i, string.rep("v", i * 7)) end
      assert.is_true(small:free_space() < empty)
      for i = 1, 20 do small:delete("k" .. i) end
      assert.equal(empty, small:free_space())
      small:detach()
    end)

    it("evicts the least recently used first; a read counts as a use", function()
      local small = newdict(64 * 1024)
      local i = 0
      repeat
        i = i + 1
        local ok, err, forcible = small:set("key_" .. i, string.rep(" hello", 10) .. i)
        assert.is_true(ok, err)
        if i == 10 then assert.is_truthy(small:get("key_1")) end
      until forcible
      assert.is_truthy(small:get("key_1"), "read, so kept")
      assert.is_nil(small:get("key_2"), "the least recently used")
      assert.equal(1, small:stat().evicted)
      small:detach()
    end)

    it("safe_set and safe_add never evict: false, \"no memory\"", function()
      local small = newdict(64 * 1024)
      local i, ok, err = 0
      repeat
        i = i + 1
        ok, err = small:safe_set("key_" .. i, string.rep(" hello", 10) .. i)
      until not ok
      assert.equal("no memory", err)
      assert.is_nil(small:get("key_" .. i))
      assert.is_truthy(small:get("key_1"))
      assert.same(R(false, "exists", false), pack(small:safe_add("key_1", 1)))
      assert.same(R(false, "no memory", false), pack(small:safe_add("new", string.rep("x", 200))))
      -- a value larger than the dict evicts nothing (ngx would evict 30 items in vain)
      local n = small:stat().count
      assert.same(R(false, "no memory", false), pack(small:set("huge", string.rep("x", 100000))))
      assert.equal(n, small:stat().count)
      small:detach()
    end)

    it("a failed set keeps the old value (ngx would delete it)", function()
      local small = newdict(64 * 1024)
      small:set("k", "old")
      assert.is_false((small:set("k", string.rep("x", 100000))))
      assert.equal("old", small:get("k"))
      small:detach()
    end)

    it("stat: count, capacity, free, evicted, expired, recovered", function()
      d:set("a", 1)
      d:set("b", 2, 0.001)
      pause(0.01)
      local st = d:stat()
      assert.equal(1, st.count)
      assert.equal(1024 * 1024, st.capacity)
      assert.equal(d:free_space(), st.free)
      assert.equal(0, st.recovered)
      assert.equal(1, d:flush_expired())
      assert.equal(1, d:stat().expired)
    end)
  end)

  describe("no Lua while the lock is held", function()
    it("get_keys(0) of 100,000 keys copies them out and makes the strings after unlocking", function()
      local big = newdict(32 * 1024 * 1024)
      for i = 1, 100000 do assert(big:safe_set("key:" .. i, i)) end
      local keys = big:get_keys(0)
      assert.equal(100000, #keys)
      local seen = {}
      for _, k in ipairs(keys) do seen[k] = true end
      assert.is_true(seen["key:1"] and seen["key:100000"])
      big:detach()
    end)

    it("a finalizer that uses the dict never deadlocks it (lua-nginx-module #1207)", function()
      local out, rc = H.run([[
        local shm = require "shm"
        local d = assert(shm.dict.create(shm.PRIVATE, 1024 * 1024)) d:remove()
        local fired = 0
        local function gc() d:set("gc", fired) d:incr("n", 1, 0) fired = fired + 1 end
        -- garbage with a finalizer: tables on 5.2+, userdata (newproxy) on 5.1/LuaJIT
        local finalizable = newproxy and function()
          local p = newproxy(true)
          getmetatable(p).__gc = gc
        end or function() setmetatable({}, { __gc = gc }) end
        for i = 1, 20000 do
          finalizable()                         -- all the time
          d:set("k" .. i % 100, { i, tostring(i) }) -- allocating calls: the GC runs inside them
          d:get("k" .. (i + 1) % 100)
        end
        collectgarbage()
        io.write(fired > 0 and d:get("n") == fired and "ok" or ("fired " .. fired))
      ]], nil, { interpreter = "timeout 60 " .. H.lua })
      assert.equal(0, rc, out)
      assert.equal("ok", out)
    end)
  end)

  describe("the object", function()
    it("opens, creates when asked, and refuses what is not a dict", function()
      local key = H.key()
      local d1, msg, en = shm.dict.open(key)
      assert.is_nil(d1)
      assert.equal(string.format("shm.dict.open(0x%x): No such file or directory"
        .. " (pass a capacity to create it)", key), msg)
      assert.equal(2, en)
      d1 = assert(shm.dict.open(key, 64 * 1024))
      d1:set("a", 1)
      local d2 = assert(shm.dict.open(key))
      assert.equal(1, d2:get("a"))
      assert.is_nil(shm.dict.create(key, 64 * 1024))
      d2:detach()
      local name = H.name()
      local seg = assert(shm.create(name, 64 * 1024))
      seg:write("junk")
      local d3
      d3, msg, en = shm.dict.open(name)
      assert.is_nil(d3)
      assert.equal("shm.dict.open(" .. name .. "): not a dict (bad magic)", msg)
      assert.equal(22, en)
      assert.has_error(function() shm.dict.create(H.key(), 1000) end)
      assert.has_error(function() shm.dict.create(H.key(), 1.5) end)
      seg:remove() seg:detach()
      d1:remove() d1:detach()
    end)

    it("lives in a file map and survives its processes", function()
      local path = H.tmpfile()
      local out, rc = H.run([[
        local shm = require "shm"
        local d = assert(shm.dict.map((...), 64 * 1024))
        d:set("persist", "yes") d:incr("runs", 1, 0)
        d:segment():sync()
      ]], { path })
      assert.equal(0, rc, out)
      H.run([[ local d = require("shm").dict.map((...)) d:incr("runs", 1) ]], { path })
      local m = assert(shm.dict.map(path))
      assert.equal("yes", m:get("persist"))
      assert.equal(2, m:get("runs"))
      m:detach()
    end)

    it("raises on use after detach; tostring says what it is", function()
      local key = H.key()
      local x = assert(shm.dict.create(key, 64 * 1024))
      assert.matches("^shm%.dict%(shm%.segment%(sysv key=0x%x+ ", tostring(x))
      x:remove()
      x:detach()
      assert.has_error(function() x:get("a") end, "attempt to use a detached dict")
      assert.has_error(function() x:set("a", 1) end, "attempt to use a detached dict")
      assert.has_no_error(function() x:detach() end)
      assert.has_error(function() d.get(io.stdout, "a") end)
      assert.has_error(function() d.get({}, "a") end)
      assert.not_equal("table", type(getmetatable(d)))
    end)
  end)
end)

-- shm.dict at the sizes users run and under the interleavings that broke it:
-- lists of 10^5-10^6 elements, 10^6 keys, failed calls, pushes onto expired
-- keys, finalizers inside a read, stopped writers, looping chains, values as
-- large as the dict, and compare-and-set between processes.
local shm = require "shm"
local H = require "helpers"

local L = shm.dict.layout

local newdict, pause = H.private_dict, H.pause

local GC = H.GC

-- the whole structure checks out, and the free space is back to `free`
local function intact(d, free)
  local st = d:stat() -- raises "corrupted dict (...)" if anything is off
  if free then assert.equal(free, st.free, "space leaked") end
  return st
end

describe("shm.dict at any size", function()
  after_each(H.cleanup)

  it("deletes, overwrites, expires, flushes and evicts lists longer than the journal", function()
    local d = newdict()
    local empty = d:free_space()
    for i = 1, 100 do d:rpush("l", "e" .. i) end
    assert.same({ true, nil, false }, { d:delete("l") })
    intact(d, empty)
    local ops = {
      function() return d:set("l", "string now") end,
      function() return d:replace("l", 1) end,
      function() d:flush_all() return d:set("k", 1) end,
      function() d:flush_all() return d:flush_expired() end,
      function() d:expire("l", 0.001) pause(0.005) return d:set("k2", 1) end,
    }
    for i, op in ipairs(ops) do
      for j = 1, 1000 do d:rpush("l", j) end
      assert.truthy(op(), "case " .. i)
      intact(d)
      d:flush_all()
      d:flush_expired()
      intact(d, empty)
    end
    -- a 20-element list behind 64 recently read keys, evicted by a large set
    local s = newdict(64 * 1024)
    for i = 1, 20 do s:rpush("list", i) end
    local n = 0
    repeat n = n + 1 until not s:safe_set("r" .. n, string.rep("r", 100)) -- full
    for i = 1, 64 do s:get("r" .. i) end -- second chances for these
    local ok, err, forcible = s:set("big", string.rep("x", 20000))
    assert.is_true(ok, err)
    assert.is_true(forcible)
    intact(s)
    s:detach()
    d:detach()
  end)

  it("holds a list of 10^5 elements, and one of 10^6 (push, llen, pop, delete, reuse) #scale", function()
    for _, n in ipairs({ 100000, 1000000 }) do
      local d = newdict(n * 96)
      local empty = d:free_space()
      for i = 1, n do assert(d:rpush("jobs", i)) end
      assert.equal(n, d:llen("jobs"))
      assert.equal(1, d:lpop("jobs"))
      assert.equal(n, d:rpop("jobs"))
      d:set("other", "kept")
      assert.is_true((d:delete("jobs")))
      assert.equal(0, d:llen("jobs"))
      assert.equal("kept", d:get("other"))
      d:delete("other")
      intact(d, empty)
      for i = 1, n do assert(d:lpush("again", i)) end -- all of it is reusable
      assert.equal(n, d:llen("again"))
      d:detach()
    end
  end)

  it("holds 10^6 keys, and flushes 10^5 at once #scale", function()
    local d = newdict(160 * 1024 * 1024)
    local n = 1000000
    for i = 1, n do assert(d:safe_set("key:" .. i, i)) end
    assert.equal(n, d:stat().count)
    for i = 1, n, 9973 do assert.equal(i, d:get("key:" .. i)) end
    d:flush_all()
    assert.equal(0, d:stat().count)
    assert.equal(n - 3, d:flush_expired()) -- (flush_all freed 3 itself, as ngx)
    intact(d)
    local f = newdict(16 * 1024 * 1024)
    for i = 1, 100000 do f:set("k" .. i, i) end
    for i = 1, 100000 do f:expire("k" .. i, 0.001) end -- (expire frees nothing itself)
    pause(0.01)
    assert.equal(100000, f:flush_expired())
    assert.equal(0, f:stat().count)
    d:detach()
    f:detach()
  end)

  it("leaves the dict as it was when a call fails", function()
    local d = newdict()
    local empty = d:free_space()
    for i = 1, 100 do d:rpush("l", i) end
    d:flush_all()
    assert.is_true((d:set("k", 1)))
    intact(d)
    -- a safe_set that cannot fit changes nothing
    d:set("a", "x")
    local before = d:stat()
    assert.same({ false, "no memory", false }, { d:safe_set("huge", string.rep("h", 2 * 1024 * 1024)) })
    assert.same(before, d:stat())
    d:flush_all()
    d:flush_expired()
    intact(d, empty)
    d:detach()
  end)

  it("pushes onto an expired key without damage", function()
    local d = newdict()
    d:set("pad", 1)
    d:set("s", "x", 0.001)
    pause(0.01)
    assert.same({ nil, "no memory" }, { d:lpush("s", string.rep("v", 2 ^ 20)) })
    intact(d)
    assert.equal(1, d:lpush("s", "v"))
    -- an expired 100-element list that is not at the LRU tail
    for i = 1, 100 do d:rpush("old", i) end
    d:expire("old", 0.001)
    d:set("newer", 1)
    pause(0.01)
    assert.equal(1, d:lpush("old", "fresh"))
    assert.equal("fresh", d:lpop("old"))
    intact(d)
    d:detach()
  end)

  it("reads right when a finalizer calls the dict in the middle of a read", function()
    local out, rc = H.run(GC .. [[
      local shm = require "shm"
      local d = assert(shm.dict.create(shm.PRIVATE, 4 * 1024 * 1024))
      d:segment():remove()
      local other = assert(shm.dict.create(shm.PRIVATE, 1024 * 1024))
      other:segment():remove()
      local big = {}
      for i = 1, 2000 do big["field" .. i] = string.rep("v", i % 50) .. i end
      d:set("k", big, 0, 7)
      d:set("other", { x = string.rep("o", 100000) })
      other:set("k", "the other dict's value", 0, 9)
      if jit then jit.off() end
      local bad = 0
      for round = 1, 20 do
        for _ = 1, 200 do gc(function() d:get("other") other:get("k") end) end
        local v, flags = d:get("k")
        if flags ~= 7 then bad = bad + 1 end
        for i = 1, 2000 do
          if v["field" .. i] ~= string.rep("v", i % 50) .. i then bad = bad + 1 break end
        end
        for _ = 1, 200 do gc(function() other:get("k") end) end
        local s, f2 = other:get("k")
        if s ~= "the other dict's value" or f2 ~= 9 then bad = bad + 1 end
      end
      io.write("bad=", bad)
    ]])
    assert.equal(0, rc, out)
    assert.equal("bad=0", out)
  end)

  it("reads right when a finalizer reads longer values, of this dict or another, mid-read", function()
    for _, jitmode in ipairs({ "on", "off" }) do
      local out, rc = H.run(GC .. [[
        local shm = require "shm"
        local d = assert(shm.dict.create(shm.PRIVATE, 16 * 1024 * 1024))
        d:segment():remove()
        local d2 = assert(shm.dict.create(shm.PRIVATE, 16 * 1024 * 1024))
        d2:segment():remove()
        d:set("k", ("A"):rep(10), 0, 3)
        d:set("big", ("C"):rep(300 * 1024))
        d2:set("o", ("B"):rep(3000))
        d2:set("huge", ("H"):rep(600 * 1024))
        if jit and arg[1] == "off" then jit.off() end
        local bad = 0
        for i = 1, 4000 do
          -- (a cycle's pending finalizers all run before it frees anything:
          -- thousands of them, each making a long string, once took 12 GB)
          if i % 200 == 0 then collectgarbage() end
          local which = i % 3
          gc(function()
            if which == 0 then d2:get("o") elseif which == 1 then d:get("big") else d2:get("huge") end
          end)
          local v, f = d:get("k")
          if v ~= ("A"):rep(10) or f ~= 3 then bad = bad + 1 end
        end
        io.write("bad=", bad)
      ]], { jitmode })
      assert.equal(0, rc, out)
      assert.equal("bad=0", out)
    end
  end)

  it("replaces a value as large as the dict allows by one of the same size, as ngx", function()
    local d = newdict()
    assert.same({ true, nil, false }, { d:set("k", string.rep("a", 300000)) })
    assert.same({ true, nil, false }, { d:set("k", string.rep("b", 300000)) })
    assert.same({ true, nil, false }, { d:set("k", string.rep("c", 400000)) })
    assert.equal(string.rep("c", 400000), d:get("k"))
    intact(d)
    d:detach()
  end)

  it("replaces a value by a larger one where ngx does, safe_set too, evicting no more", function()
    for _, safe in ipairs({ false, true }) do
      local d = newdict(2 * 1024 * 1024)
      d:set("a", string.rep("a", 300000))
      d:set("big", string.rep("b", 300000))
      d:delete("a")
      for i = 1, 100 do d:set("k" .. i, i) end
      local set = safe and d.safe_set or d.set
      assert.same({ true, nil, false }, { set(d, "big", string.rep("c", 600000)) })
      assert.equal(101, d:stat().count) -- (ngx.shared.DICT gives the same, keeping every key)
      assert.equal(string.rep("c", 600000), d:get("big"))
      intact(d)
      d:detach()
    end
  end)

  it("readers never see a key missing while it is replaced in its old value's place", function()
    local key = H.key()
    local d = assert(shm.dict.create(key, 64 * 1024))
    d:set("big", string.rep("a", 20000))
    local child = H.spawn([[
      local shm = require "shm"
      local d = assert(shm.dict.open(tonumber((...))))
      print("ready") io.stdout:flush()
      local v = { string.rep("a", 20000), string.rep("b", 20000) }
      local i = 0
      while true do i = i + 1 assert(d:set("big", v[i % 2 + 1])) end
    ]], { key })
    local pid = child.pid
    finally(function() H.kill(pid, "KILL") end)
    assert.equal("ready", child:line())
    local missing, seen = 0, {}
    for _ = 1, H.valgrind and 20000 or 200000 do
      local v = d:get("big")
      if v == nil then missing = missing + 1 else seen[v:sub(1, 1)] = true end
    end
    H.kill(pid, "KILL")
    child:finish()
    assert.equal(0, missing)
    assert.is_true(seen.a and seen.b, "the writer replaced it meanwhile")
    intact(d)
    d:remove()
    d:detach()
  end)

  it("evicts until a value fits when it can; never for one that cannot", function()
    local d = newdict(8 * 1024 * 1024)
    local i = 0
    repeat i = i + 1 until not d:safe_set("small:" .. i, string.rep("s", 40))
    local count = d:stat().count
    assert.same({ false, "no memory", false }, { d:safe_set("big", string.rep("b", 256 * 1024)) })
    local ok, err, forcible = d:set("big", string.rep("b", 256 * 1024))
    assert.is_true(ok, err)
    assert.is_true(forcible)
    assert.is_true(d:stat().count < count)
    count = d:stat().count
    assert.same({ false, "no memory", false }, { d:set("never", string.rep("n", 9 * 1024 * 1024)) })
    assert.equal(count, d:stat().count)
    intact(d)
    d:detach()
  end)
end)

describe("shm.dict readers and a stopped writer", function()
  after_each(H.cleanup)

  it("readers of other keys never wait for a writer stopped inside its change", function()
    local key = H.key()
    local d = assert(shm.dict.create(key, 1024 * 1024))
    d:set("b", "vb")
    local child = H.spawn([[
      local shm = require "shm"
      local d = assert(shm.dict.open(tonumber((...))))
      print("ready") io.stdout:flush()
      local i = 0
      while true do i = i + 1 d:set("a", i) d:rpush("la", i) if i % 50 == 0 then d:delete("la") end end
    ]], { key })
    local pid = child.pid
    finally(function() H.kill(pid, "KILL") end)
    assert.equal("ready", child:line())
    d:settimeout(0) -- a reader that would wait for the lock times out at once
    local inside = 0
    for _ = 1, 200 do
      H.kill(pid, "STOP")
      assert(H.until_true(function() return H.state(pid) == "T" end))
      local lock = d:segment():unpack(L.lock, "<I4")
      if lock % 2 ^ 30 == pid then inside = inside + 1 end
      assert.same({ "vb" }, { d:get("b") })
      assert.equal(0, d:ttl("b"))
      H.kill(pid, "CONT")
    end
    H.kill(pid, "KILL")
    child:finish()
    d:settimeout(nil)
    intact(d)
    assert.is_true(inside > 0, "the writer was never stopped holding the lock")
    d:remove()
    d:detach()
  end)

  it("writers, and readers of the key being changed, wait with a bound", function()
    local key = H.key()
    local d = assert(shm.dict.create(key, 1024 * 1024))
    d:set("a", "va")
    d:set("b", "vb")
    local child = H.spawn([[
      local shm = require "shm"
      local d = assert(shm.dict.open(tonumber((...))))
      print("ready") io.stdout:flush()
      while true do d:set("a", "va") end
    ]], { key })
    local pid = child.pid
    finally(function() H.kill(pid, "KILL") end)
    assert.equal("ready", child:line())
    -- stop it inside a change of "a" (its lock held and a's bucket odd)
    local raw = d:segment()
    local stopped
    for _ = 1, 5000 do
      H.kill(pid, "STOP")
      assert(H.until_true(function() return H.state(pid) == "T" end))
      if raw:unpack(L.lock, "<I4") % 2 ^ 30 == pid then
        d:settimeout(0.05)
        local v, err = d:get("a")
        if v == nil then stopped = err break end
      end
      H.kill(pid, "CONT")
    end
    assert.equal("timeout", stopped)
    assert.same({ "vb" }, { d:get("b") })
    assert.same({ false, "timeout", false }, { d:set("c", 1) })
    assert.same({ nil, "timeout" }, { d:incr("n", 1, 0) })
    H.kill(pid, "KILL")
    child:finish()
    assert.equal("va", d:get("a")) -- the dead writer's change rolled back
    assert.is_true(d:set("c", 1))
    intact(d)
    d:remove()
    d:detach()
  end)
end)

describe("shm.dict with looping chains", function()
  after_each(H.cleanup)

  -- run `code` on a dict whose only entry ("k") was made to point at itself
  -- (its hash chain, or its LRU links), in a child under `timeout`
  local function looped(code, field)
    local key = H.key()
    local d = assert(shm.dict.create(key, 1024 * 1024))
    d:set("k", "v")
    local out, rc = H.run([[
      local shm = require "shm"
      local L = shm.dict.layout
      local key, field = tonumber(arg[1]), arg[2]
      local d = assert(shm.dict.open(key))
      local raw = assert(shm.open(key))
      local heap = raw:unpack(L.heap_off, "<J")
      local e
      for u = 0, (raw.size - heap) / L.unit - 3 do
        local w = raw:unpack(heap + u * L.unit, "<I4")
        if math.floor(w / 65536) == 0x4c44 and math.floor(w / 256) % 256 == 2 then
          e = heap + u * L.unit
          break
        end
      end
      local ref = (e - heap) / L.unit
      if field == "next" then raw:pack(e + 8, "<I4", ref) end
      if field == "lru" then raw:pack(e + 16, "<I4", ref) raw:pack(e + 12, "<I4", ref) end
      local ok, err = pcall(function() ]] .. code .. [[ end)
      io.write(tostring(ok), " ", tostring(err))
    ]], { key, field }, { interpreter = "timeout 20 " .. H.lua })
    d:remove()
    d:detach()
    return out, rc
  end

  it("a hash chain or an LRU list that loops is corrupted, found at once", function()
    for _, c in ipairs({
      { "next", [[ for i = 1, 100000 do d:get("x" .. i) end ]], "bad hash chain" },
      { "next", [[ for i = 1, 100000 do d:set("x" .. i, i) end ]], "bad hash chain" },
      { "lru", [[ return d:stat() ]], "bad LRU" },
      { "lru", [[ return #d:get_keys(0) ]], "bad LRU list" },
      { "lru", [[ return d:flush_expired() ]], "bad LRU list" },
    }) do
      local out, rc = looped(c[2], c[1])
      assert.equal(0, rc, out)
      assert.matches("^false .*corrupted dict %(" .. c[3], out)
    end
  end)
end)

describe("shm.dict:cas", function()
  after_each(H.cleanup)

  it("sets only over the expected value and flags, and says what is there", function()
    local d = newdict()
    assert.same({ true, nil, false }, { d:cas("k", "v1", 0, 0, nil) })
    assert.same({ false, "changed", false, "v1", nil }, { d:cas("k", "v2", 0, 0, nil) })
    assert.same({ true, nil, false }, { d:cas("k", "v2", 0, 5, "v1") })
    assert.same({ false, "changed", false, "v2", 5 }, { d:cas("k", "v3", 0, 0, "v2", 4) })
    assert.same({ true, nil, false }, { d:cas("k", "v3", 0, 0, "v2", 5) })
    assert.same({ false, "not found", false }, { d:cas("missing", "x", 0, 0, "y") })
    d:set("t", { a = 1, b = { c = "x" } })
    assert.same({ true, nil, false }, { d:cas("t", { z = 1 }, 0, 0, { b = { c = "x" }, a = 1 }) })
    assert.same({ z = 1 }, d:get("t"))
    assert.is_false((d:cas("t", nil, 0, 0, { z = 2 })))
    assert.same({ true, nil, false }, { d:cas("t", nil, 0, 0, { z = 1 }) }) -- compare-and-delete
    assert.is_nil(d:get("t"))
    d:set("n", 1)
    assert.is_true((d:cas("n", 2, 0, 0, 1.0)))
    d:set("e", "old", 0.001)
    pause(0.005)
    assert.same({ false, "not found", false }, { d:cas("e", "new", 0, 0, "old") })
    assert.is_true((d:cas("e", "new", 0, 0, nil))) -- expired counts as missing
    d:detach()
  end)

  it("loses no update when 8 processes race on one table value", function()
    local key = H.key()
    local d = assert(shm.dict.create(key, 1024 * 1024))
    d:set("doc", { n = 0, by = {} })
    local kids = {}
    for w = 1, 8 do
      kids[w] = H.spawn([[
        local shm = require "shm"
        local d = assert(shm.dict.open(tonumber(arg[1])))
        local me = arg[2]
        print("ready") io.stdout:flush()
        local retries = 0
        for _ = 1, 300 do
          while true do
            local cur = d:get("doc")
            local new = { n = cur.n + 1, by = {} }
            for k, v in pairs(cur.by) do new.by[k] = v end
            new.by[me] = (new.by[me] or 0) + 1
            if d:cas("doc", new, 0, 0, cur) then break end
            retries = retries + 1
          end
        end
        io.write("retries=", retries)
      ]], { key, "w" .. w })
    end
    for w = 1, 8 do assert.equal("ready", kids[w]:line()) end
    for w = 1, 8 do
      local out, rc = kids[w]:finish()
      assert.equal(0, rc, out)
    end
    local doc = d:get("doc")
    assert.equal(2400, doc.n)
    for w = 1, 8 do assert.equal(300, doc.by["w" .. w]) end
    d:remove()
    d:detach()
  end)
end)

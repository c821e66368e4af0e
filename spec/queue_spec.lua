-- shm.queue: MPMC messages between real processes.
local shm = require "shm"
local H = require "helpers"

local function payload(w, seq)
  -- variable size, derived from (writer, seq): a torn or mixed message shows
  local n = (w * 7919 + seq * 104729) % 200
  return string.format("%d:%d:", w, seq) .. string.rep(string.char(97 + (w + seq) % 26), n)
end

describe("shm.queue", function()
  after_each(H.cleanup)

  it("delivers messages in order and keeps its statistics", function()
    local q = assert(shm.queue.create(H.key(), 1024))
    assert.is_true(q:push("one"))
    assert.is_true(q:push(""))
    assert.is_true(q:push(string.rep("x", 100)))
    local st = q:stat()
    assert.same({ capacity = 1024, used = 4 * 3 + 103, count = 3, pushed = 3, popped = 0,
                  closed = false, recovered = 0 }, st)
    assert.equal("one", q:pop())
    assert.equal("", q:pop())
    assert.equal(string.rep("x", 100), q:pop())
    st = q:stat()
    assert.equal(0, st.count)
    assert.equal(0, st.used)
    assert.equal(3, st.popped)
    q:remove()
    q:detach()
  end)

  it("wraps around the ring with messages of every size", function()
    local q = assert(shm.queue.create(shm.PRIVATE, 100))
    for i = 1, 2000 do
      local m = payload(1, i):sub(1, i % 97)
      assert.is_true(q:push(m, 0))
      assert.equal(m, q:pop(0))
    end
    q:remove()
    q:detach()
  end)

  it("times out when full or empty, and raises for a message that can never fit", function()
    local q = assert(shm.queue.create(H.name(), 32))
    assert.same({ nil, "timeout" }, { q:pop(0) })
    local t0 = H.now()
    assert.same({ nil, "timeout" }, { q:pop(0.03) })
    assert.is_true(H.now() - t0 >= 0.03)
    assert.is_true(q:push(string.rep("a", 28)))
    assert.same({ false, "timeout" }, { q:push("b", 0) })
    assert.same({ false, "timeout" }, { q:push("b", 0.02) })
    assert.error_matches(function() q:push(string.rep("c", 29)) end,
      "message of 29 bytes can never fit in a queue of capacity 32")
    assert.error_matches(function() q:push({}) end, "string expected")
    assert.error_matches(function() q:pop(-1) end, "non%-negative")
    q:remove()
    q:detach()
  end)

  it("closes: no more pushes, readers drain then get nil, \"closed\"", function()
    local q = assert(shm.queue.create(H.key(), 256))
    q:push("a")
    q:push("b")
    assert.is_true(q:close())
    assert.same({ false, "closed" }, { q:push("c") })
    assert.is_true(q:stat().closed)
    assert.equal("a", q:pop())
    assert.equal("b", q:pop())
    assert.same({ nil, "closed" }, { q:pop() })
    assert.same({ nil, "closed" }, { q:pop(0) })
    q:remove()
    q:detach()
  end)

  it("reopens: a queue a previous run left closed takes pushes again, what is queued stays", function()
    local key = H.key()
    local out, rc = H.run([[
      local q = assert(require("shm").queue.create(tonumber(arg[1]), 256))
      q:push("left") q:close()
    ]], { key })
    assert.equal(0, rc, out)
    local q = assert(shm.queue.open(key, 256)) -- open never changes it
    assert.is_true(q:stat().closed)
    assert.same({ false, "closed" }, { q:push("x") })
    assert.is_true(q:reopen())
    assert.is_false(q:stat().closed)
    assert.is_true(q:push("new"))
    assert.equal("left", q:pop())
    assert.equal("new", q:pop())
    assert.same({ nil, "timeout" }, { q:pop(0) })
    assert.is_true(q:reopen(), "harmless on an open queue")
    assert.error_matches(function() q:reopen(-1) end, "bad argument #1 to 'queue:reopen'")
    q:remove()
    q:detach()
  end)

  it("checks its arguments and refuses to open what is not a queue", function()
    assert.error_matches(function() shm.queue.create(H.key(), 15) end, "capacity out of range")
    assert.error_matches(function() shm.queue.create(H.key(), 1.5) end, "integer capacity expected")
    assert.error_matches(function() shm.queue.create(H.key()) end, "integer capacity expected")
    local key = H.key()
    local q, msg, en = shm.queue.open(key)
    assert.is_nil(q)
    assert.equal(string.format("shm.queue.open(0x%x): No such file or directory (pass a capacity to create it)", key),
      msg)
    assert.equal(2, en)
    local seg = assert(shm.create(key, 4096))
    q, msg, en = shm.queue.open(key)
    assert.is_nil(q)
    assert.equal(string.format("shm.queue.open(0x%x): not a queue (bad magic)", key), msg)
    assert.equal(22, en)
    local q1 = assert(shm.queue.create(H.key(), 64))
    assert.is_nil(select(1, shm.queue.create(q1:segment().key, 64)))
    q1:remove() q1:detach()
    seg:remove() seg:detach()
  end)

  it("creates when missing with a capacity: racing openers all end up on one working queue", function()
    -- 4 processes run through the same 25 fresh keys, each doing
    -- open(key, capacity) and a push: every key must end up one queue
    -- holding 4 messages, with no failure anywhere
    local keys, names = {}, {}
    for i = 1, 20 do keys[i] = H.key() end
    for i = 1, 5 do names[i] = H.name() end
    local all = {}
    for _, k in ipairs(keys) do all[#all + 1] = tostring(k) end
    for _, n in ipairs(names) do all[#all + 1] = n end
    local gate = assert(shm.create(shm.PRIVATE, 16))
    local kids = {}
    for c = 1, 4 do
      kids[c] = H.spawn([[
        local shm = require "shm"
        local id, c, list = ...
        local gate = assert(shm.attach(tonumber(id)))
        gate:add(8, 1)                    -- ready
        gate:wait(0, 0, 10)               -- all start together
        local failures = 0
        for k in list:gmatch("%S+") do
          local q, msg = shm.queue.open(tonumber(k) or k, 4096)
          if q and q:push("from " .. c, 5) then q:detach()
          else failures = failures + 1 io.stderr:write(tostring(msg), "\n") end
        end
        io.write("failures=", failures)
      ]], { gate.id, c, table.concat(all, " ") })
    end
    assert.is_true(H.until_true(function() return gate:load(8) == 4 end))
    gate:store(0, 1)
    gate:notify(0)
    gate:remove()
    gate:detach()
    for c = 1, 4 do
      local out, rc = kids[c]:finish()
      assert.equal(0, rc, out)
      assert.equal("failures=0", out)
    end
    for i, k in ipairs(all) do
      local q = assert(shm.queue.open(i <= #keys and tonumber(k) or k))
      local st = q:stat()
      assert.equal(4096, st.capacity)
      assert.equal(4, st.count, "messages on " .. k)
      assert.equal(0, st.recovered)
      q:remove()
      q:detach()
    end
  end)

  it("opens an existing queue with its own capacity, and refuses a capacity out of range", function()
    local key = H.key()
    local q = assert(shm.queue.create(key, 128))
    local q2 = assert(shm.queue.open(key, 64)) -- exists: kept as it is
    assert.equal(128, q2:stat().capacity)
    -- a smaller one than asked: said in capacity terms, not segment bytes
    assert.same({ nil, string.format("shm.queue.open(0x%x): exists with capacity 128, 65536 asked", key), 22 },
      { shm.queue.open(key, 65536) })
    assert.error_matches(function() shm.queue.open(key, 8) end, "capacity out of range")
    assert.error_matches(function() shm.queue.open(key, 1.5) end, "integer capacity expected")
    assert.is_nil(rawget(shm, "queue_new"), "no internal entry point")
    assert.is_nil(rawget(shm, "QUEUE_HEADER"))
    q2:detach()
    q:remove()
    q:detach()
  end)

  -- Lua 5.4 only (versions_spec checks there is no __close before); compiled
  -- from a string, so that this file parses in 5.1-5.3
  if H.lua54 then it("detaches on <close>", function()
    local key = H.key()
    H.load([[
      local shm, key = ...
      do
        local q <close> = assert(shm.queue.create(key, 64))
        q:push("kept")
      end
    ]])(shm, key)
    local q = assert(shm.queue.open(key))
    assert.equal(1, q:segment():stat().nattch, "<close> detached the first handle")
    assert.equal("kept", q:pop())
    q:remove()
    q:detach()
  end) end

  it("raises on use after detach", function()
    local q = assert(shm.queue.create(H.key(), 64))
    q:remove()
    q:detach()
    assert.error_matches(function() q:push("x") end, "detached")
    assert.error_matches(function() q:pop() end, "detached")
    assert.error_matches(function() q:stat() end, "detached")
  end)

  it("blocks a reader until a writer process pushes (no polling)", function()
    local key = H.key()
    local q = assert(shm.queue.create(key, 4096))
    local child = H.spawn([[
      local shm = require "shm"
      local q = assert(shm.queue.open(tonumber((...))))
      print("ready") io.stdout:flush()
      print(q:pop())
    ]], { key })
    local pid = child.pid
    assert(child:line() == "ready")
    assert.is_true(H.until_true(function() return H.state(pid) == "S" end))
    local before = H.cputicks(pid)
    q:segment():wait(q:segment().size - 8, 0, 0.2) -- 0.2 s in which the reader must sleep
    assert.is_true(H.cputicks(pid) - before <= 2, "the blocked reader used CPU")
    q:push("wake up")
    local out, rc = child:finish()
    assert.equal(0, rc)
    assert.equal("wake up\n", out)
    q:remove()
    q:detach()
  end)

  for _, cfg in ipairs({ { W = 3, R = 2, K = 3000, cap = 2048 }, { W = 2, R = 4, K = 3000, cap = 300 } }) do
  it(string.format("loses, duplicates, tears and reorders nothing with %d writers and %d readers",
                   cfg.W, cfg.R), function()
    local key, K, W, R = H.key(), cfg.K, cfg.W, cfg.R
    local q = assert(shm.queue.create(key, cfg.cap)) -- small: writers block often, the ring wraps
    local writers, readers = {}, {}
    for r = 1, R do
      readers[r] = H.spawn([[
        local shm = require "shm"
        local q = assert(shm.queue.open(tonumber((...))))
        local last, n = {}, 0
        while true do
          local m, why = q:pop(20)
          if not m then assert(why == "closed", why) break end
          local w, seq = m:match("^(%d+):(%d+):")
          w, seq = tonumber(w), tonumber(seq)
          local len = (w * 7919 + seq * 104729) % 200
          assert(m == string.format("%d:%d:", w, seq) .. string.rep(string.char(97 + (w + seq) % 26), len),
            "torn message")
          assert(seq > (last[w] or 0), "reordered")
          last[w] = seq
          n = n + 1
          io.write(w, " ", seq, "\n")
        end
      ]], { key })
    end
    for w = 1, W do
      writers[w] = H.spawn([[
        local shm = require "shm"
        local key, w, K = tonumber((...)), tonumber((select(2, ...))), tonumber((select(3, ...)))
        local q = assert(shm.queue.open(key))
        for seq = 1, K do
          local n = (w * 7919 + seq * 104729) % 200
          assert(q:push(string.format("%d:%d:", w, seq) .. string.rep(string.char(97 + (w + seq) % 26), n), 20))
        end
      ]], { key, w, K })
    end
    for w = 1, W do
      local out, rc = writers[w]:finish()
      assert.equal(0, rc, out)
    end
    q:close()
    local seen, total = {}, 0
    for r = 1, R do
      local out, rc = readers[r]:finish()
      assert.equal(0, rc, out:sub(-300))
      for w, seq in out:gmatch("(%d+) (%d+)\n") do
        local k = w .. ":" .. seq
        assert.is_nil(seen[k], "duplicated " .. k)
        seen[k] = true
        total = total + 1
      end
    end
    assert.equal(W * K, total)
    for w = 1, W do
      for seq = 1, K do assert.is_true(seen[w .. ":" .. seq], "lost " .. w .. ":" .. seq) end
    end
    local st = q:stat()
    assert.equal(W * K, st.pushed)
    assert.equal(W * K, st.popped)
    assert.equal(0, st.used)
    q:remove()
    q:detach()
  end)
  end

  it("survives a writer killed inside push: nothing torn, readers never stuck", function()
    local key = H.key()
    local q = assert(shm.queue.create(key, 1024 * 1024))
    local raw = assert(shm.open(key)) -- to see the writers' lock word
    -- big prebuilt messages: copying one into the ring is most of a push
    local function msg(k) return string.format("%08d", k) .. string.rep(string.char(65 + k), 60000) end
    local function check(m)
      assert.equal(msg(tonumber(m:sub(1, 8))), m)
    end
    for round = 1, 3 do
      -- a writer that pushes (and takes its own messages back, so the ring never
      -- fills and it never waits): much of its time is spent inside push
      local writer = H.spawn([[
        local shm = require "shm"
        local q = assert(shm.queue.open(tonumber((...))))
        local msgs = {}
        for k = 0, 15 do msgs[k] = string.format("%08d", k) .. string.rep(string.char(65 + k), 60000) end
        print("ready") io.stdout:flush()
        local seq = 0
        while true do
          seq = seq + 1
          q:push(msgs[seq % 16])
          if seq % 2 == 0 then q:pop() q:pop() end
        end
      ]], { key })
      local pid = writer.pid
      assert(writer:line() == "ready")
      finally(function() H.kill(pid, "KILL") end) -- never leave it running
      -- stop it until it is caught holding the writers' lock, then kill it there
      local caught = false
      for _ = 1, 500 do
        H.kill(pid, "STOP")
        assert.is_true(H.until_true(function() return H.state(pid) == "T" end))
        if raw:unpack(shm.queue.layout.lock, "<i4") ~= 0 then
          H.kill(pid, "KILL")
          caught = true
          break
        end
        H.kill(pid, "CONT")
      end
      assert.is_true(caught, "never caught the writer inside push")
      writer:finish()
      local before = q:stat().recovered -- stat takes the lock: recovers it
      assert.equal(round, before)
      -- what it left is whole, and the queue works on
      while true do
        local m = q:pop(0)
        if not m then break end
        check(m)
      end
      assert.is_true(q:push("after " .. round, 1))
      assert.equal("after " .. round, q:pop(1))
    end
    raw:detach()
    q:remove()
    q:detach()
  end)

  it("rejects a corrupted header with an error, never a crash", function()
    local key = H.key()
    local q = assert(shm.queue.create(key, 256))
    local seg = assert(shm.open(key)) -- raw access to the same memory
    q:push("hello")
    -- the record length, scribbled: runs past the committed data
    seg:pack(1024, "<I4", 0xffffff)
    assert.error_matches(function() q:pop() end, "corrupted queue %(record length out of range%)")
    seg:pack(1024, "<I4", 5)
    assert.equal("hello", q:pop())
    -- tail far beyond head + capacity
    local tail_off = shm.queue.layout.tail
    local tail = seg:unpack(tail_off, "<J")
    assert.equal(9, tail)
    seg:pack(tail_off, "<J", 2 ^ 40)
    assert.error_matches(function() q:pop() end, "corrupted queue %(head and tail out of range%)")
    assert.error_matches(function() q:stat() end, "corrupted queue")
    seg:pack(tail_off, "<J", tail)
    assert.same({ nil, "timeout" }, { q:pop(0) })
    -- a capacity rewritten after open is never trusted; a new open rejects it
    seg:pack(shm.queue.layout.capacity, "<J", 1024 * 1024 * 1024)
    assert.is_true(q:push("still bounded"))
    assert.equal("still bounded", q:pop())
    local q2, msg = shm.queue.open(key)
    assert.is_nil(q2)
    assert.matches("capacity does not match the segment", msg)
    seg:pack(shm.queue.layout.magic, "<J", 0)
    q2, msg = shm.queue.open(key)
    assert.is_nil(q2)
    assert.matches("not a queue %(bad magic%)", msg)
    seg:detach()
    q:remove()
    q:detach()
  end)

  it("pops right when a finalizer pops from this queue or another in the middle of a pop", function()
    for _, jitmode in ipairs({ "on", "off" }) do
      local out, rc = H.run(H.GC .. [[
        local shm = require "shm"
        local q = assert(shm.queue.create(shm.PRIVATE, 64 * 1024 * 1024))
        local q2 = assert(shm.queue.create(shm.PRIVATE, 1024 * 1024))
        assert(q:remove()) assert(q2:remove()) -- (gone at exit)
        if jit and arg[1] == "off" then jit.off() end
        -- messages "<n>:" then n bytes of one letter, long and short mixed,
        -- so that a nested pop grows the buffer a pop is reading
        local function msg(n)
          return n .. ":" .. string.rep(string.char(65 + n % 26), (n % 7 == 0) and 100000 + n or n % 50)
        end
        local N, got, bad = 3000, {}, 0
        local function check(m)
          local n = tonumber(m:match("^(%d+):"))
          if not n or m ~= msg(n) or got[n] then bad = bad + 1 else got[n] = true end
        end
        for n = 1, N do assert(q:push(msg(n), 0)) end
        for i = 1, 300 do assert(q2:push(i .. ":" .. string.rep("x", i % 50), 0)) end
        local popped = 0
        for _ = 1, 10 * N do -- (a lost message ends it short)
          if popped == N then break end
          for _ = 1, 20 do gc(function()
            local m = q:pop(0)
            if m then check(m) popped = popped + 1 end
            m = q2:pop(0)
            if m then assert(q2:push(m, 0)) end
          end) end
          local m = q:pop(0)
          if m then check(m) popped = popped + 1 end
        end
        collectgarbage()
        io.write("bad=", bad, " popped=", popped)
      ]], { jitmode })
      assert.equal(0, rc, out)
      assert.equal("bad=0 popped=3000", out)
    end
  end)
end)

-- shm.events: broadcast between real processes.
local shm = require "shm"
local H = require "helpers"

-- An event whose bytes derive from (publisher, k): a torn or mixed one shows.
local PAYLOAD = [[
local function payload(p, k)
  local n = (p * 7919 + k * 104729) % 300
  return string.format("%d:%d:", p, k) .. string.rep(string.char(97 + (p + k) % 26), n)
end
]]
local payload = H.load(PAYLOAD .. "return payload")()

-- A subscriber child's loop (after PAYLOAD), for a subscriber made before
-- the first publish: reads until it gets the event "end", checking every
-- event (whole: payload(p, k) .. pad; sequence numbers consecutive but for
-- what "lost" counts; each publisher's events in order), and prints
-- "got=N lost=N last=SEQ" and each publisher's count.
local CHECKER = PAYLOAD .. [[
local function check(sub, timeout, pad)
  local expect, got, lost, last, per, prev = 1, 0, 0, 0, {}, {}
  while true do
    local m, seq, n = sub:next(timeout)
    if m == nil then
      assert(seq == "lost", "next: " .. tostring(seq))
      assert(n >= 1, "lost nothing")
      lost = lost + n
      expect = expect + n
    else
      assert(seq == expect, "sequence " .. tostring(seq) .. ", expected " .. tostring(expect))
      expect = seq + 1
      last = seq
      if m == "end" then break end
      local p, k = m:match("^(%d+):(%d+):")
      p, k = tonumber(p), tonumber(k)
      assert(p and m == payload(p, k) .. pad, "torn event at " .. seq)
      assert(k > (prev[p] or 0), "reordered")
      prev[p] = k
      per[p] = (per[p] or 0) + 1
      got = got + 1
    end
  end
  io.write(string.format("got=%d lost=%d last=%d", got, lost, last))
  for p = 1, 9 do if per[p] then io.write(string.format(" p%d=%d", p, per[p])) end end
  io.write("\n")
end
]]

describe("shm.events", function()
  after_each(H.cleanup)

  it("delivers every event to every subscriber, in order, with its sequence number", function()
    local ev = assert(shm.events.create(H.key(), 4096))
    assert.same({ capacity = 4096, published = 0, oldest = 1, newest = 0, recovered = 0 }, ev:stat())
    local a, b = ev:subscribe(), ev:subscribe("next")
    assert.same({ nil, "timeout" }, { a:next(0) })
    assert.is_true(ev:publish("one"))
    assert.is_true(ev:publish(""))
    assert.is_true(ev:publish(string.rep("x", 100)))
    local c = ev:subscribe() -- from the next one: sees none of the above
    for _, s in ipairs({ a, b }) do
      assert.same({ "one", 1 }, { s:next(0) })
      assert.same({ "", 2 }, { s:next() })
      assert.same({ string.rep("x", 100), 3 }, { s:next(1) })
      assert.same({ nil, "timeout" }, { s:next(0) })
    end
    assert.same({ nil, "timeout" }, { c:next(0) })
    local o = ev:subscribe("oldest")
    assert.same({ "one", 1 }, { o:next(0) })
    assert.same({ capacity = 4096, published = 3, oldest = 1, newest = 3, recovered = 0 }, ev:stat())
    assert.is_true(ev:publish("four"))
    assert.same({ "four", 4 }, { c:next(0) })
    assert.same({ "four", 4 }, { a:next(0) })
    assert.matches("^shm%.events%(shm%.segment%(", tostring(ev))
    assert.matches("^shm%.subscriber%(shm%.events%(", tostring(a))
    ev:remove()
    ev:detach()
  end)

  it("overwrites the oldest events when full: a subscriber behind gets \"lost\" once, with the count", function()
    local ev = assert(shm.events.create(H.name(), 1000))
    local sub, old = ev:subscribe(), ev:subscribe("oldest")
    for k = 1, 5000 do
      assert.is_true(ev:publish(payload(1, k)))
      if k % 2 == 0 then -- one subscriber keeps up
        for j = k - 1, k do assert.same({ payload(1, j), j }, { old:next(0) }) end
      end
    end
    local st = ev:stat()
    assert.equal(5000, st.published)
    assert.equal(5000, st.newest)
    assert.is_true(st.oldest > 1 and st.oldest <= 5000)
    -- 16 bytes of header and the padding to 8 per event: what is kept fits
    local used = 0
    for k = st.oldest, 5000 do used = used + 16 + math.ceil(#payload(1, k) / 8) * 8 end
    assert.is_true(used <= 1000)
    assert.is_true(used + 16 + math.ceil(#payload(1, st.oldest - 1) / 8) * 8 > 1000 - 16 - 304)
    assert.same({ nil, "lost", st.oldest - 1 }, { sub:next(0) })
    for k = st.oldest, 5000 do assert.same({ payload(1, k), k }, { sub:next(0) }) end
    assert.same({ nil, "timeout" }, { sub:next(0) })
    assert.same({ nil, "timeout" }, { old:next(0) })
    -- events of every size wrap around the ring
    for k = 1, 3000 do
      local m = string.rep(string.char(k % 256), k % 985)
      assert.is_true(ev:publish(m))
      assert.same({ m, 5000 + k }, { sub:next(0) })
    end
    ev:remove()
    ev:detach()
  end)

  it("raises for an event that can never fit; times out; checks its arguments", function()
    local ev = assert(shm.events.create(H.key(), 100)) -- 96 bytes of ring: 80 for an event
    assert.is_true(ev:publish(string.rep("a", 80)))
    assert.error_matches(function() ev:publish(string.rep("a", 85)) end,
      "event of 85 bytes can never fit in an event ring of capacity 100")
    assert.error_matches(function() ev:publish({}) end, "string expected")
    assert.error_matches(function() ev:publish("x", -1) end, "non%-negative")
    assert.error_matches(function() ev:subscribe("newest") end, "invalid option 'newest'")
    local sub = ev:subscribe("oldest")
    assert.same({ string.rep("a", 80), 1 }, { sub:next(0) })
    local t0 = H.now()
    assert.same({ nil, "timeout" }, { sub:next(0.03) })
    assert.is_true(H.now() - t0 >= 0.03)
    assert.error_matches(function() sub:next(-1) end, "non%-negative")
    assert.error_matches(function() sub.next(ev) end, "shm.subscriber expected")
    assert.error_matches(function() ev.publish(sub, "x") end, "shm.events expected")
    assert.error_matches(function() shm.events.create(H.key(), 31) end, "capacity out of range")
    assert.error_matches(function() shm.events.create(H.key(), 2 ^ 32) end, "capacity out of range")
    assert.error_matches(function() shm.events.create(H.key(), 1.5) end, "integer capacity expected")
    assert.error_matches(function() shm.events.create(H.key()) end, "integer capacity expected")
    assert.error_matches(function() shm.events.open(H.key(), "x") end, "integer capacity expected")
    ev:remove()
    ev:detach()
  end)

  it("opens what exists with its own capacity and refuses what is not an event ring", function()
    local key = H.key()
    local ev, msg, en = shm.events.open(key)
    assert.is_nil(ev)
    assert.equal(string.format("shm.events.open(0x%x): No such file or directory (pass a capacity to create it)",
      key), msg)
    assert.equal(2, en)
    ev = assert(shm.events.open(key, 256)) -- created
    local ev2 = assert(shm.events.open(key, 64)) -- exists: kept as it is
    assert.equal(256, ev2:stat().capacity)
    assert.is_nil((shm.events.create(key, 64)))
    ev2:publish("shared")
    assert.same({ "shared", 1 }, { ev:subscribe("oldest"):next(0) })
    ev2:detach()
    ev:remove()
    ev:detach()
    local seg = assert(shm.create(key, 4096))
    seg:write("not an event ring")
    ev, msg, en = shm.events.open(key)
    assert.is_nil(ev)
    assert.equal(string.format("shm.events.open(0x%x): not an event ring (bad magic)", key), msg)
    assert.equal(22, en)
    local q = assert(shm.queue.create(H.name(), 4096))
    assert.matches("bad magic", select(2, shm.events.open(q:segment().name)))
    q:remove() q:detach()
    local small = assert(shm.create(H.name(), 1000))
    assert.matches("segment too small for an event ring", select(2, shm.events.open(small.name)))
    small:remove() small:detach()
    seg:remove()
    seg:detach()
  end)

  it("creates when missing with a capacity: racing openers all end up on one ring", function()
    local names = {}
    for i = 1, 10 do names[i] = H.name() end
    local gate = assert(shm.create(shm.PRIVATE, 16))
    local kids = {}
    for c = 1, 3 do
      kids[c] = H.spawn([[
        local shm = require "shm"
        local id, c, list = ...
        local gate = assert(shm.attach(tonumber(id)))
        gate:add(8, 1)
        gate:wait(0, 0, 10)               -- all start together
        local failures = 0
        for n in list:gmatch("%S+") do
          local ev, msg = shm.events.open(n, 4096)
          if ev and ev:publish("from " .. c, 5) then ev:detach()
          else failures = failures + 1 io.stderr:write(tostring(msg), "\n") end
        end
        io.write("failures=", failures)
      ]], { gate.id, c, table.concat(names, " ") })
    end
    assert.is_true(H.until_true(function() return gate:load(8) == 3 end))
    gate:store(0, 1)
    gate:notify(0)
    gate:remove()
    gate:detach()
    for c = 1, 3 do
      local out, rc = kids[c]:finish()
      assert.equal(0, rc, out)
      assert.equal("failures=0", out)
    end
    for _, n in ipairs(names) do
      local ev = assert(shm.events.open(n))
      assert.same({ capacity = 4096, published = 3, oldest = 1, newest = 3, recovered = 0 }, ev:stat())
      ev:remove()
      ev:detach()
    end
  end)

  if H.lua54 then it("detaches on <close>", function()
    local key = H.key()
    H.load([[
      local shm, key = ...
      do
        local ev <close> = assert(shm.events.create(key, 64))
        ev:publish("kept")
      end
    ]])(shm, key)
    local ev = assert(shm.events.open(key))
    assert.equal(1, ev:segment():stat().nattch, "<close> detached the first handle")
    assert.same({ "kept", 1 }, { ev:subscribe("oldest"):next(0) })
    ev:remove()
    ev:detach()
  end) end

  it("raises on use after detach, subscribers included", function()
    local ev = assert(shm.events.create(H.key(), 64))
    local sub = ev:subscribe()
    ev:remove()
    ev:detach()
    assert.error_matches(function() ev:publish("x") end, "attempt to use a detached event ring")
    assert.error_matches(function() ev:subscribe() end, "attempt to use a detached event ring")
    assert.error_matches(function() ev:stat() end, "attempt to use a detached event ring")
    assert.error_matches(function() sub:next(0) end, "attempt to use a subscriber of a detached event ring")
    assert.matches("^shm%.events%(", tostring(ev))
    sub = nil -- luacheck: ignore
    collectgarbage()
  end)

  it("wakes a sleeping subscriber with a publish (no polling meanwhile)", function()
    local key = H.key()
    local ev = assert(shm.events.create(key, 4096))
    local child = H.spawn([[
      local shm = require "shm"
      local ev = assert(shm.events.open(tonumber((...))))
      local sub = ev:subscribe()
      print("ready") io.stdout:flush()
      print(sub:next())
    ]], { key })
    local pid = child.pid
    finally(function() H.kill(pid, "KILL") end)
    assert(child:line() == "ready")
    assert.is_true(H.until_true(function() return H.state(pid) == "S" end))
    local before = H.cputicks(pid)
    ev:segment():wait(ev:segment().size - 8, 0, 0.2) -- 0.2 s in which it must sleep
    assert.is_true(H.cputicks(pid) - before <= 2, "the sleeping subscriber used CPU")
    assert.is_true(ev:publish("wake up"))
    local out, rc = child:finish()
    assert.equal(0, rc)
    assert.equal("wake up\t1\n", out)
    ev:remove()
    ev:detach()
  end)

  local can_unshare = H.exec("unshare -i -m true 2>/dev/null")
  ;(can_unshare and it or pending)("a publish that finds the tmpfs full returns ENOSPC, never SIGBUS", function()
    local out, rc = H.in_namespace("-m", "mount -t tmpfs -o size=1m tmpfs /dev/shm", [[
      local shm = require "shm"
      local interp = ...
      -- 8 MiB of ring on a 1 MiB tmpfs: made at once, its memory taken as used
      local ev = assert(shm.events.create("/e", 8 * 1024 * 1024))
      local sub = ev:subscribe()
      local msg = string.rep("m", 60000)
      local n = 0
      while true do
        local ok, err, en = ev:publish(msg)
        if ok ~= true then print(ok, err, en) break end
        n = n + 1
      end
      -- another process, publishing into the same full tmpfs: the same answer
      local p = assert(io.popen(interp .. [=[ -e 'local ev = require("shm").events.open("/e")
        print(ev:publish(string.rep("c", 60000)))']=]))
      io.write(p:read("*a"))
      p:close()
      -- every event published is there, whole, once
      local got = 0
      while sub:next(0) == msg do got = got + 1 end
      print(n > 10, got == n, ev:stat().published == n)
      ev:remove()
      ev:detach()
    ]], { H.lua })
    assert.equal(0, rc, out)
    assert.equal("nil\tev:publish(/e): No space left on device\t28\n" ..
                 "nil\tev:publish(/e): No space left on device\t28\n" ..
                 "true\ttrue\ttrue\n", out)
  end)

  local has_strace = H.exec("command -v strace >/dev/null 2>&1")
  ;(has_strace and it or pending)("makes no system call to publish or to look when nobody sleeps", function()
    -- as many system calls for 20,000 publishes and next(0)s as for none
    local script = H.script([[
      local shm = require "shm"
      local ev = assert(shm.events.create(shm.PRIVATE, 65536))
      ev:segment():remove()
      local sub = ev:subscribe()
      for i = 1, tonumber((...)) do
        ev:publish("event " .. i)
        if i % 3 == 0 then sub:next(0) end -- (it falls behind: "lost" too)
      end
    ]])
    local out = os.tmpname()
    finally(function() os.remove(script) os.remove(out) end)
    local function calls(n)
      assert(H.exec("strace -f -qq -c -o " .. H.shellquote(out) .. " " .. H.command({ script, n })))
      local f = assert(io.open(out))
      local text = f:read("*a")
      f:close()
      return tonumber(text:match("\n[%s%d.]+%s+(%d+)%s+%d*%s*total"))
    end
    local none, many = calls(0), calls(20000)
    assert.is_number(none)
    assert.is_true(many - none < 10, string.format("%d system calls for none, %d for 20,000", none, many))
  end)

  -- 2 publishers and 6 subscribers, 100,000 events.  With a ring that holds
  -- them all, every subscriber sees every event exactly once in each
  -- publisher's order; with a small one they fall behind, and "lost" accounts
  -- for every event they did not see.
  for _, cfg in ipairs({ { cap = 32 * 1024 * 1024, what = "a ring that holds them all" },
                         { cap = 8192, what = "a small ring (subscribers fall behind)" } }) do
  it("2 publishers, 6 subscribers, 100,000 events, " .. cfg.what, function()
    local key, P, S, K = H.key(), 2, 6, 50000
    local ev = assert(shm.events.create(key, cfg.cap))
    local subs, pubs = {}, {}
    finally(function()
      for _, c in ipairs(subs) do H.kill(c.pid) end
      for _, c in ipairs(pubs) do H.kill(c.pid) end
    end)
    for s = 1, S do
      subs[s] = H.spawn(CHECKER .. [[
        local shm = require "shm"
        local ev = assert(shm.events.open(tonumber((...))))
        local sub = ev:subscribe()
        print("ready") io.stdout:flush()
        check(sub, 60, "")
      ]], { key })
    end
    for s = 1, S do assert.equal("ready", subs[s]:line()) end
    for p = 1, P do
      pubs[p] = H.spawn(PAYLOAD .. [[
        local shm = require "shm"
        local key, p, K = tonumber((...)), tonumber((select(2, ...))), tonumber((select(3, ...)))
        local ev = assert(shm.events.open(key))
        for k = 1, K do assert(ev:publish(payload(p, k))) end
      ]], { key, p, K })
    end
    for p = 1, P do
      local out, rc = pubs[p]:finish()
      assert.equal(0, rc, out)
    end
    assert.is_true(ev:publish("end"))
    local total = P * K
    for s = 1, S do
      local out, rc = subs[s]:finish()
      assert.equal(0, rc, out:sub(-300))
      local got, lost, last = out:match("^got=(%d+) lost=(%d+) last=(%d+)")
      got, lost, last = tonumber(got), tonumber(lost), tonumber(last)
      assert.equal(total + 1, last)
      assert.equal(total, got + lost, "events neither seen nor counted lost: " .. out)
      if cfg.cap > 8192 then
        assert.equal(0, lost)
        assert.equal(string.format("got=%d lost=0 last=%d p1=%d p2=%d\n", total, total + 1, K, K), out)
      end
    end
    local st = ev:stat()
    assert.equal(total + 1, st.published)
    assert.equal(0, st.recovered)
    ev:remove()
    ev:detach()
  end)
  end

  it("survives publishers killed inside publish: nothing partial is ever seen, the ring works on", function()
    local key = H.key()
    local ev = assert(shm.events.create(key, 256 * 1024))
    local raw = assert(shm.open(key)) -- to see the publishers' lock word
    local sub = H.spawn(CHECKER .. [[
      local shm = require "shm"
      local ev = assert(shm.events.open(tonumber((...))))
      local sub = ev:subscribe()
      print("ready") io.stdout:flush()
      check(sub, 60, string.rep("z", 40000))
    ]], { key })
    local subpid = sub.pid
    finally(function() H.kill(subpid) end)
    assert.equal("ready", sub:line())
    -- big events: copying one into the ring is most of a publish (a
    -- publisher's k only grows: it starts from its round's thousands)
    local PUB = PAYLOAD .. [[
      local shm = require "shm"
      local key, p, round = tonumber((...)), tonumber((select(2, ...))), tonumber((select(3, ...)))
      local ev = assert(shm.events.open(key))
      local msgs, pad = {}, string.rep("z", 40000)
      print("ready") io.stdout:flush()
      local k = round * 1000000
      while true do k = k + 1 ev:publish(payload(p, k) .. pad) end
    ]]
    local caught, recovered = 0, 0
    for round = 1, 12 do
      local pubs, pids = {}, {}
      for p = 1, 2 do
        pubs[p] = H.spawn(PUB, { key, p, round })
        pids[p] = pubs[p].pid
      end
      finally(function() for p = 1, 2 do H.kill(pids[p]) end end)
      for p = 1, 2 do assert.equal("ready", pubs[p]:line()) end
      -- stop one until it is caught holding the lock (or give up), then kill both
      local victim = pids[round % 2 + 1]
      for _ = 1, 300 do
        H.kill(victim, "STOP")
        assert.is_true(H.until_true(function() return H.state(victim) == "T" end))
        if raw:unpack(shm.events.layout.lock, "<I4") % 2 ^ 30 == victim then
          caught = caught + 1
          break
        end
        H.kill(victim, "CONT")
      end
      for p = 1, 2 do H.kill(pids[p], "KILL") pubs[p]:finish() end
      -- (a publish now takes the lock over if the victim held it)
      assert.is_true(ev:publish(payload(9, round) .. string.rep("z", 40000), 5))
      recovered = ev:stat().recovered
    end
    assert.is_true(caught >= 1, "never caught a publisher inside publish")
    assert.is_true(recovered >= caught) -- (the other one may have held it too)
    assert.is_true(ev:publish("end", 5))
    local out, rc = sub:finish()
    assert.equal(0, rc, out:sub(-300))
    local got, lost = out:match("^got=(%d+) lost=(%d+)")
    assert.is_true(tonumber(got) > 0)
    assert.equal(ev:stat().published - 1, tonumber(got) + tonumber(lost))
    raw:detach()
    ev:remove()
    ev:detach()
  end)

  it("raises for a corrupted header or record, never a crash", function()
    local key = H.key()
    local ev = assert(shm.events.create(key, 256))
    local seg = assert(shm.open(key)) -- raw access to the same memory
    local L = shm.events.layout
    local sub = ev:subscribe()
    ev:publish("hello")
    -- the record's length, scribbled
    seg:pack(L.header + 8, "<I4", 0xffffff)
    assert.error_matches(function() sub:next(0) end, "shm.events: corrupted events %(bad record%)")
    seg:pack(L.header + 8, "<I4", 5)
    assert.same({ "hello", 1 }, { sub:next(0) })
    ev:publish("two")
    ev:publish("three")
    assert.same({ "two", 2 }, { sub:next(0) })
    assert.same({ "three", 3 }, { sub:next(0) })
    -- newest moved back
    local newest = seg:unpack(L.newest, "<J")
    seg:pack(L.newest, "<J", 2 ^ 40)
    assert.error_matches(function() ev:publish("x") end, "corrupted events %(bad tail%)")
    seg:pack(L.newest, "<J", 0)
    assert.error_matches(function() sub:next(0) end, "corrupted events %(sequence number went backwards%)")
    seg:pack(L.newest, "<J", newest)
    assert.same({ nil, "timeout" }, { sub:next(0) })
    -- the oldest event's place
    local old = seg:unpack(L.old, "<J")
    seg:pack(L.old, "<J", old + 3)
    assert.error_matches(function() ev:publish("x") end, "corrupted events %(bad oldest event%)")
    assert.error_matches(function() ev:subscribe("oldest") end, "corrupted events %(bad oldest event%)")
    seg:pack(L.old, "<J", old)
    seg:pack(L.oldest, "<J", 2 ^ 50)
    assert.error_matches(function() ev:stat() end, "corrupted events %(bad oldest event%)")
    seg:pack(L.oldest, "<J", 1)
    assert.is_true(ev:publish("again"))
    assert.same({ "again", 4 }, { sub:next(0) })
    -- a capacity rewritten after open is never trusted; a new open rejects it
    seg:pack(L.capacity, "<J", 1024 * 1024 * 1024)
    for k = 1, 100 do assert.is_true(ev:publish("still bounded " .. k)) end
    local _, why, n = sub:next(0)
    assert.equal("lost", why)
    assert.same({ "still bounded " .. (1 + n), 5 + n }, { sub:next(0) })
    local ev2, msg = shm.events.open(key)
    assert.is_nil(ev2)
    assert.matches("capacity does not match the segment", msg)
    seg:pack(L.magic, "<J", 0)
    ev2, msg = shm.events.open(key)
    assert.is_nil(ev2)
    assert.matches("not an event ring %(bad magic%)", msg)
    seg:detach()
    ev:remove()
    ev:detach()
  end)

  it("random bytes over the header and records: errors, never a crash or a hang", function()
    -- in a child, so that a crash shows as a signal; every wait bounded
    local out, rc = H.run([[
      local shm = require "shm"
      math.randomseed(tonumber((...)))
      local R = math.random
      local L = shm.events.layout
      local errors, calls = 0, 0
      local function try(f, ...)
        calls = calls + 1
        if not pcall(f, ...) then errors = errors + 1 end
      end
      for round = 1, 40 do
        local ev = assert(shm.events.create(shm.PRIVATE, R(32, 3000)))
        local seg = ev:segment()
        seg:remove()
        local subs = { ev:subscribe(), ev:subscribe("oldest") }
        for step = 1, 300 do
          local r = R(25)
          if r <= 10 then try(ev.publish, ev, string.rep("e", R(0, 200)), 0.01)
          elseif r <= 20 then try(subs[R(#subs)].next, subs[R(#subs)], 0)
          elseif r == 21 then try(ev.stat, ev)
          elseif r <= 23 then
            local ok, s = pcall(ev.subscribe, ev, R(2) == 1 and "oldest" or nil)
            if ok then subs[#subs + 1] = s end
          else
            -- scribble: header fields (not the lock word: a live holder would
            -- make publishes wait their timeout) or the ring's bytes
            local off
            if R(2) == 1 then
              off = ({ L.newest, L.tail, L.oldest, L.old, L.capacity })[R(5)] + R(0, 7)
            else
              off = L.header + R(0, seg.size - L.header - 1)
            end
            local n = math.min(R(1, 16), seg.size - off)
            local bytes = {}
            for i = 1, n do bytes[i] = string.char(R(0, 255)) end
            seg:write(table.concat(bytes), off)
          end
        end
        ev:detach()
      end
      print(calls, errors)
    ]], { os.time() % 100000 })
    assert.equal(0, rc, out)
    local calls, errors = out:match("^(%d+)\t(%d+)")
    assert.is_true(tonumber(calls) > 1000)
    assert.is_true(tonumber(errors) > 0, "scribbling never made an error")
  end)

  if rawget(_G, "jit") then
    it("gives the same results through the FFI and the C API (SHM_NO_FFI=1)", function()
      local code = [[
        local shm = require "shm"
        local ev = assert(shm.events.create(shm.PRIVATE, 300))
        ev:segment():remove()
        local a, b = ev:subscribe(), ev:subscribe("oldest")
        local function show(...) local t = { n = select("#", ...), ... }
          for i = 1, t.n do t[i] = tostring(t[i]) end
          print(table.concat(t, " ", 1, t.n))
        end
        for k = 1, 200 do
          show(pcall(ev.publish, ev, string.rep(string.char(65 + k % 26), k * 7 % 120)))
          if k % 3 == 0 then show(a:next(0)) end
          if k % 50 == 0 then for _ = 1, 20 do show(b:next(0)) end end
        end
        show(pcall(ev.publish, ev, string.rep("x", 300)))
        show(pcall(ev.publish, ev, 42))
        show(pcall(a.next, a, -1))
        show(pcall(a.next, ev))
        show(a:next(0.001))
        ev:detach()
        show(pcall(ev.publish, ev, "x"))
        show(pcall(a.next, a, 0))
        print(require("shm.ffi").active, require("shm.ffi").fallbacks["events:publish"])
      ]]
      local with, rc1 = H.run(code)
      local without, rc2 = H.run(code, nil, { env = { LUA_PATH = H.env.LUA_PATH, LUA_CPATH = H.env.LUA_CPATH,
                                                      SHM_NO_FFI = "1" } })
      assert.equal(0, rc1, with)
      assert.equal(0, rc2, without)
      local a, b = with:gsub("[^\n]*\n$", ""), without:gsub("[^\n]*\n$", "")
      assert.equal(a, b)
      if os.getenv("SHM_NO_FFI") ~= "1" then
        assert.matches("\ntrue\t3\n$", with) -- what only the C API answers: too big, a number, detached
      end
    end)
  end

  it("gives every event whole when a finalizer calls next on the same subscriber mid-next", function()
    -- (5.1, 5.2 and LuaJIT collect before copying a new string: the
    -- finalizer's next must not move or refill the buffer being copied)
    for _, jitmode in ipairs({ "on", "off" }) do
      local out, rc = H.run(H.GC .. [[
        local shm = require "shm"
        if jit and arg[1] == "off" then jit.off() end
        local ev = assert(shm.events.create(shm.PRIVATE, 64 * 1024 * 1024))
        ev:segment():remove()
        local sub = ev:subscribe()
        local function event(n)
          return n .. ":" .. string.rep(string.char(65 + n % 26), (n % 7 == 0) and 100000 + n or n % 50)
        end
        local N, got, bad, seen = 3000, {}, 0, 0
        local function check(e, n)
          if e ~= event(n) or got[n] then bad = bad + 1 else got[n] = true end
          seen = seen + 1
        end
        for n = 1, N do assert(ev:publish(event(n))) end
        for _ = 1, 10 * N do -- (a lost event ends it short)
          if seen == N then break end
          for _ = 1, 20 do gc(function()
            local e, n = sub:next(0)
            if e then check(e, n) end
          end) end
          local e, n = sub:next(0)
          if e then check(e, n) end
        end
        collectgarbage()
        io.write("bad=", bad, " seen=", seen)
      ]], { jitmode })
      assert.equal(0, rc, out)
      assert.equal("bad=0 seen=3000", out)
    end
  end)
end)

-- Broadcast: one publisher (this process) to SUBS subscriber processes.
-- The same script for every transport:
--   events   shm.events: publish / sub:next (subscribers sleep on a futex)
--   dict     the event log of lua-resty-worker-events and mlcache's ipc_shm,
--            over shm.dict: the publisher does incr(index) then set(index,
--            event); subscribers poll the index and get each event by it
--            (throughput: polling without a pause, its best case; latency:
--            a poll every POLL_MS milliseconds, as those libraries do with
--            their timers, only much more often)
--   fifo     a FIFO per subscriber, the publisher writes each event to each
--            (throughput: stdio buffering, one flush at the end; latency: a
--            flush per event)
-- usage: events.lua throughput TRANSPORT SIZE SUBS COUNT -> events per second
--        (until the last subscriber has the last event; every event checked)
--        events.lua latency TRANSPORT COUNT -> median µs from the publish call
--        to the subscriber's return with the event (64 B events, the subscriber
--        asleep before each: the publisher naps 2 ms first).  The clock is read
--        just before the call and stored in a shared cell (integer ns), the
--        event itself made beforehand: making a message that carries the time
--        (string.format of a float) costs 2 to 8 µs after a nap, which is not
--        the publish's.  bench/cfutex.c is the floor: the kernel's wake-up
--        alone, measured the same way.
local lib = require "lib"
local shm = require "shm"

local mode, transport = arg[1], arg[2]
local q = lib.q
local POLL_MS = 1
local PID = io.open("/proc/self/stat"):read("*n")

-- a sleep that is a real wait (a futex with a timeout, nothing wakes it)
local nap_seg = assert(shm.create(shm.PRIVATE, 8))
nap_seg:remove()
local function nap(s) nap_seg:wait(0, 0, s) end

---------------------------------------------------------------- subscribers

if mode == "sub" then
  local name, size, count, gate_id, lat = arg[3], tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6]), arg[7]
  local msgs = lib.messages(size)
  local gate = assert(shm.attach(gate_id))
  local lats = {}
  local function got(i, m)
    if lat then lats[i] = lib.now() * 1e6 - gate:load(8) / 1e3 end -- (the clock first)
    if m ~= msgs[i % 1024] then error("event " .. i .. " lost, torn or out of order") end
  end
  if transport == "events" then
    local ev = assert(shm.events.open(name))
    local sub = ev:subscribe()
    local nxt = sub.next
    gate:add(0, 1)
    for i = 1, count do
      local m, why = nxt(sub, 30)
      if not m then error("next: " .. tostring(why)) end
      got(i, m)
    end
  elseif transport == "dict" then
    local d = assert(shm.dict.open(name))
    local get = d.get
    gate:add(0, 1)
    local i = 0
    while i < count do
      local idx = get(d, "idx") or 0
      if idx > i then
        for j = i + 1, idx do
          local m, t = get(d, "ev:" .. j), nil
          while m == nil do -- (the set after the incr is on its way)
            t = t or lib.now()
            if lib.now() - t > 5 then error("event " .. j .. " never came") end
            m = get(d, "ev:" .. j)
          end
          got(j, m)
        end
        i = idx
      elseif lat then
        nap(POLL_MS / 1000)
      end
    end
  else
    gate:add(0, 1)
    local f = assert(io.open(name, "rb"))
    for i = 1, count do got(i, assert(f:read(size))) end
    f:close()
  end
  if lat then
    print(string.format("%.3f", lib.median(lats)))
  else
    print(string.format("%.9f", lib.now()))
  end
  os.exit(0)
end

---------------------------------------------------------------- the publisher

local size, subs, count
if mode == "latency" then
  size, subs, count = 64, 1, tonumber(arg[3])
else
  size, subs, count = tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5])
end
local msgs = lib.messages(size)
local name = string.format("/lshm-bench-ev-%d", PID)
-- word 0: subscribers attached; word 8: latency: the publisher's clock (ns)
-- just before the publish call
local gate = assert(shm.create(shm.PRIVATE, 16))
gate:remove()
local fifos = {}

-- unlink: the names go once every subscriber has attached (nothing is left
-- behind whatever happens next); finish: the end of the run
local publish, unlink, finish
if transport == "events" then
  -- room for every event: nobody falls behind the ring, nothing is lost
  local ev = assert(shm.events.create(name, count * (size + 16) + 4096))
  -- its pages touched first, as a ring that wraps has them (not timed)
  ev:segment():fill(0, shm.events.layout.header)
  local pub = ev.publish
  publish = function(m) pub(ev, m) end
  unlink = function() ev:remove() end
  finish = function() ev:detach() end
elseif transport == "dict" then
  -- (values above 4 KiB take an 8 KiB block)
  local d = assert(shm.dict.create(name, 16 * 1024 * 1024 + count * (2 * size + 512)))
  local incr, set = d.incr, d.set
  publish = function(m)
    local i = incr(d, "idx", 1, 0)
    local ok, err, forcible = set(d, "ev:" .. i, m)
    if not ok or forcible then error("bench: the dict is too small (" .. tostring(err or "evicted") .. ")") end
  end
  unlink = function() d:remove() end
  finish = function() d:detach() end
else
  for s = 1, subs do
    fifos[s] = os.tmpname()
    os.remove(fifos[s])
    assert(lib.exec("mkfifo -m 0600 " .. q(fifos[s])))
  end
  unlink = function() for s = 1, subs do os.remove(fifos[s]) end end
  finish = function() end
end

local kids = {}
for s = 1, subs do
  local cmd = { arg[-1], q(arg[0]), "sub", transport, q(fifos[s] or name), size, count, gate.id }
  if mode == "latency" then cmd[#cmd + 1] = "lat" end
  kids[s] = assert(io.popen(table.concat(cmd, " "), "r"))
end
if transport == "fifo" then
  local fs = {}
  for s = 1, subs do fs[s] = assert(io.open(fifos[s], "wb")) end -- (once each subscriber has it open)
  unlink()
  local flush = mode == "latency"
  publish = function(m)
    for s = 1, subs do
      local f = fs[s]
      f:write(m)
      if flush then f:flush() end
    end
  end
  local done = finish
  finish = function()
    for s = 1, subs do fs[s]:close() end
    done()
  end
end
local t_gate = lib.now()
while gate:load(0) < subs do -- every subscriber is there
  if lib.now() - t_gate > 30 then
    unlink()
    error("bench: the subscribers did not start")
  end
  nap(0.001)
end
if transport ~= "fifo" then unlink() end

local t0 = lib.now()
if mode == "latency" then
  local floor, store = math.floor, gate.store
  for i = 1, count do
    nap(0.002) -- the subscriber goes to sleep
    local m = msgs[i % 1024]
    store(gate, 8, floor(lib.now() * 1e9))
    publish(m)
  end
else
  for i = 1, count do publish(msgs[i % 1024]) end
end
if transport == "fifo" then finish() end -- flushed, closed and removed
local results = {}
for s = 1, subs do
  local out = kids[s]:read("*a")
  local ok = kids[s]:close()
  local v = tonumber(out:match("^%s*([%d.]+)"))
  if not v or ok == false then error("subscriber " .. s .. " failed:\n" .. out) end
  results[s] = v
end
if transport ~= "fifo" then finish() end
if mode == "latency" then
  print(string.format("%.3f", results[1]))
else
  local last = 0
  for _, t in ipairs(results) do last = math.max(last, t) end
  print(string.format("%.0f", count / (last - t0)))
end

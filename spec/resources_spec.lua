-- Objects that already exist are taken as they are: never resized, never
-- removed by a call that failed; and what another process's truncation does.
local shm = require "shm"
local H = require "helpers"

describe("existing objects", function()
  after_each(H.cleanup)

  it("are never resized by open: smaller fails with EINVAL saying what exists", function()
    for _, key in ipairs({ H.key(), H.name() }) do
      local seg = assert(shm.create(key, 4096))
      local what = type(key) == "number" and string.format("0x%x", key) or key
      local s, msg, en = shm.open(key, "rw", 8192)
      assert.is_nil(s)
      assert.equal("shm.open(" .. what .. "): exists with 4096 bytes, 8192 asked: Invalid argument", msg)
      assert.equal(22, en)
      assert.equal(4096, seg:stat().size, "untouched")
      local big = assert(shm.open(key, "rw", 100))
      assert.equal(4096, big.size, "a larger one opens with its real size")
      big:detach()
      seg:remove()
      seg:detach()
    end
  end)

  it("an empty POSIX object says its size is 0", function()
    local name = H.name()
    io.open("/dev/shm" .. name, "w"):close()
    local s, msg, en = shm.open(name)
    assert.is_nil(s)
    assert.equal("shm.open(" .. name .. "): the object is empty (size 0): Invalid argument", msg)
    assert.equal(22, en)
    assert.is_true(H.exec("test -e /dev/shm" .. name), "and it is left alone")
  end)

  it("shm.map takes a string path, never a number", function()
    local cwd = H.sh("ls -a")
    assert.error_matches(function() shm.map(1.5, 10) end, "string expected, got number")
    assert.error_matches(function() shm.map(42) end, "string expected, got number")
    assert.error_matches(function() shm.map("") end, "empty path")
    assert.error_matches(function() shm.map("a\0b", 10) end, "zero byte")
    assert.equal(cwd, H.sh("ls -a"), "no file made in the working directory")
  end)
end)

-- Each call in a child of its own, on a POSIX object (and a queue) that
-- another process (truncate(1)) shrank to 0 bytes after they were mapped.
local TRUNCATED = [[
local shm = require "shm"
local name, qname, call = ...
local seg = assert(shm.create(name, 3 * 4096))
local q = assert(shm.queue.create(qname, 4096))
local d = assert(shm.dict.create(name .. "-dict", 64 * 1024))
local m = seg:mutex(64)
assert(os.execute("truncate -s 0 /dev/shm" .. name .. " /dev/shm" .. qname .. " /dev/shm" .. name .. "-dict"))
shm.unlink(name) shm.unlink(qname) shm.unlink(name .. "-dict")
local calls = {
  read = function() return seg:read(0, 1) end,
  write = function() return seg:write("x", 0) end,
  fill = function() return seg:fill(1, 0, 1) end,
  pack = function() return seg:pack(0, "b", 1) end,
  unpack = function() return seg:unpack(0, "b") end,
  load = function() return seg:load(0) end,
  store = function() return seg:store(0, 1) end,
  add = function() return seg:add(0, 1) end,
  cas = function() return seg:cas(0, 0, 1) end,
  wait = function() return seg:wait(0, 0, 0) end,
  notify = function() return seg:notify(0) end,
  mutex = function() return seg:mutex(128) end,
  stat = function() return seg:stat() end,
  sync = function() return seg:sync() end,
  chmod = function() return seg:chmod("0600") end,
  chown = function() return seg:chown() end,
  remove = function() return seg:remove() end,
  detach = function() return seg:detach() end,
  fields = function() return seg.size, seg.name, #seg, tostring(seg) end,
  open = function() return shm.open(name) end,
  ["mutex:lock"] = function() return m:lock(0) end,
  ["mutex:trylock"] = function() return m:trylock() end,
  ["mutex:unlock"] = function() return m:unlock() end,
  ["queue:push"] = function() return q:push("x", 0) end,
  ["queue:pop"] = function() return q:pop(0) end,
  ["queue:stat"] = function() return q:stat(0) end,
  ["queue:close"] = function() return q:close(0) end,
  ["queue:segment"] = function() return q:segment(), tostring(q) end,
  ["dict:get"] = function() return d:get("k") end,
  ["dict:set"] = function() return d:set("k", 1) end,
  ["dict:incr"] = function() return d:incr("k", 1, 0) end,
  ["dict:capacity"] = function() return d:capacity(), d:segment(), tostring(d) end,
}
pcall(calls[call]) -- an error is a clean result here; only a signal is not
io.write("returned")
]]

-- What the README says: the calls that touch the shared bytes die of SIGBUS
-- (the kernel's answer to a page past the end of the object; catching it needs
-- a process-wide signal handler, which a library must not install); the calls
-- that only make system calls on the object return.
local FAULTS = {
  "read", "write", "fill", "pack", "unpack", "load", "store", "add", "cas", "wait", "mutex",
  "mutex:lock", "mutex:trylock", "queue:push", "queue:pop", "queue:stat",
  "queue:close", "dict:get", "dict:set", "dict:incr",
}
-- (mutex:unlock of a mutex this object does not hold raises before it looks)
local RETURNS = {
  "notify", "stat", "sync", "chmod", "chown", "remove", "detach", "fields", "open",
  "queue:segment", "mutex:unlock", "dict:capacity",
}

describe("truncation by another process", function()
  after_each(H.cleanup)

  it("kills exactly the calls that touch the bytes (SIGBUS), the others return", function()
    local got, signals = {}, 0
    for _, list in ipairs({ FAULTS, RETURNS }) do
      for _, call in ipairs(list) do
        local out, rc = H.run(TRUNCATED, { H.name(), H.name(), call })
        -- (make check-asan: the sanitizer catches the signal, reports it, aborts)
        if rc == 128 + 7 or out:find("ERROR: AddressSanitizer: BUS", 1, true) then
          got[call] = "SIGBUS"
          signals = signals + 1
        else
          got[call] = out == "returned" and rc == 0 and "returned" or (rc .. ": " .. out)
        end
      end
    end
    for _, call in ipairs(FAULTS) do assert.equal("SIGBUS", got[call], call) end
    for _, call in ipairs(RETURNS) do assert.equal("returned", got[call], call) end
    print(string.format("\n    truncated object, as documented: the %d calls that touch its bytes got SIGBUS,"
      .. " the %d others returned (passed)", signals, #RETURNS))
  end)
end)

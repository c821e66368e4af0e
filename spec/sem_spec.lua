-- shm.sem: System V and POSIX semaphores, with real kernel objects and real
-- processes: C's semop/sem_open (spec/sem_peer.c, compiled here) and Python's
-- sysv_ipc on the same semaphores, holders killed with kill -9, signals to
-- waiters, 50 racing creators, permissions as nobody, a count at scale.
local shm = require "shm"
local H = require "helpers"

-- every key and name a test used: removed after each (shm.sem.unlink)
local used = {}
local function skey()
  local k = H.key() -- (no segment has it; no semaphore either, checked)
  assert(not shm.sem.open(k), "a semaphore already has key " .. k)
  used[#used + 1] = k
  return k
end
local function sname()
  local n = H.name()
  used[#used + 1] = n
  return n
end
local function cleanup()
  for i = #used, 1, -1 do
    shm.sem.unlink(used[i])
    used[i] = nil
  end
  H.cleanup()
end

-- both kinds, by a key or a name
local KINDS = { sysv = skey, posix = sname }

local PRELUDE = [[
local shm = require "shm"
io.stdout:setvbuf("no")
local obj = ...
obj = tonumber(obj) or obj
]]

-- The C peer: compiled once into a scratch directory.
local peer
local function c(...)
  local args = { ... }
  for i, a in ipairs(args) do args[i] = H.shellquote(a) end
  local out, rc = H.sh(peer .. " " .. table.concat(args, " "))
  assert.equal(0, rc, out)
  return (out:gsub("\n$", ""))
end
-- a C peer that holds the semaphore until killed: its pid once it holds it
local function c_hold(...)
  local args = { peer }
  for _, a in ipairs({ ... }) do args[#args + 1] = H.shellquote(a) end
  local p = assert(io.popen("exec sh -c 'echo $$; exec \"$@\"' sh " .. table.concat(args, " ")))
  local pid = tonumber(p:read("*l"))
  assert.equal("held", p:read("*l"))
  return pid, p
end

-- Wait on a real wait (a child's pid is sleeping in the kernel on what we want).
local function sleeping_in(pid, what)
  return H.until_true(function()
    local f = io.open("/proc/" .. pid .. "/wchan")
    local w = f and f:read("*a") or ""
    if f then f:close() end
    return H.state(pid) == "S" and w:find(what) ~= nil
  end)
end

describe("shm.sem", function()
  setup(function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(H.exec("mkdir -p " .. dir))
    peer = dir .. "/sem_peer"
    local out, rc = H.sh("cc -std=c11 -O1 -o " .. peer .. " " .. H.shellquote(H.root .. "/spec/sem_peer.c"))
    assert.equal(0, rc, out)
  end)
  teardown(function()
    if peer then H.exec("rm -rf " .. H.shellquote(peer:match("^(.*)/"))) end
  end)
  after_each(cleanup)

  for kind, new in pairs(KINDS) do
    describe(kind, function()
      it("counts: acquire, release, try once, timeouts, value and stat", function()
        local obj = new()
        local s = assert(shm.sem.create(obj, 2, "0640"))
        assert.equal(kind, s.kind)
        assert.equal(2, s.value)
        assert.is_true(s:acquire())
        assert.is_true(s:acquire(0))
        local ok, why = s:acquire(0)
        assert.is_false(ok)
        assert.equal("timeout", why)
        ok, why = s:acquire(0.01)
        assert.is_false(ok)
        assert.equal("timeout", why)
        assert.is_true(s:release())
        assert.equal(1, s.value)
        local st = assert(s:stat())
        assert.equal(kind, st.kind)
        assert.equal(1, st.value)
        assert.equal(tonumber("640", 8), st.mode) -- exactly, whatever the umask
        assert.equal(0, st.uid)
        if kind == "sysv" then
          assert.equal(obj, s.key)
          assert.equal(obj, st.key)
          assert.equal(s.id, st.id)
          assert.equal(0, s.index)
          assert.equal(1, st.nsems)
          assert.equal(H.pid, st.lastpid)
          assert.is_true(st.otime > 0)
          assert.is_nil(s.name)
        else
          assert.equal(obj, s.name)
          assert.equal(obj, st.name)
          assert.is_nil(s.key)
        end
        assert.matches("^shm%.sem%(" .. kind, tostring(s))
        assert.is_true(s:chmod("0600"))
        assert.equal(tonumber("600", 8), s:stat().mode)
        assert.is_true(s:remove())
        assert.is_true(s:close())
        assert.is_true(s:close())
        assert.has_error(function() s:acquire() end, "attempt to use a closed semaphore")
        assert.has_error(function() return s.value end, "attempt to use a closed semaphore")
      end)

      it("creates exclusively, opens with or without a value", function()
        local obj = new()
        local s, msg, en = shm.sem.open(obj)
        assert.is_nil(s)
        assert.matches("^shm%.sem%.open%(.*%): No such file or directory %(pass a value to create it%)$", msg)
        assert.equal(2, en)
        s = assert(shm.sem.open(obj, 3))
        assert.equal(3, s.value)
        local again = assert(shm.sem.open(obj, 7)) -- exists: the value is not set again
        assert.equal(3, again.value)
        local _, emsg, een = shm.sem.create(obj, 1)
        assert.matches("^shm%.sem%.create%(.*%): File exists$", emsg)
        assert.equal(17, een)
        assert.is_true(again:acquire(0))
        assert.equal(2, s.value) -- one semaphore
        assert.is_true(shm.sem.unlink(obj))
        local _, umsg = shm.sem.unlink(obj)
        assert.matches("^shm%.sem%.unlink%(.*%): ", umsg)
      end)

      it("checks its arguments: never a crash", function()
        local obj = new()
        local max = kind == "sysv" and 32767 or 2147483647
        assert.has_error(function() shm.sem.create(obj, -1) end)
        assert.has_error(function() shm.sem.create(obj, max + 1) end)
        assert.has_error(function() shm.sem.create(obj, 1.5) end)
        assert.has_error(function() shm.sem.create(obj) end)
        assert.has_error(function() shm.sem.create(obj, 1, "0999") end)
        local s = assert(shm.sem.create(obj, max))
        assert.has_error(function() s:acquire(-1) end)
        assert.has_error(function() s:acquire(nil, 0) end)
        assert.has_error(function() s:acquire(nil, -1) end)
        assert.has_error(function() s:release(0) end)
        assert.has_error(function() s:release(-3) end)
        assert.has_error(function() s:release("x") end)
        assert.has_error(function() s.value = 3 end, "cannot set field 'value' of a semaphore (only undo)")
        assert.has_error(function() s.acquire(io.stdout) end)
        -- above the largest value: an error, nothing released
        local ok, msg = s:release()
        assert.is_nil(ok)
        assert.matches("^sem:release%(.*%): ", msg)
        assert.equal(max, s.value)
        if kind == "posix" then
          assert.has_error(function() s:acquire(nil, 2) end)
          assert.has_error(function() s:wait_zero() end)
          assert.has_error(function() s:setvalue(1) end)
          assert.has_error(function() s.undo = true end)
          assert.is_false(s.undo)
        else
          assert.has_error(function() s:setvalue(max + 1) end)
          assert.has_error(function() s:acquire(nil, 32768) end)
          assert.has_error(function() s.undo = 1 end)
        end
      end)

      it("gives a removed semaphore's waiter nil, message, errno (System V) or its units (POSIX)", function()
        local obj = new()
        local s = assert(shm.sem.create(obj, 0))
        local child = H.spawn(PRELUDE .. [[
          local s = assert(shm.sem.open(obj))
          print("waiting")
          print(s:acquire(30))
        ]], { obj })
        assert.equal("waiting", child:line())
        if kind == "sysv" then
          assert.is_true(H.until_true(function() return s:stat().ncnt == 1 end))
          assert.is_true(s:remove())
          local out = child:finish()
          assert.matches("^nil\tsem:acquire%(key=0x%x+ id=%d+ index=0%): Identifier removed %(removed%)\t43\n$", out)
          local ok, msg, en = s:acquire(0)
          assert.is_nil(ok)
          assert.matches("removed", msg)
          assert.equal(22, en)
          assert.is_nil(s.value)
        else
          assert.is_true(sleeping_in(child.pid, "futex"))
          assert.is_true(s:remove()) -- unlinked: whoever has it open keeps using it
          assert.is_true(s:release())
          assert.equal("true\n", (child:finish()))
          local _, msg, en = s:stat()
          assert.equal("sem:stat(" .. obj .. "): No such file or directory", msg)
          assert.equal(2, en)
        end
      end)

      it("keeps waiting through a stop and continue, and ends the wait on Ctrl-C", function()
        local obj = new()
        local s = assert(shm.sem.create(obj, 0))
        local code = PRELUDE .. [[
          local s = assert(shm.sem.open(obj))
          local timeout = tonumber((select(2, ...)))
          print("waiting")
          local ok, err = pcall(function() print(s:acquire(timeout)) end)
          if not ok then print("raised", err) end
          print("value", s.value)
        ]]
        local function waiting(pid)
          if kind == "sysv" then return H.until_true(function() return s:stat().ncnt == 1 end) end
          return sleeping_in(pid, "futex")
        end
        for _, timeout in ipairs({ "nil", "60" }) do
          local child = H.spawn(code, { obj, timeout })
          assert.equal("waiting", child:line())
          assert.is_true(waiting(child.pid))
          H.kill(child.pid, "STOP")
          assert.is_true(H.until_true(function() return H.state(child.pid) == "T" end))
          H.kill(child.pid, "CONT")
          assert.is_true(waiting(child.pid)) -- (semop returned EINTR: restarted)
          assert.is_true(s:release())
          assert.equal("true\nvalue\t0\n", (child:finish()))
        end
        -- SIGINT: lua.c's handler asks the state to stop; the wait ends at once
        -- (the futex waits under 5.1-5.3 and LuaJIT, whose handler is installed
        -- with SA_RESTART, are restarted by the kernel: System V's semop never is)
        if kind == "posix" and H.luaver ~= "5.4" then return end
        local child = H.spawn(code, { obj, "nil" })
        assert.equal("waiting", child:line())
        assert.is_true(waiting(child.pid))
        H.kill(child.pid, "INT")
        local out, rc = child:finish()
        assert.equal(0, rc, out)
        -- the hook raises right after acquire returned false, "interrupted"
        assert.matches("raised\t.*interrupted!\nvalue\t0\n$", out)
        assert.equal(0, s.value)
        -- waiting in a coroutine: the handler sets the main thread's hook, which
        -- the wait looks at too; the coroutine's own hook is untouched, so it
        -- sees the result (except under 5.1, with no way to the main thread,
        -- and LuaJIT, whose hook is global: it raises in the coroutine at once)
        if kind ~= "sysv" or (H.luaver == "5.1" and not jit) then return end
        child = H.spawn(PRELUDE .. [[
          local s = assert(shm.sem.open(obj))
          print("waiting")
          print(pcall(function()
            local co = coroutine.wrap(function() print(s:acquire()) return "back" end)
            return co()
          end))
        ]], { obj })
        assert.equal("waiting", child:line())
        assert.is_true(waiting(child.pid))
        H.kill(child.pid, "INT")
        out = child:finish()
        if jit then assert.matches("interrupted!", out)
        else assert.matches("^false\tinterrupted\n", out) end
        assert.equal(0, s.value)
      end)

      it("interoperates with C, both ways", function()
        local obj = new()
        local s = assert(shm.sem.create(obj, 0))
        if kind == "sysv" then
          c("sysv-op", obj, 0, 2, 0)
          assert.equal(2, s.value)
          assert.is_true(s:acquire(0, 2))
          local child = H.spawn("io.stdout:setvbuf('no') print('go') print(os.execute(...))",
            { peer .. " sysv-op " .. obj .. " 0 -1 0" })
          assert.equal("go", child:line())
          assert.is_true(H.until_true(function() return s:stat().ncnt == 1 end))
          assert.is_true(s:release(3))
          child:finish()
          assert.equal("2", c("sysv-val", obj, 0))
          assert.is_true(s:setvalue(5))
          assert.equal("5", c("sysv-val", obj, 0))
        else
          c("posix-post", obj)
          c("posix-post", obj)
          assert.equal(2, s.value)
          assert.is_true(s:acquire(0))
          assert.equal("1", c("posix-val", obj))
          c("posix-wait", obj)
          assert.equal(0, s.value)
          assert.is_true(s:release())
          assert.equal("1", c("posix-val", obj))
          -- made by C, opened here
          local other = sname()
          c("posix-make", other, 4)
          local o = assert(shm.sem.open(other))
          assert.equal(4, o.value)
          assert.equal(tonumber("600", 8), o:stat().mode)
          assert.is_true(o:acquire())
          assert.equal("3", c("posix-val", other))
        end
      end)

      it("gives a killed holder's unit back under undo, and loses it without", function()
        local obj = new()
        local s = assert(shm.sem.create(obj, 1))
        local code = PRELUDE .. [[
          local s = assert(shm.sem.open(obj))
          if ... ~= nil and select(2, ...) == "undo" then s.undo = true end
          assert(s:acquire())
          print("held")
          s:acquire() -- (never: it is 0)
        ]]
        local modes = kind == "sysv" and { "undo", "plain" } or { "plain" }
        for _, mode in ipairs(modes) do
          local child = H.spawn(code, { obj, mode })
          assert.equal("held", child:line())
          assert.equal(0, s.value)
          H.kill(child.pid)
          child:finish()
          if mode == "undo" then
            assert.equal(1, s.value) -- the kernel gave it back
          else
            assert.equal(0, s.value) -- gone, as the README says
            assert.is_true(s:release())
          end
        end
        -- and a C holder the same way
        if kind == "sysv" then
          for _, undo in ipairs({ 1, 0 }) do
            local pid, p = c_hold("sysv-hold", obj, undo)
            assert.equal(0, s.value)
            H.kill(pid)
            p:close()
            assert.equal(undo, s.value)
            if undo == 0 then s:release() end
          end
        else
          local pid, p = c_hold("posix-hold", obj)
          H.kill(pid)
          p:close()
          assert.equal(0, s.value)
        end
      end)

      it("puts 50 racing creators on one semaphore, initialised once", function()
        local obj = new()
        local start = assert(shm.create(shm.PRIVATE, 8))
        local gate = H.key()
        local g = assert(shm.create(gate, 8))
        start:remove()
        local children = {}
        for i = 1, 50 do
          children[i] = H.spawn(PRELUDE .. [[
            local g = assert(shm.open(tonumber(select(2, ...))))
            while g:load(0) == 0 do g:wait(0, 0, 1) end
            local s = assert(shm.sem.open(obj, 5))
            io.write(tostring(s:acquire(0)), " ", tostring(s.id or s.name))
          ]], { obj, gate })
        end
        assert.is_true(H.until_true(function()
          for _, ch in ipairs(children) do if H.state(ch.pid) == "R" then return false end end
          return true
        end))
        g:store(0, 1)
        g:notify(0)
        local took, where = 0, {}
        for _, ch in ipairs(children) do
          local out, rc = ch:finish()
          assert.equal(0, rc, out)
          local ok, id = out:match("^(%a+) (%S+)$")
          if ok == "true" then took = took + 1 end
          where[id] = true
        end
        g:remove()
        g:detach()
        assert.equal(5, took) -- set once: a second initialisation would have given more
        local s = assert(shm.sem.open(obj))
        assert.equal(0, s.value)
        local n = 0
        for _ in pairs(where) do n = n + 1 end
        assert.equal(1, n)
      end)

      it("guards a count between two processes, 10^5 acquire/release pairs", function()
        local obj = new()
        local s = assert(shm.sem.create(obj, 1))
        local key = H.key()
        local seg = assert(shm.create(key, 8))
        local code = PRELUDE .. [[
          local seg = assert(shm.open(tonumber(select(2, ...))))
          local s = assert(shm.sem.open(obj))
          if s.kind == "sysv" then s.undo = true end
          for _ = 1, 50000 do
            assert(s:acquire())
            seg:store(0, seg:load(0) + 1) -- not atomic: only the semaphore keeps it exact
            assert(s:release())
          end
          print("done")
        ]]
        local a, b = H.spawn(code, { obj, key }), H.spawn(code, { obj, key })
        assert.equal("done\n", (a:finish()))
        assert.equal("done\n", (b:finish()))
        assert.equal(100000, seg:load(0))
        assert.equal(1, s.value)
        seg:remove()
      end)
    end)
  end

  it("cannot be forged: hidden metatables, every method refuses another self", function()
    local a, b = assert(shm.sem.create(shm.PRIVATE, 1)), assert(shm.sem.create(sname(), 1))
    local seg = assert(shm.create(shm.PRIVATE, 64))
    seg:remove()
    for _, s in ipairs({ a, b }) do
      assert.equal("shm.sem", getmetatable(s))
      assert.has_error(function() setmetatable(s, {}) end)
      local methods = debug.getmetatable(s).__index
      local tried = 0
      for name, f in pairs(methods) do
        if type(f) == "function" then
          for _, other in ipairs({ seg, io.stdout, {}, 1, "x", false }) do
            tried = tried + 1
            local ok, err = pcall(f, other, 0, 1)
            assert.is_false(ok, name)
            assert.matches("shm%.sem expected", err, nil, name)
          end
        end
      end
      assert.equal(9 * 6, tried)
    end
    seg:detach()
    a:remove()
    b:remove()
  end)

  describe("System V sets", function()
    it("opens a member of a set C made, by id and index", function()
      local key = skey()
      local id = tonumber(c("sysv-make", key, 3, 4))
      local m2 = assert(shm.sem.attach(id, 2))
      assert.equal(2, m2.index)
      assert.equal(key, m2.key)
      assert.is_true(m2:acquire(0, 3))
      assert.equal("1", c("sysv-val", key, 2))
      assert.equal("4", c("sysv-val", key, 1))
      local st = m2:stat()
      assert.equal(3, st.nsems)
      assert.equal(1, st.value)
      local m0 = assert(shm.sem.open(key)) -- member 0; an old set without the recipe is not waited for
      assert.equal(0, m0.index)
      assert.equal(4, m0.value)
      local none, msg, en = shm.sem.attach(id, 3)
      assert.is_nil(none)
      assert.equal("shm.sem.attach(id=" .. id .. "): no index 3, the set has 3 semaphores", msg)
      assert.equal(34, en)
      assert.has_error(function() shm.sem.attach(id, -1) end)
      assert.has_error(function() shm.sem.attach(-1) end)
    end)

    it("waits for zero, and makes private sets", function()
      local s = assert(shm.sem.create(shm.PRIVATE, 1))
      assert.equal(0, s.key)
      assert.matches("key=PRIVATE", tostring(s))
      local ok, why = s:wait_zero(0)
      assert.is_false(ok)
      assert.equal("timeout", why)
      ok, why = s:wait_zero(0.01)
      assert.is_false(ok)
      assert.equal("timeout", why)
      assert.is_true(s:acquire())
      assert.is_true(s:wait_zero())
      assert.has_error(function() shm.sem.open(shm.PRIVATE) end)
      assert.has_error(function() shm.sem.unlink(shm.PRIVATE) end)
      s.undo = true
      assert.is_true(s.undo)
      assert.matches(" undo%)$", tostring(s))
      assert.is_true(s:remove())
    end)

    local has_python = H.exec("/usr/bin/python3 -c 'import sysv_ipc' 2>/dev/null")
    local pyit = has_python and it or pending
    if not has_python then print("\n    (no sysv_ipc for /usr/bin/python3: the Python interop is pending)") end
    pyit("interoperates with Python's sysv_ipc.Semaphore, both ways", function()
      local key = skey()
      local function py(code)
        local out, rc = H.sh("/usr/bin/python3 -c " .. H.shellquote("import sysv_ipc\n" .. code))
        assert.equal(0, rc, out)
        return (out:gsub("\n$", ""))
      end
      -- Python makes it (IPC_CREX with an initial value), Lua opens it
      py(string.format("s = sysv_ipc.Semaphore(%d, sysv_ipc.IPC_CREX, 0o600, 3)\ns.release()", key))
      local s = assert(shm.sem.open(key))
      assert.equal(4, s.value)
      assert.is_true(s:acquire(0, 4))
      assert.equal("0", py(string.format("print(sysv_ipc.Semaphore(%d).value)", key)))
      -- a Python waiter woken by Lua, with undo
      local child = H.spawn("io.stdout:setvbuf('no') print('go') print(os.execute(...))",
        { "/usr/bin/python3 -c " .. H.shellquote(string.format(
          "import sysv_ipc\ns = sysv_ipc.Semaphore(%d)\ns.undo = True\ns.acquire(30)\nprint('py', s.value)", key)) })
      assert.equal("go", child:line())
      assert.is_true(H.until_true(function() return s:stat().ncnt == 1 end))
      assert.is_true(s:release(2))
      assert.matches("py 1", (child:finish()))
      assert.equal(2, s.value) -- its undo gave the unit back when it exited
      assert.is_true(s:remove())
      -- Lua makes it, Python opens it
      local key2 = skey()
      local l = assert(shm.sem.create(key2, 2))
      assert.equal("2 1", py(string.format(
        "s = sysv_ipc.Semaphore(%d)\nv = s.value\ns.acquire(0)\nprint(v, s.value)", key2)))
      assert.equal(1, l.value)
    end)
  end)

  describe("permissions as nobody", function()
    local can_switch = H.exec("[ \"$(id -u)\" = 0 ] && command -v setpriv >/dev/null")
    local nit = can_switch and it or pending
    for kind, new in pairs(KINDS) do
      nit(kind .. ": refused with the call and the object named, allowed when the mode says so", function()
        local obj = new()
        local s = assert(shm.sem.create(obj, 1))
        local code = PRELUDE .. [[
          local s, msg, en = shm.sem.open(obj)
          if not s then io.write("nil|", msg, "|", en) return end
          io.write("ok|", tostring(s:acquire(0)), "|", tostring(s:release()))
        ]]
        local out = H.run(code, { obj }, { user = "nobody", group = "nogroup" })
        assert.matches("^nil|shm%.sem%.open%(.*%): Permission denied|13$", out)
        assert.is_true(s:chmod("0666"))
        out = H.run(code, { obj }, { user = "nobody", group = "nogroup" })
        assert.equal("ok|true|true", out)
        assert.equal(1, s.value)
      end)
    end
  end)

  -- LuaJIT's FFI paths (lua/shm/ffi.lua, its sem block): acquire and release
  -- without the C API, the same results and errors (with SHM_NO_FFI=1 the
  -- suite above runs on the C API methods, without it on these)
  describe("under LuaJIT's FFI #luajit", function()
    if not rawget(_G, "jit") then return end
    local noffi = os.getenv("SHM_NO_FFI") == "1"
    local function method(s, m) return debug.getmetatable(s).__index[m] end

    it("replace acquire and release (not with SHM_NO_FFI=1), the others stay the C API's", function()
      local s = assert(shm.sem.create(shm.PRIVATE, 1))
      for _, m in ipairs({ "acquire", "release" }) do
        local info = debug.getinfo(method(s, m), "S")
        if noffi then
          assert.equal("C", info.what, m)
        else
          assert.equal("Lua", info.what, m)
          assert.truthy(info.source:find("shm/ffi.lua", 1, true), info.source)
        end
      end
      assert.equal("C", debug.getinfo(method(s, "stat"), "S").what)
      if noffi then assert.is_nil(package.loaded["shm.ffi"]) else assert.is_true(require("shm.ffi").active) end
      s:remove()
    end)

    it("handle ordinary calls, waits included, without the C API", function()
      if noffi then return end
      local fb = require("shm.ffi").fallbacks
      for kind, new in pairs(KINDS) do
        local s = assert(shm.sem.create(new(), 1))
        if kind == "sysv" then s.undo = true end
        local a, r = fb["sem:acquire"], fb["sem:release"]
        for i = 1, 1000 do
          assert.is_true(s:acquire())
          assert.same({ false, "timeout" }, { s:acquire(0) })
          assert.is_true(s:release(1))
          assert.is_true(s:acquire(i % 2 == 0 and 5 or nil, 1))
          assert.is_true(s:release())
        end
        assert.same({ false, "timeout" }, { assert(shm.sem.create(new(), 0)):acquire(0.001) })
        assert.equal(a, fb["sem:acquire"], kind)
        assert.equal(r, fb["sem:release"], kind)
        -- several POSIX units, a numeric string: the C API's
        if kind == "posix" then
          assert.is_true(s:release(2))
          assert.equal(r + 1, fb["sem:release"])
        end
        assert.is_true(s:acquire(nil, "1"))
        assert.equal(a + 1, fb["sem:acquire"])
        s:remove()
      end
    end)

    -- one line per call: what it returned or raised; the same script runs
    -- with and without SHM_NO_FFI and must print the same lines
    local BATTERY = [==[
local shm = require "shm"
local key, name = tonumber((...)), select(2, ...)
local N = 0
local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "number" then return string.format("%.17g", v) end
  return tostring(v)
end
local function pack(...) return { n = select("#", ...), ... } end
local function id(...) return ... end -- (no tail calls: errors name the methods)
local function try(what, f, ...)
  N = N + 1
  local r = pack(pcall(f, ...))
  local out = {}
  for i = 1, r.n do out[i] = show(r[i]) end
  print(N .. " " .. what .. ": " .. (table.concat(out, ", "):gsub("id=%d+", "id=ID")))
end
local proxy = newproxy(true)
getmetatable(proxy).__metatable = "shm.sem"
-- (no call here ever waits for long: every blocking acquire finds a unit)
local function set(x, v)
  if x.kind == "sysv" then return x:setvalue(v) end
  while x:acquire(0) do end
  for _ = 1, v do x:release() end
end
for _, obj in ipairs({ key, name }) do
  local s = assert(shm.sem.create(obj, 2))
  local t = assert(shm.sem.open(obj))
  if s.kind == "sysv" then t.undo = true end
  for _, x in ipairs({ s, t }) do
    set(x, 2)
    try("acquire", function() return id(x:acquire()) end)
    try("acquire 0", function() return id(x:acquire(0)) end)
    try("acquire 0 again", function() return id(x:acquire(0)) end)
    try("acquire 0.001", function() return id(x:acquire(0.001)) end)
    try("release", function() return id(x:release()) end)
    try("release 1", function() return id(x:release(1)) end)
    try("release 2", function() return id(x:release(2)) end)
    try("acquire nil 2", function() return id(x:acquire(nil, 2)) end)
    try("acquire 1e-12", function() return id(x:acquire(1e-12)) end)
    try("acquire huge", function() return id(x:acquire(math.huge)) end)
    try("value", function() return x.value end)
  end
  set(s, 20)
  for _, a in ipairs({ { -1 }, { 0 / 0 }, { "0" }, { "x" }, { {} }, { true }, { nil, 0 }, { nil, -1 },
                       { nil, 1.5 }, { nil, 32768 }, { nil, "1" }, { nil, 0 / 0 }, { 0, 2 ^ 31 },
                       { nil, 1e300 }, { -0.0 }, { 0, 3 }, { 0, 3.0 } }) do
    try("acquire args", function() return id(s:acquire(a[1], a[2])) end)
    try("value", function() return s.value end)
  end
  for _, a in ipairs({ 0, -1, 1.5, "1", "2", "x", {}, true, 0 / 0, 32767, 32768, 2147483647, 2147483648, 2 ^ 53,
                       1e300, -0.0, 3 }) do
    try("release " .. (type(a) == "table" and "{}" or tostring(a)), function() return id(s:release(a)) end)
    try("value", function() return s.value end)
  end
  for _, other in ipairs({ proxy, io.stdout, {}, 1, "x", false }) do
    try("acquire other", function() return id(s.acquire(other)) end)
    try("release other", function() return id(s.release(other)) end)
  end
  -- a removed semaphore, a closed handle, past the largest value
  s:remove()
  if s.kind == "sysv" then
    try("removed acquire", function() return id(s:acquire()) end)
    try("removed acquire 0", function() return id(s:acquire(0)) end)
    try("removed release", function() return id(t:release()) end)
  end
  t:close()
  try("closed acquire", function() return id(t:acquire()) end)
  try("closed acquire 0", function() return id(t:acquire(0)) end)
  try("closed release", function() return id(t:release()) end)
  s:close()
  local max = type(obj) == "number" and 32767 or 2147483647
  local m = assert(shm.sem.create(obj, max))
  try("release past the largest", function() return id(m:release()) end)
  try("acquire", function() return id(m:acquire()) end)
  try("release 2 past the largest", function() return id(m:release(2)) end)
  try("value", function() return m.value end)
  m:remove()
  m:close()
end
local ffi = package.loaded["shm.ffi"]
print("fallbacks: " .. (ffi and ffi.fallbacks["sem:acquire"] .. " " .. ffi.fallbacks["sem:release"] or "-"))
]==]

    it("give the C API's results and errors, call by call", function()
      if noffi then return end
      local key, name = skey(), sname()
      local with, rc1 = H.run(BATTERY, { key, name })
      local env = { SHM_NO_FFI = "1" }
      for k, v in pairs(H.env) do env[k] = v end
      local without, rc2 = H.run(BATTERY, { key, name }, { env = env })
      assert.equal(0, rc1, with)
      assert.equal(0, rc2, without)
      local a, b = {}, {}
      -- (each run has its own script file: positions are compared by line)
      for l in with:gmatch("[^\n]+") do a[#a + 1] = l:gsub("\"/[^\"]-:(%d+):", "\"script:%1:") end
      for l in without:gmatch("[^\n]+") do b[#b + 1] = l:gsub("\"/[^\"]-:(%d+):", "\"script:%1:") end
      assert.is_true(#a > 150, #a .. " lines")
      assert.equal("fallbacks: -", table.remove(b))
      assert.matches("^fallbacks: %d+ %d+$", table.remove(a))
      assert.same(b, a)
      -- every kind of result is in there, in the C API's words
      for _, m in ipairs({ "1 acquire: true, true", "\"timeout\"", "Numerical result out of range",
                           "Value too large for defined data type", "Invalid argument (removed)",
                           "attempt to use a closed semaphore", "shm.sem expected",
                           "a POSIX semaphore takes 1 unit at a time", "timeout must be a non-negative",
                           "n 32768 out of range" }) do
        assert.truthy(with:find(m, 1, true), m)
      end
    end)

    it("compile an acquire/release loop into one trace (no C API call in it)", function()
      if noffi then return end
      local jutil = require "jit.util"
      for _, new in pairs(KINDS) do
        local s = assert(shm.sem.create(new(), 1))
        local ok = false
        for _ = 1, 3 do -- (the JIT's heuristics may abort a trace now and then)
          local stitched, loops = 0, 0
          jit.flush()
          local function record(what, tr)
            if what == "stop" then
              local link = jutil.traceinfo(tr).linktype
              if link == "loop" then loops = loops + 1 end
              if link == "stitch" then stitched = stitched + 1 end
            end
          end
          jit.attach(record, "trace")
          for _ = 1, 2000 do
            s:acquire()
            s:release()
          end
          jit.attach(record)
          assert.equal(0, stitched)
          if loops >= 1 then ok = true break end
        end
        assert.is_true(ok)
        s:remove()
      end
    end)
  end)

  it("leaves nothing behind", function()
    cleanup()
    local ipcs = H.sh("ipcs -s")
    assert.is_nil(ipcs:find(H.keyprefix(), 1, true), ipcs)
    local shmdir = H.sh("ls /dev/shm")
    assert.is_nil(shmdir:find("sem.lshm-spec-" .. H.pid .. "-", 1, true), shmdir)
  end)
end)

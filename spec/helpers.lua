-- Helpers shared by the specs: unique keys and names, child processes,
-- cleanup of every kernel object a spec creates.
local shm = require "shm"

local H = {}

H.lua = os.getenv("LUA") or "lua5.4"

-- the repository root, so that children find the module wherever busted runs
H.root = debug.getinfo(1, "S").source:match("^@(.*)/spec/helpers%.lua$") or "."
if H.root:sub(1, 1) ~= "/" then H.root = os.getenv("PWD") .. "/" .. H.root end
-- children load the module from the same build as this process (SHM_CPATH:
-- make check-asan's sanitizer build), else from the checkout's build/
H.env = {
  LUA_PATH = H.root .. "/lua/?.lua;;",
  LUA_CPATH = (os.getenv("SHM_CPATH") or (H.root .. "/build/?.so")) .. ";;",
}

local function readpid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end
H.pid = readpid()

local counter = 0
local created = {}

--- A System V key no segment uses, remembered for cleanup.
function H.key()
  while true do
    counter = counter + 1
    local k = 0x4c000000 | ((H.pid & 0xfff) << 12) | (counter & 0xfff)
    local s = shm.open(k)
    if s then s:detach() else
      created[#created + 1] = k
      return k
    end
  end
end

--- A POSIX name no object uses, remembered for cleanup.
function H.name()
  counter = counter + 1
  local n = string.format("/lshm-spec-%d-%d", H.pid, counter)
  created[#created + 1] = n
  return n
end

--- A scratch file path, remembered for cleanup.
function H.tmpfile()
  local p = os.tmpname()
  os.remove(p)
  created[#created + 1] = { path = p }
  return p
end

--- Remove whatever the keys, names and paths handed out refer to.
function H.cleanup()
  for i = #created, 1, -1 do
    local c = created[i]
    if type(c) == "table" then os.remove(c.path) else shm.unlink(c) end
    created[i] = nil
  end
  collectgarbage()
  collectgarbage()
end

local function shellquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.shellquote = shellquote

--- Write `code` to a world-readable script file and return its path.
function H.script(code)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(code)
  f:close()
  os.execute("chmod 0644 " .. shellquote(p))
  return p
end

local function command(code, args, opts)
  opts = opts or {}
  local script = H.script(code)
  local parts = { "env" }
  for k, v in pairs(opts.env or H.env) do
    parts[#parts + 1] = k .. "=" .. shellquote(v)
    parts[#parts + 1] = k .. "_5_4=" .. shellquote(v)
  end
  if opts.user then
    parts[#parts + 1] = "setpriv --reuid=" .. opts.user .. " --regid=" .. (opts.group or "nogroup")
      .. " --clear-groups"
  end
  parts[#parts + 1] = opts.interpreter or H.lua
  parts[#parts + 1] = shellquote(script)
  for _, a in ipairs(args or {}) do parts[#parts + 1] = shellquote(a) end
  local cmd = table.concat(parts, " ")
  if not opts.stderr then cmd = cmd .. " 2>&1" end
  return cmd, script
end

--- Run Lua `code` in a child interpreter with `args` (its `...`).
-- Returns its output (stdout and stderr) and its exit code.
function H.run(code, args, opts)
  local cmd, script = command(code, args, opts)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local _, _, rc = p:close()
  os.remove(script)
  return out, rc
end

--- Start a child without waiting: returns a handle with :line() to read one
-- line of its output and :finish() returning the rest and the exit code.
function H.spawn(code, args, opts)
  local cmd, script = command(code, args, opts)
  local p = assert(io.popen(cmd, "r"))
  local h = {}
  function h:line() return p:read("l") end
  function h:finish()
    local out = p:read("a")
    local _, _, rc = p:close()
    os.remove(script)
    return out, rc
  end
  return h
end

--- A FIFO to release a waiting child: child blocks in io.open(path):read().
function H.fifo()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkfifo -m 0666 " .. shellquote(p)))
  created[#created + 1] = { path = p }
  return p
end

--- Write a line into a FIFO (blocks until the child opens it for reading).
function H.release(fifo, msg)
  local f = assert(io.open(fifo, "w"))
  f:write((msg or "go") .. "\n")
  f:close()
end

--- Shell command output.
function H.sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local _, _, rc = p:close()
  return out, rc
end

--- Does a System V segment with this key exist (per ipcs)?
function H.ipcs_has(key)
  local out = H.sh("ipcs -m")
  return out:find(string.format("0x%08x", key), 1, true) ~= nil
end

--- Monotonic seconds (lua-system comes with busted).
function H.now()
  return require("system").monotime()
end

-- The fields of /proc/PID/stat after the command name (field 3 first).
local function procstat(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  local fields = {}
  for w in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  return fields
end

--- CPU time (user + system, in clock ticks) a process has used so far.
function H.cputicks(pid)
  local f = procstat(pid)
  return f and tonumber(f[12]) + tonumber(f[13]) -- utime, stime
end

--- Process state letter (R running, S sleeping, T stopped, ...).
function H.state(pid)
  local f = procstat(pid)
  return f and f[1]
end

--- Wait (on a real wait: a futex with a timeout, nothing to notify it)
-- until pred() is true; gives up after `limit` seconds.
function H.until_true(pred, limit)
  local seg = shm.create(shm.PRIVATE, 8)
  local deadline = H.now() + (limit or 10)
  local ok = pred()
  while not ok and H.now() < deadline do
    seg:wait(0, 0, 0.002)
    ok = pred()
  end
  seg:remove()
  seg:detach()
  return ok
end

function H.kill(pid, sig)
  return os.execute("kill -" .. (sig or "KILL") .. " " .. pid .. " 2>/dev/null")
end

return H

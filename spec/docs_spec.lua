-- make docs documents every public function, with its parameters and returns,
-- rendered from Markdown, quietly.
local shm = require "shm"
local H = require "helpers"

local has_ldoc = H.exec("command -v ldoc >/dev/null 2>&1")
local docit = has_ldoc and it or pending

describe("the API reference #slow", function()
  local dir, html, out, rc
  setup(function()
    if not has_ldoc then return end
    dir = os.tmpname()
    os.remove(dir)
    out, rc = H.sh(H.make .. " -C " .. H.shellquote(H.root) .. " docs DOCS_DIR=" .. H.shellquote(dir))
    local f = io.open(dir .. "/index.html")
    html = f and f:read("*a") or ""
    if f then f:close() end
  end)
  teardown(function()
    if dir then H.exec("rm -rf " .. H.shellquote(dir)) end
  end)

  docit("is made by make docs, which says only where it is", function()
    assert.equal(0, rc, out)
    assert.equal(dir .. "/index.html\n", out)
  end)

  docit("renders the Markdown of the doc comments", function()
    -- (ldoc's "text" fallback leaves the backticks and swallows <close> as a tag)
    local body = html:match("<body>(.*)</body>")
    assert.is_nil(body:find("`", 1, true), "raw backticks in the HTML")
    assert.truthy(html:find("<code>IPC_RMID</code>", 1, true))
    assert.truthy(html:find("<code>&lt;close&gt;</code>", 1, true), "<close> is not visible")
    -- `unlink` in segment:remove is the system call, not shm.unlink
    local remove = html:match('<a name = "segment:remove"></a>(.-)</dd>')
    assert.truthy(remove:find('<a href="https://man7.org/linux/man-pages/man2/unlink.2.html">unlink</a>', 1, true))
    assert.is_nil(remove:find('href="#unlink"', 1, true))
  end)

  docit("links a field's name to no other class's method, and gives this release's version", function()
    -- (LDoc links a bare `word` to any method of that name)
    for _, name in ipairs({ "queue:stat", "queue.open", "queue.layout" }) do
      local entry = html:match('<a name = "' .. name .. '"></a>(.-)</dd>')
      assert.is_string(entry, name)
      assert.is_nil(entry:find('href="[^"]*#dict:'), name .. " links to a dict method")
      assert.is_nil(entry:find('href="[^"]*#mutex:'), name .. " links to a mutex method")
    end
    assert.truthy(html:find(shm._VERSION, 1, true), shm._VERSION)
  end)

  docit("lists each class once in the contents", function()
    local contents = html:match("<h2>Contents</h2>(.-)</ul>")
    local seen = {}
    for name in contents:gmatch('<a href="#[^"]*">([^<]*)</a>') do
      local class = name:gsub("^Class ", ""):gsub("%s+$", "")
      assert.is_nil(seen[class], "twice in the contents: " .. class)
      seen[class] = true
    end
    assert.truthy(seen.segment and seen.queue and seen.mutex and seen.dict and seen.events and seen.subscriber)
  end)

  docit("covers every function of the module and of every class (events and semaphores too)", function()
    local documented = {}
    for name in html:gmatch('<a name = "([^"]+)"></a>') do documented[name] = true end
    local functions = 0
    local function check(prefix, t)
      for k, v in pairs(t) do
        if type(v) == "function" and not k:match("^_") then
          functions = functions + 1
          assert.is_true(documented[prefix .. k] or false, prefix .. k .. " is not documented")
        end
      end
    end
    check("", shm)
    check("queue.", shm.queue)
    check("dict.", shm.dict)
    check("events.", shm.events)
    local seg = assert(shm.create(shm.PRIVATE, 4096))
    local _ = seg.size -- (an attached segment's metatable is its own after the first index)
    check("segment:", debug.getmetatable(seg).__index) -- (getmetatable: the class name only)
    check("mutex:", debug.getmetatable(seg:mutex(0)).__index)
    local q = assert(shm.queue.create(H.key(), 64))
    check("queue:", debug.getmetatable(q).__index)
    q:remove() q:detach()
    local d = assert(shm.dict.create(shm.PRIVATE, 64 * 1024))
    check("dict:", debug.getmetatable(d).__index)
    check("lock.", shm.lock)
    check("lock:", debug.getmetatable(shm.lock.new(d)).__index)
    d:remove() d:detach()
    local ev = assert(shm.events.create(shm.PRIVATE, 64))
    check("events:", debug.getmetatable(ev).__index)
    check("subscriber:", debug.getmetatable(ev:subscribe()).__index)
    ev:remove() ev:detach()
    seg:remove() seg:detach()
    check("sem.", shm.sem)
    local sem = assert(shm.sem.create(shm.PRIVATE, 1))
    check("sem:", debug.getmetatable(sem).__index)
    sem:remove()
    -- and each says what it takes and gives, with an example
    local _, params = html:gsub("<h3>Parameters:</h3>", "")
    local _, usages = html:gsub("<h3>Usage:</h3>", "")
    assert.is_true(params >= 25, "parameters documented: " .. params)
    assert.equal(functions, usages, "every function has an example")
    H.cleanup()
  end)
end)

-- Segments are ordinary kernel objects: ipcs, plain C and Python see them.
local shm = require "shm"
local H = require "helpers"

local C_PROGRAM = [[
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>
/* usage: interop sysv KEY | interop posix NAME
   prints the first 16 bytes and the size, then writes "from C" at offset 16 */
int main(int argc, char **argv) {
  char *p; size_t size;
  if (argc != 3) return 2;
  if (strcmp(argv[1], "sysv") == 0) {
    struct shmid_ds ds;
    int id = shmget((key_t)strtoul(argv[2], NULL, 0), 0, 0);
    if (id < 0 || shmctl(id, IPC_STAT, &ds) != 0) { perror("shmget"); return 1; }
    p = shmat(id, NULL, 0);
    if (p == (void *)-1) { perror("shmat"); return 1; }
    size = ds.shm_segsz;
  } else {
    struct stat st;
    int fd = shm_open(argv[2], O_RDWR, 0);
    if (fd < 0 || fstat(fd, &st) != 0) { perror("shm_open"); return 1; }
    size = (size_t)st.st_size;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
  }
  printf("%.16s %zu\n", p, size);
  memcpy(p + 16, "from C", 6);
  return 0;
}
]]

describe("interoperability", function()
  local bin
  setup(function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(H.exec("mkdir -p " .. dir))
    local src = dir .. "/interop.c"
    local f = assert(io.open(src, "w"))
    f:write(C_PROGRAM)
    f:close()
    bin = dir .. "/interop"
    local out, rc = H.sh("cc -std=c11 -D_GNU_SOURCE -o " .. bin .. " " .. src)
    assert.equal(0, rc, out)
  end)
  teardown(function()
    if bin then H.exec("rm -rf " .. H.shellquote(bin:match("^(.*)/"))) end
  end)
  after_each(H.cleanup)

  it("shows System V segments to ipcs with their size, mode and nattch", function()
    local key = H.key()
    local seg = assert(shm.create(key, 12345, "0640"))
    local line = H.sh("ipcs -m"):match(string.format("0x%08x[^\n]*", key))
    assert.is_string(line)
    local id, owner, perms, bytes, nattch = line:match("^0x%x+%s+(%d+)%s+(%S+)%s+(%d+)%s+(%d+)%s+(%d+)")
    assert.equal(seg.id, tonumber(id))
    assert.equal("root", owner)
    assert.equal("640", perms)
    assert.equal("12345", bytes)
    assert.equal("1", nattch)
    seg:remove()
    -- marked for destruction: ipcs shows it under key 0 with status "dest"
    local dest = H.sh("ipcs -m"):match("\n(0x%x+%s+" .. seg.id .. "%s[^\n]*)")
    assert.matches("^0x00000000 .*dest", dest)
  end)

  it("is removed by ipcrm like any segment", function()
    local key = H.key()
    local seg = assert(shm.create(key, 64))
    local _, rc = H.sh(string.format("ipcrm -M 0x%x", key))
    assert.equal(0, rc)
    assert.is_true(seg:stat().removed)
    seg:detach()
  end)

  it("shares the same bytes with a plain C program (System V)", function()
    local key = H.key()
    local seg = assert(shm.create(key, 100))
    seg:write("0123456789abcdef")
    local out, rc = H.sh(bin .. " sysv " .. key)
    assert.equal(0, rc, out)
    assert.equal("0123456789abcdef 100\n", out)
    assert.equal("from C", seg:read(16, 6))
    seg:remove()
  end)

  it("shares the same bytes with a plain C program (POSIX)", function()
    local name = H.name()
    local seg = assert(shm.create(name, 5000))
    seg:write("fedcba9876543210")
    local out, rc = H.sh(bin .. " posix " .. name)
    assert.equal(0, rc, out)
    assert.equal("fedcba9876543210 5000\n", out)
    assert.equal("from C", seg:read(16, 6))
    seg:remove()
  end)

  local has_python = H.exec("/usr/bin/python3 -c 'import sysv_ipc' 2>/dev/null")
  local pyit = has_python and it or pending

  pyit("runs README's examples of sharing with Python, which print what they say", function()
    local blocks = H.readme_blocks("Sharing with C and Python")
    assert.is_true(#blocks >= 2)
    for _, code in ipairs(blocks) do
      local out, rc = H.run(code, nil, { stderr = true })
      assert.equal(0, rc, code .. "\n" .. out)
      assert.equal(H.says(code), H.blanks(out), code)
    end
    -- and left nothing behind (Python's resource tracker unlinks what it is not told to keep)
    assert.is_nil(H.sh("ls /dev/shm"):find("lua-shm-from-python", 1, true))
  end)

  pyit("computes the keys sysv_ipc.ftok computes, for the same path and id", function()
    local paths = { "/etc/hostname", H.root .. "/README.md", "/tmp" }
    local ids = { 1, 7, 76, 255 }
    local py = { "import sysv_ipc" }
    local want = {}
    for _, p in ipairs(paths) do
      for _, id in ipairs(ids) do
        py[#py + 1] = string.format("print(sysv_ipc.ftok(%q, %d, silence_warning=True))", p, id)
        want[#want + 1] = tostring(assert(shm.ftok(p, id)))
      end
    end
    assert.equal(shm.ftok("/etc/hostname", "L"), shm.ftok("/etc/hostname", 76))
    local out, rc = H.sh("/usr/bin/python3 -c " .. H.shellquote(table.concat(py, "\n")))
    assert.equal(0, rc, out)
    -- sysv_ipc gives the key_t as a signed C int: compare the 32 bits
    local got = {}
    for n in out:gmatch("%-?%d+") do got[#got + 1] = string.format("%d", tonumber(n) % 2 ^ 32) end
    for i, k in ipairs(want) do want[i] = string.format("%d", tonumber(k) % 2 ^ 32) end
    assert.same(want, got)
  end)

  pyit("packs what Python's struct packs, byte for byte, with an explicit byte order", function()
    local seg = assert(shm.create(shm.PRIVATE, 256))
    seg:remove()
    finally(function() seg:detach() end)
    local cases = {
      { "<i4 d I2", "<idH", { 42, 2.5, 7 }, "42, 2.5, 7" },
      { "<j", "<q", { -5 }, "-5" },
      { ">i8", ">q", { 123456789 }, "123456789" },
      { "<I1 I1", "BB", { 1, 255 }, "1, 255" },
      { "<f", "<f", { 0.5 }, "0.5" },
      { "<c7", "7s", { "from py" }, "b'from py'" },
      { "<h H i I", "<hHiI", { -2, 65535, -3, 4000000000 }, "-2, 65535, -3, 4000000000" },
    }
    local py = { "import struct, binascii" }
    local want = {}
    for _, c in ipairs(cases) do
      local n = seg:pack(0, c[1], H.unpack(c[3]))
      want[#want + 1] = (seg:read(0, n):gsub(".", function(b) return string.format("%02x", b:byte()) end))
      py[#py + 1] = string.format("print(binascii.hexlify(struct.pack(%q, %s)).decode())", c[2], c[4])
    end
    local out, rc = H.sh("/usr/bin/python3 -c " .. H.shellquote(table.concat(py, "\n")))
    assert.equal(0, rc, out)
    assert.equal(table.concat(want, "\n") .. "\n", out)
  end)
  pyit("shares the same bytes with Python's sysv_ipc", function()
    local key = H.key()
    local seg = assert(shm.create(key, 64, "0640"))
    seg:write("lua wrote this")
    local out, rc = H.sh("/usr/bin/python3 -c " .. H.shellquote(string.format([[
import sysv_ipc
m = sysv_ipc.SharedMemory(%d)
print(m.read(14).decode(), m.size, oct(m.mode))
m.write(b"python", 20)
m.detach()
]], key)))
    assert.equal(0, rc, out)
    assert.equal("lua wrote this 64 0o640\n", out)
    assert.equal("python", seg:read(20, 6))
    seg:remove()
  end)
end)

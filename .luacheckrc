-- lua/, bin/, examples/ and spec/ run on Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT: only what all of
-- them have ("min"), plus the names used behind a fallback
-- (`math.tointeger or ...`, `table.unpack or unpack`, `if jit ...`).
std = "min"
read_globals = {
  "jit", "unpack", "loadstring",
  math = { fields = { "tointeger", "type", "maxinteger", "mininteger" } },
  table = { fields = { "unpack" } },
  string = { fields = { "pack" } },
  package = { fields = { "searchpath" } },
}
max_line_length = 120
files["spec/"] = { std = "min+busted" }
files["bin/lshm"] = { globals = {} }
-- the benchmarks run on lua5.4 (make bench)
files["bench/"] = { std = "lua54" }
exclude_files = { "build/" }
self = false

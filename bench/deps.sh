#!/bin/sh
# make bench-deps: the baselines of section 4 (ngx.shared.DICT inside nginx,
# redis-server).  Never fails and never removes a package: what cannot be had
# is reported, and make bench skips those rows.
#  - missing packages are installed when root, with apt-get --no-remove;
#  - lua-resty-core and the lua module depend on OpenResty's LuaJIT (luajit2),
#    which conflicts with Debian's luajit: when that is installed instead, the
#    Debian packages are unpacked (dpkg-deb -x, not installed) under
#    build/bench/openresty/root, and the bench runs nginx with them from there.
cd "$(dirname "$0")/.." || exit 0
PKGS="nginx libnginx-mod-http-lua lua-resty-core redis-server redis-tools curl"
PRIVATE="libnginx-mod-http-lua libnginx-mod-http-ndk libluajit2-5.1-2 lua-resty-core lua-resty-lrucache"
ROOT=build/bench/openresty

missing=""
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
for p in $PKGS; do installed "$p" || missing="$missing $p"; done
[ -z "$missing" ] && { echo "bench-deps: all there"; exit 0; }

if [ "$(id -u)" = 0 ]; then
  for p in $missing; do
    # one at a time: a package that needs a removal must not hold the others back
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-remove "$p" >/dev/null 2>&1; then
      echo "bench-deps: installed $p"
    else
      echo "bench-deps: cannot install $p (apt-get install --no-remove failed: it would remove a package, or apt is busy)"
    fi
  done
else
  echo "bench-deps: not root, not installing:$missing (sudo apt-get install -y --no-remove$missing)"
fi

if [ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] && [ -e /usr/share/lua/5.1/resty/core.lua ]; then
  exit 0
fi
if [ -e "$ROOT/root/usr/lib/nginx/modules/ngx_http_lua_module.so" ]; then
  echo "bench-deps: using the private copy in $ROOT"
  exit 0
fi
echo "bench-deps: unpacking $PRIVATE into $ROOT (not installed; nothing on the system changes)"
mkdir -p "$ROOT/debs" || exit 0
for p in $PRIVATE; do
  deb=""
  for f in /var/cache/apt/archives/"${p}"_*.deb; do [ -e "$f" ] && deb=$f; done
  if [ -z "$deb" ]; then
    (cd "$ROOT/debs" && apt-get download -qq "$p" >/dev/null 2>&1)
    for f in "$ROOT/debs/${p}"_*.deb; do [ -e "$f" ] && deb=$f; done
  fi
  if [ -z "$deb" ] || ! dpkg-deb -x "$deb" "$ROOT/root"; then
    echo "bench-deps: could not get $p; the ngx.shared.DICT rows will be skipped"
    rm -rf "$ROOT"
    exit 0
  fi
done
exit 0

/*
 * shm.dict's values between Lua and bytes: numbers (integers where they are
 * whole), strings, booleans and plain tables, encoded outside the lock.
 */
#include "dict.h"

/* ---- values: Lua <-> bytes ---- */

/* The encoding buffer: a userdata in a fixed stack slot, replaced by a
 * larger one as it grows (so the stack above it is free for lua_next, and an
 * error leaves nothing to free). */
typedef struct ebuf {
  lua_State *L;
  int slot;
  char *p;
  size_t n, cap;
} ebuf;

static void eb_add(ebuf *b, const void *s, size_t n) {
  if (b->cap - b->n < n) {
    size_t want = b->cap;
    char *np;
    while (want - b->n < n) {
      if (want > SIZE_MAX / 2) luaL_error(b->L, "not enough memory");
      want *= 2;
    }
    np = (char *)lua_newuserdatauv(b->L, want, 0);
    memcpy(np, b->p, b->n);
    lua_replace(b->L, b->slot);
    b->p = np;
    b->cap = want;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void eb_byte(ebuf *b, int c) {
  char ch = (char)c;
  eb_add(b, &ch, 1);
}

static void eb_u32(ebuf *b, uint32_t v) { eb_add(b, &v, 4); }

/* Is the number at idx stored as an integer?  On Lua 5.3+ when it is one;
 * where numbers are doubles (5.1, 5.2, LuaJIT) when it is whole and below
 * 2^53 (exact), so that 5.3+ reads back an integer: 3 written by LuaJIT is 3
 * in 5.4, not 3.0.  A float written by 5.3+ stays a float. */
static int wholenumber(lua_State *L, int idx, int64_t *i) {
#if LUA_VERSION_NUM >= 503
  if (!lua_isinteger(L, idx)) return 0;
  *i = (int64_t)lua_tointeger(L, idx);
  return 1;
#else
  double n = (double)lua_tonumber(L, idx);
  if (!(n == floor(n) && fabs(n) < 9007199254740992.0) || (n == 0 && signbit(n)))
    return 0; /* (-0.0 keeps its sign: a float) */
  *i = (int64_t)n;
  return 1;
#endif
}

/* Encode the table at idx (visited: a table of the tables being encoded);
 * 0 if it holds what a dict cannot store. */
static int encode(lua_State *L, ebuf *b, int idx, int visited, int depth);

static int encode_item(lua_State *L, ebuf *b, int idx, int visited, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN:
    eb_byte(b, lua_toboolean(L, idx) ? 't' : 'f');
    return 1;
  case LUA_TNUMBER: {
    int64_t i;
    if (wholenumber(L, idx, &i)) {
      eb_byte(b, 'i');
      eb_add(b, &i, 8);
    } else {
      double n = (double)lua_tonumber(L, idx);
      eb_byte(b, 'd');
      eb_add(b, &n, 8);
    }
    return 1;
  }
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (n > UINT32_MAX) return 0;
    eb_byte(b, 's');
    eb_u32(b, (uint32_t)n);
    eb_add(b, s, n);
    return 1;
  }
  case LUA_TTABLE:
    return encode(L, b, idx, visited, depth + 1);
  default:
    return 0;
  }
}

static int encode(lua_State *L, ebuf *b, int idx, int visited, int depth) {
  uint32_t n = 0;
  if (depth > MAXDEPTH) return 0;
  luaL_checkstack(L, 6, "table value too deep");
  if (lua_getmetatable(L, idx)) return 0; /* plain tables only */
  lua_pushvalue(L, idx);
  if (lua_rawget(L, visited) != LUA_TNIL) return 0; /* a cycle */
  lua_pop(L, 1);
  for (lua_pushnil(L); lua_next(L, idx);) {
    lua_pop(L, 1);
    n++;
  }
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, visited);
  eb_byte(b, '{');
  eb_u32(b, n);
  for (lua_pushnil(L); lua_next(L, idx);) {
    int top = lua_gettop(L), kt = lua_type(L, top - 1);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) return 0;
    if (!encode_item(L, b, top - 1, visited, depth) || !encode_item(L, b, top, visited, depth))
      return 0;
    lua_settop(L, top - 1);
  }
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, visited);
  return 1;
}

static int decode_item(lua_State *L, dsrc *s, int depth);

int decode_table(lua_State *L, dsrc *s, int depth) {
  uint32_t n, i;
  if (depth > MAXDEPTH || s->end - s->p < 4) return 0;
  memcpy(&n, s->p, 4);
  s->p += 4;
  if (n > (size_t)(s->end - s->p) / 2) return 0; /* each item takes a byte at least */
  luaL_checkstack(L, 4, "table value too deep");
  lua_createtable(L, 0, n < 1024 ? (int)n : 1024);
  for (i = 0; i < n; i++) {
    if (!decode_item(L, s, depth) || lua_isnil(L, -1)) return 0;
    if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
      return 0; /* a NaN key (scribbled): lua_rawset would raise */
    if (!decode_item(L, s, depth)) return 0;
    lua_rawset(L, -3);
  }
  return 1;
}

static int decode_item(lua_State *L, dsrc *s, int depth) {
  int tag;
  if (s->p >= s->end) return 0;
  tag = *s->p++;
  switch (tag) {
  case 't': case 'f':
    lua_pushboolean(L, tag == 't');
    return 1;
  case 'i': case 'd': {
    if (s->end - s->p < 8) return 0;
    if (tag == 'i') {
      int64_t i;
      memcpy(&i, s->p, 8);
      lua_pushinteger(L, (lua_Integer)i);
    } else {
      double n;
      memcpy(&n, s->p, 8);
      lua_pushnumber(L, (lua_Number)n);
    }
    s->p += 8;
    return 1;
  }
  case 's': {
    uint32_t n;
    if (s->end - s->p < 4) return 0;
    memcpy(&n, s->p, 4);
    s->p += 4;
    if (n > (size_t)(s->end - s->p)) return 0;
    lua_pushlstring(L, (const char *)s->p, n);
    s->p += n;
    return 1;
  }
  case '{':
    return decode_table(L, s, depth + 1);
  default:
    return 0;
  }
}

/* The value at idx as a dval (the bytes live in *num or on the stack above
 * idx); 0 for a type the dict cannot store.  `list`: strings and numbers only. */
int tovalue(lua_State *L, int idx, dval *v, unsigned char *num, int list) {
  v->flags = 0;
  v->ptr = (const char *)num;
  switch (lua_type(L, idx)) {
  case LUA_TNONE:
  case LUA_TNIL:
    if (list) return 0;
    v->type = DV_NIL;
    v->len = 0;
    return 1;
  case LUA_TBOOLEAN:
    if (list) return 0;
    v->type = DV_BOOL;
    num[0] = (unsigned char)lua_toboolean(L, idx);
    v->len = 1;
    return 1;
  case LUA_TNUMBER: {
    int64_t i;
    v->len = 8;
    if (wholenumber(L, idx, &i)) {
      v->type = DV_INT;
      memcpy(num, &i, 8);
    } else {
      double n = (double)lua_tonumber(L, idx);
      v->type = DV_NUM;
      memcpy(num, &n, 8);
    }
    return 1;
  }
  case LUA_TSTRING:
    v->type = DV_STR;
    v->ptr = lua_tolstring(L, idx, &v->len);
    return v->len <= UINT32_MAX;
  case LUA_TTABLE: {
    ebuf b;
    int visited;
    if (list) return 0;
    lua_newtable(L);
    visited = lua_gettop(L);
    b.L = L;
    b.cap = 256;
    b.n = 0;
    b.p = (char *)lua_newuserdatauv(L, b.cap, 0);
    b.slot = lua_gettop(L);
    if (!encode(L, &b, idx, visited, 1)) return 0;
    lua_settop(L, b.slot); /* the buffer stays on the stack while the core copies it */
    v->type = DV_TABLE;
    v->ptr = b.p;
    v->len = b.n;
    return v->len <= UINT32_MAX;
  }
  default:
    return 0;
  }
}

/* Are the values at a and b equal as dict values: raw-equal, or plain tables
 * with the same keys and equal values (nested, depth-bounded)? */
int sameluavalue(lua_State *L, int a, int b, int depth) {
  int n = 0, same = 1;
  if (lua_type(L, a) != LUA_TTABLE || lua_type(L, b) != LUA_TTABLE) return lua_rawequal(L, a, b);
  if (depth > MAXDEPTH) return 0;
  luaL_checkstack(L, 4, "table value too deep");
  for (lua_pushnil(L); same && lua_next(L, a);) {
    int top = lua_gettop(L);
    lua_pushvalue(L, top - 1);
    lua_rawget(L, b);
    same = !lua_isnil(L, -1) && sameluavalue(L, top, top + 1, depth + 1);
    lua_settop(L, top - 1);
    n++;
  }
  if (!same) {
    lua_pop(L, 1);
    return 0;
  }
  for (lua_pushnil(L); lua_next(L, b);) {
    lua_pop(L, 1);
    n--;
  }
  return n == 0;
}

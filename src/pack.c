/*
 * seg:pack(offset, fmt, ...) and seg:unpack(offset, fmt): the formats of
 * string.pack/string.unpack (Lua 5.4 manual, section 6.4.2), read and written
 * in place in the segment with no intermediate string.
 *
 * Alignment ("!" and "X") is relative to the start of the segment, as
 * string.unpack's is relative to the start of its string.
 * pack runs the format twice: a first pass checks every argument and that
 * everything fits, the second writes; so an error never leaves a partial write.
 */
/***
@module shm
*/
/***
@type segment
*/
#include "shm.h"

#include <limits.h>
#include <string.h>

#define NB CHAR_BIT
#define MAXINTSIZE 16
#define SZINT ((int)sizeof(lua_Integer))

typedef enum {
  K_INT, K_UINT, K_FLOAT, K_DOUBLE, K_NUMBER, K_CHAR, K_STRING, K_ZSTR,
  K_PADDING, K_PADDALIGN, K_NOP
} kind;

typedef struct {
  lua_State *L;
  int little;   /* byte order of the items that follow */
  int maxalign; /* set by '!' */
} fmtstate;

struct cD {
  char c;
  union { lua_Number n; double d; void *p; lua_Integer i; long l; } u;
};
#define MAXALIGN (offsetof(struct cD, u))

static int nativelittle(void) {
  const union { int dummy; char little; } u = {1};
  return u.little;
}

static int isdigitc(int c) { return c >= '0' && c <= '9'; }

static int readnum(const char **fmt, int def) {
  int a = 0;
  if (!isdigitc(**fmt)) return def;
  do {
    a = a * 10 + (*((*fmt)++) - '0');
  } while (isdigitc(**fmt) && a <= (INT_MAX - 9) / 10);
  return a;
}

static int readlimit(fmtstate *h, const char **fmt, int def) {
  int sz = readnum(fmt, def);
  if (sz > MAXINTSIZE || sz <= 0)
    return luaL_error(h->L, "integral size (%d) out of limits [1,%d]", sz, MAXINTSIZE);
  return sz;
}

/* Read one option; its size in bytes goes to *size. */
static kind readoption(fmtstate *h, const char **fmt, size_t *size) {
  int opt = *((*fmt)++);
  *size = 0;
  switch (opt) {
  case 'b': *size = sizeof(char); return K_INT;
  case 'B': *size = sizeof(char); return K_UINT;
  case 'h': *size = sizeof(short); return K_INT;
  case 'H': *size = sizeof(short); return K_UINT;
  case 'l': *size = sizeof(long); return K_INT;
  case 'L': *size = sizeof(long); return K_UINT;
  case 'j': *size = sizeof(lua_Integer); return K_INT;
  case 'J': *size = sizeof(lua_Integer); return K_UINT;
  case 'T': *size = sizeof(size_t); return K_UINT;
  case 'f': *size = sizeof(float); return K_FLOAT;
  case 'n': *size = sizeof(lua_Number); return K_NUMBER;
  case 'd': *size = sizeof(double); return K_DOUBLE;
  case 'i': *size = (size_t)readlimit(h, fmt, sizeof(int)); return K_INT;
  case 'I': *size = (size_t)readlimit(h, fmt, sizeof(int)); return K_UINT;
  case 's': *size = (size_t)readlimit(h, fmt, sizeof(size_t)); return K_STRING;
  case 'c': {
    int n = readnum(fmt, -1);
    if (n == -1) luaL_error(h->L, "missing size for format option 'c'");
    *size = (size_t)n;
    return K_CHAR;
  }
  case 'z': return K_ZSTR;
  case 'x': *size = 1; return K_PADDING;
  case 'X': return K_PADDALIGN;
  case ' ': return K_NOP;
  case '<': h->little = 1; return K_NOP;
  case '>': h->little = 0; return K_NOP;
  case '=': h->little = nativelittle(); return K_NOP;
  case '!': h->maxalign = readlimit(h, fmt, (int)MAXALIGN); return K_NOP;
  default: luaL_error(h->L, "invalid format option '%c'", opt);
  }
  return K_NOP; /* not reached */
}

/* Read one option and the padding it needs at absolute position pos. */
static kind readitem(fmtstate *h, size_t pos, const char **fmt, size_t *size, size_t *pad) {
  kind k = readoption(h, fmt, size);
  size_t align = *size;
  if (k == K_PADDALIGN) {
    if (**fmt == '\0' || readoption(h, fmt, &align) == K_CHAR || align == 0)
      luaL_argerror(h->L, 3, "invalid next option for option 'X'");
  }
  *pad = 0;
  if (align > 1 && k != K_CHAR) {
    if (align > (size_t)h->maxalign) align = (size_t)h->maxalign;
    if ((align & (align - 1)) != 0)
      luaL_argerror(h->L, 3, "format asks for alignment not power of 2");
    *pad = (align - (pos & (align - 1))) & (align - 1);
  }
  return k;
}

static void putint(unsigned char *p, lua_Unsigned v, int little, size_t size, int neg) {
  size_t i;
  for (i = 0; i < size; i++) {
    unsigned char b = (unsigned char)(i < sizeof v ? (v >> (i * NB)) & 0xff : (neg ? 0xff : 0));
    p[little ? i : size - 1 - i] = b;
  }
}

static void putbytes(unsigned char *p, const void *src, size_t size, int little) {
  size_t i;
  const unsigned char *s = (const unsigned char *)src;
  if (little == nativelittle()) memcpy(p, src, size);
  else for (i = 0; i < size; i++) p[i] = s[size - 1 - i];
}

static lua_Integer getint(lua_State *L, const unsigned char *p, int little, size_t size,
                          int issigned) {
  lua_Unsigned res = 0;
  size_t i, limit = size <= SZINT ? size : SZINT;
  for (i = limit; i-- > 0;) {
    res <<= NB;
    res |= (lua_Unsigned)p[little ? i : size - 1 - i];
  }
  if (size < SZINT) {
    if (issigned) {
      lua_Unsigned mask = (lua_Unsigned)1 << (size * NB - 1);
      res = ((res ^ mask) - mask); /* sign-extend */
    }
  } else if (size > SZINT) {
    int fill = (!issigned || (lua_Integer)res >= 0) ? 0 : 0xff;
    for (i = limit; i < size; i++)
      if (p[little ? i : size - 1 - i] != fill)
        luaL_error(L, "%d-byte integer does not fit into Lua Integer", (int)size);
  }
  return (lua_Integer)res;
}

/* One pass of pack.  write == 0: check arguments and bounds only. */
static size_t packpass(lua_State *L, shm_segment *s, size_t pos, const char *fmt, int write) {
  fmtstate h = {L, nativelittle(), 1};
  unsigned char *base = s->addr;
  int arg = 3; /* the argument before the first value */
  while (*fmt != '\0') {
    size_t size, pad, len = 0;
    const char *str = NULL;
    kind k = readitem(&h, pos, &fmt, &size, &pad);
    if (k == K_STRING || k == K_ZSTR || k == K_CHAR) {
      str = luaL_checklstring(L, ++arg, &len);
      if (k == K_STRING) {
        luaL_argcheck(L, size >= sizeof(size_t) || len < ((size_t)1 << (size * NB)), arg,
                      "string length does not fit in given size");
        if (len > SIZE_MAX - size) luaL_argerror(L, arg, "string too long");
        size += len;
      } else if (k == K_ZSTR) {
        luaL_argcheck(L, strlen(str) == len, arg, "string contains zeros");
        size = len + 1;
      } else {
        luaL_argcheck(L, len <= size, arg, "string longer than given size");
      }
    }
    if (pad > s->size - pos || size > s->size - pos - pad)
      luaL_error(L, "pack: data does not fit in the segment (offset %I, segment size %I)",
                 (lua_Integer)(pos + pad), (lua_Integer)s->size);
    if (write) memset(base + pos, 0, pad);
    pos += pad;
    switch (k) {
    case K_INT:
    case K_UINT: {
      lua_Integer v = luaL_checkinteger(L, ++arg);
      if (size < SZINT) {
        if (k == K_INT) {
          lua_Integer lim = (lua_Integer)1 << ((size * NB) - 1);
          luaL_argcheck(L, -lim <= v && v < lim, arg, "integer overflow");
        } else {
          luaL_argcheck(L, (lua_Unsigned)v < ((lua_Unsigned)1 << (size * NB)), arg,
                        "unsigned overflow");
        }
      }
      if (write) putint(base + pos, (lua_Unsigned)v, h.little, size, v < 0);
      break;
    }
    case K_FLOAT: {
      float f = (float)luaL_checknumber(L, ++arg);
      if (write) putbytes(base + pos, &f, sizeof f, h.little);
      break;
    }
    case K_DOUBLE: {
      double d = (double)luaL_checknumber(L, ++arg);
      if (write) putbytes(base + pos, &d, sizeof d, h.little);
      break;
    }
    case K_NUMBER: {
      lua_Number n = luaL_checknumber(L, ++arg);
      if (write) putbytes(base + pos, &n, sizeof n, h.little);
      break;
    }
    case K_CHAR:
      if (write) {
        memcpy(base + pos, str, len);
        memset(base + pos + len, 0, size - len);
      }
      break;
    case K_STRING: {
      size_t lsize = size - len;
      if (write) {
        putint(base + pos, (lua_Unsigned)len, h.little, lsize, 0);
        memcpy(base + pos + lsize, str, len);
      }
      break;
    }
    case K_ZSTR:
      if (write) memcpy(base + pos, str, len + 1);
      break;
    case K_PADDING:
      if (write) base[pos] = 0;
      break;
    case K_PADDALIGN:
    case K_NOP:
      break;
    }
    pos += size;
  }
  return pos;
}

/***
Write values with a `string.pack` format straight into the segment.  Alignment
(`!`, `X`) is relative to the segment start.  Checks everything first: a failing
pack writes nothing.
@function segment:pack
@tparam integer offset
@tparam string fmt
@param ... the values
@treturn integer the offset after the last byte written
@usage local nxt = seg:pack(0, "<I4 s2", 42, "name")
*/
static int seg_pack(lua_State *L) {
  shm_segment *s = shm_checkwritable(L, 1);
  size_t off = shm_checkoffset(L, 2, s);
  const char *fmt = luaL_checkstring(L, 3);
  size_t end;
  packpass(L, s, off, fmt, 0);
  end = packpass(L, s, off, fmt, 1);
  lua_pushinteger(L, (lua_Integer)end);
  return 1;
}

/***
Read values with a `string.unpack` format straight out of the segment.  Lengths
read from the segment are checked against its end.
@function segment:unpack
@tparam integer offset
@tparam string fmt
@return the values, then the offset after the last byte read
@usage local id, name, nxt = seg:unpack(0, "<I4 s2")
*/
static int seg_unpack(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  size_t pos = shm_checkoffset(L, 2, s);
  const char *fmt = luaL_checkstring(L, 3);
  fmtstate h = {L, nativelittle(), 1};
  const unsigned char *base;
  int n = 0;
  while (*fmt != '\0') {
    size_t size, pad;
    kind k = readitem(&h, pos, &fmt, &size, &pad);
    /* (a finalizer run by the last value made may have detached it) */
    if ((base = s->addr) == NULL) luaL_error(L, "attempt to use a detached segment");
    if (pad > s->size - pos || size > s->size - pos - pad)
      luaL_error(L, "unpack: format reads past the end of the segment (offset %I, segment size %I)",
                 (lua_Integer)(pos + pad), (lua_Integer)s->size);
    pos += pad;
    luaL_checkstack(L, 2, "too many results");
    n++;
    switch (k) {
    case K_INT:
    case K_UINT:
      lua_pushinteger(L, getint(L, base + pos, h.little, size, k == K_INT));
      break;
    case K_FLOAT: {
      float f;
      putbytes((unsigned char *)&f, base + pos, sizeof f, h.little);
      lua_pushnumber(L, (lua_Number)f);
      break;
    }
    case K_DOUBLE: {
      double d;
      putbytes((unsigned char *)&d, base + pos, sizeof d, h.little);
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    case K_NUMBER: {
      lua_Number x;
      putbytes((unsigned char *)&x, base + pos, sizeof x, h.little);
      lua_pushnumber(L, x);
      break;
    }
    case K_CHAR:
      shm_pushbytes(L, s, base + pos, size);
      break;
    case K_STRING: {
      /* the length comes from shared memory: untrusted, checked */
      lua_Unsigned len = (lua_Unsigned)getint(L, base + pos, h.little, size, 0);
      if (len > s->size - pos - size)
        luaL_error(L, "unpack: string length %I at offset %I runs past the end of the segment",
                   (lua_Integer)len, (lua_Integer)pos);
      shm_pushbytes(L, s, base + pos + size, (size_t)len);
      pos += (size_t)len;
      break;
    }
    case K_ZSTR: {
      const unsigned char *z = memchr(base + pos, 0, s->size - pos);
      if (z == NULL) luaL_error(L, "unpack: unfinished string for format 'z' at offset %I",
                                (lua_Integer)pos);
      size = (size_t)(z - (base + pos));
      shm_pushbytes(L, s, base + pos, size);
      size += 1;
      break;
    }
    case K_PADDALIGN:
    case K_PADDING:
    case K_NOP:
      n--;
      break;
    }
    pos += size;
  }
  lua_pushinteger(L, (lua_Integer)pos);
  return n + 1;
}

static const luaL_Reg pack_methods[] = {{"pack", seg_pack}, {"unpack", seg_unpack}, {NULL, NULL}};

void shm_open_pack(lua_State *L, int module, int methods) {
  (void)module;
  lua_pushvalue(L, methods);
  luaL_setfuncs(L, pack_methods, 0);
  lua_pop(L, 1);
}

/*
 * Entry points for LuaJIT's FFI: the segment's hot methods (read, write,
 * fill and the atomics) as plain C functions that lua/shm/ffi.lua calls
 * through a table of function pointers (shm._ffi, a light userdata): never
 * by symbol, since only luaopen_shm_core is exported.
 *
 * Each takes the segment's userdata (as a pointer to its payload: the
 * caller has checked that the object is a segment made by this module) and
 * does every check the Lua C API method does, in the same order, reading
 * the segment's state from its struct on every call: a detached or read-only
 * segment, an offset or length out of range, a number with no integer
 * representation.  A call that would raise returns SHM_FFI_FALLBACK having
 * done nothing; the caller then calls the C API method with the same
 * arguments, which raises the error (so the messages are the same ones).
 * Numbers cross as doubles (what LuaJIT's numbers are) and are converted
 * here exactly as compat.c's lua_tointegerx does.
 */
#include "shm.h"

#include <string.h>

/* lua_tointegerx of compat.c: a whole number in the 64-bit range */
static int toint(double n, int64_t *v) {
  if (!(n >= -0x1p63 && n < 0x1p63)) return 0;
  *v = (int64_t)n;
  return (double)*v == n;
}

/* The segment, attached (and writable if asked); NULL otherwise. */
static shm_segment *open_seg(void *ud, int write) {
  shm_segment *s = (shm_segment *)ud;
  if (s == NULL || s->addr == NULL || (write && s->readonly)) return NULL;
  return s;
}

/* shm_optoffset: off < 0 never comes here (the caller passes 0 for nil). */
static int offset(const shm_segment *s, double off, size_t *o) {
  int64_t v;
  if (!toint(off, &v) || v < 0 || (uint64_t)v > s->size) return 0;
  *o = (size_t)v;
  return 1;
}

/* shm_optlength: len < 0 means none (to the end). */
static int length(const shm_segment *s, double len, size_t off, size_t *n) {
  int64_t v;
  if (len < 0) {
    *n = s->size - off;
    return 1;
  }
  if (!toint(len, &v) || v < 0 || (uint64_t)v > s->size - off) return 0;
  *n = (size_t)v;
  return 1;
}

/* atomic.c's checkslot: an 8-byte aligned, in-range int64 */
static int64_t *slot(void *ud, int write, double off) {
  shm_segment *s = open_seg(ud, write);
  int64_t o;
  if (s == NULL || !toint(off, &o)) return NULL;
  if (o < 0 || s->size < 8 || (uint64_t)o > s->size - 8 || o % 8 != 0) return NULL;
  return (int64_t *)(void *)(s->addr + o);
}

/* read: the length, the bytes' address in *p; or SHM_FFI_FALLBACK.  The
 * segment stays pinned (shm_pin) until done: making the pointer and the
 * string can run a finalizer that detaches it. */
static double f_read(void *ud, double off, double len, const char **p) {
  shm_segment *s = open_seg(ud, 0);
  size_t o, n;
  if (s == NULL || !offset(s, off, &o) || !length(s, len, o, &n)) return SHM_FFI_FALLBACK;
  *p = (const char *)s->addr + o;
  shm_pin(s);
  return (double)n;
}

/* The caller of read made its string. */
static void f_done(void *ud) {
  shm_unpin((shm_segment *)ud);
}

static int f_write(void *ud, const char *data, size_t len, double off) {
  shm_segment *s = open_seg(ud, 1);
  size_t o;
  if (s == NULL || !offset(s, off, &o) || len > s->size - o) return SHM_FFI_FALLBACK;
  memcpy(s->addr + o, data, len);
  return 0;
}

static int f_fill(void *ud, double byte, double off, double len) {
  shm_segment *s = open_seg(ud, 1);
  int64_t b;
  size_t o, n;
  if (s == NULL || !toint(byte, &b) || b < 0 || b > 255 || !offset(s, off, &o) ||
      !length(s, len, o, &n))
    return SHM_FFI_FALLBACK;
  memset(s->addr + o, (int)b, n);
  return 0;
}

static int f_load(void *ud, double off, double *v) {
  int64_t *p = slot(ud, 0, off);
  if (p == NULL) return SHM_FFI_FALLBACK;
  *v = (double)__atomic_load_n(p, __ATOMIC_SEQ_CST);
  return 0;
}

static int f_store(void *ud, double off, double v) {
  int64_t *p = slot(ud, 1, off), i;
  if (p == NULL || !toint(v, &i)) return SHM_FFI_FALLBACK;
  __atomic_store_n(p, i, __ATOMIC_SEQ_CST);
  return 0;
}

/* wraps around in two's complement, like a_add */
static int f_add(void *ud, double off, double d, double *v) {
  int64_t *p = slot(ud, 1, off), i;
  if (p == NULL || !toint(d, &i)) return SHM_FFI_FALLBACK;
  *v = (double)(int64_t)__atomic_add_fetch((uint64_t *)(void *)p, (uint64_t)i, __ATOMIC_SEQ_CST);
  return 0;
}

/* 1 swapped, 0 not (the value found in *found either way) */
static int f_cas(void *ud, double off, double expected, double desired, double *found) {
  int64_t *p = slot(ud, 1, off), e, n;
  int ok;
  if (p == NULL || !toint(expected, &e) || !toint(desired, &n)) return SHM_FFI_FALLBACK;
  ok = __atomic_compare_exchange_n(p, &e, n, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  *found = (double)e;
  return ok;
}

/* Keep in step with the cdef in lua/shm/ffi.lua. */
typedef struct shm_seg_ffi_api {
  int version;
  double (*read)(void *, double, double, const char **);
  int (*write)(void *, const char *, size_t, double);
  int (*fill)(void *, double, double, double);
  int (*load)(void *, double, double *);
  int (*store)(void *, double, double);
  int (*add)(void *, double, double, double *);
  int (*cas)(void *, double, double, double, double *);
  void (*done)(void *);
} shm_seg_ffi_api;

static const shm_seg_ffi_api seg_ffi = {2, f_read, f_write, f_fill, f_load, f_store, f_add, f_cas, f_done};

void shm_open_ffi(lua_State *L, int module, int methods) {
  (void)methods;
  lua_pushlightuserdata(L, (void *)&seg_ffi);
  lua_setfield(L, module, "_ffi");
}

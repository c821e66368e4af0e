/*
 * shm.dict's core: the hash table, the LRU list, eviction and expiry, and
 * every operation (store, cas, get, incr, lists, flushes, keys, stat), each
 * taking pointers and lengths and returning a status, with one unlock path
 * (txn_end).  Plain C: never a lua_State.  See dict.c for the design.
 */
#include "dict.h"

D_HOT int expired(shm_dict *d, dentry *e, uint64_t *now) {
  uint64_t x = LOAD(&e->expires);
  if (LOAD(&e->gen) != LOAD(&d->h->flush_gen)) return 1;
  if (x == 0) return 0;
  if (*now == 0) *now = now_ms();
  return x <= *now;
}

/* Find key in its chain.  *ref is the entry (D_NIL if absent) and *v its
 * view, *link the word that points at it (the bucket or the previous
 * entry's next).  Bounded by the number of units; 0 on a bad chain. */
D_HOT int lookupv(shm_dict *d, const char *k, size_t kl, uint32_t hash, uint32_t *ref,
                   uint32_t **link, dview *v) {
  uint32_t *at = BHEAD(d, hash);
  uint32_t r = LOAD(at);
  dwalk w;
  walk_init(&w, d->nunits);
  while (r != D_NIL) {
    if (!walk_ok(&w, r) || !viewof(d, r, v)) return 0;
    if (LOAD(&v->e->hash) == hash && v->klen == kl && keyeq(v->key, k, kl)) break;
    at = &v->e->next;
    r = LOAD(at);
  }
  *ref = r;
  if (link != NULL) *link = at;
  return 1;
}

static int lookup(shm_dict *d, const char *k, size_t kl, uint32_t hash, uint32_t *ref,
                  uint32_t **link) {
  dview v;
  return lookupv(d, k, kl, hash, ref, link, &v);
}

/* ---- entries (under the lock) ---- */

static void lru_unlink(shm_dict *d, uint32_t ref) {
  dentry *e = entryof(d, ref);
  uint32_t prev = e->lru_prev, next = e->lru_next;
  if (prev == D_NIL) jw(d, &d->h->lru_head, next);
  else jw(d, &entryof(d, prev)->lru_next, next);
  if (next == D_NIL) jw(d, &d->h->lru_tail, prev);
  else jw(d, &entryof(d, next)->lru_prev, prev);
}

/* (a head that is not an entry is left alone: the next walk reports it) */
static void lru_push_head(shm_dict *d, uint32_t ref) {
  dentry *e = entryof(d, ref);
  uint32_t head = d->h->lru_head;
  if (head != D_NIL && !entryok(d, head)) head = D_NIL;
  jw(d, &e->lru_prev, D_NIL);
  jw(d, &e->lru_next, head);
  if (head == D_NIL) jw(d, &d->h->lru_tail, ref);
  else jw(d, &entryof(d, head)->lru_prev, ref);
  jw(d, &d->h->lru_head, ref);
}

/* The LRU neighbours of ref must be entries (checked before relinking). */
static int lru_ok(shm_dict *d, uint32_t ref) {
  dentry *e = entryof(d, ref);
  return (e->lru_prev == D_NIL || entryok(d, e->lru_prev)) &&
         (e->lru_next == D_NIL || entryok(d, e->lru_next));
}

static void lru_touch(shm_dict *d, uint32_t ref) {
  if (d->h->lru_head == ref) return;
  lru_unlink(d, ref);
  lru_push_head(d, ref);
}

/* Remove the entry at ref, which *link points at (a list's elements are
 * set aside for gc_drain). */
static int unlink_entry(shm_dict *d, uint32_t ref, uint32_t *link) {
  dentry *e = entryof(d, ref);
  dview v;
  if (!viewof(d, ref, &v) || !lru_ok(d, ref)) return corrupt(d, "bad LRU list");
  bopen(d, e->hash);
  if (v.type == DV_LIST && park_nodes(d, &v) != SHM_OK) return SHM_CORRUPT;
  jw(d, link, e->next);
  lru_unlink(d, ref);
  jw(d, &d->h->count, d->h->count - 1);
  return bfree(d, ref);
}

/* The word pointing at entry ref in its chain (found again by its hash). */
static uint32_t *linkto(shm_dict *d, uint32_t ref) {
  dentry *e = entryof(d, ref);
  uint32_t *at = BHEAD(d, e->hash);
  dwalk w;
  walk_init(&w, d->nunits);
  while (*at != ref) {
    if (*at == D_NIL || !walk_ok(&w, *at) || !entryok(d, *at)) return NULL;
    at = &entryof(d, *at)->next;
  }
  return at;
}

static void bump(shm_dict *d, uint64_t *stat) { jw64(d, stat, *stat + 1); }

/* Unlink the entry at ref (found again in its chain) and commit that step. */
static int drop_step(shm_dict *d, uint32_t ref, uint64_t *stat) {
  uint32_t *link;
  if ((link = linkto(d, ref)) == NULL) return corrupt(d, "bad hash chain");
  if (unlink_entry(d, ref, link) != SHM_OK) return SHM_CORRUPT;
  bump(d, stat);
  return step(d);
}

/* Free up to n expired entries from the LRU tail (ngx's expire(ctx, 1)),
 * each its own step. */
static int expire_tail(shm_dict *d, int n, uint64_t *now) {
  while (n-- > 0) {
    uint32_t ref = d->h->lru_tail;
    if (ref == D_NIL) break;
    /* (entryof is safe for any ref: a live tail, the common case, costs a look) */
    if (!expired(d, entryof(d, ref), now)) break;
    if (!entryok(d, ref)) return corrupt(d, "bad LRU list");
    if (drop_step(d, ref, &d->h->expired) != SHM_OK) return SHM_CORRUPT;
  }
  return SHM_OK;
}

/* Evict the least recently used entry (not `keep`), giving entries read
 * since they were last looked at a second chance (each move its own step).
 * SHM_OK, NOMEM (nothing to evict) or CORRUPT. */
static int evict_one(shm_dict *d, uint32_t keep) {
  int chances = D_SECONDCHANCE;
  dwalk w;
  walk_init(&w, d->nunits + D_SECONDCHANCE + 1);
  for (;;) {
    uint32_t ref = d->h->lru_tail, b;
    dentry *e;
    if (ref == D_NIL) return SHM_DICT_NOMEM;
    if (++w.steps > w.limit || !entryok(d, ref) || !lru_ok(d, ref))
      return corrupt(d, "bad LRU list");
    e = entryof(d, ref);
    b = e->hash & d->mask;
    if ((ref == keep || (chances > 0 && LOAD(&d->refs[b]))) && d->h->lru_head != ref) {
      if (ref != keep) chances--;
      STORE(&d->refs[b], 0);
      lru_touch(d, ref);
      if (step(d) != SHM_OK) return SHM_CORRUPT;
      continue;
    }
    if (ref == keep) return SHM_DICT_NOMEM;
    return drop_step(d, ref, &d->h->evicted);
  }
}

/* Allocate, evicting LRU entries when full unless `safe`: as many as it
 * takes when the block can fit at all (each eviction its own step, its list
 * elements freed before the next try); none when it never can. */
static int alloc_evicting(shm_dict *d, size_t bytes, uint32_t kind, int safe, uint32_t keep,
                          uint32_t *ref, int *forcible) {
  int r = balloc(d, bytes, kind, ref);
  uint32_t i;
  if (order_for(bytes) > d->maxorder) return r;
  for (i = 0; r == SHM_DICT_NOMEM && !safe && i <= d->nunits; i++) {
    r = evict_one(d, keep);
    if (r != SHM_OK) return r;
    if (LOAD(&d->h->gc_head) != D_NIL && gc_drain(d) != SHM_OK) return SHM_CORRUPT;
    *forcible = 1;
    r = balloc(d, bytes, kind, ref);
  }
  return r;
}

/* ---- the core operations ---- */

/* The start of every write (after txn_begin): free up to two expired items
 * from the LRU tail (as ngx does on every store), then find the key. */
static int write_begin(shm_dict *d, const char *k, size_t kl, uint32_t hash, uint64_t *now,
                       uint32_t *ref, uint32_t **link, dview *v) {
  uint32_t tail = d->h->lru_tail;
  /* (entryof is safe for any ref: a live tail, the common case, costs a look) */
  if (tail != D_NIL && expired(d, entryof(d, tail), now)) {
    int r = expire_tail(d, D_EXPIRE_ON_STORE, now);
    if (r != SHM_OK) return r;
  }
  if (!lookupv(d, k, kl, hash, ref, link, v)) return corrupt(d, "bad hash chain");
  return SHM_OK;
}

/* ms from now for an exptime in seconds, as ngx: truncated, <= 0 ms = never */
D_HOT uint64_t expiry(double exptime, uint64_t *now) {
  double ms = exptime * 1000.0;
  if (!(ms >= 1.0)) return 0;
  if (*now == 0) *now = now_ms();
  if (ms > 1e15) ms = 1e15;
  return *now + (uint64_t)ms;
}

/* Link a new entry for key (hash) into its chain, replacing the entry the
 * key has (if any): its place is looked up again, since evictions may have
 * changed the chain. */
static int link_entry(shm_dict *d, uint32_t ref, const char *k, size_t kl, uint32_t hash) {
  uint32_t old, *link;
  int r;
  if (!lookup(d, k, kl, hash, &old, &link)) return corrupt(d, "bad hash chain");
  if (old != D_NIL) {
    if ((r = unlink_entry(d, old, link)) != SHM_OK) return r;
    if (!lookup(d, k, kl, hash, &old, &link)) return corrupt(d, "bad hash chain");
  }
  entryof(d, ref)->next = D_NIL; /* link is the chain's last word */
  bopen(d, hash);
  jw(d, link, ref);
  lru_push_head(d, ref);
  jw(d, &d->h->count, d->h->count + 1);
  return SHM_OK;
}

/* The bytes of the entry block for a key and a value. */
static size_t entry_bytes(size_t kl, int type, size_t vlen) {
  return sizeof(dentry) + A8(kl) + A8(type == DV_LIST ? sizeof(dlist) : vlen);
}

/* A new entry (allocated, evicting unless `safe`), filled and linked. */
static int new_entry(shm_dict *d, const char *k, size_t kl, uint32_t hash, int type,
                     const void *v, size_t vlen, uint32_t flags, uint64_t expires, int safe,
                     uint32_t keep, int *forcible) {
  uint32_t ref;
  dentry *e;
  int r = alloc_evicting(d, entry_bytes(kl, type, vlen), B_ENTRY, safe, keep, &ref, forcible);
  if (r != SHM_OK) return r;
  e = entryof(d, ref);
  e->hash = hash;
  e->next = e->lru_prev = e->lru_next = D_NIL;
  e->flags = flags;
  e->vlen = type == DV_LIST ? 0 : (uint32_t)vlen;
  e->gen = d->h->flush_gen;
  e->expires = expires;
  e->meta = MKMETA(kl, type);
  e->pad = 0;
  /* (the block holds all of it: its size came from these lengths) */
  memcpy((char *)e + sizeof(dentry), k, kl);
  if (type == DV_LIST) {
    dlist l = {D_NIL, D_NIL};
    memcpy((char *)e + sizeof(dentry) + A8(kl), &l, sizeof l);
  } else {
    memcpy((char *)e + sizeof(dentry) + A8(kl), v, vlen);
  }
  return link_entry(d, ref, k, kl, hash);
}


/* Would freeing the entry at old leave a free block of `order`: its own
 * block, or one made of it and of free blocks around it?  (Block headers
 * only; each block in the aligned region is walked once.) */
static int frees_room(shm_dict *d, uint32_t old, uint32_t order) {
  uint32_t o = BORDER(LOAD(blockw(d, old))), base, at;
  if (order > d->maxorder || o > d->maxorder) return 0;
  if (o >= order) return 1;
  base = old & ~((1u << order) - 1);
  if ((uint64_t)base + (1u << order) > d->nunits) return 0;
  for (at = base; at < base + (1u << order);) {
    uint32_t w, bo;
    if (at == old) {
      at += 1u << o;
      continue;
    }
    w = LOAD(blockw(d, at));
    bo = BORDER(w);
    if ((w & 0xffff0000u) != B_MAGIC || BKIND(w) != B_FREE || bo > d->maxorder ||
        (at & ((1u << bo) - 1)) != 0)
      return 0;
    at += 1u << bo;
  }
  return 1;
}

/* Replace key's entry at old by a new one in its place, as ngx frees the old
 * value first (and so never evicts for a value that then fits): the old entry
 * goes in a step of its own, its bucket kept odd through the next (readers
 * wait rather than see the key missing), after which the room it leaves is
 * sure to hold the new one.  A process killed between the steps leaves the
 * key missing, never torn. */
static int in_place_of(shm_dict *d, const char *k, size_t kl, uint32_t hash, const dval *v,
                       uint64_t expires, uint32_t old, int *forcible) {
  uint32_t *link = linkto(d, old); /* (evictions may have changed the chain) */
  int r;
  if (link == NULL) return corrupt(d, "bad hash chain");
  if ((r = unlink_entry(d, old, link)) != SHM_OK || (r = step_keep(d, hash)) != SHM_OK) return r;
  return new_entry(d, k, kl, hash, v->type, v->ptr, v->len, v->flags, expires, 1, D_NIL, forcible);
}

/* Does the entry hold exactly the expected value (and flags, when `flags`)? */
static int same_value(const dview *v, const dval *x, int flags) {
  if (flags && v->flags != x->flags) return 0;
  if ((v->type == DV_INT && x->type == DV_NUM) || (v->type == DV_NUM && x->type == DV_INT)) {
    /* numbers compare as Lua compares them: 1 == 1.0 */
    int64_t i;
    double f;
    if (v->vlen != 8 || x->len != 8) return 0;
    memcpy(&i, v->type == DV_INT ? (const void *)v->val : (const void *)x->ptr, 8);
    memcpy(&f, v->type == DV_NUM ? (const void *)v->val : (const void *)x->ptr, 8);
    return f >= -9223372036854775808.0 && f < 9223372036854775808.0 && (double)(int64_t)f == f &&
           (int64_t)f == i;
  }
  return v->type == (uint32_t)x->type && v->type != DV_LIST && v->vlen == x->len &&
         memcmp(v->val, x->ptr, x->len) == 0;
}

/* set/add/replace, and cas: with `expect` (a cas), only when the key holds
 * that value (and its flags, when `cmpflags`), or is missing when the expected
 * type is DV_NIL: else CHANGED (or NOTFOUND for a missing key). */
int shm_dict_store(shm_dict *d, int op, int safe, const char *k, size_t kl,
                          const dval *v, double exptime, const dval *expect, int cmpflags,
                          int *forcible) {
  uint32_t hash = dict_hash(d->seed, k, kl), old, *link;
  uint64_t now = 0;
  dview ov;
  int r, live;
  *forcible = 0;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((r = write_begin(d, k, kl, hash, &now, &old, &link, &ov)) != SHM_OK) goto done;
  live = old != D_NIL && !expired(d, entryof(d, old), &now);
  if ((op == OP_ADD && live) || (op == OP_REPLACE && !live)) {
    r = live ? SHM_DICT_EXISTS : SHM_DICT_NOTFOUND;
    goto done;
  }
  if (expect != NULL) {
    if (expect->type == DV_NIL ? live : !live || !same_value(&ov, expect, cmpflags)) {
      r = live || expect->type == DV_NIL ? SHM_DICT_CHANGED : SHM_DICT_NOTFOUND;
      goto done;
    }
  }
  if (v->type == DV_NIL) { /* delete */
    if (old != D_NIL) r = unlink_entry(d, old, link);
    goto done;
  }
  if (old != D_NIL) {
    dentry *e = ov.e;
    if (ov.type != DV_LIST && ov.vlen == v->len && v->len <= D_INPLACE &&
        (d->h->lru_head == old || lru_ok(d, old))) {
      /* same length: in place, every word journalled (the view checked the
       * value's words lie in the block) */
      bopen(d, hash);
      jwrite(d, ov.val, v->ptr, v->len);
      jw(d, &e->meta, MKMETA(kl, v->type));
      jw(d, &e->flags, v->flags);
      jw(d, &e->gen, d->h->flush_gen);
      jw64(d, &e->expires, expiry(exptime, &now));
      lru_touch(d, old);
      goto done;
    }
  }
  /* a new entry beside the old one (which it replaces when linked); when
   * both do not fit, in the old one's place; else evicting others (unless
   * safe), and in the old one's place if that is what makes room */
  {
    uint64_t ex = expiry(exptime, &now);
    uint32_t order = order_for(entry_bytes(kl, v->type, v->len));
    r = new_entry(d, k, kl, hash, v->type, v->ptr, v->len, v->flags, ex, 1, old, forcible);
    if (r == SHM_DICT_NOMEM && old != D_NIL && !frees_room(d, old, order) && !safe)
      r = new_entry(d, k, kl, hash, v->type, v->ptr, v->len, v->flags, ex, 0, old, forcible);
    if (r == SHM_DICT_NOMEM && old != D_NIL && expect == NULL && frees_room(d, old, order))
      r = in_place_of(d, k, kl, hash, v, ex, old, forcible); /* (never for cas: old or new) */
    else if (r == SHM_DICT_NOMEM && old == D_NIL && !safe)
      r = new_entry(d, k, kl, hash, v->type, v->ptr, v->len, v->flags, ex, 0, D_NIL, forcible);
  }
done:
  return txn_end(d, r);
}

/* Copy a value out (the caller checks the sequence word after). */
static int copyout(const dview *v, dval *out, char *buf, size_t cap) {
  out->type = (int)v->type;
  out->flags = v->flags;
  if (out->type == DV_LIST) return SHM_DICT_ISLIST;
  out->len = v->vlen;
  if (out->len > cap) return SHM_DICT_BUFSMALL;
  copysmall(buf, v->val, out->len);
  out->ptr = buf;
  return SHM_OK;
}

/* A read: looks the key up and runs `what` on the entry, first without the
 * lock (the result is kept only if no writer changed the key's bucket
 * meanwhile: its sequence word is the same, and even), after D_SPINS tries
 * under the lock (waiting for it no longer than the handle's timeout).  A
 * writer changing other buckets, even one stopped inside its change, never
 * makes a reader wait. */
typedef int (*readfn)(shm_dict *d, const dview *v, uint64_t *now, void *arg);

D_HOT int dict_read(shm_dict *d, const char *k, size_t kl, readfn what, void *arg) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref, *q = BSEQ(d, hash);
  dview v;
  int tries, r;
  for (tries = 0; tries < D_SPINS; tries++) {
    uint64_t now = 0;
    uint32_t s1 = LOADACQ(q);
    if (s1 & 1) {
      cpu_relax();
      continue;
    }
    if (!lookupv(d, k, kl, hash, &ref, NULL, &v)) r = -1;
    else r = ref == D_NIL ? SHM_DICT_NOTFOUND : what(d, &v, &now, arg);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (LOAD(q) != s1) continue;
    if (r == -1) return corrupt(d, "bad hash chain");
    if (ref != D_NIL) { /* recency for the evictor: the bucket's bit */
      unsigned char *bit = &d->refs[hash & d->mask];
      if (LOAD(bit) == 0) STORE(bit, 1);
    }
    return r;
  }
  /* a writer is changing this bucket (or its word is hostile): take the lock */
  if ((r = txn_begin(d)) != SHM_OK) return r;
  {
    uint64_t now = 0;
    if (!lookupv(d, k, kl, hash, &ref, NULL, &v)) r = corrupt(d, "bad hash chain");
    else r = ref == D_NIL ? SHM_DICT_NOTFOUND : what(d, &v, &now, arg);
  }
  return txn_end(d, r);
}

typedef struct getarg {
  dval *out;
  char *buf;
  size_t cap;
  int stale;
} getarg;

static int read_get(shm_dict *d, const dview *v, uint64_t *now, void *arg) {
  getarg *a = (getarg *)arg;
  int x = expired(d, v->e, now);
  if (x && !a->stale) return SHM_DICT_NOTFOUND;
  a->out->stale = x;
  return copyout(v, a->out, a->buf, a->cap);
}

/* get / get_stale: SHM_OK (out), NOTFOUND, ISLIST, BUFSMALL (out->len), CORRUPT */
int shm_dict_get(shm_dict *d, const char *k, size_t kl, int stale, dval *out, char *buf,
                        size_t cap) {
  getarg a;
  a.out = out;
  a.buf = buf;
  a.cap = cap;
  a.stale = stale;
  return dict_read(d, k, kl, read_get, &a);
}

/* ttl of an entry that is there, expired or not (expired: negative, as ngx) */
static int read_ttl(shm_dict *d, const dview *v, uint64_t *now, void *arg) {
  uint64_t x = LOAD(&v->e->expires);
  if (LOAD(&v->e->gen) != LOAD(&d->h->flush_gen)) x = 1; /* flushed */
  if (x == 0) {
    *(double *)arg = 0;
  } else {
    if (*now == 0) *now = now_ms();
    *(double *)arg = ((double)x - (double)*now) / 1000.0;
  }
  return SHM_OK;
}

int shm_dict_ttl(shm_dict *d, const char *k, size_t kl, double *ttl) {
  return dict_read(d, k, kl, read_ttl, ttl);
}

static int read_llen(shm_dict *d, const dview *v, uint64_t *now, void *arg) {
  if (expired(d, v->e, now)) return SHM_DICT_NOTFOUND;
  if (v->type != DV_LIST) return SHM_DICT_NOTLIST;
  *(uint32_t *)arg = LOAD(&v->e->vlen);
  return SHM_OK;
}

int shm_dict_llen(shm_dict *d, const char *k, size_t kl, uint32_t *n) {
  int r = dict_read(d, k, kl, read_llen, n);
  if (r == SHM_DICT_NOTFOUND) {
    *n = 0;
    r = SHM_OK;
  }
  return r;
}

/* expire: any entry that is there (an expired one comes back, as ngx) */
int shm_dict_expire(shm_dict *d, const char *k, size_t kl, double exptime) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref;
  uint64_t now = 0;
  int r;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if (!lookup(d, k, kl, hash, &ref, NULL)) r = corrupt(d, "bad hash chain");
  else if (ref == D_NIL) r = SHM_DICT_NOTFOUND;
  else {
    dentry *e = entryof(d, ref);
    bopen(d, hash);
    jw(d, &e->gen, d->h->flush_gen);
    jw64(d, &e->expires, expiry(exptime, &now));
  }
  return txn_end(d, r);
}

/* a + b as Lua does: integers wrap, anything else is a double */
static int num_add(int ta, const unsigned char *a, int tb, const unsigned char *b,
                   unsigned char *out) {
  int64_t ia, ib;
  double da, db;
  if (ta == DV_INT && tb == DV_INT) {
    int64_t sum;
    memcpy(&ia, a, 8);
    memcpy(&ib, b, 8);
#if LUA_VERSION_NUM < 503
    /* where numbers are doubles, as ngx: past the int64 range, a double */
    if (__builtin_add_overflow(ia, ib, &sum)) {
      da = (double)ia + (double)ib;
      memcpy(out, &da, 8);
      return DV_NUM;
    }
#else
    sum = (int64_t)((uint64_t)ia + (uint64_t)ib); /* wraps, as Lua's integers */
#endif
    memcpy(out, &sum, 8);
    return DV_INT;
  }
  if (ta == DV_INT) {
    memcpy(&ia, a, 8);
    da = (double)ia;
  } else {
    memcpy(&da, a, 8);
  }
  if (tb == DV_INT) {
    memcpy(&ib, b, 8);
    db = (double)ib;
  } else {
    memcpy(&db, b, 8);
  }
  da += db;
  memcpy(out, &da, 8);
  return DV_NUM;
}

/* incr: io holds the step (DV_NUM or DV_INT, 8 bytes at io->ptr, writable)
 * and gets the new value; init (or NULL) makes a missing key. */
int shm_dict_incr(shm_dict *d, const char *k, size_t kl, dval *io, const dval *init,
                         double init_ttl, int *forcible) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref;
  uint64_t now = 0;
  unsigned char nv[8];
  dview v;
  int r;
  *forcible = 0;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((r = write_begin(d, k, kl, hash, &now, &ref, NULL, &v)) != SHM_OK) goto done;
  if (ref == D_NIL || expired(d, v.e, &now)) {
    int t;
    if (init == NULL) {
      r = SHM_DICT_NOTFOUND;
      goto done;
    }
    t = num_add(init->type, (const unsigned char *)init->ptr, io->type,
                (const unsigned char *)io->ptr, nv);
    r = new_entry(d, k, kl, hash, t, nv, 8, 0, expiry(init_ttl, &now), 0, ref, forcible);
    io->type = t;
  } else {
    dentry *e = v.e;
    uint32_t type = v.type;
    if ((type != DV_NUM && type != DV_INT) || v.vlen != 8) {
      r = SHM_DICT_NOTNUM;
      goto done;
    }
    if (!lru_ok(d, ref)) {
      r = corrupt(d, "bad LRU list");
      goto done;
    }
    io->type = num_add((int)type, v.val, io->type, (const unsigned char *)io->ptr, nv);
    bopen(d, hash);
    jwrite(d, v.val, nv, 8);
    if ((uint32_t)io->type != type) jw(d, &e->meta, MKMETA(kl, io->type));
    lru_touch(d, ref);
  }
  memcpy((void *)io->ptr, nv, 8);
done:
  return txn_end(d, r);
}

/* lpush/rpush: the new length in *n.  Lists never evict (as ngx). */
int shm_dict_push(shm_dict *d, const char *k, size_t kl, int left, const dval *v,
                         uint32_t *n) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref, *link, node, *lw, end;
  uint64_t now = 0;
  int r, forcible = 0;
  dentry *e;
  dnode *nd;
  dview lv;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((r = write_begin(d, k, kl, hash, &now, &ref, &link, &lv)) != SHM_OK) goto done;
  if (ref != D_NIL) {
    int x;
    e = lv.e;
    x = expired(d, e, &now);
    if (!x && lv.type != DV_LIST) {
      r = SHM_DICT_NOTLIST;
      goto done;
    }
    if (x) { /* an expired value: freed in a step of its own (as expire_tail
              * would), so that the new list never reuses a block this
              * transaction freed: a rollback could not restore its bytes */
      if ((r = unlink_entry(d, ref, link)) != SHM_OK || (r = step(d)) != SHM_OK) goto done;
      ref = D_NIL;
    }
  }
  if (ref == D_NIL) {
    r = new_entry(d, k, kl, hash, DV_LIST, NULL, 0, 0, 0, 1, D_NIL, &forcible);
    if (r != SHM_OK) goto done;
  }
  if ((r = alloc_evicting(d, sizeof(dnode) + v->len, B_NODE, 1, ref, &node, &forcible)) != SHM_OK)
    goto done;
  if (!lookupv(d, k, kl, hash, &ref, NULL, &lv) || ref == D_NIL || lv.type != DV_LIST) {
    r = corrupt(d, "bad hash chain");
    goto done;
  }
  e = lv.e;
  lw = (uint32_t *)(void *)lv.val; /* 8-aligned, inside the block (the view checked) */
  end = left ? lw[0] : lw[1];
  if (end != D_NIL && !nodeok(d, end)) {
    r = corrupt(d, "bad list");
    goto done;
  }
  nd = nodeof(d, node);
  nd->meta = (uint32_t)v->type;
  nd->vlen = (uint32_t)v->len;
  nd->pad = 0;
  nd->next = left ? end : D_NIL;
  nd->prev = left ? D_NIL : end;
  memcpy(nd + 1, v->ptr, v->len);
  bopen(d, hash);
  if (end == D_NIL) jw(d, &lw[left ? 1 : 0], node); /* the only element: both ends */
  else if (left) jw(d, &nodeof(d, end)->prev, node);
  else jw(d, &nodeof(d, end)->next, node);
  jw(d, &lw[left ? 0 : 1], node);
  jw(d, &e->vlen, e->vlen + 1);
  *n = e->vlen;
  if (lru_ok(d, ref)) lru_touch(d, ref);
  else r = corrupt(d, "bad LRU list");
done:
  return txn_end(d, r);
}

/* lpop/rpop into buf; NOTFOUND when missing or expired; the last element
 * takes the key with it (as ngx). */
int shm_dict_pop(shm_dict *d, const char *k, size_t kl, int left, dval *out, char *buf,
                        size_t cap) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref, *link, node, other, *lw, ntype, nlen;
  uint64_t now = 0;
  int r;
  dentry *e;
  dnode *nd;
  dview lv;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((r = write_begin(d, k, kl, hash, &now, &ref, &link, &lv)) != SHM_OK) goto done;
  if (ref == D_NIL || expired(d, lv.e, &now)) {
    r = SHM_DICT_NOTFOUND;
    goto done;
  }
  e = lv.e;
  if (lv.type != DV_LIST) {
    r = SHM_DICT_NOTLIST;
    goto done;
  }
  lw = (uint32_t *)(void *)lv.val;
  node = left ? lw[0] : lw[1];
  if (node == D_NIL || !nodeview(d, node, &ntype, &nlen) || !lru_ok(d, ref)) {
    r = corrupt(d, "bad list");
    goto done;
  }
  nd = nodeof(d, node);
  out->type = (int)ntype;
  out->len = nlen;
  out->flags = 0;
  if (out->len > cap) {
    r = SHM_DICT_BUFSMALL;
    goto done;
  }
  memcpy(buf, nd + 1, out->len);
  out->ptr = buf;
  if (e->vlen <= 1) {
    r = unlink_entry(d, ref, link);
    goto done;
  }
  other = left ? nd->next : nd->prev;
  if (other == D_NIL || !nodeok(d, other)) {
    r = corrupt(d, "bad list");
    goto done;
  }
  bopen(d, hash);
  jw(d, left ? &nodeof(d, other)->prev : &nodeof(d, other)->next, D_NIL);
  jw(d, &lw[left ? 0 : 1], other);
  jw(d, &e->vlen, e->vlen - 1);
  lru_touch(d, ref);
  r = bfree(d, node);
done:
  return txn_end(d, r);
}

/* flush_all: O(1) (every entry stored before is now expired), then frees
 * up to 3 from the LRU tail, as ngx's forced round does. */
int shm_dict_flush_all(shm_dict *d) {
  uint64_t now = 0;
  int r;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  jw(d, &d->h->flush_gen, d->h->flush_gen + 1);
  if ((r = step(d)) == SHM_OK) r = expire_tail(d, 3, &now);
  return txn_end(d, r);
}

/* flush_expired: free up to max (0 = all) expired entries, from the LRU
 * tail, each its own step (with its list's elements). */
int shm_dict_flush_expired(shm_dict *d, uint32_t max, uint32_t *freed) {
  uint64_t now = 0;
  uint32_t ref;
  dwalk w;
  int r;
  *freed = 0;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  walk_init(&w, d->nunits);
  ref = d->h->lru_tail;
  while (ref != D_NIL && (max == 0 || *freed < max)) {
    uint32_t prev;
    dentry *e;
    if (!walk_ok(&w, ref) || !entryok(d, ref) || !lru_ok(d, ref)) {
      r = corrupt(d, "bad LRU list");
      break;
    }
    e = entryof(d, ref);
    prev = e->lru_prev;
    if (expired(d, e, &now)) {
      if ((r = drop_step(d, ref, &d->h->expired)) != SHM_OK) break;
      if (LOAD(&d->h->gc_head) != D_NIL && (r = gc_drain(d)) != SHM_OK) break;
      (*freed)++;
    }
    ref = prev;
  }
  return txn_end(d, r);
}

/* get_keys: live keys (up to max, 0 = all), least recently used first, into
 * buf as [u16 length][bytes]...; BUFSMALL with *need when it does not fit. */
int shm_dict_keys(shm_dict *d, uint32_t max, char *buf, size_t cap, size_t *need,
                         uint32_t *nkeys) {
  uint64_t now = 0;
  uint32_t ref;
  size_t used = 0;
  dwalk w;
  int r;
  *nkeys = 0;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  walk_init(&w, d->nunits);
  for (ref = d->h->lru_tail; ref != D_NIL && (max == 0 || *nkeys < max);) {
    dentry *e;
    dview v;
    if (!walk_ok(&w, ref) || !viewof(d, ref, &v)) {
      r = corrupt(d, "bad LRU list");
      break;
    }
    e = v.e;
    if (!expired(d, e, &now)) {
      uint16_t kl = (uint16_t)v.klen;
      if (used + 2 + kl <= cap) {
        memcpy(buf + used, &kl, 2);
        memcpy(buf + used + 2, v.key, kl);
      }
      used += 2 + (size_t)kl;
      (*nkeys)++;
    }
    ref = e->lru_prev;
  }
  *need = used;
  if (r == SHM_OK && used > cap) r = SHM_DICT_BUFSMALL;
  return txn_end(d, r);
}

/* Check the whole structure (under the lock): the free lists hold
 * free_units units of well-formed, doubly linked free blocks; the LRU list
 * holds count entries, doubly linked, each in its hash chain; the "to free"
 * chain is list elements.  Every walk bounded and cycle-checked.  NULL, or
 * what is wrong; *live: the entries not expired. */
static const char *check(shm_dict *d, uint64_t *live) {
  uint64_t units = 0, now = 0;
  uint32_t o, ref, prev, n = 0;
  dwalk w;
  *live = 0;
  for (o = 0; o <= d->maxorder; o++) {
    walk_init(&w, d->nunits);
    for (prev = D_NIL, ref = d->h->freelist[o]; ref != D_NIL; prev = ref, ref = blockw(d, ref)[1]) {
      if (!walk_ok(&w, ref) || !blockok(d, ref, B_FREE, o)) return "bad free list";
      if (blockw(d, ref)[2] != prev) return "bad free list links";
      units += 1u << o;
    }
  }
  if (units != d->h->free_units) return "free space does not add up";
  walk_init(&w, d->nunits);
  for (prev = D_NIL, ref = d->h->lru_head; ref != D_NIL; prev = ref, ref = entryof(d, ref)->lru_next) {
    if (!walk_ok(&w, ref) || !entryok(d, ref)) return "bad LRU list";
    if (entryof(d, ref)->lru_prev != prev) return "bad LRU links";
    if (linkto(d, ref) == NULL) return "bad hash chain";
    if (!expired(d, entryof(d, ref), &now)) (*live)++;
    n++;
  }
  if (prev != d->h->lru_tail) return "bad LRU tail";
  if (n != d->h->count) return "entry count does not add up";
  walk_init(&w, d->nunits);
  for (ref = d->h->gc_head; ref != D_NIL; ref = nodeof(d, ref)->next)
    if (!walk_ok(&w, ref) || !nodeok(d, ref)) return "bad list";
  return NULL;
}

/* stat: the figures, after checking the whole structure. */
int shm_dict_stat(shm_dict *d, dstat *st) {
  const char *why;
  int r;
  memset(st, 0, sizeof *st);
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((why = check(d, &st->count)) != NULL) return txn_end(d, corrupt(d, why));
  st->evicted = d->h->evicted;
  st->expired = d->h->expired;
  st->recovered = d->h->recovered;
  st->capacity = d->size;
  st->free = (uint64_t)d->h->free_units << D_UNITSHIFT;
  return txn_end(d, r);
}

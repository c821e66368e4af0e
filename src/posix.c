/*
 * POSIX shared memory objects (shm_open), shm_posix_ops; and what every
 * segment backed by a descriptor shares with file.c's maps (mmap of the
 * descriptor, reserving its pages, fstat/fchmod/fchown, unmapping).
 */
/***
@module shm
*/
#include "shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define SHM_DIR "/dev/shm"

/* ---- mapped descriptors (POSIX objects and files) ---- */

/* Map `size` bytes of `fd` into `s`, which takes ownership of fd on success;
 * its first `reserved` bytes are backed.  Returns 0 or errno (fd untouched
 * on failure).  @see mmap(2) */
int shm_fd_map(shm_segment *s, int fd, size_t size, int readonly, size_t reserved) {
  void *p = mmap(NULL, size, PROT_READ | (readonly ? 0 : PROT_WRITE), MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errno;
  s->addr = (unsigned char *)p;
  s->size = size;
  s->maplen = size;
  s->fd = fd;
  s->readonly = readonly;
  s->resv_lo = 0;
  s->resv_hi = readonly ? 0 : reserved < size ? reserved : size;
  return 0;
}

/* fallocate(2) itself, not posix_fallocate(3): where the file system cannot
 * reserve, glibc's emulation writes a zero byte into every block that reads
 * zero, which races with the writers of an object already in use.
 * @see fallocate(2) */
static int reserve_range(int fd, int mode, size_t off, size_t len) {
  int r;
  do r = fallocate(fd, mode, (off_t)off, (off_t)len);
  while (r != 0 && errno == EINTR);
  return r == 0 ? 0 : errno;
}

/* Where the file system cannot reserve: nothing to do but size the file. */
#define CANNOT_RESERVE(en) ((en) == EOPNOTSUPP || (en) == ENOSYS)

int shm_fd_size(int fd, size_t size, size_t reserve, const struct stat *st, size_t *reserved) {
  size_t have = st != NULL ? (size_t)st->st_size : 0;
  int en;
  *reserved = 0;
  if (reserve >= size) { /* all of it: fallocate sizes it too */
    if (st != NULL && size <= have && (size_t)st->st_blocks * 512 >= size) en = 0; /* all there */
    else en = reserve_range(fd, 0, 0, size);
    if (CANNOT_RESERVE(en)) en = size <= have || ftruncate(fd, (off_t)size) == 0 ? 0 : errno;
    if (en == 0) *reserved = size;
    return en;
  }
  if (size > have && ftruncate(fd, (off_t)size) != 0) return errno;
  en = reserve == 0 ? 0 : reserve_range(fd, 0, 0, reserve);
  if (CANNOT_RESERVE(en)) en = 0;
  if (en == 0) *reserved = reserve;
  return en;
}

/* KEEP_SIZE: a range beyond the end of an object another process shrank
 * does not grow it back (a touch there is SIGBUS anyway, see segment). */
int shm_fd_reserve(shm_segment *s, size_t off, size_t len) {
  int en = reserve_range(s->fd, FALLOC_FL_KEEP_SIZE, off, len);
  return CANNOT_RESERVE(en) ? EOPNOTSUPP : en;
}

int shm_fd_unmap(shm_segment *s) {
  int en = 0;
  if (s->addr != NULL && munmap(s->addr, s->maplen) != 0) en = errno;
  s->addr = NULL;
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  return en;
}

/* The name or path, kept in the segment's user value (stack index 1). */
void shm_fd_describe(lua_State *L, shm_segment *s) {
  (void)s;
  lua_getiuservalue(L, 1, 1);
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "?");
  }
}

int shm_fd_field(lua_State *L, shm_segment *s, const char *k) {
  if (strcmp(k, s->ops->namefield) != 0) return 0;
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static void pushinfo(lua_State *L, const char *kind, const char *namekey, const char *name,
                     const struct stat *st) {
  lua_createtable(L, 0, 9);
  shm_setfield_str(L, "kind", kind);
  shm_setfield_str(L, namekey, name);
  shm_setfield_int(L, "size", (lua_Integer)st->st_size);
  shm_setfield_int(L, "mode", st->st_mode & 0777);
  shm_setfield_int(L, "uid", st->st_uid);
  shm_setfield_int(L, "gid", st->st_gid);
  shm_setfield_int(L, "atime", (lua_Integer)st->st_atime);
  shm_setfield_int(L, "mtime", (lua_Integer)st->st_mtime);
  shm_setfield_int(L, "ctime", (lua_Integer)st->st_ctime);
}

/* @see fstat(2) */
int shm_fd_stat(lua_State *L, shm_segment *s) {
  struct stat st;
  if (fstat(s->fd, &st) != 0) {
    int en = errno;
    shm_fd_describe(L, s);
    return shm_fail(L, en, "seg:stat(%s)", lua_tostring(L, -1));
  }
  shm_fd_describe(L, s);
  pushinfo(L, s->ops->kind, s->ops->namefield, lua_tostring(L, -1), &st);
  return 1;
}

/* @see fchmod(2) */
int shm_fd_chmod(lua_State *L, shm_segment *s, int mode) {
  int ok = fchmod(s->fd, (mode_t)mode) == 0;
  int en = errno;
  shm_fd_describe(L, s);
  return shm_ok(L, ok, en, "seg:chmod(%s)", lua_tostring(L, -1));
}

/* @see fchown(2) */
int shm_fd_chown(lua_State *L, shm_segment *s, uid_t uid, gid_t gid) {
  int ok = fchown(s->fd, uid, gid) == 0;
  int en = errno;
  shm_fd_describe(L, s);
  return shm_ok(L, ok, en, "seg:chown(%s)", lua_tostring(L, -1));
}

/* Unlink only if `path` still refers to our object: after a remove and a
 * re-create by someone else, the name is theirs. */
int shm_fd_remove(lua_State *L, shm_segment *s, const char *path, int (*unlinkf)(const char *)) {
  struct stat mine, now;
  int ok, en;
  const char *name;
  shm_fd_describe(L, s);
  name = lua_tostring(L, -1);
  if (fstat(s->fd, &mine) != 0 || stat(path, &now) != 0) {
    ok = 0;
  } else if (mine.st_dev != now.st_dev || mine.st_ino != now.st_ino) {
    ok = 0;
    errno = ENOENT;
  } else {
    ok = unlinkf(name) == 0;
  }
  en = errno;
  return shm_ok(L, ok, en, "seg:remove(%s)", name);
}

/* ---- POSIX shared memory objects ---- */

/* @see shm_unlink(3) */
static int posix_remove(lua_State *L, shm_segment *s) {
  char buf[PATH_MAX];
  lua_getiuservalue(L, 1, 1);
  snprintf(buf, sizeof buf, SHM_DIR "%s", lua_tostring(L, -1));
  lua_pop(L, 1);
  return shm_fd_remove(L, s, buf, shm_unlink);
}

/* The memory is the object: nothing to flush. */
static int posix_sync(lua_State *L, shm_segment *s) {
  (void)s;
  lua_pushboolean(L, 1);
  return 1;
}

const shm_ops shm_posix_ops = {
  "posix", "name", shm_fd_unmap, shm_fd_describe, shm_fd_field,
  shm_fd_stat, posix_remove, shm_fd_chmod, shm_fd_chown, posix_sync, shm_fd_reserve,
};

/* Close fd and unlink the object if this call created it. */
static void discard(int fd, const char *created) {
  if (created != NULL) shm_unlink(created);
  if (fd >= 0) close(fd);
}

static int fail_fd(lua_State *L, int en, int fd, const char *created, const char *what,
                   const char *name) {
  discard(fd, created);
  return shm_fail(L, en, "%s(%s)", what, name);
}

/* A failure to reserve `size` bytes of fd ("reserving [its ]N bytes"); with
 * ENOSPC the message says what the file system has free. */
static int fail_size(lua_State *L, int en, int fd, const char *created, const char *what,
                     const char *name, const char *its, size_t size) {
  struct statvfs fs;
  char hint[64];
  int known = en == ENOSPC && fd >= 0 && fstatvfs(fd, &fs) == 0;
  if (known)
    snprintf(hint, sizeof hint, "%llu bytes free in " SHM_DIR,
             (unsigned long long)fs.f_bavail * (unsigned long long)fs.f_frsize);
  discard(fd, created);
  shm_fail(L, en, "%s(%s): reserving %s%zu bytes", what, name, its, size);
  return known ? shm_hint(L, hint) : 3;
}

static void setname(lua_State *L, const char *name) {
  lua_pushstring(L, name);
  lua_setiuservalue(L, -2, 1);
}

/* @see shm_open(3), fallocate(2), mmap(2) */
int shm_posix_create(lua_State *L, size_t reserve) {
  const char *name = shm_checkname(L, 1);
  size_t size = shm_checksize(L, 2), reserved;
  int mode = shm_optmode(L, 3, 0600);
  shm_segment *s = shm_newsegment(L, &shm_posix_ops);
  int en, fd;
  setname(L, name);
  fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) return fail_fd(L, errno, -1, NULL, "shm.create", name);
  /* the mode asked for, not the one the umask leaves */
  if (fchmod(fd, (mode_t)mode) != 0) return fail_fd(L, errno, fd, name, "shm.create", name);
  en = shm_fd_size(fd, size, reserve, NULL, &reserved);
  if (en != 0) return fail_size(L, en, fd, name, "shm.create", name, "", reserve < size ? reserve : size);
  en = shm_fd_map(s, fd, size, 0, reserved);
  if (en != 0) return fail_fd(L, en, fd, name, "shm.create", name);
  return 1;
}

/* POSIX half of shm.open (documented in core.c). */
int shm_posix_open(lua_State *L, size_t reserve) {
  const char *name = shm_checkname(L, 1);
  int readonly = shm_optaccess(L, 2);
  size_t size = shm_optsize(L, 3), have, reserved = 0;
  int mode = shm_optmode(L, 4, 0600);
  int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  const char *created = NULL;
  struct stat st;
  shm_segment *s;
  int en, fd, tries;
  luaL_argcheck(L, !(readonly && size > 0), 3, "cannot create a segment read-only");
  s = shm_newsegment(L, &shm_posix_ops);
  setname(L, name);
  if (size > 0) {
    /* create-or-open without a race: O_EXCL tells us whether we made it
     * (then we set its exact mode); EEXIST then ENOENT means it was removed
     * in between, so try again. */
    for (tries = 0;; tries++) {
      fd = shm_open(name, flags | O_CREAT | O_EXCL, (mode_t)mode);
      if (fd >= 0) {
        created = name;
        if (fchmod(fd, (mode_t)mode) != 0) return fail_fd(L, errno, fd, created, "shm.open", name);
        break;
      }
      if (errno != EEXIST || tries >= 100) return fail_fd(L, errno, -1, NULL, "shm.open", name);
      fd = shm_open(name, flags, 0);
      if (fd >= 0 || errno != ENOENT) break;
    }
  } else {
    fd = shm_open(name, flags, 0);
  }
  if (fd < 0) {
    en = errno;
    shm_fail(L, en, "shm.open(%s)", name);
    return en == ENOENT ? shm_hint(L, "pass a size to create it") : 3;
  }
  if (fstat(fd, &st) != 0) return fail_fd(L, errno, fd, created, "shm.open", name);
  have = (size_t)st.st_size;
  if (size > 0 && have > 0 && have < size && created == NULL) {
    /* someone else's object: never resized behind its owner's back */
    discard(fd, NULL);
    return shm_fail(L, EINVAL, "shm.open(%s): exists with %zu bytes, %zu asked", name, have, size);
  }
  if (size == 0 && have == 0) {
    discard(fd, NULL);
    return shm_fail(L, EINVAL, "shm.open(%s): the object is empty (size 0)", name);
  }
  /* A new object (ours, or one a racing opener is creating: size 0 for an
   * instant) gets the size asked; an existing one is mapped whole.  The
   * pages of a writable mapping are reserved (those of the header, for a
   * structure): a sparse object on a full tmpfs is an error here, never
   * SIGBUS at the first write. */
  if (have >= size) size = have;
  en = readonly ? 0 : shm_fd_size(fd, size, reserve, &st, &reserved);
  if (en != 0)
    return fail_size(L, en, fd, created, "shm.open", name, created ? "" : "its ",
                     reserve < size ? reserve : size);
  en = shm_fd_map(s, fd, size, readonly, reserved);
  if (en != 0) return fail_fd(L, en, fd, created, "shm.open", name);
  return 1;
}

/* @see shm_unlink(3) */
int shm_posix_unlink(lua_State *L) {
  const char *name = shm_checkname(L, 1);
  int ok = shm_unlink(name) == 0;
  return shm_ok(L, ok, errno, "shm.unlink(%s)", name);
}

/* Append every POSIX object in /dev/shm (not semaphores) to the table at t. */
int shm_posix_list(lua_State *L, int t, lua_Integer *n) {
  DIR *d = opendir(SHM_DIR);
  struct dirent *e;
  struct stat st;
  if (d == NULL) return 0; /* no POSIX shared memory on this system */
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || strncmp(e->d_name, "sem.", 4) == 0) continue;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
      continue;
    lua_pushfstring(L, "/%s", e->d_name);
    pushinfo(L, "posix", "name", lua_tostring(L, -1), &st);
    lua_remove(L, -2);
    lua_rawseti(L, t, ++*n);
  }
  closedir(d);
  return 0;
}

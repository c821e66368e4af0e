/*
 * POSIX shared memory objects (shm_open) and shared file maps (mmap of a
 * regular file).  Both keep their descriptor for fstat/fchmod/fchown.
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
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHM_DIR "/dev/shm"

/* Map `size` bytes of `fd` into `s`, which takes ownership of fd on success.
 * Returns 0 or errno (fd untouched on failure). */
static int map_fd(shm_segment *s, int fd, size_t size, int readonly) {
  void *p = mmap(NULL, size, PROT_READ | (readonly ? 0 : PROT_WRITE), MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errno;
  s->addr = (unsigned char *)p;
  s->size = size;
  s->maplen = size;
  s->fd = fd;
  s->readonly = readonly;
  return 0;
}

/* Grow the object behind fd to `size` bytes, backed by real pages or blocks
 * so that a full tmpfs or disk is an error now, not SIGBUS on first touch. */
static int reserve(int fd, size_t size) {
  int en = posix_fallocate(fd, 0, (off_t)size);
  if (en == EOPNOTSUPP || en == ENOSYS) en = ftruncate(fd, (off_t)size) == 0 ? 0 : errno;
  return en;
}

/* A failure after the descriptor was opened: close (and unlink what we
 * created) before pushing the error. */
static int fail_fd(lua_State *L, int en, int fd, const char *created, const char *what,
                   const char *obj) {
  if (created != NULL) shm_unlink(created);
  if (fd >= 0) close(fd);
  return shm_fail(L, en, "%s(%s)", what, obj);
}

static void setname(lua_State *L, const char *name) {
  lua_pushstring(L, name);
  lua_setiuservalue(L, -2, 1);
}

int shm_posix_create(lua_State *L) {
  const char *name = shm_checkname(L, 1);
  size_t size = shm_checksize(L, 2);
  int mode = shm_checkmode(L, 3, 0600);
  shm_segment *s = shm_newsegment(L, SHM_POSIX);
  int en, fd;
  setname(L, name);
  fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) return fail_fd(L, errno, -1, NULL, "shm.create", name);
  /* the mode asked for, not the one the umask leaves */
  if (fchmod(fd, (mode_t)mode) != 0) return fail_fd(L, errno, fd, name, "shm.create", name);
  en = reserve(fd, size);
  if (en == 0) en = map_fd(s, fd, size, 0);
  if (en != 0) return fail_fd(L, en, fd, name, "shm.create", name);
  return 1;
}

int shm_posix_open(lua_State *L) {
  const char *name = shm_checkname(L, 1);
  int readonly = shm_checkaccess(L, 2);
  size_t size = lua_isnoneornil(L, 3) ? 0 : shm_checksize(L, 3);
  int mode = shm_checkmode(L, 4, 0600);
  int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  const char *created = NULL;
  struct stat st;
  shm_segment *s;
  int en, fd, tries;
  luaL_argcheck(L, !(readonly && size > 0), 3, "cannot create a segment read-only");
  s = shm_newsegment(L, SHM_POSIX);
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
  if (fd < 0) return fail_fd(L, errno, -1, NULL, "shm.open", name);
  if (fstat(fd, &st) != 0) return fail_fd(L, errno, fd, created, "shm.open", name);
  if ((size_t)st.st_size < size) {
    /* new (or being created by a racing opener): grow it to the size asked */
    en = reserve(fd, size);
    if (en != 0) return fail_fd(L, en, fd, created, "shm.open", name);
  } else {
    size = (size_t)st.st_size;
  }
  if (size == 0) return fail_fd(L, EINVAL, fd, NULL, "shm.open", name); /* empty object */
  en = map_fd(s, fd, size, readonly);
  if (en != 0) return fail_fd(L, en, fd, created, "shm.open", name);
  return 1;
}

int shm_posix_unlink(lua_State *L) {
  const char *name = shm_checkname(L, 1);
  int ok = shm_unlink(name) == 0;
  return shm_ok(L, ok, errno, "shm.unlink(%s)", name);
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

/***
Map a regular file shared (persistent, unlike System V and POSIX memory).
With `size` the file is created (`0600`) or grown to that size, its blocks
reserved so that a full disk is an error here, never SIGBUS later; a larger file
is mapped whole.
@function map
@tparam string path
@tparam[opt] integer size
@tparam[opt="rw"] string access
@treturn segment
@error `nil, message, errno`
@usage local seg = assert(shm.map("/var/lib/app/state", 65536))
*/
int shm_file_map(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t size = lua_isnoneornil(L, 2) ? 0 : shm_checksize(L, 2);
  int readonly = shm_checkaccess(L, 3);
  int flags = (readonly ? O_RDONLY : O_RDWR | (size > 0 ? O_CREAT : 0)) | O_CLOEXEC;
  struct stat st;
  shm_segment *s = shm_newsegment(L, SHM_FILE);
  char *real;
  int en, fd;
  fd = open(path, flags, 0600);
  if (fd < 0) return fail_fd(L, errno, -1, NULL, "shm.map", path);
  if (fstat(fd, &st) != 0) return fail_fd(L, errno, fd, NULL, "shm.map", path);
  if (!S_ISREG(st.st_mode)) return fail_fd(L, EINVAL, fd, NULL, "shm.map", path);
  if ((size_t)st.st_size < size) {
    if (readonly) return fail_fd(L, EINVAL, fd, NULL, "shm.map", path); /* cannot grow it */
    en = reserve(fd, size);
    if (en != 0) return fail_fd(L, en, fd, NULL, "shm.map", path);
  } else {
    size = (size_t)st.st_size;
  }
  if (size == 0) return fail_fd(L, EINVAL, fd, NULL, "shm.map", path); /* empty file */
  /* keep the absolute path, so remove() unlinks this file whatever the cwd */
  real = realpath(path, NULL);
  lua_pushstring(L, real != NULL ? real : path);
  free(real);
  lua_setiuservalue(L, -2, 1);
  en = map_fd(s, fd, size, readonly);
  if (en != 0) return fail_fd(L, en, fd, NULL, "shm.map", path);
  return 1;
}

int shm_fd_stat(lua_State *L, shm_segment *s) {
  struct stat st;
  if (fstat(s->fd, &st) != 0) {
    int en = errno;
    shm_describe(L, 1);
    return shm_fail(L, en, "seg:stat(%s)", lua_tostring(L, -1));
  }
  lua_getiuservalue(L, 1, 1);
  pushinfo(L, s->kind == SHM_POSIX ? "posix" : "file", s->kind == SHM_POSIX ? "name" : "path",
           lua_tostring(L, -1), &st);
  return 1;
}

int shm_fd_remove(lua_State *L, shm_segment *s) {
  char buf[PATH_MAX];
  const char *name, *p;
  struct stat mine, now;
  int ok;
  lua_getiuservalue(L, 1, 1);
  name = lua_tostring(L, -1);
  p = name;
  if (s->kind == SHM_POSIX) {
    snprintf(buf, sizeof buf, SHM_DIR "%s", name);
    p = buf;
  }
  /* Unlink only if the name still refers to our object: after a remove and
   * a re-create by someone else, the name is theirs. */
  if (fstat(s->fd, &mine) != 0 || stat(p, &now) != 0) {
    ok = 0;
  } else if (mine.st_dev != now.st_dev || mine.st_ino != now.st_ino) {
    ok = 0;
    errno = ENOENT;
  } else {
    ok = (s->kind == SHM_POSIX ? shm_unlink(name) : unlink(p)) == 0;
  }
  return shm_ok(L, ok, errno, "seg:remove(%s)", name);
}

int shm_fd_chmod(lua_State *L, shm_segment *s, int mode) {
  int ok = fchmod(s->fd, (mode_t)mode) == 0;
  int en = errno;
  shm_describe(L, 1);
  return shm_ok(L, ok, en, "seg:chmod(%s)", lua_tostring(L, -1));
}

int shm_fd_chown(lua_State *L, shm_segment *s, uid_t uid, gid_t gid) {
  int ok = fchown(s->fd, uid, gid) == 0;
  int en = errno;
  shm_describe(L, 1);
  return shm_ok(L, ok, en, "seg:chown(%s)", lua_tostring(L, -1));
}

int shm_fd_sync(lua_State *L, shm_segment *s) {
  int ok = msync(s->addr, s->maplen, MS_SYNC) == 0;
  int en = errno;
  shm_describe(L, 1);
  return shm_ok(L, ok, en, "seg:sync(%s)", lua_tostring(L, -1));
}

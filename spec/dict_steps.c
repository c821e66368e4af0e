/*
 * dict_steps: every image of a dict's bytes that one call produces, one
 * instruction at a time (spec/dict_killpoints_spec.lua compiles it with cc).
 *
 *   dict_steps FILE MAXSIZE LOG -- COMMAND [ARG...]
 *
 * Runs COMMAND (a Lua writer on the dict mapped from FILE) under ptrace. The
 * writer stops itself (SIGSTOP) just before the call and again just after:
 * in between, the writer is single-stepped (PTRACE_SINGLESTEP), and after
 * each instruction the bytes of FILE (mapped here, MAP_SHARED, up to MAXSIZE;
 * only its current length is read, should the file grow) are compared with
 * the last image; each new image goes to LOG as the words that changed. At
 * the second stop the writer is killed (SIGKILL): the lock word of any image
 * names a dead process, as after a kill at that instruction.
 *
 * LOG: "DSTP", u32 0; then per image: u32 step, u32 file length, u32 nrec,
 * nrec times (u32 offset, u32 length, bytes). Image 0 is the whole file at
 * the first stop. Prints "steps N images M" on success.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(2);
}

static void put32(FILE *f, uint32_t v) {
  if (fwrite(&v, 4, 1, f) != 1) die("fwrite");
}

/* the changed ranges of cur against prev (8-byte words, runs merged across
 * gaps of under 16 bytes) in a file of size bytes, written as one image;
 * prev becomes cur */
static void image(FILE *log, uint32_t step, unsigned char *prev, const unsigned char *cur, size_t size) {
  uint32_t off[4096], len[4096], n = 0;
  size_t i = 0;
  while (i < size) {
    size_t w = size - i < 8 ? size - i : 8, start, end;
    if (memcmp(prev + i, cur + i, w) == 0) {
      i += w;
      continue;
    }
    start = i;
    end = i + w;
    i = end;
    while (i < size) {
      size_t j = i, w2;
      int found = 0;
      while (j < size && j < end + 16) {
        w2 = size - j < 8 ? size - j : 8;
        if (memcmp(prev + j, cur + j, w2) != 0) {
          found = 1;
          break;
        }
        j += w2;
      }
      if (!found) break;
      w2 = size - j < 8 ? size - j : 8;
      end = j + w2;
      i = end;
    }
    if (n == 4096) { /* many: one range from here to the end */
      len[n - 1] = (uint32_t)(size - off[n - 1]);
      break;
    }
    off[n] = (uint32_t)start;
    len[n] = (uint32_t)(end - start);
    n++;
  }
  put32(log, step);
  put32(log, (uint32_t)size);
  put32(log, n);
  for (uint32_t k = 0; k < n; k++) {
    put32(log, off[k]);
    put32(log, len[k]);
    if (fwrite(cur + off[k], 1, len[k], log) != len[k]) die("fwrite");
    memcpy(prev + off[k], cur + off[k], len[k]);
  }
}

/* the file's current length, at most max */
static size_t flength(int fd, size_t max) {
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat");
  return (size_t)st.st_size < max ? (size_t)st.st_size : max;
}

int main(int argc, char **argv) {
  if (argc < 6 || strcmp(argv[4], "--") != 0) {
    fprintf(stderr, "usage: dict_steps FILE MAXSIZE LOG -- COMMAND [ARG...]\n");
    return 2;
  }
  size_t size = strtoul(argv[2], NULL, 10), length = 0;
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) die(argv[1]);
  const unsigned char *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) die("mmap");
  unsigned char *prev = calloc(size, 1);
  FILE *log = fopen(argv[3], "wb");
  if (prev == NULL || log == NULL) die("log");

  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0) die("PTRACE_TRACEME");
    execvp(argv[5], argv + 5);
    die(argv[5]);
  }
  int st;
  if (waitpid(pid, &st, 0) < 0 || !WIFSTOPPED(st)) die("exec stop");
  ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)(long)PTRACE_O_EXITKILL);

  int stepping = 0, sig = 0;
  unsigned long steps = 0, images = 0;
  for (;;) {
    if (ptrace(stepping ? PTRACE_SINGLESTEP : PTRACE_CONT, pid, NULL, (void *)(long)sig) < 0) die("ptrace");
    sig = 0;
    if (waitpid(pid, &st, 0) < 0) die("waitpid");
    if (WIFEXITED(st) || WIFSIGNALED(st)) {
      fprintf(stderr, "dict_steps: the writer ended before its second stop (%s %d)\n",
              WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
      return 3;
    }
    int s = WSTOPSIG(st);
    if (s == SIGSTOP) { /* a marker */
      if (!stepping) {
        length = flength(fd, size);
        memcpy(prev, map, length);
        if (fwrite("DSTP", 1, 4, log) != 4) die("fwrite");
        put32(log, 0);
        put32(log, 0);
        put32(log, (uint32_t)length);
        put32(log, 1);
        put32(log, 0);
        put32(log, (uint32_t)length);
        if (fwrite(prev, 1, length, log) != length) die("fwrite");
        images = 1;
        stepping = 1;
        continue;
      }
      break; /* the call is over */
    }
    if (stepping && s == SIGTRAP) {
      size_t now = flength(fd, size);
      steps++;
      if (now != length || memcmp(prev, map, now) != 0) {
        if (now < length) memset(prev + now, 0, length - now);
        length = now;
        image(log, (uint32_t)steps, prev, map, now);
        images++;
      }
      continue;
    }
    if (s != SIGTRAP) sig = s; /* deliver anything else (SIGCHLD of the marker's shell) */
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, &st, 0) >= 0 && !(WIFEXITED(st) || WIFSIGNALED(st))) {
  }
  if (fclose(log) != 0) die("fclose");
  printf("steps %lu images %lu\n", steps, images);
  return 0;
}

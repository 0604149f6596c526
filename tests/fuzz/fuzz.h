/* tests/fuzz/fuzz.h: what the libFuzzer targets share. The parsers under test read files by path, so
 * each input is written to an in-memory file (memfd) and handed over as /proc/self/fd/N: no disk, and
 * the parser sees a real file (fopen, mmap and fstat all work). */
#ifndef PREFCAP_FUZZ_H
#define PREFCAP_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Replaces the contents of the memfd named `name` (created once per name slot) with data[0..n) and
 * returns its path, valid until the next call with the same slot. Aborts on a system error: that is a
 * broken harness, not a finding. */
static inline const char *fuzz_file(int slot, const uint8_t *data, size_t n) {
  static int fds[4] = {-1, -1, -1, -1};
  static char paths[4][64];
  if (fds[slot] < 0) {
    fds[slot] = memfd_create("prefcap-fuzz", 0);
    if (fds[slot] < 0) { perror("memfd_create"); abort(); }
    snprintf(paths[slot], sizeof paths[slot], "/proc/self/fd/%d", fds[slot]);
  }
  if (ftruncate(fds[slot], 0) != 0) { perror("ftruncate"); abort(); }
  size_t off = 0;
  while (off < n) {
    ssize_t w = pwrite(fds[slot], data + off, n - off, (off_t)off);
    if (w <= 0) { perror("pwrite"); abort(); }
    off += (size_t)w;
  }
  return paths[slot];
}

/* A NUL-terminated copy (the parsers that take C strings); free() it. */
static inline char *fuzz_cstr(const uint8_t *data, size_t n) {
  char *s = malloc(n + 1);
  if (!s) abort();
  for (size_t i = 0; i < n; i++) s[i] = (char)data[i];
  s[n] = 0;
  return s;
}

/* A broken property: print and abort, so libFuzzer saves the input as a crash. */
#define FUZZ_CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); abort(); } } while (0)

#endif

/* common/readfile.c: read a whole file (see readfile.h). It reads until EOF instead of trusting the
 * size that stat reports, so files that grow, and those with no size (pipes, /proc), read whole too. */
#include "readfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* the failure's errno, in *err where asked and in errno always */
static char *fail(int *err, int e) {
  if (err) *err = e;
  errno = e;
  return NULL;
}

char *pc_read_file(const char *path, size_t *len, int *err) {
  if (len) *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return fail(err, errno);
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) { fclose(f); return fail(err, EISDIR); }
  size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) { fclose(f); return fail(err, ENOMEM); }
    n += fread(buf + n, 1, cap - n - 1, f);
    if (n < cap - 1) break;   /* EOF or an error: ferror says which */
    char *more = realloc(buf, cap * 2);
    if (!more) free(buf);
    buf = more;
    cap *= 2;
  }
  if (ferror(f)) { int e = errno ? errno : EIO; free(buf); fclose(f); return fail(err, e); }
  fclose(f);
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

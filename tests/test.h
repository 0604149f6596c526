/* tests/test.h: the smallest test harness that fails loudly.
 *
 * Each test is a void function; RUN(fn) runs it and prints one line, "PASS name", "FAIL name" or
 * "SKIP name: why", which tests/run.sh counts across every test program. EXPECT records a failure with
 * file, line and the failed expression (and a printf-style detail with EXPECTF) and lets the test go
 * on, so that one run shows every broken expectation. A test program ends with `return tst_end();`,
 * which exits non-zero when anything failed. */
#ifndef PREFCAP_TEST_H
#define PREFCAP_TEST_H
#include <stdio.h>
#include <string.h>

static int tst_failed_now, tst_pass, tst_fail, tst_skip;
static const char *tst_skip_why;

#define EXPECT(c) do { if (!(c)) { fprintf(stderr, "  %s:%d: expected %s\n", __FILE__, __LINE__, #c); \
  tst_failed_now = 1; } } while (0)
#define EXPECTF(c, ...) do { if (!(c)) { fprintf(stderr, "  %s:%d: expected %s: ", __FILE__, __LINE__, #c); \
  fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); tst_failed_now = 1; } } while (0)
/* REQUIRE stops the test at the first failure (for preconditions the rest depends on). */
#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "  %s:%d: required %s\n", __FILE__, __LINE__, #c); \
  tst_failed_now = 1; return; } } while (0)
#define SKIP(why) do { tst_skip_why = (why); return; } while (0)
#define RUN(fn) tst_run(#fn, fn)

static inline void tst_run(const char *name, void (*fn)(void)) {
  tst_failed_now = 0; tst_skip_why = NULL;
  fflush(stdout);
  fn();
  fflush(stderr);
  if (tst_failed_now) { printf("FAIL %s\n", name); tst_fail++; }
  else if (tst_skip_why) { printf("SKIP %s: %s\n", name, tst_skip_why); tst_skip++; }
  else { printf("PASS %s\n", name); tst_pass++; }
  fflush(stdout);
}

static inline int tst_end(void) {
  printf("# %d passed, %d failed, %d skipped\n", tst_pass, tst_fail, tst_skip);
  return tst_fail ? 1 : 0;
}
#endif

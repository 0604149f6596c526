/* tests/sdk/abi/client02.c: a program built against today's header, run by tests/sdk/test_abi.sh
 * against libprefcap.so: the version macros and their run-time twins, the _INIT macros, a struct from
 * a newer header (larger than the library's: its extra field ignored on the way in, left untouched on
 * the way out), a struct without its size (refused with a detail that says how to fix it), and the one
 * error channel (prefcap_errmsg(NULL) after open and upload). Exit 0: all good. */
#include "prefcap.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fprintf(stderr, "client02: " __VA_ARGS__); fputc('\n', stderr); fails++; } } while (0)

/* What a later header's structs could look like: today's fields, then one more. */
typedef struct { prefcap_generation_t g; const char *added_later; } generation_next;
typedef struct { prefcap_counters_t k; uint64_t added_later; } counters_next;

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: client02 STORE NOT-A-STORE\n"); return 2; }
  CHECK(!strcmp(prefcap_version(), PREFCAP_VERSION), "version %s, header %s", prefcap_version(), PREFCAP_VERSION);
  CHECK(prefcap_version_num() == PREFCAP_VERSION_NUM, "version_num %d, header %d", prefcap_version_num(), PREFCAP_VERSION_NUM);
  for (int c = 0; c < PREFCAP__NCODES; c++) CHECK(strcmp(prefcap_strerror(c), "unknown error code"), "code %d has no name", c);
  CHECK(!strcmp(prefcap_strerror(PREFCAP__NCODES), "unknown error code"), "a name past the last code");

  /* open failing: the detail comes back through prefcap_errmsg(NULL), naming the file and the reason */
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, argv[2]);
  prefcap_options_set_durability(o, PREFCAP_SYNC);
  prefcap_t *pc = NULL;
  int rc = prefcap_open(o, &pc);
  CHECK(rc == PREFCAP_ECORRUPT && pc == NULL, "open of a non-store gave %d", rc);
  CHECK(strstr(prefcap_errmsg(NULL), argv[2]) && strstr(prefcap_errmsg(NULL), "not a database"),
        "open's detail \"%s\"", prefcap_errmsg(NULL));
  prefcap_options_set_path(o, argv[1]);
  rc = prefcap_open(o, &pc);
  prefcap_options_free(o);
  if (rc) { fprintf(stderr, "client02: open: %s\n", prefcap_errmsg(NULL)); return 1; }

  prefcap_generation_t g = PREFCAP_GENERATION_INIT;
  CHECK(g.size == sizeof g && g.id == NULL && g.ts_ms == 0, "PREFCAP_GENERATION_INIT");
  g.id = "n1"; g.prompt = "p"; g.completion = "c";
  CHECK(prefcap_log_generation(pc, &g, NULL) == 0, "log: %s", prefcap_errmsg(pc));

  /* no size: refused, and the detail says how to fix it */
  prefcap_generation_t zero;
  memset(&zero, 0, sizeof zero);
  zero.id = "n0"; zero.prompt = "p"; zero.completion = "c";
  rc = prefcap_log_generation(pc, &zero, NULL);
  CHECK(rc == PREFCAP_EINVAL && strstr(prefcap_errmsg(pc), "PREFCAP_GENERATION_INIT"), "size 0 gave %d \"%s\"", rc,
        prefcap_errmsg(pc));
  prefcap_feedback_t f0;
  memset(&f0, 0, sizeof f0);
  f0.kind = PREFCAP_FB_COPY; f0.id = "n1";
  CHECK(prefcap_log_feedback(pc, &f0) == PREFCAP_EINVAL, "feedback without size accepted");

  /* a newer caller: larger struct, the extra field ignored */
  generation_next gn;
  memset(&gn, 0, sizeof gn);
  gn.g.size = sizeof gn; gn.g.id = "n2"; gn.g.prompt = "p"; gn.g.completion = "c2"; gn.added_later = "x";
  CHECK(prefcap_log_generation(pc, &gn.g, NULL) == 0, "a larger struct: %s", prefcap_errmsg(pc));
  prefcap_feedback_t f = PREFCAP_FEEDBACK_INIT;
  f.kind = PREFCAP_FB_COPY; f.id = "n2";
  CHECK(prefcap_log_feedback(pc, &f) == 0, "feedback: %s", prefcap_errmsg(pc));

  /* output structs: written up to the caller's size, never past it */
  counters_next kn;
  memset(&kn, 0xAB, sizeof kn);
  kn.k.size = sizeof kn;
  rc = prefcap_get_counters(pc, &kn.k);
  CHECK(rc == 0 && kn.k.size == sizeof kn, "get_counters with a larger size: %d, size %zu", rc, kn.k.size);
  CHECK(kn.k.accepted == 3 && kn.k.stored == 3, "counters %llu %llu", (unsigned long long)kn.k.accepted,
        (unsigned long long)kn.k.stored);
  uint64_t sentinel;
  memset(&sentinel, 0xAB, sizeof sentinel);
  CHECK(kn.added_later == sentinel, "the library wrote past its own struct");
  prefcap_counters_t k0;
  memset(&k0, 0, sizeof k0);
  CHECK(prefcap_get_counters(pc, &k0) == PREFCAP_EINVAL, "counters without a size accepted");
  prefcap_export_result_t r0;
  memset(&r0, 0, sizeof r0);
  prefcap_export_options_t *eo = prefcap_export_options_new();
  CHECK(prefcap_export(pc, eo, &r0) == PREFCAP_EINVAL, "an export result without a size accepted");
  /* an options setter's refusal: the detail names the call and the bad value */
  CHECK(prefcap_export_options_set_signals(eo, "edit,edti") == PREFCAP_EINVAL &&
        strstr(prefcap_errmsg(NULL), "set_signals") && strstr(prefcap_errmsg(NULL), "'edti'"),
        "set_signals detail \"%s\"", prefcap_errmsg(NULL));
  prefcap_export_options_free(eo);

  /* upload: no errbuf any more; the detail is prefcap_errmsg(NULL) */
  rc = prefcap_upload(NULL, argv[1], "ftp://example.com/x");
  CHECK(rc == PREFCAP_EINVAL && strstr(prefcap_errmsg(NULL), "only http"), "upload detail \"%s\"", prefcap_errmsg(NULL));
  rc = prefcap_upload(NULL, "/nonexistent/file.jsonl", "http://127.0.0.1:9/x");
  CHECK(rc == PREFCAP_EIO && strstr(prefcap_errmsg(NULL), "/nonexistent/file.jsonl"), "upload of a missing file: %d \"%s\"",
        rc, prefcap_errmsg(NULL));
  CHECK(prefcap_close(pc, -1) == 0, "close");
  if (!fails) printf("client02: ok\n");
  return fails ? 1 : 0;
}

/* tests/sdk/abi/client01.c: a program written and built against 0.1's header (prefcap-0.1.h, frozen:
 * the structs without a size), run by tests/sdk/test_abi.sh against today's libprefcap.so. It links
 * against stub01.c's stand-in for the 0.1 library, so its references are unversioned, as a real 0.1
 * binary's are; at run time they must land on the PREFCAP_0.1 entry points (sdk/compat/compat01.c).
 * Every field of the 0.1 structs it uses is set or read, so a layout mismatch shows. Exit 0: all good;
 * otherwise it says what differed. */
#include "prefcap-0.1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fprintf(stderr, "client01: " __VA_ARGS__); fputc('\n', stderr); fails++; } } while (0)

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: client01 STORE OUT.jsonl\n"); return 2; }
  printf("client01: built against 0.1, running with libprefcap %s\n", prefcap_version());
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, argv[1]);
  prefcap_options_set_durability(o, PREFCAP_SYNC);
  prefcap_t *pc = NULL;
  int rc = prefcap_open(o, &pc);
  prefcap_options_free(o);
  if (rc) { fprintf(stderr, "client01: open: %s\n", prefcap_strerror(rc)); return 1; }

  /* a generation, another that regenerates it (a pair), then feedback on the second */
  prefcap_message_t msgs[2] = {{"system", "Be brief."}, {"user", "What is 2+2?"}};
  prefcap_generation_t g1 = {0};
  g1.id = "abi-g1"; g1.messages = msgs; g1.n_messages = 2; g1.completion = "5"; g1.model = "acme";
  g1.model_version = "v1"; g1.params_json = "{\"temperature\":0.7}"; g1.user_id = "u1"; g1.session_id = "s1";
  g1.ts_ms = 1764000000000; g1.latency_ms = 120; g1.prompt_tokens = 9; g1.completion_tokens = 1;
  char id[PREFCAP_ID_MAX + 1] = "";
  rc = prefcap_log_generation(pc, &g1, id);
  CHECK(rc == 0, "log_generation g1: %s: %s", prefcap_strerror(rc), prefcap_errmsg(pc));
  CHECK(!strcmp(id, "abi-g1"), "id_out \"%s\"", id);
  prefcap_generation_t g2 = {0};
  g2.id = "abi-g2"; g2.messages = msgs; g2.n_messages = 2; g2.completion = "4"; g2.model = "acme";
  g2.user_id = "u1"; g2.session_id = "s1"; g2.regenerates = "abi-g1"; g2.ts_ms = 1764000005000;
  rc = prefcap_log_generation(pc, &g2, NULL);
  CHECK(rc == 0, "log_generation g2: %s: %s", prefcap_strerror(rc), prefcap_errmsg(pc));
  prefcap_feedback_t f = {0};
  f.kind = PREFCAP_FB_RATING; f.id = "abi-g2"; f.rating = 1; f.source = "human"; f.event_id = "abi-fb1";
  f.ts_ms = 1764000006000;
  rc = prefcap_log_feedback(pc, &f);
  CHECK(rc == 0, "log_feedback: %s: %s", prefcap_strerror(rc), prefcap_errmsg(pc));
  /* a refused one: the detail must name the field (the struct was read where 0.1 put it) */
  prefcap_feedback_t bad = {0};
  bad.kind = PREFCAP_FB_RATING; bad.id = "abi-g2"; bad.rating = 7;
  rc = prefcap_log_feedback(pc, &bad);
  CHECK(rc == PREFCAP_EINVAL, "a rating of 7 gave %d", rc);
  CHECK(strstr(prefcap_errmsg(pc), "rating") != NULL, "detail \"%s\"", prefcap_errmsg(pc));

  prefcap_counters_t k;
  memset(&k, 0xAB, sizeof k);
  rc = prefcap_get_counters(pc, &k);
  CHECK(rc == 0, "get_counters %d", rc);
  CHECK(k.accepted == 3 && k.stored == 3 && k.duplicates == 0 && k.dropped == 0 && k.failed == 0 && k.queued == 0,
        "counters %llu %llu %llu %llu %llu %llu", (unsigned long long)k.accepted, (unsigned long long)k.stored,
        (unsigned long long)k.duplicates, (unsigned long long)k.dropped, (unsigned long long)k.failed,
        (unsigned long long)k.queued);

  prefcap_export_options_t *eo = prefcap_export_options_new();
  prefcap_export_options_set_out(eo, argv[2]);
  prefcap_export_options_set_since_last(eo, "abi");
  prefcap_export_result_t r;
  memset(&r, 0xAB, sizeof r);
  rc = prefcap_export(pc, eo, &r);
  CHECK(rc == 0, "export: %s: %s", prefcap_strerror(rc), prefcap_errmsg(pc));
  CHECK(!strncmp(r.export_id, "exp-", 4) && strlen(r.export_id) == 36, "export_id \"%.40s\"", r.export_id);
  CHECK(r.records == 1 && r.train == 1 && r.eval == 0 && r.skipped_ai == 0 && r.skipped_dup == 0 &&
        r.nothing_new == 0 && r.resumed == 0 && r.more == 0,
        "export result %llu %llu %llu %llu %llu %d %d %d", (unsigned long long)r.records, (unsigned long long)r.train,
        (unsigned long long)r.eval, (unsigned long long)r.skipped_ai, (unsigned long long)r.skipped_dup,
        r.nothing_new, r.resumed, r.more);
  prefcap_export_options_free(eo);

  /* 0.1's upload reported in errbuf */
  char err[512];
  memset(err, 'x', sizeof err);
  rc = prefcap_upload(NULL, argv[2], "ftp://example.com/x.jsonl", err, sizeof err);
  CHECK(rc == PREFCAP_EINVAL, "upload to ftp:// gave %d", rc);
  CHECK(memchr(err, 0, sizeof err) && strstr(err, "only http"), "upload errbuf \"%.100s\"", err);

  rc = prefcap_close(pc, -1);
  CHECK(rc == 0, "close %d", rc);
  if (!fails) printf("client01: ok\n");
  return fails ? 1 : 0;
}

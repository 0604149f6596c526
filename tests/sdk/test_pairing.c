/* tests/sdk/test_pairing.c: every pairing rule of docs/pairing.md against a real store file, through
 * the public API (JSON events, the same path `prefcap ingest` takes), including out-of-order feedback,
 * replays, and re-derivation with new weights. Sync mode, so each call is committed when it returns. */
#include "test.h"
#include "util.h"
#include "internal.h"
#include <math.h>

static const char *db;
static prefcap_t *pc;

static void fresh(void) {
  db = tu_dbpath();
  pc = tu_open(db, PREFCAP_SYNC);
}

static int ev(const char *json) {
  int rc = prefcap_log_json(pc, json, strlen(json), NULL);
  if (rc) fprintf(stderr, "  log %s -> %s: %s\n", json, prefcap_strerror(rc), prefcap_errmsg(pc));
  return rc;
}

static long long q(const char *sql) {
  prefcap_derive(pc, 0);
  return tu_query(db, sql);
}

static double qd(const char *sql) {
  prefcap_derive(pc, 0);
  char *t = tu_query_text(db, sql);
  double v = t ? atof(t) : NAN;
  free(t);
  return v;
}

#define GEN(id, prompt, completion, extra) \
  "{\"type\":\"generation\",\"id\":\"" id "\",\"prompt\":\"" prompt "\",\"completion\":\"" completion "\",\"user_id\":\"u1\",\"session_id\":\"s1\"" extra "}"

// ---- edit ----------------------------------------------------------------------------------------

static void edit_makes_a_pair_weighted_by_distance(void) {
  fresh();
  REQUIRE(pc);
  EXPECT(!ev(GEN("g1", "Capital of France?", "The capital of France is Paris, a city in Europe with many museums.", "")));
  EXPECT(!ev("{\"type\":\"edit\",\"id\":\"g1\",\"text\":\"Paris.\"}"));
  EXPECT(q("SELECT count(*) FROM pairs WHERE signal='edit' AND rejected_id='g1' AND chosen_text='Paris.' AND chosen_id IS NULL") == 1);
  /* 12 words -> 1: distance 12/12 = 1.0 >= rewrite_min 0.8: flagged and halved (0.9 * 0.5) */
  EXPECT(q("SELECT count(*) FROM pairs WHERE flags='rewrite'") == 1);
  double w = qd("SELECT weight FROM pairs");
  EXPECTF(fabs(w - 0.45) < 1e-9, "weight %g", w);

  EXPECT(!ev(GEN("g2", "Say hi", "hello  there friend", "")));
  EXPECT(!ev("{\"type\":\"edit\",\"id\":\"g2\",\"text\":\" hello there\\nfriend \"}"));   /* whitespace only */
  EXPECT(q("SELECT count(*) FROM pairs WHERE rejected_id='g2'") == 0);

  /* one word of ten changed: d = 0.1 < light_max 0.3: weight 0.9 * (0.5 + 0.5 * 0.1/0.3) = 0.6 */
  EXPECT(!ev(GEN("g3", "Count", "one two three four five six seven eight nine ten", "")));
  EXPECT(!ev("{\"type\":\"edit\",\"id\":\"g3\",\"text\":\"one two three four five six seven eight nine TEN\"}"));
  w = qd("SELECT weight FROM pairs WHERE rejected_id='g3'");
  EXPECTF(fabs(w - 0.6) < 1e-9, "weight %g", w);
  /* a later edit replaces the earlier: the user's final text counts */
  EXPECT(!ev("{\"type\":\"edit\",\"id\":\"g3\",\"text\":\"one two three four five 6 7 8 nine ten\",\"ts\":\"2099-01-01T00:00:00Z\"}"));
  EXPECT(q("SELECT count(*) FROM pairs WHERE rejected_id='g3'") == 1);
  char *t = tu_query_text(db, "SELECT chosen_text FROM pairs WHERE rejected_id='g3'");
  EXPECTF(t && !strcmp(t, "one two three four five 6 7 8 nine ten"), "chosen %s", t ? t : "(null)");
  free(t);
  prefcap_close(pc, -1);
}

static void edit_distance_unit(void) {
  /* exposed through the library for tests: declared here rather than in a public header */
  extern double prefcap__edit_distance(const char *, const char *);
  EXPECT(prefcap__edit_distance("a b c d", "a b c d") == 0.0);
  EXPECT(fabs(prefcap__edit_distance("a b c d", "a x c d") - 0.25) < 1e-12);
  EXPECT(fabs(prefcap__edit_distance("a b c d", "a b c") - 0.25) < 1e-12);
  EXPECT(prefcap__edit_distance("", "x") == 1.0);
  EXPECT(prefcap__edit_distance("a  b\n", "a b") == 0.0);
}

// ---- regeneration chains -------------------------------------------------------------------------

static void regeneration_chain(void) {
  fresh();
  REQUIRE(pc);
  EXPECT(!ev(GEN("g1", "Write a haiku", "haiku one", "")));
  EXPECT(!ev(GEN("g2", "Write a haiku", "haiku two", ",\"regenerates\":\"g1\"")));
  EXPECT(!ev("{\"type\":\"copy\",\"id\":\"g2\"}"));   /* copied, but then regenerated anyway */
  EXPECT(!ev(GEN("g3", "Write a haiku", "haiku three", ",\"regenerates\":\"g2\"")));
  EXPECT(!ev("{\"type\":\"accept\",\"id\":\"g3\"}"));
  EXPECT(q("SELECT count(*) FROM pairs WHERE signal='regenerate'") == 2);
  EXPECT(q("SELECT count(*) FROM pairs WHERE signal='regenerate' AND chosen_id='g3' AND rejected_id='g2'") == 1);
  EXPECT(q("SELECT count(*) FROM pairs WHERE signal='regenerate' AND chosen_id='g3' AND rejected_id='g1'") == 1);
  EXPECT(q("SELECT count(*) FROM pairs WHERE chosen_id='g2'") == 0);   /* regenerated: never chosen */
  double w = qd("SELECT weight FROM pairs WHERE rejected_id='g1'");
  EXPECTF(fabs(w - 0.8) < 1e-9, "weight %g (regenerate 0.8 x accept 1.0)", w);
  /* labels: g1 regenerated-away -> undesirable; g2 copied AND regenerated -> no label; g3 accepted */
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='g1' AND desirable=0 AND signal='regenerate'") == 1);
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='g2'") == 0);
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='g3' AND desirable=1 AND signal='accept'") == 1);
  /* no positive signal at the end of a chain: no pair */
  EXPECT(!ev(GEN("h1", "Other", "a", "")));
  EXPECT(!ev(GEN("h2", "Other", "b", ",\"regenerates\":\"h1\"")));
  EXPECT(q("SELECT count(*) FROM pairs WHERE chosen_id='h2'") == 0);
  /* a -1 on the last one outranks its copy: no pair either */
  EXPECT(!ev("{\"type\":\"copy\",\"id\":\"h2\"}"));
  EXPECT(!ev("{\"type\":\"rating\",\"id\":\"h2\",\"value\":-1}"));
  EXPECT(q("SELECT count(*) FROM pairs WHERE chosen_id='h2'") == 0);
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='h2' AND desirable=0 AND signal='rating'") == 1);
  /* a light edit counts as keeping the answer */
  EXPECT(!ev(GEN("k1", "K", "alpha beta gamma delta epsilon zeta eta theta iota kappa", "")));
  EXPECT(!ev(GEN("k2", "K", "alpha beta gamma delta epsilon zeta eta theta iota lambda", ",\"regenerates\":\"k1\"")));
  EXPECT(!ev("{\"type\":\"edit\",\"id\":\"k2\",\"text\":\"alpha beta gamma delta epsilon zeta eta theta iota mu\"}"));
  EXPECT(q("SELECT count(*) FROM pairs WHERE signal='regenerate' AND chosen_id='k2' AND rejected_id='k1'") == 1);
  prefcap_close(pc, -1);
}

static void regeneration_out_of_order(void) {
  fresh();
  REQUIRE(pc);
  /* the approval, then the replacement, then the generation it replaced */
  EXPECT(!ev("{\"type\":\"copy\",\"id\":\"g2\"}"));
  EXPECT(!ev(GEN("g2", "P", "second", ",\"regenerates\":\"g1\"")));
  EXPECT(q("SELECT count(*) FROM pairs") == 0);
  EXPECT(!ev(GEN("g1", "P", "first", "")));
  EXPECT(q("SELECT count(*) FROM pairs WHERE chosen_id='g2' AND rejected_id='g1'") == 1);
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='g1' AND desirable=0") == 1);
  /* feedback for a generation never seen is kept, and reported */
  EXPECT(!ev("{\"type\":\"accept\",\"id\":\"nowhere\"}"));
  EXPECT(q("SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = e.gen_id)") == 1);
  prefcap_close(pc, -1);
}

// ---- choices and ratings -------------------------------------------------------------------------

static void choice_pairs_keep_their_source(void) {
  fresh();
  REQUIRE(pc);
  EXPECT(!ev("{\"type\":\"choice\",\"chosen\":\"b\",\"rejected\":\"a\",\"source\":\"ai:judge-7b\"}"));
  EXPECT(!ev(GEN("a", "Q", "answer a", ",\"model\":\"m-old\"")));
  EXPECT(q("SELECT count(*) FROM pairs") == 0);   /* b not there yet */
  EXPECT(!ev(GEN("b", "Q", "answer b", ",\"model\":\"m-new\"")));
  EXPECT(q("SELECT count(*) FROM pairs WHERE signal='choice' AND chosen_id='b' AND rejected_id='a' AND source='ai:judge-7b' AND weight=1.0") == 1);
  EXPECT(!ev(GEN("c", "Different question", "answer c", "")));
  EXPECT(!ev("{\"type\":\"choice\",\"chosen\":\"c\",\"rejected\":\"a\"}"));
  EXPECT(q("SELECT count(*) FROM pairs WHERE chosen_id='c' AND flags='prompt_mismatch' AND source='human'") == 1);
  EXPECT(ev("{\"type\":\"choice\",\"chosen\":\"c\",\"rejected\":\"c\"}") == PREFCAP_EINVAL);
  EXPECT(ev("{\"type\":\"choice\",\"chosen\":\"c\",\"rejected\":\"a\",\"source\":\"robot\"}") == PREFCAP_EINVAL);
  EXPECT(strstr(prefcap_errmsg(pc), "source") != NULL);
  prefcap_close(pc, -1);
}

static void ratings_pair_on_same_prompt_and_user_or_session(void) {
  fresh();
  REQUIRE(pc);
  EXPECT(!ev("{\"type\":\"generation\",\"id\":\"r1\",\"prompt\":\"Same\",\"completion\":\"good\",\"user_id\":\"u1\",\"session_id\":\"s1\"}"));
  EXPECT(!ev("{\"type\":\"generation\",\"id\":\"r2\",\"prompt\":\"Same\",\"completion\":\"bad\",\"user_id\":\"u1\",\"session_id\":\"s2\"}"));
  EXPECT(!ev("{\"type\":\"generation\",\"id\":\"r3\",\"prompt\":\"Same\",\"completion\":\"bad too\",\"user_id\":\"u9\",\"session_id\":\"s9\"}"));
  EXPECT(!ev("{\"type\":\"generation\",\"id\":\"r4\",\"prompt\":\"Other\",\"completion\":\"bad\",\"user_id\":\"u1\",\"session_id\":\"s1\"}"));
  EXPECT(!ev("{\"type\":\"rating\",\"id\":\"r2\",\"value\":-1}"));
  EXPECT(!ev("{\"type\":\"rating\",\"id\":\"r3\",\"value\":-1}"));
  EXPECT(!ev("{\"type\":\"rating\",\"id\":\"r4\",\"value\":-1}"));
  EXPECT(q("SELECT count(*) FROM pairs") == 0);
  EXPECT(!ev("{\"type\":\"rating\",\"id\":\"r1\",\"value\":1}"));
  EXPECT(q("SELECT count(*) FROM pairs WHERE signal='rating'") == 1);   /* r3: other user and session; r4: other prompt */
  EXPECT(q("SELECT count(*) FROM pairs WHERE signal='rating' AND chosen_id='r1' AND rejected_id='r2'") == 1);
  EXPECT(q("SELECT count(*) FROM labels WHERE desirable=1") == 1);
  EXPECT(q("SELECT count(*) FROM labels WHERE desirable=0 AND signal='rating'") == 3);
  /* the -1 is changed to +1 later: the pair goes away */
  EXPECT(!ev("{\"type\":\"rating\",\"id\":\"r2\",\"value\":1,\"ts\":\"2099-01-01T00:00:00Z\"}"));
  EXPECT(q("SELECT count(*) FROM pairs") == 0);
  EXPECT(ev("{\"type\":\"rating\",\"id\":\"r2\",\"value\":0}") == PREFCAP_EINVAL);
  EXPECT(ev("{\"type\":\"rating\",\"id\":\"r2\"}") == PREFCAP_EINVAL);
  prefcap_close(pc, -1);
}

static void labels_for_kto(void) {
  fresh();
  REQUIRE(pc);
  const char *ids[] = {"copy", "accept", "abandon", "regenerate"};
  for (int i = 0; i < 4; i++) {
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"generation\",\"id\":\"l%d\",\"prompt\":\"p%d\",\"completion\":\"c\"}", i, i);
    EXPECT(!ev(buf));
    snprintf(buf, sizeof buf, "{\"type\":\"%s\",\"id\":\"l%d\"}", ids[i], i);
    EXPECT(!ev(buf));
  }
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='l0' AND desirable=1 AND signal='copy' AND weight=0.8") == 1);
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='l1' AND desirable=1 AND signal='accept' AND weight=0.9") == 1);
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='l2' AND desirable=0 AND signal='abandon' AND weight=0.2") == 1);
  EXPECT(q("SELECT count(*) FROM labels WHERE gen_id='l3' AND desirable=0 AND signal='regenerate' AND weight=0.7") == 1);
  prefcap_close(pc, -1);
}

// ---- replay, re-derivation, bad input ------------------------------------------------------------

static void replay_stores_nothing_twice(void) {
  fresh();
  REQUIRE(pc);
  const char *events[] = {
      GEN("g1", "P", "one", ""),
      "{\"type\":\"generation\",\"prompt\":\"no id\",\"completion\":\"x\",\"ts\":\"2026-11-21T10:00:00Z\"}",
      "{\"type\":\"copy\",\"id\":\"g1\"}",
      "{\"type\":\"edit\",\"id\":\"g1\",\"text\":\"ONE\",\"event_id\":\"e-77\"}",
      "{\"type\":\"rating\",\"id\":\"g1\",\"value\":1,\"ts\":1763719200000}",
  };
  char id1[PREFCAP_ID_MAX + 1], id2[PREFCAP_ID_MAX + 1];
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 5; i++) {
      char *id = i == 1 ? (round ? id2 : id1) : NULL;
      EXPECT(prefcap_log_json(pc, events[i], strlen(events[i]), id) == 0);
    }
  EXPECTF(!strcmp(id1, id2), "generated ids %s vs %s", id1, id2);
  EXPECT(!strncmp(id1, "g-", 2));
  /* the same event id with different content is the same event */
  EXPECT(!ev("{\"type\":\"edit\",\"id\":\"g1\",\"text\":\"something else\",\"event_id\":\"e-77\"}"));
  EXPECT(q("SELECT count(*) FROM generations") == 2);
  EXPECT(q("SELECT count(*) FROM events") == 3);
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(pc, &k);
  EXPECTF(k.duplicates == 6, "duplicates %llu", (unsigned long long)k.duplicates);
  prefcap_close(pc, -1);
}

static void rederive_with_new_weights_keeps_pair_ids(void) {
  fresh();
  REQUIRE(pc);
  EXPECT(!ev(GEN("a", "Q", "answer a", "")));
  EXPECT(!ev(GEN("b", "Q", "answer b", "")));
  EXPECT(!ev("{\"type\":\"choice\",\"chosen\":\"b\",\"rejected\":\"a\"}"));
  long long id = q("SELECT id FROM pairs");
  long long version = q("SELECT version FROM pairs");
  prefcap_close(pc, -1);
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, db);
  prefcap_options_set_durability(o, PREFCAP_SYNC);
  EXPECT(prefcap_options_set_weight(o, "choice", 0.5) == 0);
  EXPECT(prefcap_options_set_weight(o, "no-such-weight", 0.5) == PREFCAP_EINVAL);
  EXPECT(prefcap_options_set_weight(o, "edit", 1.5) == PREFCAP_EINVAL);
  REQUIRE(prefcap_open(o, &pc) == 0);
  prefcap_options_free(o);
  EXPECT(prefcap_derive(pc, 1) == 0);
  EXPECT(tu_query(db, "SELECT count(*) FROM pairs WHERE weight = 0.5") == 1);
  EXPECT(tu_query(db, "SELECT id FROM pairs") == id);
  EXPECT(tu_query(db, "SELECT version FROM pairs") > version);   /* changed content gets a new version */
  long long v2 = tu_query(db, "SELECT version FROM pairs");
  EXPECT(prefcap_derive(pc, 1) == 0);
  EXPECT(tu_query(db, "SELECT version FROM pairs") == v2);         /* nothing changed: same version */
  prefcap_close(pc, -1);
}

static void bad_input_is_refused_whole(void) {
  fresh();
  REQUIRE(pc);
  const char bad_utf8[] = "{\"type\":\"generation\",\"id\":\"x\",\"prompt\":\"a\xff\",\"completion\":\"c\"}";
  EXPECT(prefcap_log_json(pc, bad_utf8, sizeof bad_utf8 - 1, NULL) == PREFCAP_EUTF8);
  const char nul_raw[] = "{\"type\":\"generation\",\"id\":\"x\",\"prompt\":\"a\0b\",\"completion\":\"c\"}";
  EXPECT(prefcap_log_json(pc, nul_raw, sizeof nul_raw - 1, NULL) == PREFCAP_EUTF8);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"x\",\"prompt\":\"a\\u0000b\",\"completion\":\"c\"}") == PREFCAP_EUTF8);
  EXPECT(strstr(prefcap_errmsg(pc), "NUL") != NULL);
  /* an escaped backslash before u0000 is text, not a NUL */
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"ok1\",\"prompt\":\"C:\\\\u0000\",\"completion\":\"c\"}") == 0);
  EXPECT(ev("{\"type\":\"sneeze\",\"id\":\"x\"}") == PREFCAP_EINVAL);
  EXPECT(strstr(prefcap_errmsg(pc), "unknown event type 'sneeze'") != NULL);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"x\",\"prompt\":\"p\"}") == PREFCAP_EINVAL);
  EXPECT(strstr(prefcap_errmsg(pc), "completion") != NULL);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"x\",\"prompt\":\"p\",\"completion\":7}") == PREFCAP_EINVAL);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"x\",\"prompt\":\"p\",\"completion\":\"c\",\"ts\":\"yesterday\"}") == PREFCAP_EINVAL);
  EXPECT(ev("not json") == PREFCAP_EJSON);
  EXPECT(ev("[1,2]") == PREFCAP_EINVAL);
  /* one field smuggled past a check on another: a second user_id is refused, at any depth */
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"d1\",\"prompt\":\"p\",\"user_id\":\"alice\",\"completion\":\"c\",\"user_id\":\"mallory\"}") == PREFCAP_EINVAL);
  EXPECT(strstr(prefcap_errmsg(pc), "'user_id' appears twice") != NULL);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"d2\",\"prompt\":\"p\",\"completion\":\"c\",\"params\":{\"t\":1,\"t\":2}}") == PREFCAP_EINVAL);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"d3\",\"completion\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":\"a\",\"content\":\"b\"}]}") == PREFCAP_EINVAL);
  /* a byte order mark, or anything but whitespace after the object, is refused */
  EXPECT(ev("\xEF\xBB\xBF{\"type\":\"generation\",\"id\":\"b1\",\"prompt\":\"p\",\"completion\":\"c\"}") == PREFCAP_EJSON);
  EXPECT(strstr(prefcap_errmsg(pc), "byte order mark") != NULL);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"t1\",\"prompt\":\"p\",\"completion\":\"c\"} {\"type\":\"generation\",\"id\":\"t2\",\"prompt\":\"p\",\"completion\":\"c\"}") == PREFCAP_EJSON);
  EXPECT(strstr(prefcap_errmsg(pc), "after the JSON object") != NULL);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"t3\",\"prompt\":\"p\",\"completion\":\"c\"}x") == PREFCAP_EJSON);
  EXPECT(ev("{\"type\":\"generation\",\"id\":\"ok2\",\"prompt\":\"p\",\"completion\":\"c\"} \r\n") == 0);   /* trailing whitespace is fine */
  /* oversize: a 2 MiB completion against the default 1 MiB limit */
  size_t big = 2u << 20;
  char *huge = malloc(big + 128);
  REQUIRE(huge);
  int n = snprintf(huge, 128, "{\"type\":\"generation\",\"id\":\"big\",\"prompt\":\"p\",\"completion\":\"");
  memset(huge + n, 'x', big);
  strcpy(huge + n + big, "\"}");
  EXPECT(prefcap_log_json(pc, huge, strlen(huge), NULL) == PREFCAP_ETOOBIG);
  EXPECT(strstr(prefcap_errmsg(pc), "'completion'") != NULL);
  free(huge);
  /* the C struct door applies the same checks */
  prefcap_generation_t g = {.size = sizeof g, .id = "y", .prompt = "p", .completion = "bad \xc3\x28 utf8"};
  EXPECT(prefcap_log_generation(pc, &g, NULL) == PREFCAP_EUTF8);
  EXPECT(strstr(prefcap_errmsg(pc), "'completion'") != NULL);
  prefcap_message_t m[1] = {{"user", NULL}};
  prefcap_generation_t g2 = {.size = sizeof g2, .id = "z", .messages = m, .n_messages = 1, .completion = "c"};
  EXPECT(prefcap_log_generation(pc, &g2, NULL) == PREFCAP_EINVAL);
  EXPECT(tu_query(db, "SELECT count(*) FROM generations") == 2);   /* only ok1 and ok2 */
  EXPECT(tu_query(db, "SELECT count(*) FROM events") == 0);
  prefcap_close(pc, -1);
}

static void store_file_is_private_and_versioned(void) {
  fresh();
  REQUIRE(pc);
  prefcap_close(pc, -1);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "test \"$(stat -c %%a '%s')\" = 600", db);
  EXPECT(system(cmd) == 0);
  EXPECT(tu_query(db, "PRAGMA user_version") == PREFCAP_SCHEMA_VERSION);
  EXPECT(tu_query(db, "PRAGMA journal_mode = 'wal'") != -1);
  char *mode = tu_query_text(db, "PRAGMA journal_mode");
  EXPECT(mode && !strcmp(mode, "wal"));
  free(mode);
  /* a newer schema is refused, not damaged */
  sqlite3 *h;
  REQUIRE(sqlite3_open(db, &h) == SQLITE_OK);
  sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL);
  sqlite3_close(h);
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, db);
  prefcap_t *p2 = NULL;
  EXPECT(prefcap_open(o, &p2) == PREFCAP_ESCHEMA && p2 == NULL);
  /* a foreign SQLite file is recognised */
  const char *other = tu_dbpath();
  REQUIRE(sqlite3_open(other, &h) == SQLITE_OK);
  sqlite3_exec(h, "CREATE TABLE customers(x); INSERT INTO customers VALUES(1)", NULL, NULL, NULL);
  sqlite3_close(h);
  prefcap_options_set_path(o, other);
  EXPECT(prefcap_open(o, &p2) == PREFCAP_ECORRUPT);
  EXPECT(tu_query(other, "SELECT count(*) FROM customers") == 1);
  prefcap_options_free(o);
  EXPECT(prefcap_close(NULL, 0) == 0);
  EXPECT(!strcmp(prefcap_strerror(PREFCAP_EFULL), "disk full"));
  EXPECT(!strcmp(prefcap_strerror(12345), "unknown error code"));
}

/* A store written by schema 1 (before exports and erasure) is migrated on open, its data kept. */
static void migrates_from_version_1(void) {
  fresh();
  REQUIRE(pc);
  EXPECT(!ev(GEN("g1", "Q", "old answer", "")));
  EXPECT(!ev("{\"type\":\"copy\",\"id\":\"g1\"}"));
  prefcap_close(pc, -1);
  sqlite3 *h;
  REQUIRE(sqlite3_open(db, &h) == SQLITE_OK);
  /* what schema 1 did not have */
  REQUIRE(sqlite3_exec(h, "DROP TABLE exports; DROP TABLE export_users; DROP TABLE watermarks;"
                          " DROP TABLE erased_generations; DROP TABLE fleet_sources; DELETE FROM meta WHERE key = 'store_id';"
                          " PRAGMA user_version = 1;", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(h);
  EXPECT(tu_query(db, "PRAGMA user_version") == 1);
  pc = tu_open(db, PREFCAP_SYNC);
  REQUIRE(pc);
  EXPECT(tu_query(db, "PRAGMA user_version") == PREFCAP_SCHEMA_VERSION);
  EXPECT(tu_query(db, "SELECT count(*) FROM sqlite_schema WHERE name IN ('exports', 'export_users', 'watermarks', 'erased_generations', 'fleet_sources')") == 5);
  /* schema 4: an older store gets its id (a UUID, version 4) */
  EXPECT(tu_query(db, "SELECT count(*) FROM meta WHERE key = 'store_id' AND value GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-*-4*' AND length(value) = 36") == 1);
  EXPECT(tu_query(db, "SELECT count(*) FROM labels WHERE gen_id = 'g1' AND signal = 'copy'") == 1);
  prefcap_export_options_t *o = prefcap_export_options_new();
  char out[700];
  snprintf(out, sizeof out, "%s.export.jsonl", db);
  prefcap_export_options_set_out(o, out);
  prefcap_export_options_set_format(o, PREFCAP_FORMAT_TRL_KTO);
  prefcap_export_result_t r = PREFCAP_EXPORT_RESULT_INIT;
  EXPECT(prefcap_export(pc, o, &r) == 0 && r.records == 1);
  prefcap_export_options_free(o);
  prefcap_close(pc, -1);
}

// ---- incremental derivation against a full one ---------------------------------------------------

static uint64_t prng(uint64_t *s) {  // splitmix64
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* A random history of NGEN generations on a few prompts, users and sessions (so ratings find peers),
 * with regenerations, edits, copies, accepts, abandons, ratings and choices; a fifth of the events
 * arrive out of order (feedback before its generation, a replacement before the one it replaces). */
#define NGEN 2600
static char **random_history(uint64_t seed, int *n_out) {
  uint64_t s = seed;
  int cap = NGEN * 3, n = 0;
  char **ev = calloc((size_t)cap, sizeof *ev);
  char buf[512];
  int64_t ts = 1764000000000;
  for (int g = 0; g < NGEN && n + 3 < cap; g++) {
    int prompt = (int)(prng(&s) % 40), user = (int)(prng(&s) % 3), sess = (int)(prng(&s) % 4);
    int re = g > 0 && prng(&s) % 5 == 0 ? (int)(prng(&s) % (uint64_t)g) : -1;
    char rbuf[48] = "";
    if (re >= 0) snprintf(rbuf, sizeof rbuf, ",\"regenerates\":\"r%d\"", re);
    snprintf(buf, sizeof buf, "{\"type\":\"generation\",\"id\":\"r%d\",\"prompt\":\"P%d\",\"completion\":\"answer %d with words %d\","
             "\"user_id\":\"u%d\",\"session_id\":\"s%d\",\"ts\":%lld%s}", g, prompt, g, g % 7, user, sess, (long long)(ts += 1000), rbuf);
    ev[n++] = strdup(buf);
    int kinds = (int)(prng(&s) % 3);
    for (int k = 0; k < kinds; k++) {
      int t = (int)(prng(&s) % 8), other = (int)(prng(&s) % (uint64_t)(g + 1));
      ts += 500;
      if (t == 0) snprintf(buf, sizeof buf, "{\"type\":\"edit\",\"id\":\"r%d\",\"text\":\"edited %d answer\",\"ts\":%lld}", other, k, (long long)ts);
      else if (t == 1) snprintf(buf, sizeof buf, "{\"type\":\"copy\",\"id\":\"r%d\",\"ts\":%lld}", other, (long long)ts);
      else if (t == 2) snprintf(buf, sizeof buf, "{\"type\":\"accept\",\"id\":\"r%d\",\"ts\":%lld}", other, (long long)ts);
      else if (t == 3) snprintf(buf, sizeof buf, "{\"type\":\"abandon\",\"id\":\"r%d\",\"ts\":%lld}", other, (long long)ts);
      else if (t == 4) snprintf(buf, sizeof buf, "{\"type\":\"regenerate\",\"id\":\"r%d\",\"ts\":%lld}", other, (long long)ts);
      else if (t == 5 && other != g)
        snprintf(buf, sizeof buf, "{\"type\":\"choice\",\"chosen\":\"r%d\",\"rejected\":\"r%d\",\"ts\":%lld}", g, other, (long long)ts);
      else snprintf(buf, sizeof buf, "{\"type\":\"rating\",\"id\":\"r%d\",\"value\":%d,\"ts\":%lld}", other, prng(&s) % 2 ? 1 : -1, (long long)ts);
      ev[n++] = strdup(buf);
    }
  }
  for (int i = 0; i < n / 5; i++) {  // out of order: swap events up to 60 apart
    int a = (int)(prng(&s) % (uint64_t)n), b = a + 1 + (int)(prng(&s) % 60);
    if (b >= n) continue;
    char *t = ev[a]; ev[a] = ev[b]; ev[b] = t;
  }
  *n_out = n;
  return ev;
}

/* What derivation produced, without row ids and versions (they depend on the order of work): pairs,
 * labels and the rated table. */
static char *derived_content(const char *path) {
  return tu_query_text(path,
      "SELECT (SELECT count(*) FROM pairs) || ' pairs, ' || (SELECT count(*) FROM labels) || ' labels, ' ||"
      " (SELECT count(*) FROM rated) || ' rated#' ||"
      " ifnull((SELECT group_concat(x, char(10)) FROM (SELECT key || '|' || unit || '|' || signal || '|' || ifnull(chosen_id, '') || '|'"
      "   || ifnull(chosen_text, '') || '|' || rejected_id || '|' || weight || '|' || source || '|' || flags AS x FROM pairs ORDER BY key)), '') || '#' ||"
      " ifnull((SELECT group_concat(y, char(10)) FROM (SELECT gen_id || '|' || desirable || '|' || signal || '|' || weight || '|' || source AS y"
      "   FROM labels ORDER BY gen_id)), '') || '#' ||"
      " ifnull((SELECT group_concat(z, char(10)) FROM (SELECT gen_id || '|' || prompt_key || '|' || value || '|' || source AS z"
      "   FROM rated ORDER BY gen_id)), '')");
}

/* Between two batches of a derivation pass (sdk/derive.c's test hook): the next few events of the
 * history, logged through another handle on the same file, so that new rows land in the middle of a
 * pass, after units they touch may have been recomputed earlier in it. */
typedef struct { prefcap_t *w; char **ev; int next, to, failed, busy; } between_job;

static void between_batches(void *arg) {
  between_job *j = arg;
  if (j->busy) return;   /* the other handle's own derivation calls the hook too */
  j->busy = 1;
  for (int k = 0; k < 3 && j->next < j->to; k++, j->next++)
    if (prefcap_log_json(j->w, j->ev[j->next], strlen(j->ev[j->next]), NULL)) j->failed = 1;
  j->busy = 0;
}

/* The same random history into two stores, with derivation batches of 16 (so that it spans hundreds
 * of batches): one as a bulk ingest derived at close (one pass), one half an event at a time with an
 * incremental derivation every few events, then half logged by another handle between the batches of
 * this one's derivation passes (new rows in the middle of a pass). Each must equal what derive --all computes from scratch
 * on it, and the two must equal each other: a unit skipped because an earlier batch of the same pass
 * had recomputed it must not have missed anything (sdk/derive.c, the done map). */
static void incremental_derivation_equals_a_full_one(void) {
  int saved = prefcap__derive_batch;
  prefcap__derive_batch = 16;
  for (uint64_t seed = 1; seed <= 2; seed++) {
    int n;
    char **ev = random_history(seed, &n);
    const char *p = tu_dbpath();
    char bulk[600], step[600];
    snprintf(bulk, sizeof bulk, "%s", p);
    snprintf(step, sizeof step, "%s", tu_dbpath());
    prefcap_t *a = tu_open(bulk, PREFCAP_ASYNC), *b = tu_open(step, PREFCAP_SYNC);
    REQUIRE(a && b);
    uint64_t s = seed * 7919;
    for (int i = 0; i < n; i++) {
      EXPECT(prefcap_ingest_line(a, ev[i], strlen(ev[i])) == 0);
      if (i >= n / 2) continue;
      EXPECT(prefcap_log_json(b, ev[i], strlen(ev[i]), NULL) == 0);
      if (prng(&s) % 23 == 0) EXPECT(prefcap_derive(b, 0) == 0);
    }
    EXPECT(prefcap_close(a, -1) == 0);   /* before the hook is set: a's writer thread derives too */
    between_job job = {tu_open(step, PREFCAP_SYNC), ev, n / 2, n, 0, 0};
    REQUIRE(job.w);
    prefcap__derive_after_batch = between_batches;
    prefcap__derive_after_batch_arg = &job;
    int passes = 0;
    for (; job.next < n && passes < 10000; passes++) {
      for (int k = 0; k < 40 && job.next < n; k++) {   /* a pass of several batches */
        int i = job.next++;   /* first: the log's own derivation (once a second) may call the hook */
        EXPECT(prefcap_log_json(b, ev[i], strlen(ev[i]), NULL) == 0);
      }
      EXPECT(prefcap_derive(b, 0) == 0);
    }
    prefcap__derive_after_batch = NULL;
    EXPECT(!job.failed && job.next == n);
    EXPECT(prefcap_close(job.w, -1) == 0);
    EXPECT(prefcap_close(b, -1) == 0);
    char *ca = derived_content(bulk), *cb = derived_content(step);
    REQUIRE(ca && cb);
    a = tu_open(bulk, PREFCAP_SYNC);
    b = tu_open(step, PREFCAP_SYNC);
    REQUIRE(a && b);
    EXPECT(prefcap_derive(a, 1) == 0 && prefcap_derive(b, 1) == 0);
    prefcap_close(a, -1);
    prefcap_close(b, -1);
    char *fa = derived_content(bulk), *fb = derived_content(step);
    REQUIRE(fa && fb);
    fprintf(stderr, "  seed %llu: %d events; bulk %.40s; one at a time then concurrent (%d passes) %.40s\n",
            (unsigned long long)seed, n, ca, passes, cb);
    EXPECTF(!strcmp(ca, fa), "bulk ingest differs from derive --all:\n%.300s\n---\n%.300s", ca, fa);
    EXPECTF(!strcmp(cb, fb), "incremental derivation differs from derive --all:\n%.300s\n---\n%.300s", cb, fb);
    EXPECTF(!strcmp(ca, cb), "bulk and incremental differ:\n%.300s\n---\n%.300s", ca, cb);
    free(ca); free(cb); free(fa); free(fb);
    for (int i = 0; i < n; i++) free(ev[i]);
    free(ev);
  }
  prefcap__derive_batch = saved;
}

int main(void) {
  RUN(edit_makes_a_pair_weighted_by_distance);
  RUN(edit_distance_unit);
  RUN(regeneration_chain);
  RUN(regeneration_out_of_order);
  RUN(choice_pairs_keep_their_source);
  RUN(ratings_pair_on_same_prompt_and_user_or_session);
  RUN(labels_for_kto);
  RUN(replay_stores_nothing_twice);
  RUN(rederive_with_new_weights_keeps_pair_ids);
  RUN(incremental_derivation_equals_a_full_one);
  RUN(bad_input_is_refused_whole);
  RUN(store_file_is_private_and_versioned);
  RUN(migrates_from_version_1);
  return tst_end();
}

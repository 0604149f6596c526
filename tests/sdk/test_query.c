/* tests/sdk/test_query.c: the read API of include/prefcap.h ("reading the store", sdk/query.c), which
 * the `prefcap` command and any application use: pairs and labels with each filter, against counts
 * the test gets from the file itself through its own SQLite connection; the totals struct, also when
 * the caller's struct is an older, shorter one (nothing past its size is written); the stats JSON;
 * the integrity check; erasure and prune reports; the helpers (user hash, weight names, times,
 * against libc's timegm). And the writer's report of a store that refuses writes: the `retrying`
 * counter and the logger, while another connection holds the write lock. */
#include "test.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

static void log_line(prefcap_t *pc, const char *json) {
  int rc = prefcap_log_json(pc, json, strlen(json), NULL);
  if (rc) fprintf(stderr, "  log %s: %s: %s\n", json, prefcap_strerror(rc), prefcap_errmsg(pc));
}

/* A store with regenerate and edit pairs and labels, for two users and two models. */
static prefcap_t *populated(const char *db) {
  prefcap_t *pc = tu_open(db, PREFCAP_SYNC);
  if (!pc) return NULL;
  char line[512];
  for (int i = 0; i < 6; i++) {
    const char *user = i % 2 ? "bob" : "alice", *model = i < 3 ? "m1" : "m2";
    snprintf(line, sizeof line, "{\"type\":\"generation\",\"id\":\"a%d\",\"prompt\":\"q%d\",\"completion\":\"first %d\",\"model\":\"%s\",\"user_id\":\"%s\",\"ts\":%d}",
             i, i, i, model, user, 1700000000 + i);
    log_line(pc, line);
    snprintf(line, sizeof line, "{\"type\":\"regenerate\",\"id\":\"a%d\"}", i);
    log_line(pc, line);
    snprintf(line, sizeof line, "{\"type\":\"generation\",\"id\":\"b%d\",\"prompt\":\"q%d\",\"completion\":\"second %d\",\"model\":\"%s\",\"user_id\":\"%s\",\"regenerates\":\"a%d\"}",
             i, i, i, model, user, i);
    log_line(pc, line);
    snprintf(line, sizeof line, "{\"type\":\"copy\",\"id\":\"b%d\"}", i);
    log_line(pc, line);
  }
  log_line(pc, "{\"type\":\"generation\",\"id\":\"e1\",\"prompt\":\"hi\",\"completion\":\"Hello there, how may I be of assistance on this fine day?\",\"model\":\"m1\",\"user_id\":\"carol\"}");
  log_line(pc, "{\"type\":\"edit\",\"id\":\"e1\",\"text\":\"Hi!\"}");
  if (prefcap_derive(pc, 0)) fprintf(stderr, "  derive: %s\n", prefcap_errmsg(pc));
  return pc;
}

typedef struct { int n; int64_t last_id; bool ordered; int stop_after; char edit_chosen[32], edit_rejected[80]; bool edit_chosen_id_null; } pair_seen;

static int on_pair(const prefcap_pair_t *p, void *ud) {
  pair_seen *s = ud;
  if (s->n && p->id >= s->last_id) s->ordered = false;
  s->last_id = p->id;
  s->n++;
  if (!strcmp(p->signal, "edit")) {
    snprintf(s->edit_chosen, sizeof s->edit_chosen, "%s", p->chosen);
    snprintf(s->edit_rejected, sizeof s->edit_rejected, "%s", p->rejected);
    s->edit_chosen_id_null = p->chosen_id == NULL && p->size == sizeof(prefcap_pair_t);
  }
  return s->stop_after && s->n >= s->stop_after;
}

static int count_pairs(prefcap_t *pc, const prefcap_query_t *q) {
  pair_seen s = {.ordered = true};
  int rc = prefcap_pairs(pc, q, on_pair, &s);
  return rc ? -100 - rc : s.n;
}

static void pairs_with_filters(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = populated(db);
  REQUIRE(pc);
  long long all = tu_query(db, "SELECT count(*) FROM pairs");
  REQUIRE(all == 7);
  pair_seen s = {.ordered = true};
  EXPECT(prefcap_pairs(pc, NULL, on_pair, &s) == PREFCAP_OK);
  EXPECTF(s.n == all, "%d of %lld", s.n, all);
  EXPECT(s.ordered);   /* newest first */
  EXPECT(!strcmp(s.edit_chosen, "Hi!") && !strncmp(s.edit_rejected, "Hello there", 11) && s.edit_chosen_id_null);
  prefcap_query_t q = PREFCAP_QUERY_INIT;
  q.signal = "regenerate";
  EXPECT(count_pairs(pc, &q) == tu_query(db, "SELECT count(*) FROM pairs WHERE signal = 'regenerate'"));
  q = (prefcap_query_t)PREFCAP_QUERY_INIT;
  q.model = "m2";
  EXPECT(count_pairs(pc, &q) == 3);
  q.user_id = "bob";
  EXPECT(count_pairs(pc, &q) == 2);   /* i = 3, 5 */
  q = (prefcap_query_t)PREFCAP_QUERY_INIT;
  q.limit = 2;
  EXPECT(count_pairs(pc, &q) == 2);
  q = (prefcap_query_t)PREFCAP_QUERY_INIT;
  q.since_ms = 1700000000 + 2;
  q.until_ms = 1700000000 + 4;   /* the rejected generations a2, a3 */
  EXPECT(count_pairs(pc, &q) == 2);
  q = (prefcap_query_t)PREFCAP_QUERY_INIT;
  q.min_weight = 0.99;
  EXPECT(count_pairs(pc, &q) == tu_query(db, "SELECT count(*) FROM pairs WHERE weight >= 0.99"));
  s = (pair_seen){.ordered = true, .stop_after = 3};
  EXPECT(prefcap_pairs(pc, NULL, on_pair, &s) == PREFCAP_OK && s.n == 3);   /* the callback stops it */
  q = (prefcap_query_t)PREFCAP_QUERY_INIT;
  q.size = 0;
  EXPECT(prefcap_pairs(pc, &q, on_pair, &s) == PREFCAP_EINVAL);
  q = (prefcap_query_t)PREFCAP_QUERY_INIT;
  q.min_weight = 2;
  EXPECT(prefcap_pairs(pc, &q, on_pair, &s) == PREFCAP_EINVAL && strstr(prefcap_errmsg(pc), "min_weight"));
  /* an older caller's shorter query: only the signal filter is read, the rest is taken as unset */
  q = (prefcap_query_t)PREFCAP_QUERY_INIT;
  q.signal = "edit";
  q.model = "no such model";
  q.size = offsetof(prefcap_query_t, model);
  EXPECT(count_pairs(pc, &q) == 1);
  prefcap_close(pc, -1);
}

static int on_label(const prefcap_label_t *l, void *ud) {
  int *n = ud;
  if (l->gen_id && l->completion && l->signal) (*n)++;
  return 0;
}

static void labels_with_filters(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = populated(db);
  REQUIRE(pc);
  int n = 0;
  EXPECT(prefcap_labels(pc, NULL, on_label, &n) == PREFCAP_OK);
  long long want = tu_query(db, "SELECT count(*) FROM labels");
  EXPECTF(n == want && want > 0, "%d of %lld", n, want);
  prefcap_query_t q = PREFCAP_QUERY_INIT;
  q.signal = "copy";
  n = 0;
  EXPECT(prefcap_labels(pc, &q, on_label, &n) == PREFCAP_OK);
  EXPECT(n == tu_query(db, "SELECT count(*) FROM labels WHERE signal = 'copy'"));
  prefcap_close(pc, -1);
}

static void stats_struct_and_json(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = populated(db);
  REQUIRE(pc);
  prefcap_stats_t st = PREFCAP_STATS_INIT;
  EXPECT(prefcap_stats(pc, &st) == PREFCAP_OK);
  EXPECT((long long)st.generations == tu_query(db, "SELECT count(*) FROM generations"));
  EXPECT((long long)st.feedback == tu_query(db, "SELECT count(*) FROM events"));
  EXPECT((long long)st.pairs == tu_query(db, "SELECT count(*) FROM pairs"));
  EXPECT((long long)st.labels == tu_query(db, "SELECT count(*) FROM labels"));
  EXPECT(st.unknown_feedback == 0 && st.exports == 0);
  /* a caller built when the struct had two fields: nothing past them is written */
  struct { size_t size; uint64_t generations; uint64_t canary[8]; } old = {offsetof(prefcap_stats_t, feedback), 0, {0}};
  memset(old.canary, 0xAB, sizeof old.canary);
  EXPECT(prefcap_stats(pc, (prefcap_stats_t *)&old) == PREFCAP_OK);
  EXPECT(old.generations == st.generations);
  bool intact = true;
  for (int i = 0; i < 8; i++) intact &= old.canary[i] == 0xABABABABABABABABull;
  EXPECT(intact);
  char *json = NULL;
  EXPECT(prefcap_stats_json(pc, 14, &json) == PREFCAP_OK);
  cJSON *j = cJSON_Parse(json);
  EXPECT(j && cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "events"), "generation")) == (double)st.generations);
  EXPECT(j && cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "pairs_by_signal"), "edit"), "count")) == 1);
  cJSON_Delete(j);
  prefcap_free(json);
  EXPECT(prefcap_stats_json(pc, 0, &json) == PREFCAP_EINVAL);
  prefcap_close(pc, -1);
}

static int n_problems;
static void on_problem(const char *p, void *ud) { (void)p; (void)ud; n_problems++; }

static void check_and_reports(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = populated(db);
  REQUIRE(pc);
  uint64_t n = 99;
  n_problems = 0;
  EXPECT(prefcap_check(pc, 0, on_problem, NULL, &n) == PREFCAP_OK && n == 0 && n_problems == 0);
  EXPECT(prefcap_check(pc, 1, NULL, NULL, NULL) == PREFCAP_OK);
  long long before = tu_query(db, "SELECT count(*) FROM generations");
  prefcap_erase_report_t r = PREFCAP_ERASE_REPORT_INIT;
  EXPECT(prefcap_prune_report(pc, 1700000000 + 3, PREFCAP_PRUNE_DRY_RUN, &r) == PREFCAP_OK);
  EXPECT(tu_query(db, "SELECT count(*) FROM generations") == before);   /* a dry run deletes nothing */
  EXPECT(prefcap_prune_report(pc, 0, 8, &r) == PREFCAP_EINVAL);
  long long bobs = tu_query(db, "SELECT count(*) FROM generations WHERE user_id = 'bob'");
  r = (prefcap_erase_report_t)PREFCAP_ERASE_REPORT_INIT;
  EXPECT(prefcap_forget_user_report(pc, "bob", NULL, NULL, &r) == PREFCAP_OK);
  EXPECTF((long long)r.generations == bobs && r.committed, "%llu of %lld", (unsigned long long)r.generations, bobs);
  EXPECT(r.total == r.generations + r.events + r.pairs + r.labels + r.rated);
  char h[65];
  prefcap_user_hash("bob", h);
  EXPECT(!strcmp(h, r.user_hash) && strlen(h) == 64);
  EXPECT(tu_query(db, "SELECT count(*) FROM generations WHERE user_id = 'bob'") == 0);
  char sql[200];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM tombstones WHERE user_hash = '%s'", h);
  EXPECT(tu_query(db, sql) == 1);   /* the hash is the one the store knows the user by */
  prefcap_close(pc, -1);
}

static void helpers(void) {
  int64_t ms = 0;
  struct tm tm = {.tm_year = 2026 - 1900, .tm_mon = 10, .tm_mday = 21};
  int64_t want = (int64_t)timegm(&tm) * 1000;
  EXPECT(prefcap_time_parse("2026-11-21", &ms) == PREFCAP_OK && ms == want);
  EXPECT(prefcap_time_parse("2026-11-21T10:00:00.5+01:00", &ms) == PREFCAP_OK && ms == want + 9 * 3600000 + 500);
  EXPECT(prefcap_time_parse("yesterday", &ms) == PREFCAP_EINVAL);
  EXPECTF(strstr(prefcap_errmsg(NULL), "'yesterday'"), "%s", prefcap_errmsg(NULL));   /* handle-less: errmsg(NULL) */
  EXPECT(prefcap_pairs(NULL, NULL, NULL, NULL) == PREFCAP_EINVAL && strstr(prefcap_errmsg(NULL), "no handle"));
  char buf[32];
  prefcap_time_format(want + 9 * 3600000 + 500, buf);
  EXPECTF(!strcmp(buf, "2026-11-21T09:00:00.500Z"), "%s", buf);
  int names = 0;
  prefcap_options_t *o = prefcap_options_new();
  for (const char *n; (n = prefcap_weight_name(names)); names++) EXPECTF(prefcap_options_set_weight(o, n, 0.5) == PREFCAP_OK, "%s", n);
  prefcap_options_free(o);
  EXPECT(names >= 10 && prefcap_weight_name(-1) == NULL);
}

// ---- a store that refuses writes: the writer says so ------------------------------------------------

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logged[512];
static void logger(prefcap_log_level_t lvl, const char *msg, void *ud) {
  (void)ud;
  pthread_mutex_lock(&log_mu);
  if (lvl == PREFCAP_LOG_ERROR && !logged[0]) snprintf(logged, sizeof logged, "%s", msg);
  pthread_mutex_unlock(&log_mu);
}

static void retrying_counter_and_log(void) {
  const char *db = tu_dbpath();
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, db);
  prefcap_options_set_busy_timeout_ms(o, 20);
  prefcap_options_set_logger(o, logger, NULL);
  prefcap_t *pc = NULL;
  int rc = prefcap_open(o, &pc);
  prefcap_options_free(o);
  REQUIRE(rc == PREFCAP_OK);
  sqlite3 *other;
  REQUIRE(sqlite3_open(db, &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);   /* holds the write lock */
  log_line(pc, "{\"type\":\"generation\",\"id\":\"x\",\"prompt\":\"p\",\"completion\":\"c\"}");
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  for (int i = 0; i < 300; i++) {
    prefcap_get_counters(pc, &k);
    if (k.retrying) break;
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  EXPECTF(k.retrying == 1 && k.stored == 0, "retrying %llu stored %llu", (unsigned long long)k.retrying, (unsigned long long)k.stored);
  /* a caller built before `retrying` existed (its size ends at queued) never has it written: the
   * field's bytes in its memory keep what was there */
  prefcap_counters_t older;
  memset(&older, 0xAB, sizeof older);
  older.size = offsetof(prefcap_counters_t, retrying);
  EXPECT(prefcap_get_counters(pc, &older) == PREFCAP_OK);
  EXPECTF(older.retrying == 0xABABABABABABABABull && older.queued + older.stored <= 1,
          "retrying %llx queued %llu", (unsigned long long)older.retrying, (unsigned long long)older.queued);
  pthread_mutex_lock(&log_mu);
  EXPECTF(strstr(logged, "retrying") && strstr(logged, "locked"), "logged: %s", logged);
  pthread_mutex_unlock(&log_mu);
  EXPECT(prefcap_flush(pc, 100) == PREFCAP_ETIMEDOUT);
  sqlite3_exec(other, "COMMIT", NULL, NULL, NULL);
  sqlite3_close(other);
  EXPECT(prefcap_flush(pc, 10000) == PREFCAP_OK);
  prefcap_get_counters(pc, &k);
  EXPECT(k.retrying == 0 && k.stored == 1);
  prefcap_close(pc, -1);
}

int main(void) {
  RUN(pairs_with_filters);
  RUN(labels_with_filters);
  RUN(stats_struct_and_json);
  RUN(check_and_reports);
  RUN(helpers);
  RUN(retrying_counter_and_log);
  return tst_end();
}

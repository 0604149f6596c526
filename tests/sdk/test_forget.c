/* tests/sdk/test_forget.c: erasure, lineage and retention through the C API, checked against the
 * real file. A victim and a bystander log distinctive strings in every field that holds text
 * (prompt, system prompt, messages, completion, a 20 KB completion in overflow pages, edit text,
 * params, session and user ids); after prefcap_forget_user the victim's strings must be absent from
 * the database file and its WAL read as raw bytes (and present before: the grep is shown to work),
 * absent from a later export, the bystander's data untouched, late events refused and counted, and
 * the exports that held the victim named. Prune must keep what live pairs need, and what is left
 * must derive exactly what is left (derive --all afterwards changes nothing). */
#include "forget.h"
#include "internal.h"
#include "test.h"
#include "util.h"

#include <sqlite3.h>
#include <sys/stat.h>

// ---- helpers -------------------------------------------------------------------------------------

static const char *VICTIM = "victim-7f3a9";
static const char *BYSTANDER = "bystander-1";

/* Every string the victim leaves, one per field that holds text. */
static const char *const VICTIM_STRINGS[] = {
    "ZEBRA-PROMPT-q81", "ZEBRA-SYSTEM-k27", "ZEBRA-MESSAGE-x55", "ZEBRA-COMPLETION-c64", "ZEBRA-EDIT-m19",
    "ZEBRA-PARAM-p03", "ZEBRA-OVERFLOW-TAIL-t88", "zebra-session-99", "victim-7f3a9", "ZEBRA-CHOSEN-h42",
};
#define N_VICTIM_STRINGS (sizeof VICTIM_STRINGS / sizeof *VICTIM_STRINGS)

/* Does the file hold these bytes anywhere? (A missing file holds nothing.) */
static bool file_has(const char *path, const char *needle) {
  size_t n;
  char *p = tu_read_file(path, &n);
  bool found = p && memmem(p, n, needle, strlen(needle)) != NULL;
  free(p);
  return found;
}

/* ... in the database file or its WAL */
static bool store_has(const char *db, const char *needle) {
  char wal[700];
  snprintf(wal, sizeof wal, "%s-wal", db);
  return file_has(db, needle) || file_has(wal, needle);
}

static long long wal_size(const char *db) {
  char wal[700];
  struct stat st;
  snprintf(wal, sizeof wal, "%s-wal", db);
  return stat(wal, &st) == 0 ? (long long)st.st_size : 0;
}

static prefcap_t *open_store(const char *path, prefcap_durability_t mode, int busy_ms) {
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, path);
  prefcap_options_set_durability(o, mode);
  if (busy_ms >= 0) prefcap_options_set_busy_timeout_ms(o, busy_ms);
  prefcap_t *pc = NULL;
  int rc = prefcap_open(o, &pc);
  prefcap_options_free(o);
  if (rc) fprintf(stderr, "  open %s: %s\n", path, prefcap_strerror(rc));
  return pc;
}

static int gen(prefcap_t *pc, const char *id, const char *user, const char *session, const char *prompt,
               const char *completion, const char *regenerates, int64_t ts) {
  prefcap_generation_t g = PREFCAP_GENERATION_INIT;
  g.id = id; g.user_id = user; g.session_id = session; g.prompt = prompt; g.completion = completion;
  g.regenerates = regenerates; g.ts_ms = ts; g.model = "acme";
  return prefcap_log_generation(pc, &g, NULL);
}

static int fb(prefcap_t *pc, prefcap_feedback_kind_t kind, const char *id, const char *text, int rating,
              const char *rejected, int64_t ts) {
  prefcap_feedback_t f = PREFCAP_FEEDBACK_INIT;
  f.kind = kind; f.id = id; f.text = text; f.rating = rating; f.rejected_id = rejected; f.ts_ms = ts;
  return prefcap_log_feedback(pc, &f);
}

/* The pairs and labels as one string, to compare before and after. */
static char *derived_snapshot(const char *db) {
  return tu_query_text(db,
                       "SELECT ifnull((SELECT group_concat(x, char(10)) FROM (SELECT id || '|' || key || '|' || weight || '|'"
                       " || source || '|' || flags || '|' || ifnull(chosen_text, '') AS x FROM pairs ORDER BY key)), '') || '#' ||"
                       " ifnull((SELECT group_concat(y, char(10)) FROM (SELECT gen_id || '|' || desirable || '|' || signal || '|'"
                       " || weight || '|' || source AS y FROM labels ORDER BY gen_id)), '')");
}

static long long count(const char *db, const char *sql) { return tu_query(db, sql); }

/* A big completion: 20 KB, so it lives in overflow pages, with a distinctive tail. */
static char *big_text(void) {
  size_t n = 20000;
  char *s = malloc(n + 64);
  for (size_t i = 0; i < n; i++) s[i] = "zebra stripes "[i % 14];
  strcpy(s + n, " ZEBRA-OVERFLOW-TAIL-t88");
  return s;
}

/* The victim's and the bystander's history, interleaved so that they share pages. Returns the
 * number of the victim's rows (generations + events + pairs + labels + rated) after derivation, or
 * -1. The bystander logs N_BYSTANDER generations with feedback, the victim 4 every 20 of them: enough
 * rows for many page splits, which leave stale copies of cells behind (the reason forget VACUUMs). */
#define N_BYSTANDER 1000
static long long build_store(prefcap_t *pc, const char *db) {
  int64_t t0 = prefcap__now_ms() - 3600 * 1000;
  char *big = big_text();
  int rc = 0;
  for (int i = 0; i < N_BYSTANDER && !rc; i++) {
    char id[32], prompt[64], comp[64], edit[64];
    snprintf(id, sizeof id, "b%d", i);
    snprintf(prompt, sizeof prompt, "OKAPI-PROMPT-%d", i);
    snprintf(comp, sizeof comp, "OKAPI-COMPLETION-%d", i);
    snprintf(edit, sizeof edit, "OKAPI-EDIT-%d with more words", i);
    rc = gen(pc, id, BYSTANDER, "okapi-session", prompt, comp, NULL, t0 + i * 10);
    if (!rc && i % 3 == 0) rc = fb(pc, PREFCAP_FB_EDIT, id, edit, 0, NULL, t0 + i * 10 + 1);
    if (!rc && i % 3 == 1) rc = fb(pc, PREFCAP_FB_COPY, id, NULL, 0, NULL, t0 + i * 10 + 1);
    if (rc || i % 20) continue;
    /* the victim, every 20th step: text prompt with a system prompt, params, an edit, a regeneration
     * that was accepted, a side-by-side choice, ratings, a message-form generation */
    char v1[32], v2[32], v3[32], v4[32];
    snprintf(v1, sizeof v1, "v%d-a", i); snprintf(v2, sizeof v2, "v%d-b", i);
    snprintf(v3, sizeof v3, "v%d-c", i); snprintf(v4, sizeof v4, "v%d-d", i);
    prefcap_generation_t g = PREFCAP_GENERATION_INIT;
    g.id = v1; g.user_id = VICTIM; g.session_id = "zebra-session-99"; g.prompt = "ZEBRA-PROMPT-q81 what next?";
    g.system = "ZEBRA-SYSTEM-k27 be kind"; g.completion = i == 0 ? big : "ZEBRA-COMPLETION-c64 first answer";
    g.params_json = "{\"temperature\":0.7,\"note\":\"ZEBRA-PARAM-p03\"}"; g.ts_ms = t0 + i * 10 + 2; g.model = "acme";
    rc = prefcap_log_generation(pc, &g, NULL);
    if (!rc) rc = fb(pc, PREFCAP_FB_EDIT, v1, "ZEBRA-EDIT-m19 the user's own words, rather different", 0, NULL, t0 + i * 10 + 3);
    if (!rc) rc = gen(pc, v2, VICTIM, "zebra-session-99", "ZEBRA-PROMPT-q81 what next?", "ZEBRA-CHOSEN-h42 second answer", v1, t0 + i * 10 + 4);
    if (!rc) rc = fb(pc, PREFCAP_FB_ACCEPT, v2, NULL, 0, NULL, t0 + i * 10 + 5);
    prefcap_message_t msgs[] = {{"system", "ZEBRA-SYSTEM-k27"}, {"user", "ZEBRA-MESSAGE-x55 hello"}};
    prefcap_generation_t m = PREFCAP_GENERATION_INIT;
    m.id = v3; m.user_id = VICTIM; m.messages = msgs; m.n_messages = 2; m.completion = "ZEBRA-COMPLETION-c64 third";
    m.ts_ms = t0 + i * 10 + 6; m.session_id = "zebra-session-99";
    if (!rc) rc = prefcap_log_generation(pc, &m, NULL);
    m.id = v4; m.completion = "ZEBRA-COMPLETION-c64 fourth"; m.ts_ms = t0 + i * 10 + 7;
    if (!rc) rc = prefcap_log_generation(pc, &m, NULL);
    if (!rc) rc = fb(pc, PREFCAP_FB_CHOICE, v3, NULL, 0, v4, t0 + i * 10 + 8);
    if (!rc) rc = fb(pc, PREFCAP_FB_RATING, v3, NULL, 1, NULL, t0 + i * 10 + 8);
    if (!rc) rc = fb(pc, PREFCAP_FB_RATING, v4, NULL, -1, NULL, t0 + i * 10 + 9);
  }
  free(big);
  if (rc) { fprintf(stderr, "  logging failed: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc)); return -1; }
  if (prefcap_derive(pc, 0)) return -1;
  return count(db, "SELECT (SELECT count(*) FROM generations WHERE user_id = 'victim-7f3a9')"
                   " + (SELECT count(*) FROM events WHERE gen_id IN (SELECT id FROM generations WHERE user_id = 'victim-7f3a9')"
                   "    OR other_id IN (SELECT id FROM generations WHERE user_id = 'victim-7f3a9'))"
                   " + (SELECT count(*) FROM pairs WHERE unit IN (SELECT id FROM generations WHERE user_id = 'victim-7f3a9'))"
                   " + (SELECT count(*) FROM labels WHERE gen_id IN (SELECT id FROM generations WHERE user_id = 'victim-7f3a9'))"
                   " + (SELECT count(*) FROM rated WHERE user_id = 'victim-7f3a9')");
}

typedef struct { int n; char ids[8][64]; uint64_t user_records[8], records[8]; char names[8][32]; } seen_exports;

static void on_export(const prefcap_export_info_t *e, void *ud) {
  seen_exports *s = ud;
  if (s->n < 8) {
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", e->id);
    snprintf(s->names[s->n], sizeof s->names[0], "%s", e->name ? e->name : "");
    s->user_records[s->n] = e->user_records;
    s->records[s->n] = e->records;
  }
  s->n++;
}

static int run_export(prefcap_t *pc, const char *out, const char *name, prefcap_export_result_t *res) {
  prefcap_export_options_t *o = prefcap_export_options_new();
  prefcap_export_options_set_out(o, out);
  if (name) prefcap_export_options_set_since_last(o, name);
  *res = (prefcap_export_result_t)PREFCAP_EXPORT_RESULT_INIT;
  int rc = prefcap_export(pc, o, res);
  prefcap_export_options_free(o);
  if (rc) fprintf(stderr, "  export: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc));
  return rc;
}

// ---- erasure -------------------------------------------------------------------------------------

static void test_forget_erases_raw_bytes(void) {
  const char *db = tu_dbpath();
  char dir[600], out1[700], out2[700];
  snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(db, '/') - db), db);
  snprintf(out1, sizeof out1, "%s/night1.jsonl", dir);
  snprintf(out2, sizeof out2, "%s/full-after.jsonl", dir);
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, -1);
  REQUIRE(pc);
  long long victim_rows = build_store(pc, db);
  REQUIRE(victim_rows > 0);
  /* the nightly export that will hold both users' records */
  prefcap_export_result_t res = PREFCAP_EXPORT_RESULT_INIT;
  REQUIRE(run_export(pc, out1, "nightly", &res) == 0);
  REQUIRE(res.records > 0);
  EXPECT(file_has(out1, "ZEBRA-EDIT-m19") && file_has(out1, "OKAPI-EDIT-0"));
  char *bystander_before = tu_query_text(db, "SELECT group_concat(key, ',') FROM (SELECT key FROM pairs WHERE unit LIKE 'b%' ORDER BY key)");
  /* before: every victim string is in the file or its WAL, so the check below can fail */
  for (size_t i = 0; i < N_VICTIM_STRINGS; i++) EXPECTF(store_has(db, VICTIM_STRINGS[i]), "'%s' stored before", VICTIM_STRINGS[i]);
  EXPECT(count(db, "PRAGMA secure_delete") >= 0);

  seen_exports seen = {0};
  prefcap__erase_counts k;
  int rc = prefcap__forget_user_ex(pc, VICTIM, on_export, &seen, &k);
  EXPECTF(rc == 0, "%s: %s", prefcap_strerror(rc), prefcap_errmsg(pc));
  EXPECTF((long long)prefcap__erase_total(&k) == victim_rows, "erased %llu, victim had %lld rows",
          (unsigned long long)prefcap__erase_total(&k), victim_rows);
  EXPECT(k.committed && k.wal_truncated && !k.rederived);
  EXPECT(k.generations == N_BYSTANDER / 20 * 4 && k.pairs > 0 && k.labels > 0 && k.rated > 0 && k.events > 0);
  EXPECTF(seen.n == 1 && !strcmp(seen.ids[0], res.export_id) && !strcmp(seen.names[0], "nightly"),
          "%d export(s) reported", seen.n);
  EXPECT(seen.n == 1 && seen.user_records[0] > 0 && seen.user_records[0] < seen.records[0]);
  /* after: gone from the file and the WAL, read as raw bytes; the WAL is empty */
  EXPECTF(wal_size(db) == 0, "WAL is %lld bytes", wal_size(db));
  for (size_t i = 0; i < N_VICTIM_STRINGS; i++) EXPECTF(!store_has(db, VICTIM_STRINGS[i]), "'%s' still in the file", VICTIM_STRINGS[i]);
  /* the bystander is untouched, and the grep still finds what is there */
  EXPECT(store_has(db, "OKAPI-EDIT-198 with more words") && store_has(db, "OKAPI-PROMPT-999"));
  EXPECT(count(db, "SELECT count(*) FROM generations") == N_BYSTANDER);
  char *bystander_after = tu_query_text(db, "SELECT group_concat(key, ',') FROM (SELECT key FROM pairs WHERE unit LIKE 'b%' ORDER BY key)");
  EXPECT(bystander_before && bystander_after && !strcmp(bystander_before, bystander_after));
  free(bystander_before); free(bystander_after);
  EXPECT(count(db, "SELECT count(*) FROM tombstones") == 1);
  EXPECT(count(db, "SELECT count(*) FROM erased_generations") == N_BYSTANDER / 20 * 4);
  EXPECT(tu_integrity_ok(db));
  /* a later export holds none of it; lineage still knows the old export held the user */
  REQUIRE(run_export(pc, out2, NULL, &res) == 0);
  EXPECT(res.records > 0 && file_has(out2, "OKAPI-EDIT-0"));
  for (size_t i = 0; i < N_VICTIM_STRINGS; i++) EXPECTF(!file_has(out2, VICTIM_STRINGS[i]), "'%s' in a later export", VICTIM_STRINGS[i]);
  seen_exports lin = {0};
  EXPECT(prefcap_lineage_user(pc, VICTIM, on_export, &lin) == 0);
  EXPECT(lin.n == 1 && !strcmp(lin.ids[0], seen.ids[0]));
  /* what is left derives what is left */
  char *snap = derived_snapshot(db);
  EXPECT(prefcap_derive(pc, 1) == 0);
  char *snap2 = derived_snapshot(db);
  EXPECT(snap && snap2 && !strcmp(snap, snap2));
  free(snap); free(snap2);
  /* forgetting again is harmless: nothing more to erase, the same export named */
  seen_exports again = {0};
  uint64_t erased = 99;
  EXPECT(prefcap_forget_user(pc, VICTIM, on_export, &again, &erased) == 0);
  EXPECT(erased == 0 && again.n == 1);
  EXPECT(prefcap_close(pc, -1) == 0);
  for (size_t i = 0; i < N_VICTIM_STRINGS; i++) EXPECTF(!store_has(db, VICTIM_STRINGS[i]), "'%s' back after close", VICTIM_STRINGS[i]);
}

static void test_late_events_refused(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, -1);
  REQUIRE(pc);
  int64_t t = prefcap__now_ms();
  REQUIRE(gen(pc, "late-a", VICTIM, "s", "ZEBRA-PROMPT-q81", "ZEBRA-COMPLETION-c64", NULL, t) == 0);
  REQUIRE(gen(pc, "other-a", BYSTANDER, "s", "OKAPI-PROMPT", "OKAPI-COMPLETION", NULL, t) == 0);
  /* feedback that came before its generation (the generation is still on its way) */
  REQUIRE(fb(pc, PREFCAP_FB_EDIT, "late-future", "ZEBRA-ORPHAN-EDIT-o11 waiting", 0, NULL, t) == 0);
  REQUIRE(prefcap_forget_user(pc, VICTIM, NULL, NULL, NULL) == 0);
  EXPECT(count(db, "SELECT count(*) FROM events WHERE gen_id = 'late-future'") == 1);   /* nobody knew whose it was */

  /* a new generation of the erased user */
  int rc = gen(pc, "late-b", VICTIM, "s", "ZEBRA-LATE-PROMPT-l01", "ZEBRA-LATE-COMPLETION", NULL, t + 1);
  EXPECTF(rc == PREFCAP_EREFUSED, "%s", prefcap_strerror(rc));
  EXPECT(strstr(prefcap_errmsg(pc), "erased user") != NULL);
  /* the erased generation replayed without its user id */
  const char *replay = "{\"type\":\"generation\",\"id\":\"late-a\",\"prompt\":\"ZEBRA-PROMPT-q81\",\"completion\":\"x\"}";
  EXPECT(prefcap_log_json(pc, replay, strlen(replay), NULL) == PREFCAP_EREFUSED);
  /* feedback on an erased generation id, and a choice against one */
  EXPECT(fb(pc, PREFCAP_FB_EDIT, "late-a", "ZEBRA-LATE-EDIT-e02", 0, NULL, t + 2) == PREFCAP_EREFUSED);
  EXPECT(fb(pc, PREFCAP_FB_CHOICE, "other-a", NULL, 0, "late-a", t + 3) == PREFCAP_EREFUSED);
  /* the erased user's generation that the waiting feedback was for: refused, and the feedback goes */
  EXPECT(gen(pc, "late-future", VICTIM, "s", "ZEBRA-LATE-PROMPT-l01", "y", NULL, t + 4) == PREFCAP_EREFUSED);
  EXPECT(count(db, "SELECT count(*) FROM events WHERE gen_id = 'late-future'") == 0);
  EXPECT(fb(pc, PREFCAP_FB_COPY, "late-future", NULL, 0, NULL, t + 5) == PREFCAP_EREFUSED);
  EXPECT(count(db, "SELECT value FROM counters WHERE name = 'refused'") == 6);
  /* the bystander still logs */
  EXPECT(fb(pc, PREFCAP_FB_COPY, "other-a", NULL, 0, NULL, t + 6) == 0);
  EXPECT(count(db, "SELECT count(*) FROM generations") == 1);
  EXPECT(prefcap_close(pc, -1) == 0);

  /* async: refused at the writer, counted as failed on the handle and as refused in the store */
  pc = open_store(db, PREFCAP_ASYNC, -1);
  REQUIRE(pc);
  EXPECT(fb(pc, PREFCAP_FB_EDIT, "late-a", "ZEBRA-LATE-EDIT-e03", 0, NULL, t + 7) == 0);   /* queued */
  EXPECT(gen(pc, "late-c", VICTIM, NULL, "ZEBRA-LATE-PROMPT-l01", "z", NULL, t + 8) == 0);
  EXPECT(prefcap_flush(pc, 10000) == 0);
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(pc, &k);
  EXPECTF(k.failed == 2, "failed = %llu", (unsigned long long)k.failed);
  EXPECT(prefcap_close(pc, -1) == 0);
  EXPECT(count(db, "SELECT value FROM counters WHERE name = 'refused'") == 8);
  /* nothing of it reached the file (closed: the WAL is checkpointed and gone) */
  const char *late[] = {"ZEBRA-LATE-PROMPT-l01", "ZEBRA-LATE-EDIT-e02", "ZEBRA-LATE-EDIT-e03", "ZEBRA-ORPHAN-EDIT-o11",
                        "ZEBRA-PROMPT-q81", "ZEBRA-COMPLETION-c64"};
  for (size_t i = 0; i < sizeof late / sizeof *late; i++) EXPECTF(!store_has(db, late[i]), "'%s' in the file", late[i]);
  EXPECT(store_has(db, "OKAPI-COMPLETION"));
}

static void test_forget_shared_pairs_rederived(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, -1);
  REQUIRE(pc);
  int64_t t = prefcap__now_ms() - 1000;
  /* one shared session (a family account, a shared screen): ratings across users pair up */
  REQUIRE(gen(pc, "vg", VICTIM, "shared", "same prompt", "ZEBRA-COMPLETION-c64", NULL, t) == 0);
  REQUIRE(gen(pc, "bh", BYSTANDER, "shared", "same prompt", "OKAPI-COMPLETION-h", NULL, t + 1) == 0);
  REQUIRE(fb(pc, PREFCAP_FB_RATING, "vg", NULL, -1, NULL, t + 2) == 0);
  REQUIRE(fb(pc, PREFCAP_FB_RATING, "bh", NULL, 1, NULL, t + 3) == 0);
  /* the victim regenerated the bystander's answer: the bystander's generation is labelled
   * "regenerated" only because of the victim */
  REQUIRE(gen(pc, "bp", BYSTANDER, "shared", "other prompt", "OKAPI-COMPLETION-p", NULL, t + 4) == 0);
  REQUIRE(gen(pc, "vc", VICTIM, "shared", "other prompt", "ZEBRA-CHOSEN-h42", "bp", t + 5) == 0);
  REQUIRE(prefcap_derive(pc, 0) == 0);
  REQUIRE(count(db, "SELECT count(*) FROM pairs WHERE key = 'rating:bh:vg'") == 1);
  REQUIRE(count(db, "SELECT count(*) FROM labels WHERE gen_id = 'bp' AND signal = 'regenerate'") == 1);
  prefcap__erase_counts k;
  EXPECT(prefcap__forget_user_ex(pc, VICTIM, NULL, NULL, &k) == 0);
  EXPECT(k.rederived && k.wal_truncated);
  EXPECT(count(db, "SELECT count(*) FROM pairs") == 0);
  EXPECT(count(db, "SELECT count(*) FROM labels WHERE gen_id = 'bp'") == 0);      /* no longer regenerated */
  EXPECT(count(db, "SELECT count(*) FROM labels WHERE gen_id = 'bh' AND desirable = 1") == 1);   /* its own rating */
  char *snap = derived_snapshot(db);
  EXPECT(prefcap_derive(pc, 1) == 0);
  char *snap2 = derived_snapshot(db);
  EXPECT(snap && snap2 && !strcmp(snap, snap2));
  free(snap); free(snap2);
  EXPECT(!store_has(db, "ZEBRA-COMPLETION-c64") && !store_has(db, "ZEBRA-CHOSEN-h42") && store_has(db, "OKAPI-COMPLETION-h"));
  prefcap_close(pc, -1);
}

/* Another connection in a read transaction keeps the WAL from being truncated: forget says so
 * (PREFCAP_EBUSY, after erasing the rows and naming the exports), and a second forget, once the
 * reader is gone, completes it. */
/* Records an export's lineage as prefcap export does: its users (index -> hash, with counts) and a
 * blob of (record id, user index). One user per record here: uix[i] indexes hashes. */
static int put_lineage(sqlite3 *db, const char *export_id, const char *kind, const int64_t *ids, const int *uix, int n,
                       const char *const *hashes, int nhashes) {
  prefcap__buf b = {0};
  int64_t prev = 0;
  int counts[8] = {0};
  for (int i = 0; i < n; i++) {
    int32_t u = uix[i];
    prefcap__lineage_put(&b, &prev, ids[i], &u, 1);
    counts[uix[i]]++;
  }
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "UPDATE exports SET record_kind = ?2, lineage = ?3 WHERE id = ?1", -1, &st, NULL);
  sqlite3_bind_text(st, 1, export_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 3, b.p, (int)b.len, SQLITE_TRANSIENT);
  rc |= sqlite3_step(st) != SQLITE_DONE;
  sqlite3_finalize(st);
  free(b.p);
  for (int h = 0; h < nhashes; h++) {
    if (!counts[h]) continue;
    sqlite3_prepare_v2(db, "INSERT INTO export_users(export_id, user_index, user_hash, records) VALUES(?1, ?2, ?3, ?4)", -1, &st, NULL);
    sqlite3_bind_text(st, 1, export_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, h);
    sqlite3_bind_text(st, 3, hashes[h], -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, counts[h]);
    rc |= sqlite3_step(st) != SQLITE_DONE;
    sqlite3_finalize(st);
  }
  return rc;
}

static void test_forget_reader_blocks_wal(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, 200);
  REQUIRE(pc);
  int64_t t = prefcap__now_ms();
  REQUIRE(gen(pc, "rv", VICTIM, NULL, "ZEBRA-PROMPT-q81", "ZEBRA-COMPLETION-c64", NULL, t) == 0);
  REQUIRE(gen(pc, "rb", BYSTANDER, NULL, "OKAPI-PROMPT", "OKAPI-COMPLETION", NULL, t) == 0);
  REQUIRE(sqlite3_exec(prefcap__db(pc),
                       "INSERT INTO exports(id, name, path, format, filters, status, version_from, version_to, created, published, records)"
                       " VALUES('exp-r', 'nightly', '/data/r.jsonl', 'trl-dpo', '{}', 'published', 0, 1, 1, 2, 1);", NULL, NULL, NULL) == 0);
  char h[65];
  prefcap__user_hash(VICTIM, h);
  const char *hs[] = {h};
  int64_t rid[] = {1};
  int rix[] = {0};
  REQUIRE(put_lineage(prefcap__db(pc), "exp-r", "label", rid, rix, 1, hs, 1) == 0);
  sqlite3 *reader;
  REQUIRE(sqlite3_open_v2(db, &reader, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
  REQUIRE(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM generations;", NULL, NULL, NULL) == SQLITE_OK);
  seen_exports seen = {0};
  prefcap__erase_counts k;
  int rc = prefcap__forget_user_ex(pc, VICTIM, on_export, &seen, &k);
  EXPECTF(rc == PREFCAP_EBUSY, "%s", prefcap_strerror(rc));
  EXPECT(strstr(prefcap_errmsg(pc), "WAL") && strstr(prefcap_errmsg(pc), "run forget again"));
  EXPECT(k.committed && !k.wal_truncated && k.generations == 1 && seen.n == 1);
  sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL);
  sqlite3_close(reader);
  EXPECT(count(db, "SELECT count(*) FROM generations WHERE user_id = 'victim-7f3a9'") == 0);
  seen = (seen_exports){0};
  rc = prefcap__forget_user_ex(pc, VICTIM, on_export, &seen, &k);
  EXPECTF(rc == 0, "%s: %s", prefcap_strerror(rc), prefcap_errmsg(pc));
  EXPECT(k.wal_truncated && seen.n == 1 && wal_size(db) == 0);
  EXPECT(!store_has(db, "ZEBRA-PROMPT-q81") && !store_has(db, "ZEBRA-COMPLETION-c64") && store_has(db, "OKAPI-COMPLETION"));
  prefcap_close(pc, -1);
}

/* An export filtered with --user ID recorded the id in its filters: erasure replaces it by the hash. */
static void test_forget_scrubs_export_filters(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, -1);
  REQUIRE(pc);
  REQUIRE(sqlite3_exec(prefcap__db(pc),
                       "INSERT INTO exports(id, name, path, format, filters, status, version_from, version_to, created)"
                       " VALUES('exp-f', NULL, '/x', 'trl-dpo', '{\"user\":\"victim-7f3a9\",\"model\":null}', 'pending', 0, 1, 1);",
                       NULL, NULL, NULL) == 0);
  EXPECT(prefcap_forget_user(pc, VICTIM, NULL, NULL, NULL) == 0);
  char h[65], want[120];
  prefcap__user_hash(VICTIM, h);
  snprintf(want, sizeof want, "{\"user\":\"sha256:%s\",\"model\":null}", h);
  char *f = tu_query_text(db, "SELECT filters FROM exports WHERE id = 'exp-f'");
  EXPECTF(f && !strcmp(f, want), "%s", f ? f : "(null)");
  free(f);
  EXPECT(!store_has(db, VICTIM));
  prefcap_close(pc, -1);
}

static void test_forget_bad_arguments(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, -1);
  REQUIRE(pc);
  uint64_t n = 7;
  EXPECT(prefcap_forget_user(NULL, VICTIM, NULL, NULL, &n) == PREFCAP_EINVAL && n == 0);
  EXPECT(prefcap_forget_user(pc, NULL, NULL, NULL, NULL) == PREFCAP_EINVAL);
  EXPECT(prefcap_forget_user(pc, "", NULL, NULL, NULL) == PREFCAP_EINVAL);
  EXPECT(prefcap_forget_user(pc, "bad\xff", NULL, NULL, NULL) == PREFCAP_EINVAL);
  EXPECT(prefcap_lineage_user(pc, NULL, NULL, NULL) == PREFCAP_EINVAL);
  EXPECT(prefcap_lineage_export(pc, "", NULL, NULL, NULL) == PREFCAP_EINVAL);
  EXPECT(prefcap_prune(pc, 0, NULL) == PREFCAP_EINVAL);
  EXPECT(prefcap_prune(NULL, 5, NULL) == PREFCAP_EINVAL);
  /* a user never seen: a tombstone all the same (an erasure request may come before the data) */
  EXPECT(prefcap_forget_user(pc, "nobody-yet", NULL, NULL, &n) == 0 && n == 0);
  EXPECT(gen(pc, "n1", "nobody-yet", NULL, "p", "c", NULL, 0) == PREFCAP_EREFUSED);
  prefcap_close(pc, -1);
}

/* A store written by schema version 2 is migrated on open; forget works on a handle in async mode
 * (its writer thread shares the connection) and late events are refused at the writer. */
static void test_forget_async_after_migration(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, -1);
  REQUIRE(pc);
  prefcap_close(pc, -1);
  sqlite3 *h;
  REQUIRE(sqlite3_open(db, &h) == SQLITE_OK);
  REQUIRE(sqlite3_exec(h, "DROP TABLE erased_generations; DROP TABLE fleet_sources; PRAGMA user_version = 2;", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(h);
  pc = open_store(db, PREFCAP_ASYNC, -1);
  REQUIRE(pc);
  EXPECT(count(db, "PRAGMA user_version") == PREFCAP_SCHEMA_VERSION);
  EXPECT(count(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'erased_generations'") == 1);
  int64_t t = prefcap__now_ms();
  for (int i = 0; i < 50; i++) {
    char id[32];
    snprintf(id, sizeof id, "as-%d", i);
    EXPECT(gen(pc, id, i % 2 ? VICTIM : BYSTANDER, NULL, i % 2 ? "ZEBRA-PROMPT-q81" : "OKAPI-PROMPT",
               i % 2 ? "ZEBRA-COMPLETION-c64" : "OKAPI-COMPLETION", NULL, t + i) == 0);
    EXPECT(fb(pc, PREFCAP_FB_EDIT, id, i % 2 ? "ZEBRA-EDIT-m19 much changed text here" : "OKAPI-EDIT changed", 0, NULL, t + i) == 0);
  }
  EXPECT(prefcap_flush(pc, 10000) == 0);   /* stored; the pairs are derived in the background ... */
  EXPECT(prefcap_derive(pc, 0) == 0);        /* ... or now, on demand */
  uint64_t erased = 0;
  EXPECT(prefcap_forget_user(pc, VICTIM, NULL, NULL, &erased) == 0);
  EXPECTF(erased == 25 + 25 + 25, "erased %llu", (unsigned long long)erased);   /* generations, edits, edit pairs */
  EXPECT(gen(pc, "as-late", VICTIM, NULL, "ZEBRA-PROMPT-q81", "late", NULL, 0) == 0);   /* queued ... */
  EXPECT(prefcap_flush(pc, 10000) == 0);
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(pc, &k);
  EXPECT(k.failed == 1);                                                          /* ... refused */
  EXPECT(!store_has(db, "ZEBRA-PROMPT-q81") && !store_has(db, "ZEBRA-EDIT-m19") && store_has(db, "OKAPI-EDIT changed"));
  EXPECT(prefcap_close(pc, -1) == 0);
  EXPECT(count(db, "SELECT count(*) FROM generations") == 25 && tu_integrity_ok(db));
}

// ---- lineage -------------------------------------------------------------------------------------

typedef struct { int heads; char name[32], path[64], url[96]; int64_t published; uint64_t records; char lines[8][160]; int n; } lineage_seen;

static void on_head(const prefcap_export_info_t *e, void *ud) {
  lineage_seen *s = ud;
  s->heads++;
  snprintf(s->name, sizeof s->name, "%s", e->name ? e->name : "");
  snprintf(s->path, sizeof s->path, "%s", e->path);
  snprintf(s->url, sizeof s->url, "%s", e->upload_url ? e->upload_url : "-");
  s->published = e->published_ms;
  s->records = e->records;
}

static void on_record(const char *line, void *ud) {
  lineage_seen *s = ud;
  if (s->n < 8) snprintf(s->lines[s->n], sizeof s->lines[0], "%s", line);
  s->n++;
}

static void test_lineage(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, -1);
  REQUIRE(pc);
  char hv[65], hb[65], sql[1200];
  prefcap__user_hash(VICTIM, hv);
  prefcap__user_hash(BYSTANDER, hb);
  snprintf(sql, sizeof sql,
           "INSERT INTO exports(id, name, path, format, filters, status, version_from, version_to, created, published, records, upload_url)"
           " VALUES('exp-1', 'nightly', '/data/n1.jsonl', 'trl-dpo', '{}', 'published', 0, 5, 1000, 2000, 3, 's3://b/n1.jsonl'),"
           " ('exp-2', 'nightly', '/data/n2.jsonl', 'trl-kto', '{}', 'published', 5, 9, 3000, 4000, 1,"
           " 'https://bob:hunter2@up.example/b/n2.jsonl?X-Amz-Signature=zz'),"
           " ('exp-3', 'adhoc', '/data/p.jsonl', 'trl-dpo', '{}', 'pending', 0, 9, 5000, NULL, 1, NULL);");
  REQUIRE(sqlite3_exec(prefcap__db(pc), sql, NULL, NULL, NULL) == SQLITE_OK);
  const char *hs[] = {hv, hb};
  int64_t r1[] = {7, 8, 9}, r2[] = {4}, r3[] = {7};
  int u1[] = {0, 1, 0}, u2[] = {1}, u3[] = {0};
  REQUIRE(put_lineage(prefcap__db(pc), "exp-1", "pair", r1, u1, 3, hs, 2) == 0);
  REQUIRE(put_lineage(prefcap__db(pc), "exp-2", "label", r2, u2, 1, hs, 2) == 0);
  REQUIRE(put_lineage(prefcap__db(pc), "exp-3", "pair", r3, u3, 1, hs, 2) == 0);
  lineage_seen s = {0};
  EXPECT(prefcap_lineage_export(pc, "exp-1", on_head, on_record, &s) == 0);
  EXPECT(s.heads == 1 && !strcmp(s.name, "nightly") && !strcmp(s.path, "/data/n1.jsonl") && s.published == 2000 && s.records == 3);
  REQUIRE(s.n == 3);
  char want[160];
  snprintf(want, sizeof want, "{\"kind\":\"pair\",\"id\":7,\"user_hash\":\"%s\"}", hv);
  EXPECTF(!strcmp(s.lines[0], want), "%s", s.lines[0]);
  snprintf(want, sizeof want, "{\"kind\":\"pair\",\"id\":8,\"user_hash\":\"%s\"}", hb);
  EXPECTF(!strcmp(s.lines[1], want), "%s", s.lines[1]);
  EXPECTF(!strcmp(s.url, "s3://b/n1.jsonl"), "%s", s.url);
  /* a URL stored with credentials (as stores before 2026-11-30 kept it) is reported without them */
  s = (lineage_seen){0};
  EXPECT(prefcap_lineage_export(pc, "exp-2", on_head, NULL, &s) == 0);
  EXPECTF(!strcmp(s.url, "https://***@up.example/b/n2.jsonl?…"), "%s", s.url);
  /* a pending export is listed with what its row says it holds */
  s = (lineage_seen){0};
  EXPECT(prefcap_lineage_export(pc, "exp-3", on_head, NULL, &s) == 0 && s.heads == 1 && s.published == 0 && s.records == 1);
  EXPECT(prefcap_lineage_export(pc, "exp-404", on_head, on_record, &s) == PREFCAP_ENOTFOUND);
  EXPECT(strstr(prefcap_errmsg(pc), "exp-404") != NULL);
  /* by user: the victim was in exp-1 (2 records) and in the pending exp-3; the bystander in 1 and 2 */
  seen_exports v = {0}, b = {0};
  EXPECT(prefcap_lineage_user(pc, VICTIM, on_export, &v) == 0);
  EXPECT(v.n == 2 && !strcmp(v.ids[0], "exp-1") && v.user_records[0] == 2 && v.records[0] == 3 && !strcmp(v.ids[1], "exp-3"));
  EXPECT(prefcap_lineage_user(pc, BYSTANDER, on_export, &b) == 0);
  EXPECT(b.n == 2 && !strcmp(b.ids[0], "exp-1") && !strcmp(b.ids[1], "exp-2") && b.user_records[1] == 1);
  seen_exports none = {0};
  EXPECT(prefcap_lineage_user(pc, "someone-else", on_export, &none) == 0 && none.n == 0);
  prefcap_close(pc, -1);
}

// ---- retention -----------------------------------------------------------------------------------

static void test_prune_keeps_what_live_pairs_need(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = open_store(db, PREFCAP_SYNC, -1);
  REQUIRE(pc);
  int64_t old = 1577836800000LL;   /* 2020-01-01 */
  int64_t now = prefcap__now_ms(), cutoff = now - 30LL * 86400000;
  int rc = 0;
  /* o1 (old) regenerated by n1 (new), which was copied: the live pair n1 > o1 keeps o1 */
  rc |= gen(pc, "o1", "u", "s1", "P1", "old answer one", NULL, old);
  rc |= gen(pc, "n1", "u", "s1", "P1", "new answer one", "o1", now);
  rc |= fb(pc, PREFCAP_FB_COPY, "n1", NULL, 0, NULL, now);
  /* o2 (old), edited and copied long ago: all of it goes */
  rc |= gen(pc, "o2", "u", "s2", "P2", "PRUNED-COMPLETION-r77", NULL, old);
  rc |= fb(pc, PREFCAP_FB_EDIT, "o2", "PRUNED-EDIT-r78 quite a different text now", 0, NULL, old + 1);
  /* o5 (old) rated -1, n2 (new) rated +1, same prompt and session: the live pair n2 > o5 keeps o5
   * with its rating */
  rc |= gen(pc, "o5", "u", "s5", "P5", "old rated down", NULL, old);
  rc |= fb(pc, PREFCAP_FB_RATING, "o5", NULL, -1, NULL, old + 1);
  rc |= gen(pc, "n2", "u", "s5", "P5", "new rated up", NULL, now);
  rc |= fb(pc, PREFCAP_FB_RATING, "n2", NULL, 1, NULL, now);
  /* o7 (old) copied, then regenerated by o8 (old): no label (the signals contradict). n3 (new)
   * was chosen over o7: the live pair keeps o7, and o8 too, since without it o7 would be
   * labelled "copy" on the next derivation */
  rc |= gen(pc, "o7", "u", "s7", "P7", "old copied", NULL, old);
  rc |= fb(pc, PREFCAP_FB_COPY, "o7", NULL, 0, NULL, old + 1);
  rc |= gen(pc, "o8", "u", "s7", "P7", "old replacement", "o7", old + 2);
  rc |= gen(pc, "n3", "u", "s7", "P7", "new chosen", NULL, now);
  rc |= fb(pc, PREFCAP_FB_CHOICE, "n3", NULL, 0, "o7", now);
  /* feedback for generations never stored: an old one goes, a recent one stays (its generation may
   * still come) */
  rc |= fb(pc, PREFCAP_FB_ACCEPT, "never-old", NULL, 0, NULL, old);
  rc |= fb(pc, PREFCAP_FB_ACCEPT, "never-new", NULL, 0, NULL, now);
  REQUIRE(rc == 0);
  REQUIRE(prefcap_derive(pc, 0) == 0);
  REQUIRE(count(db, "SELECT count(*) FROM labels WHERE gen_id = 'o7'") == 0);
  REQUIRE(count(db, "SELECT count(*) FROM pairs WHERE key = 'edit:o2'") == 1);
  REQUIRE(store_has(db, "PRUNED-COMPLETION-r77"));
  char *live_before = tu_query_text(db, "SELECT group_concat(id || key, ',') FROM (SELECT id, key FROM pairs WHERE key != 'edit:o2' ORDER BY key)");
  char *tables_before = tu_query_text(db, "SELECT (SELECT count(*) FROM generations) || '/' || (SELECT count(*) FROM events) || '/' ||"
                                          " (SELECT count(*) FROM pairs) || '/' || (SELECT count(*) FROM labels) || '/' || (SELECT count(*) FROM rated)");

  prefcap__erase_counts dry, real;
  EXPECT(prefcap__prune_ex(pc, cutoff, true, true, &dry) == 0);
  char *tables_dry = tu_query_text(db, "SELECT (SELECT count(*) FROM generations) || '/' || (SELECT count(*) FROM events) || '/' ||"
                                       " (SELECT count(*) FROM pairs) || '/' || (SELECT count(*) FROM labels) || '/' || (SELECT count(*) FROM rated)");
  EXPECTF(tables_before && tables_dry && !strcmp(tables_before, tables_dry), "%s -> %s", tables_before, tables_dry);
  EXPECT(prefcap__prune_ex(pc, cutoff, false, true, &real) == 0);
  EXPECT(real.wal_truncated && wal_size(db) == 0);
  EXPECT(dry.generations == real.generations && dry.events == real.events && dry.pairs == real.pairs &&
         dry.labels == real.labels && dry.rated == real.rated && dry.kept_old == real.kept_old);
  EXPECTF(real.generations == 1 && real.events == 2 && real.pairs == 1 && real.kept_old == 4,
          "generations %llu events %llu pairs %llu kept_old %llu", (unsigned long long)real.generations,
          (unsigned long long)real.events, (unsigned long long)real.pairs, (unsigned long long)real.kept_old);
  char *gens = tu_query_text(db, "SELECT group_concat(id, ',') FROM (SELECT id FROM generations ORDER BY id)");
  EXPECTF(gens && !strcmp(gens, "n1,n2,n3,o1,o5,o7,o8"), "%s", gens ? gens : "(null)");
  free(gens);
  EXPECT(count(db, "SELECT count(*) FROM events WHERE gen_id = 'o5' AND type = 'rating'") == 1);
  EXPECT(count(db, "SELECT count(*) FROM events WHERE gen_id = 'never-old'") == 0);
  EXPECT(count(db, "SELECT count(*) FROM events WHERE gen_id = 'never-new'") == 1);
  char *live_after = tu_query_text(db, "SELECT group_concat(id || key, ',') FROM (SELECT id, key FROM pairs ORDER BY key)");
  EXPECTF(live_before && live_after && !strcmp(live_before, live_after), "%s -> %s", live_before, live_after);
  EXPECT(!store_has(db, "PRUNED-COMPLETION-r77") && !store_has(db, "PRUNED-EDIT-r78"));
  /* what is left derives exactly what is left */
  char *snap = derived_snapshot(db);
  EXPECT(prefcap_derive(pc, 1) == 0);
  char *snap2 = derived_snapshot(db);
  EXPECTF(snap && snap2 && !strcmp(snap, snap2), "\n%s\n--- after derive --all ---\n%s", snap, snap2);
  /* pruning again finds nothing more */
  uint64_t n = 9;
  EXPECT(prefcap_prune(pc, cutoff, &n) == 0 && n == 0);
  free(live_before); free(live_after); free(tables_before); free(tables_dry); free(snap); free(snap2);
  EXPECT(tu_integrity_ok(db));
  prefcap_close(pc, -1);
}

int main(void) {
  RUN(test_forget_erases_raw_bytes);
  RUN(test_late_events_refused);
  RUN(test_forget_shared_pairs_rederived);
  RUN(test_forget_reader_blocks_wal);
  RUN(test_forget_scrubs_export_filters);
  RUN(test_forget_bad_arguments);
  RUN(test_forget_async_after_migration);
  RUN(test_lineage);
  RUN(test_prune_keeps_what_live_pairs_need);
  return tst_end();
}

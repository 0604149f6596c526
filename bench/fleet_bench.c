/* bench/fleet_bench.c: a central store's ingest of events exports (docs/fleet.md), against the raw
 * SQLite insert rate measured in the same run on the same disk. Four host stores take N/4 events each
 * (60% generations, 40% feedback, with ids; 37 s apart, so that a host's quarter spans 107 days), each
 * writes its events export; then
 *   central   every line of the four files through prefcap_ingest_line (what `prefcap ingest` does:
 *             strict JSON, validation, idempotency, the writer thread's batched transactions), flushed;
 *   raw       the same rows, already parsed (untimed), inserted by two prepared INSERT OR IGNORE
 *             statements in transactions of 10,000 into a store of the same schema and pragmas.
 * Target: central >= 0.7x raw. usage: fleet_bench [N] [DIR]   (N default 1000000) */
#include "prefcap.h"

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* CPU seconds of the whole process (every thread): on a shared, loaded machine the wall times of two
 * phases run one after the other see different loads; the CPU each took is steadier */
static double cpu_s(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static prefcap_t *open_store(const char *path) {
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, path);
  prefcap_options_set_durability(o, PREFCAP_ASYNC);
  prefcap_options_set_block_when_full(o, 1);
  prefcap_t *pc = NULL;
  if (prefcap_open(o, &pc)) { fprintf(stderr, "open %s: %s\n", path, prefcap_errmsg(NULL)); exit(1); }
  prefcap_options_free(o);
  return pc;
}

typedef struct { char **lines; size_t n, cap; } lines_t;
static void add_line(lines_t *l, const char *s) {
  if (l->n == l->cap) { l->cap = l->cap ? l->cap * 2 : 1 << 16; l->lines = realloc(l->lines, l->cap * sizeof *l->lines); }
  l->lines[l->n++] = strdup(s);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  const char *base = argc > 2 ? argv[2] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  /* FLEET_BENCH_KEEP=1: the hosts' stores and exports are kept in DIR/fleet-bench-N and reused by the
   * next run (the hosts take most of a run's time; the central and raw stores are always made anew) */
  bool keep = getenv("FLEET_BENCH_KEEP") && atoi(getenv("FLEET_BENCH_KEEP"));
  char dir[512], path[700], line[1024];
  if (keep) {
    snprintf(dir, sizeof dir, "%s/fleet-bench-%ld", base, n);
    mkdir(dir, 0700);
  } else {
    snprintf(dir, sizeof dir, "%s/fleet-bench-XXXXXX", base);
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
  }
  srand(7);
  lines_t all = {0};
  double t0 = now_s();
  for (int h = 0; h < 4; h++) {
    snprintf(path, sizeof path, "%s/host%d.events", dir, h);
    if (keep && !access(path, R_OK)) goto read_export;
    snprintf(path, sizeof path, "%s/host%d.db", dir, h);
    unlink(path);
    prefcap_t *pc = open_store(path);
    long gens = 0;
    for (long i = 0; i < n / 4; i++) {
      if (gens == 0 || rand() % 10 < 6) {
        snprintf(line, sizeof line, "{\"type\":\"generation\",\"id\":\"h%d-g%ld\",\"prompt\":\"question %ld about topic %d\","
                 "\"completion\":\"an answer of moderate length, number %ld, with some words in it\",\"model\":\"m\","
                 "\"model_version\":\"v%d\",\"user_id\":\"u%d\",\"session_id\":\"s%ld\",\"ts\":%ld}",
                 h, gens, gens, rand() % 100, gens, rand() % 2, rand() % 5000, gens / 3, 1764000000000L + i * 37000L);
        gens++;
      } else {
        static const char *kinds[] = {"copy", "accept", "regenerate", "abandon"};
        snprintf(line, sizeof line, "{\"type\":\"%s\",\"id\":\"h%d-g%ld\",\"event_id\":\"h%d-e%ld\",\"ts\":%ld}", kinds[rand() % 4], h,
                 (long)(rand() % gens), h, i, 1764000000000L + i * 37000L);
      }
      prefcap_log_json(pc, line, strlen(line), NULL);
    }
    prefcap_close(pc, -1);
    pc = open_store(path);
    prefcap_export_options_t *eo = prefcap_export_options_new();
    snprintf(path, sizeof path, "%s/host%d.events", dir, h);
    prefcap_export_options_set_format(eo, PREFCAP_FORMAT_EVENTS);
    prefcap_export_options_set_out(eo, path);
    if (prefcap_export(pc, eo, NULL)) { fprintf(stderr, "export: %s\n", prefcap_errmsg(pc)); return 1; }
    prefcap_export_options_free(eo);
    prefcap_close(pc, -1);
  read_export:;
    FILE *f = fopen(path, "r");
    char *l = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&l, &cap, f)) > 0) { if (l[len - 1] == '\n') l[len - 1] = 0; add_line(&all, l); }
    free(l);
    fclose(f);
  }
  printf("hosts: %ld events in 4 stores and 4 events exports (%zu lines) in %.1f s\n", n, all.n, now_s() - t0);

  /* central: through the library, as `prefcap ingest` does */
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -f '%s'/central.db* '%s'/raw.db*", dir, dir);
  if (system(cmd)) {}
  snprintf(path, sizeof path, "%s/central.db", dir);
  prefcap_t *pc = open_store(path);
  t0 = now_s();
  double c0 = cpu_s();
  size_t stored = 0;
  for (size_t i = 0; i < all.n; i++) stored += prefcap_ingest_line(pc, all.lines[i], strlen(all.lines[i])) == PREFCAP_OK;
  prefcap_flush(pc, -1);
  double tc = now_s() - t0, cc = cpu_s() - c0;
  t0 = now_s();
  prefcap_close(pc, -1);
  double tclose = now_s() - t0;

  /* raw: the same rows into the same schema, parsed beforehand */
  snprintf(path, sizeof path, "%s/raw.db", dir);
  prefcap_close(open_store(path), -1);   /* the schema, the pragmas' file settings */
  typedef struct { char *a[8]; long long ts; bool gen; } row;
  row *rows = calloc(all.n, sizeof *rows);
  size_t nr = 0;
  for (size_t i = 0; i < all.n; i++) {
    cJSON *o = cJSON_Parse(all.lines[i]);
    const char *type = cJSON_GetObjectItem(o, "type")->valuestring;
    if (strcmp(type, "prefcap_events")) {
      row *r = &rows[nr++];
      r->gen = !strcmp(type, "generation");
      const char *g[] = {"id", "prompt", "completion", "model", "model_version", "user_id", "session_id"};
      const char *e[] = {"event_id", "type", "id"};
      for (int k = 0; k < (r->gen ? 7 : 3); k++) r->a[k] = strdup(cJSON_GetObjectItem(o, r->gen ? g[k] : e[k])->valuestring);
      r->ts = (long long)cJSON_GetObjectItem(o, "ts")->valuedouble;
    }
    cJSON_Delete(o);
  }
  sqlite3 *db;
  sqlite3_open(path, &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  sqlite3_stmt *ig, *ie;
  sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO generations(id, ts, received, prompt, completion, model, model_version, user_id, session_id)"
                         " VALUES(?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", -1, &ig, NULL);
  sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO events(event_id, type, gen_id, source, ts, received) VALUES(?1, ?2, ?3, 'human', ?4, ?4)", -1, &ie, NULL);
  t0 = now_s();
  c0 = cpu_s();
  for (size_t i = 0; i < nr; i++) {
    if (i % 10000 == 0) sqlite3_exec(db, i ? "COMMIT; BEGIN" : "BEGIN", NULL, NULL, NULL);
    row *r = &rows[i];
    sqlite3_stmt *st = r->gen ? ig : ie;
    sqlite3_bind_text(st, 1, r->a[0], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, r->ts);
    if (r->gen) for (int k = 1; k < 7; k++) sqlite3_bind_text(st, 2 + k, r->a[k], -1, SQLITE_STATIC);
    else { sqlite3_bind_text(st, 2, r->a[1], -1, SQLITE_STATIC); sqlite3_bind_text(st, 3, r->a[2], -1, SQLITE_STATIC); sqlite3_bind_int64(st, 4, r->ts); }
    sqlite3_step(st);
    sqlite3_reset(st);
  }
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  double tr = now_s() - t0, cr = cpu_s() - c0;
  sqlite3_finalize(ig);
  sqlite3_finalize(ie);
  sqlite3_close(db);
  printf("central ingest: %zu events in %.2f s = %.0f events/s (%zu accepted; %.2f s CPU)\n", nr, tc, nr / tc, stored, cc);
  printf("  then close (derives the pairs and labels, checkpoints): %.2f s\n", tclose);
  printf("raw SQLite insert: %zu rows in %.2f s = %.0f rows/s (%.2f s CPU)\n", nr, tr, nr / tr, cr);
  printf("ratio central/raw: %.2fx (target >= 0.70x); by CPU time %.2fx\n", (nr / tc) / (nr / tr), cr / cc);
  /* kept: central.db stays too (a million-event store with its pairs, for `prefcap report`'s bench) */
  snprintf(cmd, sizeof cmd, keep ? "rm -f '%s'/raw.db*" : "rm -rf '%s'", dir);
  if (system(cmd)) {}
  return 0;
}

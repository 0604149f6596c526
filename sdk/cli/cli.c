/* sdk/cli/cli.c: the `prefcap` command: the SDK from the shell, for backends in any language (ingest JSON
 * lines), for looking at what was captured (stats, pairs), for checking a store, and for the nightly
 * job. Every command takes --db PATH (default $PREFCAP_DB, else ./prefcap.db) and --help. It uses the
 * library through include/prefcap.h only; what it prints from outside goes through S() (cli.h).
 *
 * Exit codes: 0 success, 1 the work failed (or some input lines were bad), 2 usage error. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

// ---- helpers -------------------------------------------------------------------------------------

/* Prints text shortened to at most n characters on one line: newlines shown as a return symbol,
 * tabs as spaces, other control bytes escaped (S()). */
static void print_short(FILE *f, const char *s, int n) {
  if (!s) { fputs("-", f); return; }
  int shown = 0;
  const unsigned char *p = (const unsigned char *)s;
  for (; *p; p++) {
    if ((*p & 0xC0) != 0x80) {   /* a character starts here: stop before the (n+1)th */
      if (shown == n) break;
      shown++;
    }
    if (*p == '\n') fputs("\u23ce", f);
    else if (*p == '\t' || *p == '\r') fputc(' ', f);
    else if (*p < 0x20 || *p == 0x7F || (*p == 0xC2 && p[1] >= 0x80 && p[1] < 0xA0)) {
      char one[3] = {(char)p[0], *p == 0xC2 ? (char)p[1] : 0, 0};
      fputs(S(one), f);
      if (*p == 0xC2) p++;
    } else fputc(*p, f);
  }
  if (*p) fputs("\u2026", f);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Derives what is pending, as the reading commands do first. A damaged store is an error (1); any
 * other failure is said and the command goes on with what is stored (0). */
static int derive_first(const char *cmd, prefcap_t *pc) {
  int rc = prefcap_derive(pc, 0);
  if (!rc) return 0;
  if (rc == PREFCAP_ECORRUPT) { cli_fail(cmd, pc, rc); return 1; }
  const char *d = prefcap_errmsg(pc);
  fprintf(stderr, "prefcap %s: deriving pairs failed: %s%s%s (showing what is stored)\n", cmd, prefcap_strerror(rc),
          d[0] ? ": " : "", S(d));
  return 0;
}

// ---- ingest --------------------------------------------------------------------------------------

#define INGEST_QUEUE 65536
#define INGEST_TIMEOUT_S 60

/* The ingest loop's watch on the writer: gives up when it has finished nothing (stored or failed)
 * for timeout_s while events wait (a read-only file or a full disk: the library retries forever,
 * for embedded use). The clock runs only while something is pending: a slow producer on stdin is
 * not a stalled store. */
typedef struct { prefcap_t *pc; int timeout_s; uint64_t seen; int64_t since; bool stalled; } watch;

static bool stalled(watch *w) {
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(w->pc, &k);
  uint64_t f = k.stored + k.failed;
  int64_t t = now_ms();
  if (f != w->seen || k.accepted <= f) { w->seen = f; w->since = t; return false; }
  return w->stalled = t - w->since >= (int64_t)w->timeout_s * 1000;
}

static int cmd_ingest(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"sync", 0, 0, 's'}, {"redact", 0, 0, 'r'},
                                     {"max-text", 1, 0, 'm'}, {"timeout", 1, 0, 't'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db();
  bool sync_mode = false, redact = false;
  long max_text = 0, timeout_s = INGEST_TIMEOUT_S;
  char *end;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 's': sync_mode = true; break;
      case 'r': redact = true; break;
      case 'm': max_text = strtol(optarg, &end, 10); if (max_text < 1 || *end) return cli_usage_error("ingest", "--max-text must be a positive byte count"); break;
      case 't': timeout_s = strtol(optarg, &end, 10); if (timeout_s < 1 || timeout_s > 86400 || *end) return cli_usage_error("ingest", "--timeout must be 1 to 86400 seconds"); break;
      case 'h':
        printf("usage: prefcap ingest [--db PATH] [--sync] [--redact] [--max-text BYTES] [--timeout S] [FILE|-]\n\n"
               "Stores events given as JSON lines (docs/events.md), one event per line, with the same\n"
               "semantics as the C API: replayed events are stored once, feedback may come before its\n"
               "generation. A bad line is reported with its line number and reason; the good lines are\n"
               "still stored, and the exit code is then 1. Pairs are derived before it exits.\n\n"
               "  --sync       commit each event before reading the next (default: batched)\n"
               "  --redact     replace e-mails, phone numbers, card numbers and keys (docs/redaction.md)\n"
               "  --max-text   refuse texts longer than this many bytes (default 1 MiB)\n"
               "  --timeout S  give up (exit 1) when no event could be stored for S seconds: a read-only\n"
               "               store, a full disk, a lock held by another process (default %d)\n", INGEST_TIMEOUT_S);
        return 0;
      default: return 2;
    }
  }
  if (argc - optind > 1) return cli_usage_error("ingest", "give at most one FILE");
  const char *path = optind < argc ? argv[optind] : "-";
  FILE *in = strcmp(path, "-") ? fopen(path, "rb") : stdin;
  if (!in) { fprintf(stderr, "prefcap ingest: cannot open %s: %s\n", S(path), strerror(errno)); return 1; }
  prefcap_options_t *o = prefcap_options_new();
  if (!o) return 1;
  /* The CLI waits for queue space itself (below), bounded by --timeout, rather than blocking in the
   * library (prefcap_options_set_block_when_full), which would wait forever on a store that never
   * takes a write. It is the queue's only producer, so space it sees stays free for it. */
  prefcap_options_set_queue_capacity(o, INGEST_QUEUE);
  prefcap_options_set_redact(o, redact);
  if (max_text) prefcap_options_set_max_text_bytes(o, (size_t)max_text);
  prefcap_t *pc;
  int rc = cli_open(db, sync_mode ? PREFCAP_SYNC : PREFCAP_ASYNC, o, true, &pc);
  prefcap_options_free(o);
  if (rc) { if (in != stdin) fclose(in); return rc; }
  char *line = NULL;
  size_t cap = 0, lineno = 0, bad = 0, ok = 0;
  ssize_t len;
  const char *name = strcmp(path, "-") ? path : "<stdin>";
  watch w = {pc, (int)timeout_s, 0, now_ms(), false};
  char sync_why[512] = "";
  bool damaged = false;
  int64_t last_ok_ms = now_ms();   /* --sync: when a line was last stored */
  while (!w.stalled && (len = getline(&line, &cap, in)) != -1) {
    lineno++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    size_t i = 0;
    while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t')) i++;
    if (i == (size_t)len) continue;   /* blank lines are allowed */
    if (!sync_mode) {
      prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
      while (!prefcap_get_counters(pc, &k) && k.queued >= INGEST_QUEUE && !stalled(&w)) sleep_ms(2);
      if (w.stalled) break;
    }
    int e = prefcap_ingest_line(pc, line, (size_t)len);   /* events exports' own lines too (docs/fleet.md) */
    if (e) {
      bad++;
      fprintf(stderr, "%s:%zu: %s: %s\n", S(name), lineno, prefcap_strerror(e), S(prefcap_errmsg(pc)));
      /* --sync: the store's own failures (not the line's) are bounded by --timeout as well */
      if (sync_mode && (e == PREFCAP_EFULL || e == PREFCAP_EIO || e == PREFCAP_EBUSY) &&
          now_ms() - last_ok_ms >= timeout_s * 1000) {
        w.stalled = true;
        snprintf(sync_why, sizeof sync_why, "%s", prefcap_errmsg(pc));
      }
      if (sync_mode && e == PREFCAP_ECORRUPT) { damaged = true; break; }   /* said above; nothing more will store */
      if (e == PREFCAP_ESCHEMA) break;   /* a newer events file: none of it is read */
    } else {
      ok++;
      last_ok_ms = now_ms();
    }
  }
  bool read_error = ferror(in);
  free(line);
  if (in != stdin) fclose(in);
  /* wait for the queue to be stored, as long as the writer makes progress */
  while (!w.stalled && prefcap_flush(pc, 200) == PREFCAP_ETIMEDOUT) stalled(&w);
  int drc = w.stalled || damaged ? 0 : prefcap_derive(pc, 0);
  if (drc) cli_fail("ingest", pc, drc);
  if (w.stalled) {
    char why[768];
    cli_last_logged(why, sizeof why);
    if (sync_why[0]) snprintf(why, sizeof why, "%s", sync_why);
    const char *r = strncmp(why, "prefcap: ", 9) ? why : why + 9;
    fprintf(stderr, "prefcap ingest: no event could be stored for %ld s%s%s; giving up (--timeout)\n", timeout_s,
            r[0] ? ": " : "", S(r));
    cli_log_warnings(false);   /* what close drops is counted below, not reported batch by batch */
  }
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(pc, &k);
  /* after a stall, close drops what is still queued (counted failed): nothing accepted but unstored
   * is left unsaid */
  uint64_t not_stored = w.stalled ? (uint64_t)ok - k.stored : k.failed;
  int crc = prefcap_close(pc, w.stalled ? 0 : -1);
  fprintf(stderr, "prefcap ingest: %zu event(s) read, %llu new, %llu already stored, %zu bad line(s)", ok,
          (unsigned long long)(k.stored - k.duplicates), (unsigned long long)k.duplicates, bad);
  if (not_stored) fprintf(stderr, ", %llu event(s) NOT stored (see above)", (unsigned long long)not_stored);
  fputc('\n', stderr);
  if (read_error) fprintf(stderr, "prefcap ingest: read error on %s\n", S(name));
  if (damaged) fprintf(stderr, "prefcap ingest: the store is damaged: stopped at line %zu (see 'prefcap check')\n", lineno);
  return (bad || not_stored || crc || read_error || w.stalled || drc || damaged) ? 1 : 0;
}

// ---- stats ---------------------------------------------------------------------------------------

/* Prints one section of prefcap_stats_json as text: "title:" then "  key  count  [mean weight]". */
static void print_section(const cJSON *sec) {
  printf("%s:\n", S(sec->string));
  bool any = false;
  for (const cJSON *e = sec->child; e; e = e->next) {
    any = true;
    if (cJSON_IsObject(e))
      printf("  %-28s %10.0f   mean weight %.3f\n", S(e->string),
             cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "count")),
             cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e, "mean_weight")));
    else printf("  %-28s %10.0f\n", S(e->string), cJSON_GetNumberValue(e));
  }
  if (!any) printf("  (none)\n");
}

static int cmd_stats(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"json", 0, 0, 'j'}, {"days", 1, 0, 'D'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db();
  bool json = false;
  int days = 14, c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'j': json = true; break;
      case 'D': days = atoi(optarg); if (days < 1) return cli_usage_error("stats", "--days must be >= 1"); break;
      case 'h':
        printf("usage: prefcap stats [--db PATH] [--json] [--days N]\n\n"
               "Counts of events, pairs and labels by signal, by model and by day (the last N days with\n"
               "events, default 14), feedback for generations never seen, and the dropped and failed\n"
               "counters of every process that wrote the store. Derives pending pairs first. A damaged\n"
               "store is an error (exit 1, with SQLite's message): see 'prefcap check'.\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return cli_usage_error("stats", "unexpected argument");
  prefcap_t *pc;
  if (cli_open_existing("stats", db, &pc)) return 1;
  char *text = NULL;
  int rc = derive_first("stats", pc) ? PREFCAP_ECORRUPT : 0;
  if (!rc && (rc = prefcap_stats_json(pc, days, &text))) cli_fail("stats", pc, rc);
  if (!rc && json) puts(text);
  else if (!rc) {
    cJSON *root = cJSON_Parse(text);
    if (!root) { fprintf(stderr, "prefcap stats: out of memory\n"); rc = PREFCAP_ENOMEM; }
    for (const cJSON *sec = root ? root->child : NULL; sec; sec = sec->next) print_section(sec);
    cJSON_Delete(root);
  }
  prefcap_free(text);
  prefcap_close(pc, -1);
  return rc ? 1 : 0;
}

// ---- pairs ---------------------------------------------------------------------------------------

typedef struct { bool json; int n; bool oom; } pairs_out;

/* One pair as a JSON line (the prompt as messages when it was given so, else as text). */
static void pair_json(const prefcap_pair_t *p, pairs_out *o) {
  cJSON *j = cJSON_CreateObject();
  bool ok = j && cJSON_AddNumberToObject(j, "id", (double)p->id) && cJSON_AddStringToObject(j, "signal", p->signal) &&
            cJSON_AddNumberToObject(j, "weight", p->weight) && cJSON_AddStringToObject(j, "source", p->source) &&
            cJSON_AddStringToObject(j, "flags", p->flags) &&
            (p->messages_json ? cJSON_AddRawToObject(j, "messages", p->messages_json) != NULL
                              : cJSON_AddStringToObject(j, "prompt", p->prompt ? p->prompt : "") != NULL) &&
            (!p->system || cJSON_AddStringToObject(j, "system", p->system)) &&
            cJSON_AddStringToObject(j, "chosen", p->chosen ? p->chosen : "") &&
            cJSON_AddStringToObject(j, "rejected", p->rejected ? p->rejected : "") &&
            (p->chosen_id ? cJSON_AddStringToObject(j, "chosen_id", p->chosen_id) != NULL : cJSON_AddNullToObject(j, "chosen_id") != NULL) &&
            cJSON_AddStringToObject(j, "rejected_id", p->rejected_id);
  char *s = ok ? cJSON_PrintUnformatted(j) : NULL;
  if (s) puts(s);
  else o->oom = true;
  cJSON_free(s);
  cJSON_Delete(j);
}

static int on_pair(const prefcap_pair_t *p, void *ud) {
  pairs_out *o = ud;
  o->n++;
  if (o->json) { pair_json(p, o); return o->oom; }
  printf("#%lld  %-10s weight %.2f  %s%s%s%s  model %s\n", (long long)p->id, S(p->signal), p->weight, S(p->source),
         p->flags[0] ? "  [" : "", p->flags[0] ? S(p->flags) : "", p->flags[0] ? "]" : "", S(p->model));
  printf("  prompt:   "); print_short(stdout, p->prompt ? p->prompt : p->messages_json, 100); putchar('\n');
  printf("  chosen:   "); print_short(stdout, p->chosen, 100); putchar('\n');
  printf("  rejected: "); print_short(stdout, p->rejected, 100); putchar('\n');
  return 0;
}

static int cmd_pairs(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"json", 0, 0, 'j'}, {"limit", 1, 0, 'n'}, {"signal", 1, 0, 's'},
                                     {"model", 1, 0, 'm'}, {"user", 1, 0, 'u'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db();
  prefcap_query_t q = PREFCAP_QUERY_INIT;
  q.limit = 20;
  pairs_out o = {false, 0, false};
  long limit;
  char *end;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'j': o.json = true; break;
      case 'n': limit = strtol(optarg, &end, 10); if (limit < 0 || *end) return cli_usage_error("pairs", "--limit must be >= 0 (0: all)"); q.limit = (uint64_t)limit; break;
      case 's': q.signal = optarg; break;
      case 'm': q.model = optarg; break;
      case 'u': q.user_id = optarg; break;
      case 'h':
        printf("usage: prefcap pairs [--db PATH] [--limit N] [--signal S] [--model M] [--user ID] [--json]\n\n"
               "Shows derived preference pairs, newest first (default 20; --limit 0 for all): signal,\n"
               "weight, source, flags, prompt, chosen and rejected. --json prints one object per line.\n"
               "--model and --user filter on the rejected generation's model and user.\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return cli_usage_error("pairs", "unexpected argument");
  prefcap_t *pc;
  if (cli_open_existing("pairs", db, &pc)) return 1;
  int rc = derive_first("pairs", pc) ? PREFCAP_ECORRUPT : 0;
  if (!rc && (rc = prefcap_pairs(pc, &q, on_pair, &o))) cli_fail("pairs", pc, rc);
  if (!rc && o.oom) { fprintf(stderr, "prefcap pairs: out of memory\n"); rc = PREFCAP_ENOMEM; }
  if (!rc && !o.json && o.n == 0) printf("no pairs%s%s\n", q.signal ? " with signal " : "", q.signal ? S(q.signal) : "");
  prefcap_close(pc, -1);
  return rc ? 1 : 0;
}

// ---- derive --------------------------------------------------------------------------------------

static int cmd_derive(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"all", 0, 0, 'a'}, {"weight", 1, 0, 'w'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db();
  bool all = false;
  prefcap_options_t *o = prefcap_options_new();
  if (!o) return 1;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'a': all = true; break;
      case 'w': {
        char *eq = strchr(optarg, '=');
        char *end = NULL;
        double v = eq ? strtod(eq + 1, &end) : -1;
        if (eq) *eq = 0;
        if (!eq || !end || *end || prefcap_options_set_weight(o, optarg, v)) {
          fprintf(stderr, "prefcap derive: bad --weight '%s': want NAME=VALUE with VALUE in [0,1] and NAME one of:", S(optarg));
          for (int i = 0; prefcap_weight_name(i); i++) fprintf(stderr, " %s", prefcap_weight_name(i));
          fputc('\n', stderr);
          prefcap_options_free(o);
          return 2;
        }
        all = true;   /* new weights apply to history too */
        break;
      }
      case 'h':
        printf("usage: prefcap derive [--db PATH] [--all] [--weight NAME=VALUE ...]\n\n"
               "Derives preference pairs and labels from events not yet derived; --all re-derives the\n"
               "whole history with the current rules (after a rule fix or a weight change). --weight\n"
               "stores a new weight in the store (so every process uses it) and implies --all.\n"
               "Weights and their defaults: docs/pairing.md.\n");
        prefcap_options_free(o);
        return 0;
      default: prefcap_options_free(o); return 2;
    }
  }
  prefcap_t *pc;
  int rc = cli_open(db, PREFCAP_SYNC, o, false, &pc);
  prefcap_options_free(o);
  if (rc) return rc;
  rc = prefcap_derive(pc, all);
  prefcap_stats_t st = PREFCAP_STATS_INIT;
  if (!rc) rc = prefcap_stats(pc, &st);
  if (rc) cli_fail("derive", pc, rc);
  else fprintf(stderr, "prefcap derive: %llu pairs, %llu labels\n", (unsigned long long)st.pairs, (unsigned long long)st.labels);
  prefcap_close(pc, -1);
  return rc ? 1 : 0;
}

// ---- check ---------------------------------------------------------------------------------------

static void on_problem(const char *problem, void *ud) {
  (void)ud;
  printf("  %s\n", S(problem));
}

static int cmd_check(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"quick", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db();
  bool quick = false;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'q': quick = true; break;
      case 'h':
        printf("usage: prefcap check [--db PATH] [--quick]\n\n"
               "Checks the store's file page by page (SQLite's integrity_check; --quick: quick_check,\n"
               "which skips comparing indexes with their tables) and lists what it found (at most 100\n"
               "problems). Exit 0: the store is sound; 1: it is damaged or cannot be opened.\n"
               "To recover a damaged store (docs/storage.md, \"A damaged store\"): stop every writer, keep\n"
               "a copy of the file and its -wal, copy what SQLite can still read into a new file\n"
               "(sqlite3's .dump), run 'prefcap check' and 'prefcap derive --all' on it, and replace the\n"
               "store with it; events lost in damaged pages can be ingested again from their source\n"
               "(replays are stored once).\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return cli_usage_error("check", "unexpected argument");
  prefcap_t *pc;
  if (cli_open_existing("check", db, &pc)) return 1;
  uint64_t n = 0;
  printf("checking %s (%s)\n", S(db), quick ? "quick_check" : "integrity_check");
  int rc = prefcap_check(pc, quick, on_problem, NULL, &n);
  if (!rc) printf("ok: no problems found\n");
  else if (rc == PREFCAP_ECORRUPT) printf("DAMAGED: %llu problem(s) found; see 'prefcap check --help' to recover\n", (unsigned long long)n);
  else cli_fail("check", pc, rc);
  prefcap_close(pc, 0);
  return rc ? 1 : 0;
}

// ---- export --------------------------------------------------------------------------------------

static int cmd_export(int argc, char **argv) {
  static const struct option lo[] = {
      {"db", 1, 0, 'd'}, {"format", 1, 0, 'f'}, {"out", 1, 0, 'o'}, {"gzip", 0, 0, 'z'}, {"since", 1, 0, 's'},
      {"until", 1, 0, 'u'}, {"signal", 1, 0, 'S'}, {"min-weight", 1, 0, 'w'}, {"model", 1, 0, 'm'},
      {"user", 1, 0, 'U'}, {"max-ai-fraction", 1, 0, 'a'}, {"dedup", 0, 0, 'D'}, {"eval-fraction", 1, 0, 'e'},
      {"since-last", 1, 0, 'n'}, {"upload", 1, 0, 'p'}, {"manifest-url", 1, 0, 'M'}, {"quiet", 0, 0, 'q'},
      {"mode", 1, 0, 'P'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db(), *upload = NULL, *manifest_url = NULL;
  bool quiet = false;
  prefcap_export_options_t *o = prefcap_export_options_new();
  if (!o) return 1;
  int c, bad = 0;
  int64_t since = 0, until = 0;
  char *end;
  while (!bad && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'f':
        if (!strcmp(optarg, "trl-dpo")) prefcap_export_options_set_format(o, PREFCAP_FORMAT_TRL_DPO);
        else if (!strcmp(optarg, "trl-kto")) prefcap_export_options_set_format(o, PREFCAP_FORMAT_TRL_KTO);
        else if (!strcmp(optarg, "openai-dpo")) prefcap_export_options_set_format(o, PREFCAP_FORMAT_OPENAI_DPO);
        else if (!strcmp(optarg, "events")) prefcap_export_options_set_format(o, PREFCAP_FORMAT_EVENTS);   /* docs/fleet.md */
        else bad = cli_usage_error("export", "--format is trl-dpo, trl-kto, openai-dpo or events");
        break;
      case 'o': prefcap_export_options_set_out(o, optarg); break;
      case 'z': prefcap_export_options_set_gzip(o, 1); break;
      case 's': if (prefcap_time_parse(optarg, &since)) bad = cli_usage_error("export", "--since wants a date (2026-11-21) or an RFC 3339 time"); break;
      case 'u': if (prefcap_time_parse(optarg, &until)) bad = cli_usage_error("export", "--until wants a date (2026-11-21) or an RFC 3339 time"); break;
      case 'S': if (prefcap_export_options_set_signals(o, optarg)) bad = cli_usage_error("export", "--signal is a comma list of edit, regenerate, choice, rating (pairs) or copy, accept, rating, regenerate, abandon (labels)"); break;
      case 'w': if (prefcap_export_options_set_min_weight(o, strtod(optarg, &end)) || *end) bad = cli_usage_error("export", "--min-weight is a number in [0,1]"); break;
      case 'm': prefcap_export_options_set_model(o, optarg); break;
      case 'U': prefcap_export_options_set_user(o, optarg); break;
      case 'a': if (prefcap_export_options_set_max_ai_fraction(o, strtod(optarg, &end)) || *end) bad = cli_usage_error("export", "--max-ai-fraction is a number in [0,1]"); break;
      case 'D': prefcap_export_options_set_dedup(o, 1); break;
      case 'e': if (prefcap_export_options_set_eval_fraction(o, strtod(optarg, &end)) || *end) bad = cli_usage_error("export", "--eval-fraction is a number in [0,1)"); break;
      case 'n': if (prefcap_export_options_set_since_last(o, optarg)) bad = cli_usage_error("export", "--since-last wants a name (1-128 bytes)"); break;
      case 'p': upload = optarg; break;
      case 'M': manifest_url = optarg; break;
      case 'q': quiet = true; break;
      case 'P': if (prefcap_export_options_set_mode(o, (unsigned)strtoul(optarg, &end, 8)) || *end || !*optarg) bad = cli_usage_error("export", "--mode wants octal permission bits, e.g. 640 (default 600)"); break;
      case 'h':
        printf("usage: prefcap export [--db PATH] [--format trl-dpo|trl-kto|openai-dpo] [--out PATH|-] [--gzip]\n"
               "         [--since T] [--until T] [--signal LIST] [--min-weight W] [--model M] [--user ID]\n"
               "         [--max-ai-fraction F] [--dedup] [--eval-fraction F] [--since-last NAME]\n"
               "         [--upload URL [--manifest-url URL]] [--mode OCTAL] [--quiet]\n\n"
               "Writes the derived pairs (trl-dpo, openai-dpo) or labels (trl-kto) as JSON lines, with\n"
               "PATH.manifest.json beside them (checksums, counts, filters, the records held). The file\n"
               "appears complete or not at all. With --since-last NAME only what is new since NAME's last\n"
               "published export is written, and a run killed at any point and run again publishes the\n"
               "same records, none missing, none twice. --eval-fraction splits by a hash of the prompt\n"
               "into PATH and PATH's .eval twin. --upload PUTs the files (docs/export.md). The files are\n"
               "0600 unless --mode says otherwise; PATH may be a regular file or nothing, never a link or device.\n"
               "Times: 2026-11-21 or 2026-11-21T10:00:00Z; --since is inclusive, --until exclusive.\n");
        prefcap_export_options_free(o);
        return 0;
      default: bad = 2;
    }
  }
  if (!bad && optind < argc) bad = cli_usage_error("export", "unexpected argument");
  if (!bad && prefcap_export_options_set_time_range(o, since, until)) bad = cli_usage_error("export", "--since is after --until");
  if (bad) { prefcap_export_options_free(o); return 2; }
  prefcap_t *pc;
  if (cli_open_existing("export", db, &pc)) { prefcap_export_options_free(o); return 1; }
  prefcap_upload_options_t *uo = NULL;
  if (upload) {
    uo = prefcap_upload_options_new();
    if (manifest_url) prefcap_upload_options_set_manifest_url(uo, manifest_url);
    prefcap_export_options_set_upload(o, upload, uo);
  }
  int rc = 0;
  {
    prefcap_export_result_t r = PREFCAP_EXPORT_RESULT_INIT;
    int e = prefcap_export(pc, o, &r);
    if (e) { cli_fail("export", pc, e); rc = 1; }
    else if (!quiet) {
      if (r.resumed) fprintf(stderr, "prefcap export: completed an earlier, interrupted export (%s)%s\n", r.export_id,
                             r.more ? "; more has come since: run again to export it" : "");
      if (r.nothing_new) fprintf(stderr, "prefcap export: nothing new since the last export named so; no file written\n");
      else fprintf(stderr, "prefcap export: %llu record(s) (train %llu, eval %llu) -> %s, export %s%s%s\n",
                   (unsigned long long)r.records, (unsigned long long)r.train, (unsigned long long)r.eval,
                   S(prefcap_export_options_out(o)), r.export_id, upload ? ", uploaded to " : "", upload ? S(upload) : "");
      if (r.skipped_ai || r.skipped_dup)
        fprintf(stderr, "prefcap export: left out %llu AI-judged (cap) and %llu duplicate record(s)\n",
                (unsigned long long)r.skipped_ai, (unsigned long long)r.skipped_dup);
    }
    prefcap_close(pc, -1);
  }
  prefcap_upload_options_free(uo);
  prefcap_export_options_free(o);
  return rc;
}

// ---- main ----------------------------------------------------------------------------------------

static const struct { const char *name; int (*fn)(int, char **); const char *what; } commands[] = {
    {"ingest", cmd_ingest, "store events given as JSON lines (a file or stdin)"},
    {"compare", cli_compare, "did the fine-tune help? signal rates by model version, with intervals and verdicts"},
    {"report", cli_report, "write a self-contained HTML dashboard of the store"},
    {"stats", cmd_stats, "counts of events, pairs and labels by signal, model and day"},
    {"pairs", cmd_pairs, "look at derived preference pairs"},
    {"derive", cmd_derive, "derive pairs and labels (again, with --all)"},
    {"export", cmd_export, "write pairs or labels as JSONL for trainers (TRL DPO/KTO, OpenAI), with a manifest"},
    {"check", cmd_check, "check the store's file for damage (SQLite's integrity check)"},
    {"upload", cli_upload, "upload a file (and its manifest) over HTTP(S) or to S3"},
    {"forget", cli_forget, "erase a user; list the exports that held their data"},
    {"lineage", cli_lineage, "what an export held, or which exports held a user"},
    {"prune", cli_prune, "delete events older than N days that no live pair needs"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: prefcap <command> [options]   (prefcap <command> --help for each)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].what);
  fprintf(f, "\nThe store is --db PATH, else $PREFCAP_DB, else ./prefcap.db.\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) { printf("prefcap %s (schema %d)\n", prefcap_version(), PREFCAP_SCHEMA_VERSION); return 0; }
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "prefcap: unknown command '%s'\n", S(argv[1]));
  usage(stderr);
  return 2;
}

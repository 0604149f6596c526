/* sdk/cli/cli.c: the `prefcap` command: the SDK from the shell, for backends in any language (ingest JSON
 * lines), for looking at what was captured (stats, pairs), and for the nightly job. Every command
 * takes --db PATH (default $PREFCAP_DB, else ./prefcap.db) and --help.
 *
 * Exit codes: 0 success, 1 the work failed (or some input lines were bad), 2 usage error. */
#include "cli.h"
#include "internal.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- shared helpers ------------------------------------------------------------------------------

const char *prefcap__cli_default_db(void) {
  const char *e = getenv("PREFCAP_DB");
  return e && *e ? e : "prefcap.db";
}

int prefcap__cli_open(const char *db, prefcap_durability_t mode, prefcap_options_t *o_in, prefcap_t **pc) {
  prefcap_options_t *o = o_in ? o_in : prefcap_options_new();
  if (!o) { fprintf(stderr, "prefcap: out of memory\n"); return 1; }
  prefcap_options_set_path(o, db);
  prefcap_options_set_durability(o, mode);
  int rc = prefcap_open(o, pc);
  if (!o_in) prefcap_options_free(o);
  if (rc) {
    fprintf(stderr, "prefcap: cannot open %s: %s: %s\n", db, prefcap_strerror(rc), prefcap_errmsg(NULL)[0] ? prefcap_errmsg(NULL) : "");
    return 1;
  }
  return 0;
}

/* Prints text shortened to at most n characters on one line (newlines shown as ⏎). */
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
    else fputc(*p, f);
  }
  if (*p) fputs("\u2026", f);
}

static int usage_error(const char *cmd, const char *msg) {
  fprintf(stderr, "prefcap %s: %s (see 'prefcap %s --help')\n", cmd, msg, cmd);
  return 2;
}

// ---- ingest --------------------------------------------------------------------------------------

/* The CLI's logger: the library's warnings and errors (an event refused, a write retried) on stderr. */
static void cli_logger(prefcap_log_level_t level, const char *msg, void *ud) {
  (void)ud;
  if (level >= PREFCAP_LOG_WARN) fprintf(stderr, "%s\n", msg);
}

static int cmd_ingest(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"sync", 0, 0, 's'}, {"redact", 0, 0, 'r'},
                                     {"max-text", 1, 0, 'm'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = prefcap__cli_default_db();
  bool sync_mode = false, redact = false;
  long max_text = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 's': sync_mode = true; break;
      case 'r': redact = true; break;
      case 'm': max_text = strtol(optarg, NULL, 10); if (max_text < 1) return usage_error("ingest", "--max-text must be a positive byte count"); break;
      case 'h':
        printf("usage: prefcap ingest [--db PATH] [--sync] [--redact] [--max-text BYTES] [FILE|-]\n\n"
               "Stores events given as JSON lines (docs/events.md), one event per line, with the same\n"
               "semantics as the C API: replayed events are stored once, feedback may come before its\n"
               "generation. A bad line is reported with its line number and reason; the good lines are\n"
               "still stored, and the exit code is then 1.\n\n"
               "  --sync       commit each event before reading the next (default: batched)\n"
               "  --redact     replace e-mails, phone numbers, card numbers and keys (docs/redaction.md)\n"
               "  --max-text   refuse texts longer than this many bytes (default 1 MiB)\n");
        return 0;
      default: return 2;
    }
  }
  if (argc - optind > 1) return usage_error("ingest", "give at most one FILE");
  const char *path = optind < argc ? argv[optind] : "-";
  FILE *in = strcmp(path, "-") ? fopen(path, "rb") : stdin;
  if (!in) { fprintf(stderr, "prefcap ingest: cannot open %s: %s\n", path, strerror(errno)); return 1; }
  prefcap_options_t *o = prefcap_options_new();
  if (!o) return 1;
  prefcap_options_set_block_when_full(o, 1);
  prefcap_options_set_logger(o, cli_logger, NULL);
  prefcap_options_set_redact(o, redact);
  if (max_text) prefcap_options_set_max_text_bytes(o, (size_t)max_text);
  prefcap_t *pc;
  int rc = prefcap__cli_open(db, sync_mode ? PREFCAP_SYNC : PREFCAP_ASYNC, o, &pc);
  prefcap_options_free(o);
  if (rc) { if (in != stdin) fclose(in); return rc; }
  char *line = NULL;
  size_t cap = 0, lineno = 0, bad = 0, ok = 0;
  ssize_t len;
  const char *name = strcmp(path, "-") ? path : "<stdin>";
  while ((len = getline(&line, &cap, in)) != -1) {
    lineno++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    size_t i = 0;
    while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t')) i++;
    if (i == (size_t)len) continue;   /* blank lines are allowed */
    int e = prefcap_ingest_line(pc, line, (size_t)len);   /* events exports' own lines too (docs/fleet.md) */
    if (e) {
      bad++;
      fprintf(stderr, "%s:%zu: %s: %s\n", name, lineno, prefcap_strerror(e), prefcap_errmsg(pc));
      if (e == PREFCAP_ESCHEMA) break;   /* a newer events file: none of it is read */
    } else ok++;
  }
  bool read_error = ferror(in);
  free(line);
  if (in != stdin) fclose(in);
  prefcap_flush(pc, -1);
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(pc, &k);
  int crc = prefcap_close(pc, -1);
  fprintf(stderr, "prefcap ingest: %zu event(s) read, %llu new, %llu already stored, %zu bad line(s)%s\n", ok,
          (unsigned long long)(k.stored - k.duplicates), (unsigned long long)k.duplicates, bad,
          k.failed ? ", some events NOT stored (see above)" : "");
  if (read_error) fprintf(stderr, "prefcap ingest: read error on %s\n", name);
  return (bad || k.failed || crc || read_error) ? 1 : 0;
}

// ---- stats ---------------------------------------------------------------------------------------

typedef struct { sqlite3 *db; bool json; bool first_section; } stats_out;

/* Runs a two-column query (name, count[, extra]) and prints it as a section. */
static void section(stats_out *so, const char *title, const char *sql) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(so->db, sql, -1, &st, NULL)) return;
  int ncol = sqlite3_column_count(st);
  if (so->json) {
    printf("%s\"%s\":{", so->first_section ? "" : ",", title);
    so->first_section = false;
  } else printf("%s:\n", title);
  bool first = true, any = false;
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *k = (const char *)sqlite3_column_text(st, 0);
    any = true;
    if (so->json) {
      prefcap__buf b = {0};
      prefcap__buf_json_str(&b, k ? k : "(none)");
      if (ncol > 2) printf("%s%s:{\"count\":%lld,\"mean_weight\":%.4f}", first ? "" : ",", b.p ? b.p : "\"\"", sqlite3_column_int64(st, 1), sqlite3_column_double(st, 2));
      else printf("%s%s:%lld", first ? "" : ",", b.p ? b.p : "\"\"", sqlite3_column_int64(st, 1));
      free(b.p);
    } else if (ncol > 2) printf("  %-28s %10lld   mean weight %.3f\n", k ? k : "(none)", sqlite3_column_int64(st, 1), sqlite3_column_double(st, 2));
    else printf("  %-28s %10lld\n", k ? k : "(none)", sqlite3_column_int64(st, 1));
    first = false;
  }
  if (so->json) printf("}");
  else if (!any) printf("  (none)\n");
  sqlite3_finalize(st);
}

static int cmd_stats(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"json", 0, 0, 'j'}, {"days", 1, 0, 'D'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = prefcap__cli_default_db();
  bool json = false;
  int days = 14, c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'j': json = true; break;
      case 'D': days = atoi(optarg); if (days < 1) return usage_error("stats", "--days must be >= 1"); break;
      case 'h':
        printf("usage: prefcap stats [--db PATH] [--json] [--days N]\n\n"
               "Counts of events, pairs and labels by signal, by model and by day (the last N days with\n"
               "events, default 14), feedback for generations never seen, and the dropped and failed\n"
               "counters of every process that wrote the store. Derives pending pairs first.\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return usage_error("stats", "unexpected argument");
  if (access(db, F_OK) != 0) { fprintf(stderr, "prefcap stats: no store at %s\n", db); return 1; }
  prefcap_t *pc;
  if (prefcap__cli_open(db, PREFCAP_SYNC, NULL, &pc)) return 1;
  if (prefcap_derive(pc, 0)) fprintf(stderr, "prefcap stats: deriving pairs failed: %s (showing what is stored)\n", prefcap_errmsg(pc));
  stats_out so = {prefcap__db(pc), json, true};
  char byday[512];
  snprintf(byday, sizeof byday,
           "SELECT day, sum(n) FROM (SELECT strftime('%%Y-%%m-%%d', ts / 1000, 'unixepoch') AS day, count(*) AS n FROM generations GROUP BY day"
           " UNION ALL SELECT strftime('%%Y-%%m-%%d', ts / 1000, 'unixepoch'), count(*) FROM events GROUP BY 1)"
           " GROUP BY day ORDER BY day DESC LIMIT %d", days);
  if (json) printf("{");
  section(&so, "events", "SELECT 'generation', count(*) FROM generations UNION ALL SELECT type, count(*) FROM events GROUP BY type");
  section(&so, "pairs_by_signal", "SELECT signal, count(*), avg(weight) FROM pairs GROUP BY signal ORDER BY signal");
  section(&so, "pairs_by_source", "SELECT CASE WHEN source LIKE 'ai:%' THEN 'ai' ELSE 'human' END, count(*) FROM pairs GROUP BY 1");
  section(&so, "pairs_flagged", "SELECT flags, count(*) FROM pairs WHERE flags != '' GROUP BY flags");
  section(&so, "labels", "SELECT signal || CASE WHEN desirable THEN ' (desirable)' ELSE ' (undesirable)' END, count(*), avg(weight)"
                         " FROM labels GROUP BY signal, desirable ORDER BY signal");
  section(&so, "generations_by_model", "SELECT ifnull(model, '(none)') || ifnull(' ' || model_version, ''), count(*) FROM generations GROUP BY 1 ORDER BY 2 DESC LIMIT 50");
  section(&so, "pairs_by_model", "SELECT ifnull(g.model, '(none)'), count(*), avg(p.weight) FROM pairs p JOIN generations g ON g.id = p.rejected_id GROUP BY 1 ORDER BY 2 DESC LIMIT 50");
  section(&so, "events_by_day", byday);
  section(&so, "events_by_source_store", "SELECT store_id, sum(generations + feedback + erasures) FROM fleet_sources GROUP BY 1 ORDER BY 1");   /* docs/fleet.md */
  section(&so, "problems",
          "SELECT 'feedback for unknown generations', count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = e.gen_id)"
          " UNION ALL SELECT 'dropped (queue full)', ifnull((SELECT value FROM counters WHERE name = 'dropped'), 0)"
          " UNION ALL SELECT 'failed (not stored)', ifnull((SELECT value FROM counters WHERE name = 'failed'), 0)"
          " UNION ALL SELECT 'refused (erased users)', ifnull((SELECT value FROM counters WHERE name = 'refused'), 0)");
  if (json) printf("}\n");
  prefcap_close(pc, -1);
  return 0;
}

// ---- pairs ---------------------------------------------------------------------------------------

static int cmd_pairs(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"json", 0, 0, 'j'}, {"limit", 1, 0, 'n'},
                                     {"signal", 1, 0, 's'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = prefcap__cli_default_db(), *signal = NULL;
  bool json = false;
  long limit = 20;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'j': json = true; break;
      case 'n': limit = strtol(optarg, NULL, 10); if (limit < 0) return usage_error("pairs", "--limit must be >= 0 (0: all)"); break;
      case 's': signal = optarg; break;
      case 'h':
        printf("usage: prefcap pairs [--db PATH] [--limit N] [--signal S] [--json]\n\n"
               "Shows derived preference pairs, newest first (default 20; --limit 0 for all): signal,\n"
               "weight, source, flags, prompt, chosen and rejected. --json prints one object per line.\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return usage_error("pairs", "unexpected argument");
  if (access(db, F_OK) != 0) { fprintf(stderr, "prefcap pairs: no store at %s\n", db); return 1; }
  prefcap_t *pc;
  if (prefcap__cli_open(db, PREFCAP_SYNC, NULL, &pc)) return 1;
  prefcap_derive(pc, 0);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(prefcap__db(pc),
                              "SELECT p.id, p.signal, p.weight, p.source, p.flags, r.system, r.prompt, r.messages,"
                              " coalesce(p.chosen_text, ch.completion), r.completion, p.chosen_id, p.rejected_id, r.model"
                              " FROM pairs p JOIN generations r ON r.id = p.rejected_id"
                              " LEFT JOIN generations ch ON ch.id = p.chosen_id"
                              " WHERE (?1 IS NULL OR p.signal = ?1) ORDER BY p.id DESC LIMIT ?2",
                              -1, &st, NULL);
  if (rc) { fprintf(stderr, "prefcap pairs: %s\n", sqlite3_errmsg(prefcap__db(pc))); prefcap_close(pc, -1); return 1; }
  if (signal) sqlite3_bind_text(st, 1, signal, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, limit ? limit : -1);
  int n = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
#define T(i) ((const char *)sqlite3_column_text(st, (i)))
    n++;
    if (json) {
      prefcap__buf b = {0};
      prefcap__buf_printf(&b, "{\"id\":%lld,\"signal\":", sqlite3_column_int64(st, 0));
      prefcap__buf_json_str(&b, T(1));
      prefcap__buf_printf(&b, ",\"weight\":%.4f,\"source\":", sqlite3_column_double(st, 2));
      prefcap__buf_json_str(&b, T(3));
      prefcap__buf_puts(&b, ",\"flags\":");
      prefcap__buf_json_str(&b, T(4));
      if (T(7)) { prefcap__buf_puts(&b, ",\"messages\":"); prefcap__buf_puts(&b, T(7)); }
      else { prefcap__buf_puts(&b, ",\"prompt\":"); prefcap__buf_json_str(&b, T(6) ? T(6) : ""); }
      if (T(5)) { prefcap__buf_puts(&b, ",\"system\":"); prefcap__buf_json_str(&b, T(5)); }
      prefcap__buf_puts(&b, ",\"chosen\":");
      prefcap__buf_json_str(&b, T(8) ? T(8) : "");
      prefcap__buf_puts(&b, ",\"rejected\":");
      prefcap__buf_json_str(&b, T(9) ? T(9) : "");
      prefcap__buf_puts(&b, ",\"chosen_id\":");
      if (T(10)) prefcap__buf_json_str(&b, T(10)); else prefcap__buf_puts(&b, "null");
      prefcap__buf_puts(&b, ",\"rejected_id\":");
      prefcap__buf_json_str(&b, T(11));
      prefcap__buf_puts(&b, "}");
      if (b.p) puts(b.p);
      free(b.p);
    } else {
      printf("#%lld  %-10s weight %.2f  %s%s%s%s  model %s\n", sqlite3_column_int64(st, 0), T(1), sqlite3_column_double(st, 2),
             T(3), T(4)[0] ? "  [" : "", T(4), T(4)[0] ? "]" : "", T(12) ? T(12) : "-");
      printf("  prompt:   "); print_short(stdout, T(6) ? T(6) : T(7), 100); putchar('\n');
      printf("  chosen:   "); print_short(stdout, T(8), 100); putchar('\n');
      printf("  rejected: "); print_short(stdout, T(9), 100); putchar('\n');
    }
#undef T
  }
  sqlite3_finalize(st);
  if (!json && n == 0) printf("no pairs%s%s\n", signal ? " with signal " : "", signal ? signal : "");
  prefcap_close(pc, -1);
  return 0;
}

// ---- derive --------------------------------------------------------------------------------------

static int cmd_derive(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"all", 0, 0, 'a'}, {"weight", 1, 0, 'w'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = prefcap__cli_default_db();
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
          fprintf(stderr, "prefcap derive: bad --weight '%s': want NAME=VALUE with VALUE in [0,1] and NAME one of:", optarg);
          for (int i = 0; prefcap__rule_names[i]; i++) fprintf(stderr, " %s", prefcap__rule_names[i]);
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
  int rc = prefcap__cli_open(db, PREFCAP_SYNC, o, &pc);
  prefcap_options_free(o);
  if (rc) return rc;
  rc = prefcap_derive(pc, all);
  if (rc) fprintf(stderr, "prefcap derive: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc));
  else {
    sqlite3_stmt *st;
    if (!sqlite3_prepare_v2(prefcap__db(pc), "SELECT (SELECT count(*) FROM pairs), (SELECT count(*) FROM labels)", -1, &st, NULL)) {
      if (sqlite3_step(st) == SQLITE_ROW) fprintf(stderr, "prefcap derive: %lld pairs, %lld labels\n", sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1));
      sqlite3_finalize(st);
    }
  }
  prefcap_close(pc, -1);
  return rc ? 1 : 0;
}

// ---- export --------------------------------------------------------------------------------------

/* RFC 3339, or a plain date (midnight UTC). */
static bool cli_time(const char *s, int64_t *ms) {
  char buf[40];
  if (strlen(s) == 10 && s[4] == '-' && s[7] == '-') { snprintf(buf, sizeof buf, "%sT00:00:00Z", s); s = buf; }
  return prefcap__parse_time(s, ms);
}

static int cmd_export(int argc, char **argv) {
  static const struct option lo[] = {
      {"db", 1, 0, 'd'}, {"format", 1, 0, 'f'}, {"out", 1, 0, 'o'}, {"gzip", 0, 0, 'z'}, {"since", 1, 0, 's'},
      {"until", 1, 0, 'u'}, {"signal", 1, 0, 'S'}, {"min-weight", 1, 0, 'w'}, {"model", 1, 0, 'm'},
      {"user", 1, 0, 'U'}, {"max-ai-fraction", 1, 0, 'a'}, {"dedup", 0, 0, 'D'}, {"eval-fraction", 1, 0, 'e'},
      {"since-last", 1, 0, 'n'}, {"upload", 1, 0, 'p'}, {"manifest-url", 1, 0, 'M'}, {"quiet", 0, 0, 'q'},
      {"mode", 1, 0, 'P'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = prefcap__cli_default_db(), *upload = NULL, *manifest_url = NULL;
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
        else bad = usage_error("export", "--format is trl-dpo, trl-kto, openai-dpo or events");
        break;
      case 'o': prefcap_export_options_set_out(o, optarg); break;
      case 'z': prefcap_export_options_set_gzip(o, 1); break;
      case 's': if (!cli_time(optarg, &since)) bad = usage_error("export", "--since wants a date (2026-11-21) or an RFC 3339 time"); break;
      case 'u': if (!cli_time(optarg, &until)) bad = usage_error("export", "--until wants a date (2026-11-21) or an RFC 3339 time"); break;
      case 'S': if (prefcap_export_options_set_signals(o, optarg)) bad = usage_error("export", "--signal is a comma list of edit, regenerate, choice, rating (pairs) or copy, accept, rating, regenerate, abandon (labels)"); break;
      case 'w': if (prefcap_export_options_set_min_weight(o, strtod(optarg, &end)) || *end) bad = usage_error("export", "--min-weight is a number in [0,1]"); break;
      case 'm': prefcap_export_options_set_model(o, optarg); break;
      case 'U': prefcap_export_options_set_user(o, optarg); break;
      case 'a': if (prefcap_export_options_set_max_ai_fraction(o, strtod(optarg, &end)) || *end) bad = usage_error("export", "--max-ai-fraction is a number in [0,1]"); break;
      case 'D': prefcap_export_options_set_dedup(o, 1); break;
      case 'e': if (prefcap_export_options_set_eval_fraction(o, strtod(optarg, &end)) || *end) bad = usage_error("export", "--eval-fraction is a number in [0,1)"); break;
      case 'n': if (prefcap_export_options_set_since_last(o, optarg)) bad = usage_error("export", "--since-last wants a name (1-128 bytes)"); break;
      case 'p': upload = optarg; break;
      case 'M': manifest_url = optarg; break;
      case 'q': quiet = true; break;
      case 'P': if (prefcap_export_options_set_mode(o, (unsigned)strtoul(optarg, &end, 8)) || *end || !*optarg) bad = usage_error("export", "--mode wants octal permission bits, e.g. 640 (default 600)"); break;
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
  if (!bad && optind < argc) bad = usage_error("export", "unexpected argument");
  if (!bad && prefcap_export_options_set_time_range(o, since, until)) bad = usage_error("export", "--since is after --until");
  if (bad) { prefcap_export_options_free(o); return 2; }
  if (access(db, F_OK) != 0) { fprintf(stderr, "prefcap export: no store at %s\n", db); prefcap_export_options_free(o); return 1; }
  prefcap_upload_options_t *uo = NULL;
  if (upload) {
    uo = prefcap_upload_options_new();
    if (manifest_url) prefcap_upload_options_set_manifest_url(uo, manifest_url);
    prefcap_export_options_set_upload(o, upload, uo);
  }
  prefcap_t *pc;
  int rc = prefcap__cli_open(db, PREFCAP_SYNC, NULL, &pc);
  if (!rc) {
    prefcap_export_result_t r = PREFCAP_EXPORT_RESULT_INIT;
    int e = prefcap_export(pc, o, &r);
    if (e) { fprintf(stderr, "prefcap export: %s: %s\n", prefcap_strerror(e), prefcap_errmsg(pc)); rc = 1; }
    else if (!quiet) {
      if (r.resumed) fprintf(stderr, "prefcap export: completed an earlier, interrupted export (%s)%s\n", r.export_id,
                             r.more ? "; more has come since: run again to export it" : "");
      if (r.nothing_new) fprintf(stderr, "prefcap export: nothing new since the last export named so; no file written\n");
      else fprintf(stderr, "prefcap export: %llu record(s) (train %llu, eval %llu) -> %s, export %s%s%s\n",
                   (unsigned long long)r.records, (unsigned long long)r.train, (unsigned long long)r.eval,
                   prefcap_export_options_out(o), r.export_id, upload ? ", uploaded to " : "", upload ? upload : "");
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
    {"compare", prefcap__cli_compare, "did the fine-tune help? signal rates by model version, with intervals and verdicts"},
    {"report", prefcap__cli_report, "write a self-contained HTML dashboard of the store"},
    {"stats", cmd_stats, "counts of events, pairs and labels by signal, model and day"},
    {"pairs", cmd_pairs, "look at derived preference pairs"},
    {"derive", cmd_derive, "derive pairs and labels (again, with --all)"},
    {"export", cmd_export, "write pairs or labels as JSONL for trainers (TRL DPO/KTO, OpenAI), with a manifest"},
    {"upload", prefcap__cli_upload, "upload a file (and its manifest) over HTTP(S) or to S3"},
    {"forget", prefcap__cli_forget, "erase a user; list the exports that held their data"},
    {"lineage", prefcap__cli_lineage, "what an export held, or which exports held a user"},
    {"prune", prefcap__cli_prune, "delete events older than N days that no live pair needs"},
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
  fprintf(stderr, "prefcap: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}

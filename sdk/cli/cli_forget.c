/* sdk/cli/cli_forget.c: `prefcap forget`, `prefcap lineage` and `prefcap prune`: a user's erasure and the
 * list of exports (and so of fine-tunes) that held their data, what one export held, and retention.
 * The work is in sdk/forget.c; this file parses options and prints (text, or JSON with --json).
 * Exit codes as everywhere in the CLI: 0 success, 1 the work failed, 2 usage error. */
#include "cli.h"
#include "forget.h"
#include "internal.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---- shared helpers ------------------------------------------------------------------------------

static int usage_error(const char *cmd, const char *msg) {
  fprintf(stderr, "prefcap %s: %s (see 'prefcap %s --help')\n", cmd, msg, cmd);
  return 2;
}

/* Opens an existing store (these commands never create one: an erasure against a mistyped path must
 * fail, not succeed on an empty new file). */
static int open_existing(const char *cmd, const char *db, prefcap_t **pc) {
  if (access(db, F_OK) != 0) { fprintf(stderr, "prefcap %s: no store at %s\n", cmd, db); return 1; }
  return prefcap__cli_open(db, PREFCAP_SYNC, NULL, pc);
}

static void put_time_json(prefcap__buf *b, int64_t ms) {
  if (ms <= 0) { prefcap__buf_puts(b, "null"); return; }
  char t[40];
  prefcap__format_time(ms, t, sizeof t);
  prefcap__buf_json_str(b, t);
}

static void put_str_json(prefcap__buf *b, const char *s) {
  if (s) prefcap__buf_json_str(b, s);
  else prefcap__buf_puts(b, "null");
}

/* One export as a JSON object; with_user adds user_records (lineage by user, forget). */
static void put_export_json(prefcap__buf *b, const prefcap_export_info_t *e, bool with_user) {
  prefcap__buf_puts(b, "{\"id\":");
  put_str_json(b, e->id);
  prefcap__buf_puts(b, ",\"name\":");
  put_str_json(b, e->name);
  prefcap__buf_puts(b, ",\"path\":");
  put_str_json(b, e->path);
  prefcap__buf_puts(b, ",\"format\":");
  put_str_json(b, e->format);
  prefcap__buf_puts(b, ",\"upload_url\":");
  put_str_json(b, e->upload_url);
  prefcap__buf_puts(b, ",\"created\":");
  put_time_json(b, e->created_ms);
  prefcap__buf_puts(b, ",\"published\":");
  put_time_json(b, e->published_ms);
  prefcap__buf_printf(b, ",\"records\":%llu", (unsigned long long)e->records);
  if (with_user) prefcap__buf_printf(b, ",\"user_records\":%llu", (unsigned long long)e->user_records);
  prefcap__buf_puts(b, "}");
}

/* One export on one line of text: when published, name, path, id, how many records were the user's. */
static void put_export_line(prefcap__buf *b, const prefcap_export_info_t *e) {
  char t[40];
  if (e->published_ms > 0) prefcap__format_time(e->published_ms, t, sizeof t);
  else snprintf(t, sizeof t, "(pending)");
  prefcap__buf_printf(b, "  %-24s  %-12s  %s  %s  (%llu of %llu records)", t, e->name ? e->name : "-",
                      e->path ? e->path : "-", e->id, (unsigned long long)e->user_records, (unsigned long long)e->records);
  if (e->upload_url) prefcap__buf_printf(b, "  uploaded to %s", e->upload_url);
  prefcap__buf_puts(b, "\n");
}

/* Collects the exports the callbacks report: a JSON array's items (json) or lines of text. */
typedef struct { bool json; prefcap__buf arr; size_t n; } export_sink;

static void sink_export(const prefcap_export_info_t *e, void *ud) {
  export_sink *s = ud;
  if (s->json) {
    prefcap__buf_puts(&s->arr, s->n ? "," : "");
    put_export_json(&s->arr, e, true);
  } else put_export_line(&s->arr, e);
  s->n++;
}

// ---- forget --------------------------------------------------------------------------------------

int prefcap__cli_forget(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"user", 1, 0, 'u'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = prefcap__cli_default_db(), *user = NULL;
  bool json = false;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'u': user = optarg; break;
      case 'j': json = true; break;
      case 'h':
        printf("usage: prefcap forget --user ID [--db PATH] [--json]\n\n"
               "Erases a user: their generations, the feedback on them, and the pairs and labels derived\n"
               "from them are deleted so that their text is gone from the database file and its WAL\n"
               "(secure delete, then a checkpoint that truncates the WAL), and a tombstone (the SHA-256\n"
               "of the id) makes the store refuse their late events. Then it lists the exports that\n"
               "held their records (time, name, path, id): rebuild those datasets, and the fine-tunes\n"
               "trained on them. The export files themselves are not touched.\n\n"
               "Running it again is harmless; it also completes an erasure whose WAL could not be\n"
               "truncated because another process was reading the store (exit 1, said so).\n\n"
               "  --json   one JSON object: user_hash, erased (rows by table), wal_truncated, exports\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return usage_error("forget", "unexpected argument");
  if (!user || !*user) return usage_error("forget", "--user ID is required");
  prefcap_t *pc;
  if (open_existing("forget", db, &pc)) return 1;
  export_sink sink = {json, {0}, 0};
  prefcap__erase_counts k;
  int rc = prefcap__forget_user_ex(pc, user, sink_export, &sink, &k);
  char hash[65];
  prefcap__user_hash(user, hash);
  if (!k.committed) {
    /* nothing was erased: no report of an erasure */
    fprintf(stderr, "prefcap forget: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc));
    free(sink.arr.p);
    prefcap_close(pc, -1);
    return 1;
  }
  if (json) {
    prefcap__buf b = {0};
    prefcap__buf_printf(&b, "{\"user_hash\":\"%s\",\"erased\":{\"generations\":%llu,\"events\":%llu,\"pairs\":%llu,"
                        "\"labels\":%llu,\"rated\":%llu,\"total\":%llu},\"rederived\":%s,\"wal_truncated\":%s,\"exports\":[",
                        hash, (unsigned long long)k.generations, (unsigned long long)k.events, (unsigned long long)k.pairs,
                        (unsigned long long)k.labels, (unsigned long long)k.rated,
                        (unsigned long long)prefcap__erase_total(&k), k.rederived ? "true" : "false",
                        k.wal_truncated ? "true" : "false");
    if (sink.arr.p) prefcap__buf_puts(&b, sink.arr.p);
    prefcap__buf_puts(&b, "]}");
    if (b.p) puts(b.p);
    free(b.p);
  } else {
    printf("exports that held this user's records (rebuild them, and the models trained on them):\n%s",
           sink.n && sink.arr.p ? sink.arr.p : "  (none)\n");
    printf("erased user sha256:%s: %llu generation(s), %llu event(s), %llu pair(s), %llu label(s), %llu rated row(s)"
           " (%llu rows)%s%s\n", hash, (unsigned long long)k.generations, (unsigned long long)k.events,
           (unsigned long long)k.pairs, (unsigned long long)k.labels, (unsigned long long)k.rated,
           (unsigned long long)prefcap__erase_total(&k), k.rederived ? "; pairs shared with other users re-derived" : "",
           k.wal_truncated ? "; WAL truncated" : "");
    printf("late events for this user will be refused (counted as 'refused' in the store).\n");
  }
  free(sink.arr.p);
  if (rc) fprintf(stderr, "prefcap forget: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc));
  int crc = prefcap_close(pc, -1);
  return rc || crc ? 1 : 0;
}

// ---- lineage -------------------------------------------------------------------------------------

typedef struct { bool json; bool first; prefcap_export_info_t info; bool have; } lineage_out;

static void lineage_head(const prefcap_export_info_t *e, void *ud) {
  lineage_out *o = ud;
  o->have = true;
  if (o->json) {
    prefcap__buf b = {0};
    prefcap__buf_puts(&b, "{\"export\":");
    put_export_json(&b, e, false);
    prefcap__buf_puts(&b, ",\"records\":[");
    if (b.p) fputs(b.p, stdout);
    free(b.p);
    return;
  }
  char t[40];
  printf("export %s\n", e->id);
  printf("  name       %s\n  format     %s\n  path       %s\n", e->name ? e->name : "-", e->format ? e->format : "-",
         e->path ? e->path : "-");
  prefcap__format_time(e->created_ms, t, sizeof t);
  printf("  created    %s\n", t);
  if (e->published_ms > 0) prefcap__format_time(e->published_ms, t, sizeof t);
  printf("  published  %s\n", e->published_ms > 0 ? t : "(pending)");
  if (e->upload_url) printf("  uploaded   %s\n", e->upload_url);
  printf("  records    %llu\n", (unsigned long long)e->records);
  printf("records (kind, id, user hash):\n");
}

static void lineage_record(const char *line, void *ud) {
  lineage_out *o = ud;
  if (o->json) { printf("%s%s", o->first ? "" : ",", line); o->first = false; return; }
  /* the line is {"kind":"pair","id":N,"user_hash":"…"}: print it as columns */
  char kind[16] = "", hash[80] = "";
  long long id = 0;
  if (sscanf(line, "{\"kind\":\"%15[^\"]\",\"id\":%lld,\"user_hash\":\"%79[^\"]\"}", kind, &id, hash) >= 2)
    printf("  %-6s %10lld  %s\n", kind, id, hash[0] ? hash : "(no user)");
  else printf("  %s\n", line);
}

int prefcap__cli_lineage(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"export", 1, 0, 'e'}, {"user", 1, 0, 'u'},
                                     {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = prefcap__cli_default_db(), *exp = NULL, *user = NULL;
  bool json = false;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'e': exp = optarg; break;
      case 'u': user = optarg; break;
      case 'j': json = true; break;
      case 'h':
        printf("usage: prefcap lineage (--export ID | --user ID) [--db PATH] [--json]\n\n"
               "--export ID: what one export held: its name, path, times, and each record (pair or\n"
               "label id) with the SHA-256 of the user whose text it holds.\n"
               "--user ID: every export that held records of this user, erased or not (lineage keeps\n"
               "only ids and hashes, so it outlives `prefcap forget`).\n\n"
               "  --json   --export: {\"export\":{...},\"records\":[{\"kind\",\"id\",\"user_hash\"},...]}\n"
               "           --user:   {\"user_hash\":\"...\",\"exports\":[{...},...]}\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return usage_error("lineage", "unexpected argument");
  if (!exp == !user) return usage_error("lineage", "give exactly one of --export ID and --user ID");
  if ((exp && !*exp) || (user && !*user)) return usage_error("lineage", "the id is empty");
  prefcap_t *pc;
  if (open_existing("lineage", db, &pc)) return 1;
  int rc;
  if (exp) {
    lineage_out o = {json, true, {0}, false};
    rc = prefcap_lineage_export(pc, exp, lineage_head, lineage_record, &o);
    if (json && o.have) printf("]}\n");
  } else {
    char hash[65];
    prefcap__user_hash(user, hash);
    export_sink sink = {json, {0}, 0};
    rc = prefcap_lineage_user(pc, user, sink_export, &sink);
    if (!rc && json) printf("{\"user_hash\":\"%s\",\"exports\":[%s]}\n", hash, sink.arr.p ? sink.arr.p : "");
    else if (!rc) printf("exports that held records of user sha256:%s:\n%s", hash, sink.n && sink.arr.p ? sink.arr.p : "  (none)\n");
    free(sink.arr.p);
  }
  if (rc) fprintf(stderr, "prefcap lineage: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc));
  prefcap_close(pc, -1);
  return rc ? 1 : 0;
}

// ---- prune ---------------------------------------------------------------------------------------

int prefcap__cli_prune(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"older-than", 1, 0, 'o'}, {"dry-run", 0, 0, 'n'},
                                     {"vacuum", 0, 0, 'v'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = prefcap__cli_default_db();
  bool json = false, dry = false, have_days = false, vacuum = false;
  double days = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'o': {
        char *end = NULL;
        days = strtod(optarg, &end);
        if (!end || end == optarg || *end || !isfinite(days) || days < 0 || days > 1e6)
          return usage_error("prune", "--older-than wants a number of days >= 0 (e.g. 90, or 0.5)");
        have_days = true;
        break;
      }
      case 'n': dry = true; break;
      case 'v': vacuum = true; break;
      case 'j': json = true; break;
      case 'h':
        printf("usage: prefcap prune --older-than DAYS [--dry-run] [--vacuum] [--db PATH] [--json]\n\n"
               "Retention: deletes generations older than DAYS days (by their event time), the events on\n"
               "them, and the pairs and labels derived from them, except what a live pair needs: a pair\n"
               "is live when one of its generations is newer than the cutoff, and every generation it\n"
               "names is kept (with its events, and the generations that regenerated it), so that what\n"
               "is left still derives exactly the pairs that are left (docs/storage.md). Feedback older\n"
               "than the cutoff for generations never stored goes too. Exports' lineage is kept.\n\n"
               "  --dry-run   count what would be deleted, delete nothing\n"
               "  --vacuum    then rewrite the file (VACUUM): gives the space back to the disk, and leaves\n"
               "              no stale copy of a pruned row in page slack; capture waits meanwhile\n"
               "  --json      {\"cutoff\",\"dry_run\",\"deleted\":{...},\"kept_old_generations\"}\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return usage_error("prune", "unexpected argument");
  if (!have_days) return usage_error("prune", "--older-than DAYS is required");
  int64_t cutoff = prefcap__now_ms() - (int64_t)llround(days * 86400000.0);
  prefcap_t *pc;
  if (open_existing("prune", db, &pc)) return 1;
  prefcap__erase_counts k;
  int rc = prefcap__prune_ex(pc, cutoff, dry, vacuum, &k);
  char t[40];
  prefcap__format_time(cutoff, t, sizeof t);
  if (rc) fprintf(stderr, "prefcap prune: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc));
  else if (json)
    printf("{\"cutoff\":\"%s\",\"dry_run\":%s,\"deleted\":{\"generations\":%llu,\"events\":%llu,\"pairs\":%llu,"
           "\"labels\":%llu,\"rated\":%llu,\"total\":%llu},\"kept_old_generations\":%llu}\n",
           t, dry ? "true" : "false", (unsigned long long)k.generations, (unsigned long long)k.events,
           (unsigned long long)k.pairs, (unsigned long long)k.labels, (unsigned long long)k.rated,
           (unsigned long long)prefcap__erase_total(&k), (unsigned long long)k.kept_old);
  else
    printf("prefcap prune: %s %llu generation(s), %llu event(s), %llu pair(s), %llu label(s), %llu rated row(s) older "
           "than %s; kept %llu older generation(s) that live pairs need\n",
           dry ? "would delete" : "deleted", (unsigned long long)k.generations, (unsigned long long)k.events,
           (unsigned long long)k.pairs, (unsigned long long)k.labels, (unsigned long long)k.rated, t,
           (unsigned long long)k.kept_old);
  int crc = prefcap_close(pc, -1);
  return rc || crc ? 1 : 0;
}

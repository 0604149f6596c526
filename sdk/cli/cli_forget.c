/* sdk/cli/cli_forget.c: `prefcap forget`, `prefcap lineage` and `prefcap prune`: a user's erasure and the
 * list of exports (and so of fine-tunes) that held their data, what one export held, and retention.
 * The work is in the library (prefcap_forget_user_report, prefcap_lineage_*, prefcap_prune_report);
 * this file parses options and prints (text, or JSON with --json).
 * Exit codes as everywhere in the CLI: 0 success, 1 the work failed, 2 usage error. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- shared helpers ------------------------------------------------------------------------------

static cJSON *time_json(int64_t ms) {
  if (ms <= 0) return cJSON_CreateNull();
  char t[32];
  prefcap_time_format(ms, t);
  return cJSON_CreateString(t);
}

static cJSON *str_json(const char *s) { return s ? cJSON_CreateString(s) : cJSON_CreateNull(); }

/* One export as a JSON object; with_user adds user_records (lineage by user, forget). */
static cJSON *export_json(const prefcap_export_info_t *e, bool with_user) {
  cJSON *j = cJSON_CreateObject();
  if (!j) return NULL;
  cJSON_AddItemToObject(j, "id", str_json(e->id));
  cJSON_AddItemToObject(j, "name", str_json(e->name));
  cJSON_AddItemToObject(j, "path", str_json(e->path));
  cJSON_AddItemToObject(j, "format", str_json(e->format));
  cJSON_AddItemToObject(j, "upload_url", e->upload_url ? cJSON_CreateString(S(e->upload_url)) : cJSON_CreateNull());
  cJSON_AddItemToObject(j, "created", time_json(e->created_ms));
  cJSON_AddItemToObject(j, "published", time_json(e->published_ms));
  cJSON_AddNumberToObject(j, "records", (double)e->records);
  if (with_user) cJSON_AddNumberToObject(j, "user_records", (double)e->user_records);
  return j;
}

/* Prints a JSON value on one line, then frees it; false when out of memory. */
static bool print_json(cJSON *j) {
  char *s = j ? cJSON_PrintUnformatted(j) : NULL;
  if (s) puts(s);
  else fprintf(stderr, "prefcap: out of memory\n");
  cJSON_free(s);
  cJSON_Delete(j);
  return s != NULL;
}

/* One export on one line of text: when published, name, path, id, how many records were the user's. */
static void export_line(FILE *f, const prefcap_export_info_t *e) {
  char t[32];
  if (e->published_ms > 0) prefcap_time_format(e->published_ms, t);
  else snprintf(t, sizeof t, "(pending)");
  fprintf(f, "  %-24s  %-12s  %s  %s  (%llu of %llu records)", t, S(e->name), S(e->path), S(e->id),
          (unsigned long long)e->user_records, (unsigned long long)e->records);
  if (e->upload_url) fprintf(f, "  uploaded to %s", S(e->upload_url));
  fputc('\n', f);
}

/* Collects the exports the callbacks report: a JSON array (json), or lines of text in memory, to be
 * printed once the outcome is known. */
typedef struct { bool json; cJSON *arr; size_t n; char *text; size_t len; FILE *mem; } export_sink;

static bool sink_init(export_sink *s, bool json) {
  *s = (export_sink){.json = json};
  if (json) s->arr = cJSON_CreateArray();
  else s->mem = open_memstream(&s->text, &s->len);
  return json ? s->arr != NULL : s->mem != NULL;
}

static void sink_export(const prefcap_export_info_t *e, void *ud) {
  export_sink *s = ud;
  if (s->json) cJSON_AddItemToArray(s->arr, export_json(e, true));
  else export_line(s->mem, e);
  s->n++;
}

/* The text collected (after sink_done), or "  (none)" when there was nothing. */
static const char *sink_text(export_sink *s) {
  if (s->mem) { fclose(s->mem); s->mem = NULL; }
  return s->n && s->text ? s->text : "  (none)\n";
}

static void sink_free(export_sink *s) {
  if (s->mem) fclose(s->mem);
  free(s->text);
  cJSON_Delete(s->arr);
}

static cJSON *counts_json(const prefcap_erase_report_t *k) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "generations", (double)k->generations);
  cJSON_AddNumberToObject(j, "events", (double)k->events);
  cJSON_AddNumberToObject(j, "pairs", (double)k->pairs);
  cJSON_AddNumberToObject(j, "labels", (double)k->labels);
  cJSON_AddNumberToObject(j, "rated", (double)k->rated);
  cJSON_AddNumberToObject(j, "total", (double)k->total);
  return j;
}

// ---- forget --------------------------------------------------------------------------------------

int cli_forget(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"user", 1, 0, 'u'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db(), *user = NULL;
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
               "trained on them. Published export files are not touched; the temporary files of killed\n"
               "exports (unpublished copies) are removed, and any that cannot be is named (exit 1).\n\n"
               "Running it again is harmless; it also completes an erasure whose WAL could not be\n"
               "truncated because another process was reading the store (exit 1, said so).\n\n"
               "  --json   one JSON object: user_hash, erased (rows by table), wal_truncated, exports\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return cli_usage_error("forget", "unexpected argument");
  if (!user || !*user) return cli_usage_error("forget", "--user ID is required");
  prefcap_t *pc;
  if (cli_open_existing("forget", db, &pc)) return 1;
  export_sink sink;
  if (!sink_init(&sink, json)) { fprintf(stderr, "prefcap forget: out of memory\n"); prefcap_close(pc, -1); return 1; }
  prefcap_erase_report_t k = PREFCAP_ERASE_REPORT_INIT;
  int rc = prefcap_forget_user_report(pc, user, sink_export, &sink, &k);
  if (!k.committed) {
    /* nothing was erased: no report of an erasure */
    cli_fail("forget", pc, rc);
    sink_free(&sink);
    prefcap_close(pc, -1);
    return 1;
  }
  if (json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "user_hash", k.user_hash);
    cJSON_AddItemToObject(j, "erased", counts_json(&k));
    cJSON_AddBoolToObject(j, "rederived", k.rederived);
    cJSON_AddBoolToObject(j, "wal_truncated", k.wal_truncated);
    cJSON_AddItemToObject(j, "exports", sink.arr);
    sink.arr = NULL;
    print_json(j);
  } else {
    printf("exports that held this user's records (rebuild them, and the models trained on them):\n%s", sink_text(&sink));
    printf("erased user sha256:%s: %llu generation(s), %llu event(s), %llu pair(s), %llu label(s), %llu rated row(s)"
           " (%llu rows)%s%s\n", k.user_hash, (unsigned long long)k.generations, (unsigned long long)k.events,
           (unsigned long long)k.pairs, (unsigned long long)k.labels, (unsigned long long)k.rated,
           (unsigned long long)k.total, k.rederived ? "; pairs shared with other users re-derived" : "",
           k.wal_truncated ? "; WAL truncated" : "");
    printf("late events for this user will be refused (counted as 'refused' in the store).\n");
  }
  sink_free(&sink);
  if (rc) cli_fail("forget", pc, rc);
  int crc = prefcap_close(pc, -1);
  return rc || crc ? 1 : 0;
}

// ---- lineage -------------------------------------------------------------------------------------

typedef struct { bool json; bool first; bool have; } lineage_out;

static void lineage_head(const prefcap_export_info_t *e, void *ud) {
  lineage_out *o = ud;
  o->have = true;
  if (o->json) {
    /* the records stream after the head: print the object open, its records, then close it */
    cJSON *j = export_json(e, false);
    char *h = j ? cJSON_PrintUnformatted(j) : NULL;
    printf("{\"export\":%s,\"records\":[", h ? h : "null");
    cJSON_free(h);
    cJSON_Delete(j);
    return;
  }
  char t[32];
  printf("export %s\n", S(e->id));
  printf("  name       %s\n  format     %s\n  path       %s\n", S(e->name), S(e->format), S(e->path));
  prefcap_time_format(e->created_ms, t);
  printf("  created    %s\n", t);
  if (e->published_ms > 0) prefcap_time_format(e->published_ms, t);
  printf("  published  %s\n", e->published_ms > 0 ? t : "(pending)");
  if (e->upload_url) printf("  uploaded   %s\n", S(e->upload_url));
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
    printf("  %-6s %10lld  %s\n", S(kind), id, hash[0] ? S(hash) : "(no user)");
  else printf("  %s\n", S(line));
}

int cli_lineage(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"export", 1, 0, 'e'}, {"user", 1, 0, 'u'},
                                     {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db(), *exp = NULL, *user = NULL;
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
  if (optind < argc) return cli_usage_error("lineage", "unexpected argument");
  if (!exp == !user) return cli_usage_error("lineage", "give exactly one of --export ID and --user ID");
  if ((exp && !*exp) || (user && !*user)) return cli_usage_error("lineage", "the id is empty");
  prefcap_t *pc;
  if (cli_open_existing("lineage", db, &pc)) return 1;
  int rc;
  if (exp) {
    lineage_out o = {json, true, false};
    rc = prefcap_lineage_export(pc, exp, lineage_head, lineage_record, &o);
    if (json && o.have) printf("]}\n");
  } else {
    char hash[65];
    prefcap_user_hash(user, hash);
    export_sink sink;
    rc = sink_init(&sink, json) ? prefcap_lineage_user(pc, user, sink_export, &sink) : PREFCAP_ENOMEM;
    if (!rc && json) {
      cJSON *j = cJSON_CreateObject();
      cJSON_AddStringToObject(j, "user_hash", hash);
      cJSON_AddItemToObject(j, "exports", sink.arr);
      sink.arr = NULL;
      print_json(j);
    } else if (!rc) printf("exports that held records of user sha256:%s:\n%s", hash, sink_text(&sink));
    sink_free(&sink);
  }
  if (rc) cli_fail("lineage", pc, rc);
  prefcap_close(pc, -1);
  return rc ? 1 : 0;
}

// ---- prune ---------------------------------------------------------------------------------------

int cli_prune(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"older-than", 1, 0, 'o'}, {"dry-run", 0, 0, 'n'},
                                     {"vacuum", 0, 0, 'v'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db();
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
          return cli_usage_error("prune", "--older-than wants a number of days >= 0 (e.g. 90, or 0.5)");
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
  if (optind < argc) return cli_usage_error("prune", "unexpected argument");
  if (!have_days) return cli_usage_error("prune", "--older-than DAYS is required");
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int64_t cutoff = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - (int64_t)llround(days * 86400000.0);
  prefcap_t *pc;
  if (cli_open_existing("prune", db, &pc)) return 1;
  prefcap_erase_report_t k = PREFCAP_ERASE_REPORT_INIT;
  int rc = prefcap_prune_report(pc, cutoff, (dry ? PREFCAP_PRUNE_DRY_RUN : 0) | (vacuum ? PREFCAP_PRUNE_VACUUM : 0), &k);
  char t[32];
  prefcap_time_format(cutoff, t);
  if (rc) cli_fail("prune", pc, rc);
  else if (json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "cutoff", t);
    cJSON_AddBoolToObject(j, "dry_run", dry);
    cJSON_AddItemToObject(j, "deleted", counts_json(&k));
    cJSON_AddNumberToObject(j, "kept_old_generations", (double)k.kept_old);
    print_json(j);
  } else
    printf("prefcap prune: %s %llu generation(s), %llu event(s), %llu pair(s), %llu label(s), %llu rated row(s) older "
           "than %s; kept %llu older generation(s) that live pairs need\n",
           dry ? "would delete" : "deleted", (unsigned long long)k.generations, (unsigned long long)k.events,
           (unsigned long long)k.pairs, (unsigned long long)k.labels, (unsigned long long)k.rated, t,
           (unsigned long long)k.kept_old);
  int crc = prefcap_close(pc, -1);
  return rc || crc ? 1 : 0;
}

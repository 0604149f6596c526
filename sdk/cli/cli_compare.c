/* sdk/cli/cli_compare.c: `prefcap compare` and `prefcap report`. compare: did the fine-tune help? Per model version, the implicit
 * signals' rates and means with 95% intervals, and per metric a verdict (sdk/compare.c does the work;
 * this prints its JSON as is with --json, or as a table). report: the dashboard page (sdk/report.c). */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(const char *msg) { fprintf(stderr, "prefcap compare: %s (see --help)\n", msg); return 2; }

/* a time or a plain date (midnight UTC) */
static bool day_or_time(const char *s, int64_t *ms) { return prefcap_time_parse(s, ms) == PREFCAP_OK; }

static void print_ci(const cJSON *e, const char *fmt) {
  const cJSON *v = cJSON_GetObjectItem(e, "value"), *ci = cJSON_GetObjectItem(e, "ci");
  char a[32] = "-", lo[32] = "-", hi[32] = "-";
  if (cJSON_IsNumber(v)) snprintf(a, sizeof a, fmt, v->valuedouble);
  if (cJSON_IsNumber(cJSON_GetArrayItem(ci, 0))) snprintf(lo, sizeof lo, fmt, cJSON_GetArrayItem(ci, 0)->valuedouble);
  if (cJSON_IsNumber(cJSON_GetArrayItem(ci, 1))) snprintf(hi, sizeof hi, fmt, cJSON_GetArrayItem(ci, 1)->valuedouble);
  printf("  %-9s [%s, %s]", a, lo, hi);
}

int cli_compare(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"model", 1, 0, 'm'}, {"baseline", 1, 0, 'b'}, {"candidate", 1, 0, 'c'},
                                     {"since", 1, 0, 's'}, {"until", 1, 0, 'u'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db();
  prefcap_compare_options_t o = PREFCAP_COMPARE_OPTIONS_INIT;
  bool json = false;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'm': o.model = optarg; break;
      case 'b': o.baseline = optarg; break;
      case 'c': o.candidate = optarg; break;
      case 's': if (!day_or_time(optarg, &o.since_ms)) return usage("--since wants a date (2026-11-21) or an RFC 3339 time"); break;
      case 'u': if (!day_or_time(optarg, &o.until_ms)) return usage("--until wants a date (2026-11-21) or an RFC 3339 time"); break;
      case 'j': json = true; break;
      case 'h':
        printf("usage: prefcap compare --model M [--baseline V1 --candidate V2] [--since T --until T] [--db PATH] [--json]\n\n"
               "Per version of model M: generations; the rates of generations regenerated, edited, copied,\n"
               "accepted and abandoned (each generation counted once per signal); mean edit size (bytes the\n"
               "latest edit changed); mean rating; the win rate in side-by-side choices between the two\n"
               "versions. 95%% intervals: Wilson for rates, bootstrap (fixed seed) for means. Per metric,\n"
               "candidate minus baseline with its interval and a verdict: better, worse or no evidence (lower\n"
               "is better for regenerate, edit, abandon and edit size). Without --baseline/--candidate the\n"
               "two versions first used last are compared.\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) return usage("unexpected argument");
  if (!o.model) return usage("--model is required");
  if (!o.baseline != !o.candidate) return usage("give both --baseline and --candidate, or neither");
  if (o.since_ms && o.until_ms && o.since_ms >= o.until_ms) return usage("--since is not before --until");
  if (access(db, F_OK) != 0) { fprintf(stderr, "prefcap compare: no store at %s\n", db); return 1; }
  prefcap_t *pc;
  if (cli_open_existing("compare", db, &pc)) return 1;
  char *out = NULL;
  int rc = prefcap_compare(pc, &o, &out);
  if (rc) { fprintf(stderr, "prefcap compare: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc)); prefcap_close(pc, -1); return 1; }
  prefcap_close(pc, -1);
  if (json) { printf("%s\n", out); prefcap_free(out); return 0; }
  cJSON *r = cJSON_Parse(out);
  prefcap_free(out);
  if (!r) { fprintf(stderr, "prefcap compare: out of memory\n"); return 1; }
  printf("model %s\n", o.model);
  const cJSON *v, *m;
  cJSON_ArrayForEach(v, cJSON_GetObjectItem(r, "versions")) {
    printf("\nversion %s: %.0f generations\n", cJSON_GetObjectItem(v, "version")->valuestring, cJSON_GetObjectItem(v, "generations")->valuedouble);
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(v, "rates")) { printf("  %-16s", m->string); print_ci(m, "%.4f"); printf("\n"); }
    const char *means[] = {"mean_edit_size", "mean_rating", "win_rate"};
    for (int i = 0; i < 3; i++)
      if ((m = cJSON_GetObjectItem(v, means[i]))) { printf("  %-16s", means[i]); print_ci(m, "%.4f"); printf("  (n=%.0f)\n", cJSON_GetObjectItem(m, "n")->valuedouble); }
  }
  const cJSON *cmp = cJSON_GetObjectItem(r, "comparisons");
  if (cJSON_GetArraySize(cmp)) {
    printf("\n%s vs %s (candidate minus baseline):\n", cJSON_GetObjectItem(cmp->child, "candidate")->valuestring,
           cJSON_GetObjectItem(cmp->child, "baseline")->valuestring);
    cJSON_ArrayForEach(m, cmp) {
      cJSON *d = cJSON_GetObjectItem(m, "difference"), *ci = cJSON_GetObjectItem(m, "ci");
      printf("  %-16s", cJSON_GetObjectItem(m, "metric")->valuestring);
      if (cJSON_IsNumber(d)) printf("  %+.4f [%+.4f, %+.4f]", d->valuedouble, cJSON_GetArrayItem(ci, 0)->valuedouble, cJSON_GetArrayItem(ci, 1)->valuedouble);
      else printf("  %-28s", "-");
      printf("  %s (%s is better)\n", cJSON_GetObjectItem(m, "verdict")->valuestring, cJSON_GetObjectItem(m, "better_if")->valuestring);
    }
  }
  cJSON_Delete(r);
  return 0;
}

int cli_report(int argc, char **argv) {
  static const struct option lo[] = {{"db", 1, 0, 'd'}, {"out", 1, 0, 'o'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = cli_default_db(), *out = NULL;
  int c;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
      case 'd': db = optarg; break;
      case 'o': out = optarg; break;
      case 'h':
        printf("usage: prefcap report --out FILE.html [--db PATH]\n\n"
               "Writes one self-contained page (inline SVG, no scripts, nothing loaded from elsewhere):\n"
               "events per day by signal, pairs and labels by signal and source, the AI-judged fraction\n"
               "against the cap, the per-version comparison with intervals, the prompts most often\n"
               "regenerated, exports over time, erasures (counts only). Derives pending pairs first.\n");
        return 0;
      default: return 2;
    }
  }
  if (optind < argc) { fprintf(stderr, "prefcap report: unexpected argument (see --help)\n"); return 2; }
  if (!out) { fprintf(stderr, "prefcap report: --out FILE.html is required (see --help)\n"); return 2; }
  if (access(db, F_OK) != 0) { fprintf(stderr, "prefcap report: no store at %s\n", db); return 1; }
  prefcap_t *pc;
  if (cli_open_existing("report", db, &pc)) return 1;
  int rc = prefcap_derive(pc, 0);
  if (!rc) rc = prefcap_report(pc, out);
  if (rc) fprintf(stderr, "prefcap report: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(pc));
  prefcap_close(pc, -1);
  if (!rc) printf("%s\n", out);
  return rc ? 1 : 0;
}

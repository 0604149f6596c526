/* tests/sdk/test_compare.c: `prefcap compare`'s statistics (sdk/compare.c). Against published reference
 * values: Wilson's interval (Newcombe 1998, table I: 81/263 -> 0.2553-0.3662) and Newcombe's hybrid score
 * interval for a difference (Newcombe 1998, table II example: 56/70 vs 48/80 -> 0.0524 to 0.3339).
 * Then the acceptance: on a store with version B regenerated 10% and A 30% (2,000 generations each), the
 * verdict is "better" for B; with equal true rates, "no evidence" in at least 95% of 200 seeded runs
 * (binomial draws through prefcap_rate_difference with the simultaneous interval compare's verdicts use;
 * a store per run would cost minutes); each generation counted once per signal however many events it had. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "prefcap.h"
#include "test.h"
#include "util.h"

static const cJSON *find_cmp(const cJSON *r, const char *metric) {
  const cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItem(r, "comparisons"))
    if (!strcmp(cJSON_GetObjectItem(m, "metric")->valuestring, metric)) return m;
  return NULL;
}

static void test_reference_intervals(void) {
  double d[3];
  /* Newcombe's example 1: 56/70 (candidate) vs 48/80 (baseline); his method 10: 0.0524 to 0.3339 */
  EXPECT(prefcap_rate_difference(48, 80, 56, 70, 0, d) == PREFCAP_OK);
  EXPECTF(fabs(d[0] - 0.2) < 1e-12 && fabs(d[1] - 0.0524) < 5e-5 && fabs(d[2] - 0.3339) < 5e-5, "%.5f [%.5f, %.5f]", d[0], d[1], d[2]);
  /* a rate and itself: the interval straddles 0 */
  EXPECT(prefcap_rate_difference(30, 100, 30, 100, 0, d) == PREFCAP_OK && d[1] < 0 && d[2] > 0);
  EXPECT(prefcap_rate_difference(5, 4, 1, 2, 0, d) == PREFCAP_EINVAL);
}

static uint64_t rng_state;
static double unif(void) {   /* splitmix64 -> [0, 1) */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL; z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}
static uint64_t binom(uint64_t n, double p) { uint64_t k = 0; for (uint64_t i = 0; i < n; i++) k += unif() < p; return k; }

static void test_null_no_evidence(void) {
  int none = 0, plain = 0;
  for (int run = 0; run < 200; run++) {
    rng_state = 1000 + (uint64_t)run;
    double d[3];
    uint64_t ka = binom(2000, 0.2), kb = binom(2000, 0.2);
    prefcap_rate_difference(ka, 2000, kb, 2000, 1, d);   /* the interval compare's verdict uses */
    none += d[1] <= 0 && d[2] >= 0;
    prefcap_rate_difference(ka, 2000, kb, 2000, 0, d);
    plain += d[1] <= 0 && d[2] >= 0;
  }
  printf("# equal true rates (0.2, 2,000 each): no evidence in %d of 200 seeded runs (a plain 95%% interval: %d)\n", none, plain);
  EXPECT(none >= 190);
}

/* a store: versions A then B of model m; A regenerated with probability pa, B pb */
static char *store_compare(const char *path, double pa, double pb, uint64_t seed) {
  prefcap_t *pc = tu_open(path, PREFCAP_ASYNC);
  if (!pc) return NULL;
  rng_state = seed;
  char line[512];
  for (int v = 0; v < 2; v++)
    for (int i = 0; i < 2000; i++) {
      snprintf(line, sizeof line, "{\"type\":\"generation\",\"id\":\"%c%d\",\"prompt\":\"p%d\",\"completion\":\"answer %d\",\"model\":\"m\","
               "\"model_version\":\"%s\",\"ts\":%d}", 'A' + v, i, i, i, v ? "B" : "A", 1000000 + v * 100000 + i);
      prefcap_log_json(pc, line, strlen(line), NULL);
      if (unif() < (v ? pb : pa)) {
        for (int twice = 0; twice < 2; twice++) {   /* two regenerate events: still one regenerated generation */
          snprintf(line, sizeof line, "{\"type\":\"regenerate\",\"id\":\"%c%d\",\"event_id\":\"r%c%d-%d\"}", 'A' + v, i, 'A' + v, i, twice);
          prefcap_log_json(pc, line, strlen(line), NULL);
        }
      }
      if (i % 10 == 0) {
        snprintf(line, sizeof line, "{\"type\":\"edit\",\"id\":\"%c%d\",\"text\":\"answer %d%s\"}", 'A' + v, i, i, v ? "!" : " and more");
        prefcap_log_json(pc, line, strlen(line), NULL);
      }
      if (v && i < 300) {   /* choices: B over A two times in three */
        snprintf(line, sizeof line, "{\"type\":\"choice\",\"chosen\":\"%s%d\",\"rejected\":\"%s%d\"}", i % 3 ? "B" : "A", i, i % 3 ? "A" : "B", i);
        prefcap_log_json(pc, line, strlen(line), NULL);
      }
    }
  prefcap_flush(pc, -1);
  prefcap_compare_options_t o = PREFCAP_COMPARE_OPTIONS_INIT;
  o.model = "m"; o.baseline = "A"; o.candidate = "B";
  char *json = NULL;
  int rc = prefcap_compare(pc, &o, &json);
  if (rc) fprintf(stderr, "  compare: %s\n", prefcap_errmsg(pc));
  prefcap_close(pc, -1);
  return json;
}

static void test_store_better(void) {
  char *json = store_compare(tu_dbpath(), 0.30, 0.10, 7);
  REQUIRE(json);
  cJSON *r = cJSON_Parse(json);
  REQUIRE(r);
  const cJSON *c = find_cmp(r, "regenerate");
  REQUIRE(c);
  EXPECTF(!strcmp(cJSON_GetObjectItem(c, "verdict")->valuestring, "better"), "%s", json);
  /* counted once per generation: the rate is near 0.1, not 0.2 (each regenerated one had two events) */
  const cJSON *vb = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "versions"), 1);
  double rb = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(vb, "rates"), "regenerate"), "value")->valuedouble;
  EXPECTF(!strcmp(cJSON_GetObjectItem(vb, "version")->valuestring, "B") && rb > 0.08 && rb < 0.12, "B's rate %g", rb);
  EXPECT(cJSON_GetObjectItem(vb, "generations")->valuedouble == 2000);
  /* smaller edits on B ("!" vs " and more"): better; B won 2 of 3 choices: better; edited rates equal: no evidence */
  EXPECT(!strcmp(cJSON_GetObjectItem(find_cmp(r, "mean_edit_size"), "verdict")->valuestring, "better"));
  EXPECT(!strcmp(cJSON_GetObjectItem(find_cmp(r, "win_rate"), "verdict")->valuestring, "better"));
  EXPECT(!strcmp(cJSON_GetObjectItem(find_cmp(r, "edit"), "verdict")->valuestring, "no evidence"));
  EXPECT(!strcmp(cJSON_GetObjectItem(find_cmp(r, "mean_rating"), "verdict")->valuestring, "no evidence"));   /* no ratings */
  /* and the reverse: worse */
  char *json2 = store_compare(tu_dbpath(), 0.10, 0.30, 8);
  cJSON *r2 = json2 ? cJSON_Parse(json2) : NULL;
  EXPECT(r2 && !strcmp(cJSON_GetObjectItem(find_cmp(r2, "regenerate"), "verdict")->valuestring, "worse"));
  cJSON_Delete(r2);
  prefcap_free(json2);
  cJSON_Delete(r);
  prefcap_free(json);
}

int main(void) {
  RUN(test_reference_intervals);
  RUN(test_null_no_evidence);
  RUN(test_store_better);
  return tst_end();
}

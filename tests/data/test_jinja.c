/* tests/data/test_jinja.c: the Jinja interpreter's refusals and limits, which no reference renders.
 *
 * Each bad template must fail with the template line and a message naming the construct: a block left
 * open, a stray end tag, an unknown filter or test, a statement outside the subset, a runaway loop, an
 * output past the cap, endless macro recursion, an expression nested past the parser's depth, and a
 * template's own raise_exception. Rendering equality with jinja2 is tests/data/jinja_parity.mjs's job;
 * `test_jinja --cases FILE` renders its small cases (lines {"template", "vars"}) for it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test.h"
#include "text/jinja.h"

/* Parses and renders with vars (JSON text or NULL); returns the output or NULL with err filled. */
static char *render(const char *tpl, const char *vars, char *err, size_t errlen) {
  pc_jinja *t = pc_jinja_parse(tpl, err, errlen);
  if (!t) return NULL;
  cJSON *v = vars ? cJSON_Parse(vars) : NULL;
  char *out = pc_jinja_render(t, v, NULL, err, errlen);
  cJSON_Delete(v);
  pc_jinja_free(t);
  return out;
}

#define FAILS_WITH(tpl, vars, want) do { char e_[512] = {0}; char *o_ = render(tpl, vars, e_, sizeof e_); \
  EXPECTF(!o_ && strstr(e_, want), "want \"%s\", got %s / \"%s\"", want, o_ ? o_ : "(null)", e_); free(o_); } while (0)

static void test_malformed(void) {
  FAILS_WITH("a\n{% if x %}\nb", NULL, "line 3: the template ends without {% endif %}");
  FAILS_WITH("{% for m in messages %}{% endif %}", NULL, "line 1: unexpected 'endif' (expected 'endfor')");
  FAILS_WITH("ok\n{{ x |nosuchfilter }}", NULL, "line 2: filter 'nosuchfilter' is not supported");
  FAILS_WITH("{% if x is prime %}{% endif %}", NULL, "line 1: test 'prime' is not supported");
  FAILS_WITH("\n\n{% include 'other.jinja' %}", NULL, "line 3: {% include %} is not supported");
  FAILS_WITH("{% for x in y recursive %}{% endfor %}", NULL, "recursive for loops are not supported");
  FAILS_WITH("{{ 'unclosed }}", NULL, "line 1: {{ is not closed");
  FAILS_WITH("{{ a b }}", NULL, "line 1: unexpected 'b' at the end of a tag");
  FAILS_WITH("{% endfor %}", NULL, "line 1: unexpected 'endfor'");
}

static void test_runtime_errors(void) {
  FAILS_WITH("\n\n{{ raise_exception('Roles must alternate') }}", NULL, "line 3: raise_exception: Roles must alternate");
  FAILS_WITH("{{ x.y }}", NULL, "line 1: 'x' is undefined (reading .y)");
  FAILS_WITH("{{ 'a' + 1 }}", NULL, "unsupported operand types for +: str and int");
  FAILS_WITH("\n{{ bos_token + 'x' }}", NULL, "line 2: 'bos_token' is undefined");
  FAILS_WITH("{{ 'abc'.zfill(5) }}", NULL, "method str.zfill() is not supported");
  FAILS_WITH("{% set d = {} %}{% set d.x = 1 %}", NULL, "only a namespace() can be assigned to");
  FAILS_WITH("{{ open('/etc/passwd') }}", NULL, "'open' is undefined");
}

static void test_limits(void) {
  FAILS_WITH("{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}", NULL,
             "more than 1000000 loop iterations");
  FAILS_WITH("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", NULL, "the output is larger than 16 MiB");
  FAILS_WITH("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, "macro calls nested more than 64 deep");
  /* 64-bit integers (Python's have no bound): overflow is an error, never undefined behaviour or a
   * wrapped value (fuzz_jinja: 22222 ** 2 ** 222) */
  FAILS_WITH("{{ 3 ** 50 }}", NULL, "line 1: integer overflow: the result of ** does not fit in 64 bits");
  FAILS_WITH("{{ 9223372036854775807 + 1 }}", NULL, "the result of + does not fit");
  FAILS_WITH("{{ -9223372036854775807 - 2 }}", NULL, "the result of - does not fit");
  FAILS_WITH("{{ 4294967296 * 4294967296 }}", NULL, "the result of * does not fit");
  FAILS_WITH("{{ (-9223372036854775807 - 1) // -1 }}", NULL, "the result of // does not fit");
  FAILS_WITH("{{ -(-9223372036854775807 - 1) }}", NULL, "integer overflow");
  FAILS_WITH("{{ (-9223372036854775807 - 1) | abs }}", NULL, "abs: integer overflow");
  char deep[2000];
  size_t k = 0;
  k += (size_t)snprintf(deep + k, sizeof deep - k, "{{ ");
  for (int i = 0; i < 300; i++) deep[k++] = '(';
  deep[k++] = '1';
  for (int i = 0; i < 300; i++) deep[k++] = ')';
  snprintf(deep + k, sizeof deep - k, " }}");
  FAILS_WITH(deep, NULL, "nested too deeply");
  /* within the limits: the same shapes render */
  char err[256];
  char *o = render("{% macro f(n) %}{% if n < 10 %}{{ f(n + 1) }}{% else %}{{ n }}{% endif %}{% endmacro %}{{ f(0) }}", NULL, err, sizeof err);
  EXPECTF(o && !strcmp(o, "10"), "%s", o ? o : err);
  free(o);
  static const char *const fits[][2] = {   /* the edges that still fit, as Python prints them */
      {"{{ 2 ** 62 }}", "4611686018427387904"}, {"{{ (-2) ** 63 }}", "-9223372036854775808"},
      {"{{ 1 ** 9223372036854775807 }}", "1"}, {"{{ (-1) ** 9223372036854775807 }}", "-1"}, {"{{ 0 ** 0 }}", "1"},
      {"{{ (-9223372036854775807 - 1) % -1 }}", "0"}, {"{{ 9223372036854775806 + 1 }}", "9223372036854775807"},
      {"{{ range(9223372036854775805, 9223372036854775807, 5) | list }}", "[9223372036854775805]"},
      {"{{ 'ab' * 3 }}", "ababab"}};
  for (size_t i = 0; i < sizeof fits / sizeof *fits; i++) {
    o = render(fits[i][0], NULL, err, sizeof err);
    EXPECTF(o && !strcmp(o, fits[i][1]), "%s: want %s, got %s", fits[i][0], fits[i][1], o ? o : err);
    free(o);
  }
  FAILS_WITH("{{ 'abcd' * 4611686018427387904 }}", NULL, "string repetition too large");
}

/* --cases FILE: render each {"template", "vars"} line, print {"text"} or {"error"} */
static int run_cases(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) { perror(path); return 2; }
  char *line = NULL; size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    cJSON *j = cJSON_Parse(line), *o = cJSON_CreateObject();
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(j, "template");
    char err[512];
    pc_jinja *t = cJSON_IsString(tpl) ? pc_jinja_parse(tpl->valuestring, err, sizeof err) : NULL;
    char *out = t ? pc_jinja_render(t, cJSON_GetObjectItemCaseSensitive(j, "vars"), NULL, err, sizeof err) : NULL;
    if (out) cJSON_AddStringToObject(o, "text", out); else cJSON_AddStringToObject(o, "error", err);
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    free(s); free(out); pc_jinja_free(t); cJSON_Delete(o); cJSON_Delete(j);
  }
  free(line);
  fclose(f);
  return 0;
}

/* Parsing is linear in the template: the lexer once counted lines from the start for every tag, so
 * 40,000 one-line tags (300 kB) took seconds of CPU where they now take milliseconds. The bound is on
 * process CPU time (clock(), not wall time, so a loaded machine does not fail it), 1 s: over 20x the
 * time of an ASan build and 10x under the old code's. The last tag's error must still name its line. */
static void test_parse_linear(void) {
  enum { LINES = 40000 };
  size_t cap = (size_t)LINES * 8 + 64, k = 0;
  char *tpl = malloc(cap);
  EXPECT(tpl != NULL);
  if (!tpl) return;
  for (int i = 0; i < LINES; i++) { memcpy(tpl + k, "{{ x }}\n", 8); k += 8; }
  snprintf(tpl + k, cap - k, "{{ 'unclosed");
  char err[256] = "", want[64];
  snprintf(want, sizeof want, "line %d: {{ is not closed", LINES + 1);
  clock_t c0 = clock();
  pc_jinja *t = pc_jinja_parse(tpl, err, sizeof err);
  double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
  EXPECTF(!t && strstr(err, want), "want \"%s\", got \"%s\"", want, err);
  pc_jinja_free(t);
  EXPECTF(cpu < 1.0, "parsing %d tags took %.2f s of CPU", LINES, cpu);
  free(tpl);
}

/* Repeating an empty string costs nothing whatever the count, as in Python ('' * 10**18 is ''). The
 * interpreter once looped count times: fuzz_jinja's timeout (seed crash-timeout-empty-repeat) was a
 * chain of products on an empty string. These three repetitions of 2,000,000,000 took 11 s of CPU on
 * that code; the bound is 1 s of process CPU (clock()), as above. */
static void test_empty_repeat_bounded(void) {
  char err[256] = "";
  clock_t c0 = clock();
  char *o = render("[{{ '' * 2000000000 }}|{{ 2000000000 * '' }}|{{ ('' * 3) * 2000000000 }}|{{ 'ab' * 0 }}|{{ 'ab' * -5 }}|{{ 'ab' * 2 }}]",
                   NULL, err, sizeof err);
  double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
  EXPECTF(o && !strcmp(o, "[|||||abab]"), "got %s / %s", o ? o : "(null)", err);
  free(o);
  EXPECTF(cpu < 1.0, "repeating an empty string took %.2f s of CPU", cpu);
  FAILS_WITH("{{ 'ab' * 9223372036854775807 }}", NULL, "string repetition too large");
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--cases")) return run_cases(argv[2]);
  RUN(test_malformed);
  RUN(test_runtime_errors);
  RUN(test_limits);
  RUN(test_parse_linear);
  RUN(test_empty_repeat_bounded);
  return tst_end();
}

/* tests/data/test_chat.c: trainer/text/chat.c's renderings against Hugging Face's own: tests/data/ref.cjs runs
 * @huggingface/jinja on the real chat_template of Llama 3 and Qwen 3 (their tokenizer_config.json from
 * npm) and on SmolLM's ChatML templates, over 600 generated conversations (system or not, multi-turn,
 * tool turns, reasoning, unicode, whitespace at the edges, <think> inside content), with and without
 * the generation prompt. The C side recognises each template from its text, renders, and must produce
 * the same string byte for byte. Plus the cases the generator avoids on purpose (Python's whitespace
 * set in `trim`) and recognition refusals. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "text/chat.h"
#include "test.h"

static const char *root(void) { const char *r = getenv("PREFCAP_ROOT"); return r ? r : "."; }

static int have_node(void) { return system("node --version >/dev/null 2>&1") == 0; }

// ---- against @huggingface/jinja ------------------------------------------------------------------

/* Runs cmd and returns its whole stdout (malloc'd) or NULL; *status gets pclose's status. */
static char *run_capture(const char *cmd, int *status) {
  FILE *p = popen(cmd, "r");
  if (!p) return NULL;
  size_t cap = 1 << 20, n = 0;
  char *buf = malloc(cap);
  size_t r;
  while (buf && (r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
    n += r;
    if (n + 1 >= cap) { char *q = realloc(buf, cap *= 2); if (!q) { free(buf); buf = NULL; } else buf = q; }
  }
  *status = pclose(p);
  if (buf) buf[n] = 0;
  return buf;
}

static char *next_line(char **s) {
  char *l = *s;
  if (!l || !*l) return NULL;
  char *nl = strchr(l, '\n');
  if (nl) { *nl = 0; *s = nl + 1; } else *s = l + strlen(l);
  return l;
}

/* Compares chat.c with @huggingface/jinja (ref.cjs) and, where /usr/bin/python3 has jinja2, with
 * Python's jinja2 as transformers configures it: the engine Hugging Face actually renders with. */
static void test_render_matches_hf_jinja(void) {
  if (!have_node()) SKIP("node not found");
  char tmp[] = "/tmp/pc_chat_XXXXXX";
  int fd = mkstemp(tmp);
  REQUIRE(fd >= 0);
  close(fd);
  char cmd[1024];
  int st;
  snprintf(cmd, sizeof cmd, "node '%s/tests/data/ref.cjs' render > %s && cat %s", root(), tmp, tmp);
  char *js = run_capture(cmd, &st);
  EXPECTF(js && st == 0, "ref.cjs render exited with %d", st);
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/data/render_py.py' %s", root(), tmp);
  char *py = run_capture(cmd, &st);
  int have_py = py && st == 0;
  if (!have_py) fprintf(stderr, "  (python3 jinja2 not available: comparing with @huggingface/jinja only)\n");
  unlink(tmp);
  REQUIRE(js != NULL);

  char *jcur = js, *pcur = have_py ? py : NULL, *line;
  int cases = 0, bad = 0, bad_py = 0, per_template[8] = {0};
  char *names[8] = {0};
  while ((line = next_line(&jcur)) != NULL) {
    cJSON *j = cJSON_Parse(line);
    REQUIRE(j != NULL);
    const char *tname = cJSON_GetObjectItem(j, "template")->valuestring;
    const char *ttext = cJSON_GetObjectItem(j, "template_text")->valuestring;
    const cJSON *bos = cJSON_GetObjectItem(j, "bos");
    int agp = cJSON_IsTrue(cJSON_GetObjectItem(j, "agp"));
    const cJSON *kw = cJSON_GetObjectItem(j, "kwargs");
    const cJSON *et = cJSON_GetObjectItem(kw, "enable_thinking");
    const cJSON *msgs = cJSON_GetObjectItem(j, "messages");
    const char *want = cJSON_GetObjectItem(j, "rendered")->valuestring;
    cJSON *pj = NULL;
    if (pcur) { char *pl = next_line(&pcur); pj = pl ? cJSON_Parse(pl) : NULL; EXPECT(pj != NULL); }

    pc_chat_format f;
    char err[256];
    int rc = pc_chat_detect(ttext, cJSON_IsString(bos) ? bos->valuestring : NULL, &f, err, sizeof err);
    EXPECTF(rc == 0, "template %s not recognised: %s", tname, err);
    if (rc != 0) { cJSON_Delete(j); cJSON_Delete(pj); bad++; continue; }
    int n = cJSON_GetArraySize(msgs);
    pc_chat_msg m[64];
    REQUIRE(n <= 64);
    for (int i = 0; i < n; i++) {
      const cJSON *it = cJSON_GetArrayItem(msgs, i);
      const cJSON *rs = cJSON_GetObjectItem(it, "reasoning_content");
      m[i].role = cJSON_GetObjectItem(it, "role")->valuestring;
      m[i].content = cJSON_GetObjectItem(it, "content")->valuestring;
      m[i].reasoning = cJSON_IsString(rs) ? rs->valuestring : NULL;
    }
    pc_chat_opts o = {et ? cJSON_IsTrue(et) : -1};
    char *got = pc_chat_render(&f, m, n, agp, &o);
    REQUIRE(got != NULL);
    if (strcmp(got, want) != 0) {
      if (bad < 3) fprintf(stderr, "  %s agp=%d case %d:\n    want %s\n    got  %s\n", tname, agp, cases, want, got);
      bad++;
    }
    if (pj) {
      const char *pw = cJSON_GetObjectItem(pj, "rendered")->valuestring;
      if (strcmp(got, pw) != 0) {
        if (bad_py < 3) fprintf(stderr, "  jinja2: %s agp=%d case %d:\n    want %s\n    got  %s\n", tname, agp, cases, pw, got);
        bad_py++;
      }
    }
    for (int k = 0; k < 8; k++) {
      if (!names[k]) names[k] = strdup(tname);
      if (!strcmp(names[k], tname)) { per_template[k]++; break; }
    }
    free(got);
    pc_chat_format_free(&f);
    cJSON_Delete(j);
    cJSON_Delete(pj);
    cases++;
  }
  free(js);
  free(py);
  fprintf(stderr, "  %d renderings compared (", cases);
  for (int k = 0; k < 8 && names[k]; k++) { fprintf(stderr, "%s%s %d", k ? ", " : "", names[k], per_template[k]); free(names[k]); }
  fprintf(stderr, "): %d differ from @huggingface/jinja, %d from jinja2%s\n", bad, bad_py, have_py ? "" : " (not run)");
  EXPECT(cases >= 1200);
  EXPECTF(bad == 0, "%d renderings differ from @huggingface/jinja", bad);
  EXPECTF(bad_py == 0, "%d renderings differ from Python jinja2", bad_py);
}

// ---- what the generator leaves out -----------------------------------------------------------------

/* jinja2's `trim` is Python's str.strip(): U+001C..U+001F and U+0085 are whitespace, U+FEFF is not
 * (JavaScript's trim says the opposite, so @huggingface/jinja cannot be the reference here; these
 * expectations were checked with python3: '\x1chi\x85'.strip() == 'hi', '\ufeffhi'.strip() == '\ufeffhi'). */
static void test_llama3_trim_is_python_strip(void) {
  pc_chat_format f;
  char err[128];
  REQUIRE(pc_chat_by_name("llama3", "<|begin_of_text|>", &f, err, sizeof err) == 0);
  pc_chat_msg m[2] = {{"user", "\x1c hi \xc2\x85", NULL, NULL}, {"assistant", "\xef\xbb\xbfyo\xe3\x80\x80\xe2\x80\xa8", NULL, NULL}};
  char *s = pc_chat_render(&f, m, 2, 1, NULL);
  const char *want = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n\xef\xbb\xbfyo<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n";
  EXPECTF(s && !strcmp(s, want), "got %s", s ? s : "(null)");
  free(s);
  /* By name the generation prompt follows add_generation_prompt (Meta's Llama 3 Instruct template). */
  s = pc_chat_render(&f, m, 1, 0, NULL);
  EXPECT(s && !strcmp(s, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"));
  free(s);
  pc_chat_format_free(&f);
}

static void test_detection_refuses_what_it_cannot_reproduce(void) {
  pc_chat_format f;
  char err[256];
  EXPECT(pc_chat_detect("{{ '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023' }}<|eot_id|>",
                        NULL, &f, err, sizeof err) == -1);
  EXPECTF(strstr(err, "Llama 3.1") != NULL, "%s", err);
  EXPECT(pc_chat_detect("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}", NULL, &f, err, sizeof err) == -1);
  EXPECTF(strstr(err, "not recognised") != NULL, "%s", err);
  EXPECT(pc_chat_detect("{{ '<|im_start|>' + m.role + '\\n' + m.content | trim }}", NULL, &f, err, sizeof err) == -1);
  EXPECT(pc_chat_detect("", NULL, &f, err, sizeof err) == -1);
  EXPECT(pc_chat_by_name("vicuna", NULL, &f, err, sizeof err) == -1);
  EXPECTF(strstr(err, "unknown chat template 'vicuna'") != NULL, "%s", err);
  REQUIRE(pc_chat_by_name("qwen3", NULL, &f, err, sizeof err) == 0);
  EXPECT(f.kind == PC_CHAT_QWEN3 && !strcmp(pc_chat_kind_name(f.kind), "qwen3"));
  pc_chat_format_free(&f);
}

/* The SmolLM2 / Qwen2 default system message is taken from the template's literal, escapes decoded. */
static void test_chatml_default_system(void) {
  pc_chat_format f;
  char err[256];
  const char *t = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                  "{{ '<|im_start|>system\\nYou are \\'helpful\\'.<|im_end|>\\n' }}{% endif %}"
                  "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
  REQUIRE(pc_chat_detect(t, NULL, &f, err, sizeof err) == 0);
  EXPECT(f.kind == PC_CHAT_CHATML);
  EXPECTF(f.default_system && !strcmp(f.default_system, "You are 'helpful'."), "%s", f.default_system ? f.default_system : "(null)");
  pc_chat_msg m = {"user", "hi", NULL, NULL};
  char *s = pc_chat_render(&f, &m, 1, 1, NULL);
  EXPECT(s && !strcmp(s, "<|im_start|>system\nYou are 'helpful'.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
  free(s);
  /* An empty chat renders nothing but the generation prompt (the loop never runs). */
  s = pc_chat_render(&f, NULL, 0, 1, NULL);
  EXPECT(s && !strcmp(s, "<|im_start|>assistant\n"));
  free(s);
  pc_chat_format_free(&f);
}

int main(void) {
  RUN(test_render_matches_hf_jinja);
  RUN(test_llama3_trim_is_python_strip);
  RUN(test_detection_refuses_what_it_cannot_reproduce);
  RUN(test_chatml_default_system);
  return tst_end();
}

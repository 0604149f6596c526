/* tests/fuzz/fuzz_jinja.c: the chat-template interpreter (trainer/text/jinja.c) on any template text.
 * The input is the template; it is rendered with a fixed conversation (system, user, assistant, tool
 * call), special tokens and add_generation_prompt, as transformers passes them. Properties beyond
 * "no crash": a refusal or a failed render always says why (line and construct), a render's length is
 * what it reports, and the interpreter's caps (iterations, output, depth) end runaway templates. */
#include "fuzz.h"
#include "text/jinja.h"

#include <string.h>

static cJSON *vars(void) {
  static const char *json =
      "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
      " {\"role\": \"user\", \"content\": \"Hi <think>x</think>\"},"
      " {\"role\": \"assistant\", \"content\": \"Hello!\", \"tool_calls\": [{\"type\": \"function\","
      " \"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1}}}]},"
      " {\"role\": \"tool\", \"content\": \"2\"}, {\"role\": \"user\", \"content\": \"ok\"}],"
      " \"tools\": null, \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";
  cJSON *v = cJSON_Parse(json);
  if (!v) abort();
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static cJSON *v;
  if (!v) v = vars();
  char *src = fuzz_cstr(data, size);
  char err[512] = "";
  pc_jinja *t = pc_jinja_parse(src, err, sizeof err);
  if (!t) {
    FUZZ_CHECK(err[0] != 0);
  } else {
    size_t n = 0;
    err[0] = 0;
    char *out = pc_jinja_render(t, v, &n, err, sizeof err);
    if (out) FUZZ_CHECK(strlen(out) <= n);   /* the text may hold NULs of its own, never fewer bytes */
    else FUZZ_CHECK(err[0] != 0);
    free(out);
    pc_jinja_free(t);
  }
  free(src);
  return 0;
}

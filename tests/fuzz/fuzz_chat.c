/* tests/fuzz/fuzz_chat.c: chat templates (trainer/text/chat.c): recognising a tokenizer_config.json
 * chat_template, then rendering any conversation with the format found (or one named).
 * Input: byte 0 holds flags (bit 0: add_generation_prompt; bits 1-2: enable_thinking -1/0/1; bits 3-4:
 * detect from the template, or chatml / qwen3 / llama3 by name), then NUL-separated fields: the
 * template text, the BOS text, and (role, content, reasoning) per message (an empty reasoning is
 * none). Whatever is rendered must be a string; a template that is refused must say why. */
#include "fuzz.h"
#include "text/chat.h"

#include <string.h>

#define MAX_FIELDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  int flags = data[0];
  char *buf = fuzz_cstr(data + 1, size - 1);
  const char *field[MAX_FIELDS];
  int nf = 0;
  for (char *p = buf; nf < MAX_FIELDS;) {
    field[nf++] = p;
    char *z = memchr(p, 0, (size_t)(buf + size - 1 - p));
    if (!z) break;
    p = z + 1;
  }
  const char *tmpl = field[0], *bos = nf > 1 ? field[1] : NULL;
  pc_chat_format f;
  char err[512] = "";
  static const char *names[] = {"chatml", "qwen3", "llama3"};
  int which = (flags >> 3) & 3;
  int rc = which == 0 ? pc_chat_detect(tmpl, bos, &f, err, sizeof err)
                      : pc_chat_by_name(names[which - 1], bos, &f, err, sizeof err);
  if (rc != 0) {
    FUZZ_CHECK(err[0] != 0);
    free(buf);
    return 0;
  }
  pc_chat_msg msgs[MAX_FIELDS / 3];
  int nm = 0;
  for (int i = 2; i + 1 < nf; i += 3) {
    msgs[nm].role = field[i];
    msgs[nm].content = field[i + 1];
    msgs[nm].reasoning = i + 2 < nf && field[i + 2][0] ? field[i + 2] : NULL;
    nm++;
  }
  pc_chat_opts o = {((flags >> 1) & 3) == 0 ? -1 : ((flags >> 1) & 3) - 1};
  char *out = pc_chat_render(&f, msgs, nm, flags & 1, &o);
  FUZZ_CHECK(out != NULL);
  free(out);
  pc_chat_format_free(&f);
  free(buf);
  return 0;
}

/* trainer/cli/cmd_render.c: `prefcap-dpo render`: the exact string a model's chat template makes of a
 * conversation, rendered as transformers' apply_chat_template(messages, tokenize=False) renders it.
 *
 * The template is DIR/chat_template.jinja when present (transformers prefers it), else the
 * chat_template of DIR/tokenizer_config.json (a list of named templates picks "tool_use" when the line
 * has tools, else "default"). The variables are what transformers passes: messages, tools and documents
 * (None when the line has none), add_generation_prompt, the special tokens of tokenizer_config.json
 * (bos_token, eos_token, unk_token, pad_token, additional_special_tokens), and any other field of the
 * line (enable_thinking, date_string, ...), as apply_chat_template's **kwargs.
 *
 * A line that fails (raise_exception in the template, a bad line) stops the run with its line number
 * and exit 1; with --keep-going it prints {"error": "..."} instead and the exit is 1 at the end. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "text/jinja.h"

static void usage(FILE *f) {
  fputs("usage: prefcap-dpo render --model DIR [--add-generation-prompt] [--template FILE] [--keep-going] [FILE|-]\n"
        "\n"
        "Renders each conversation with the model's chat template, exactly as transformers does.\n"
        "  input lines:   {\"messages\": [...], \"tools\": [...] (optional), other template variables}\n"
        "  output lines:  {\"text\": \"...\"}\n"
        "  --add-generation-prompt   end with the assistant's turn header (add_generation_prompt=True)\n"
        "  --template FILE           use this Jinja file instead of the model's chat template\n"
        "  --keep-going              on a failing line print {\"error\": \"...\"} and go on (exit 1 at the end)\n"
        "  FILE                      input file; '-' or nothing reads standard input\n", f);
}

static char *slurp(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return NULL; }
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  size_t r;
  while (b && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
    n += r;
    if (n + 1 == cap) { char *nb = realloc(b, cap *= 2); if (!nb) { free(b); b = NULL; } else b = nb; }
  }
  fclose(f);
  if (!b) { snprintf(err, errlen, "%s: out of memory", path); return NULL; }
  b[n] = 0;
  return b;
}

/* a special token of tokenizer_config.json: a string or {"content": ...} */
static const char *token_text(const cJSON *v) {
  if (cJSON_IsString(v)) return v->valuestring;
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
  return cJSON_IsString(c) ? c->valuestring : NULL;
}

int pc_cmd_render(int argc, char **argv) {
  const char *model = NULL, *input = NULL, *tpath = NULL;
  int agp = 0, keep_going = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (!strcmp(a, "--model") && i + 1 < argc) model = argv[++i];
    else if (!strncmp(a, "--model=", 8)) model = a + 8;
    else if (!strcmp(a, "--template") && i + 1 < argc) tpath = argv[++i];
    else if (!strcmp(a, "--add-generation-prompt")) agp = 1;
    else if (!strcmp(a, "--keep-going")) keep_going = 1;
    else if (a[0] == '-' && a[1]) { fprintf(stderr, "prefcap-dpo render: unknown option %s\n", a); usage(stderr); return 2; }
    else if (input) { fprintf(stderr, "prefcap-dpo render: more than one input file (%s, %s)\n", input, a); return 2; }
    else input = a;
  }
  if (!model) { fprintf(stderr, "prefcap-dpo render: --model DIR is required\n"); usage(stderr); return 2; }

  char err[1024], path[4096];
  int rc = 1;
  cJSON *cfg = NULL, *base = cJSON_CreateObject();
  char *text = NULL, *tsrc = NULL;
  pc_jinja *tdefault = NULL, *ttools = NULL;
  FILE *in = NULL;

  snprintf(path, sizeof path, "%s/tokenizer_config.json", model);
  if ((text = slurp(path, err, sizeof err)) && !(cfg = cJSON_Parse(text))) {
    fprintf(stderr, "prefcap-dpo render: %s: not valid JSON\n", path);
    goto done;
  }
  free(text); text = NULL;
  if (!cfg && !tpath) { fprintf(stderr, "prefcap-dpo render: %s\n", err); goto done; }

  /* the template(s) */
  const char *from = NULL;
  char jpath[4096];
  snprintf(jpath, sizeof jpath, "%s/chat_template.jinja", model);
  if (tpath || (tsrc = slurp(jpath, err, sizeof err)) != NULL) {
    if (tpath && !(tsrc = slurp(tpath, err, sizeof err))) { fprintf(stderr, "prefcap-dpo render: %s\n", err); goto done; }
    from = tpath ? tpath : jpath;
    if (!(tdefault = pc_jinja_parse(tsrc, err, sizeof err))) { fprintf(stderr, "prefcap-dpo render: %s: %s\n", from, err); goto done; }
  } else {
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    from = path;
    if (cJSON_IsString(ct)) {
      if (!(tdefault = pc_jinja_parse(ct->valuestring, err, sizeof err))) { fprintf(stderr, "prefcap-dpo render: %s: chat_template: %s\n", path, err); goto done; }
    } else if (cJSON_IsArray(ct)) {
      for (const cJSON *e = ct->child; e; e = e->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (!cJSON_IsString(nm) || !cJSON_IsString(tt)) continue;
        pc_jinja **slot = !strcmp(nm->valuestring, "default") ? &tdefault : !strcmp(nm->valuestring, "tool_use") ? &ttools : NULL;
        if (!slot) continue;
        if (!(*slot = pc_jinja_parse(tt->valuestring, err, sizeof err))) { fprintf(stderr, "prefcap-dpo render: %s: chat_template \"%s\": %s\n", path, nm->valuestring, err); goto done; }
      }
    }
    if (!tdefault && !ttools) { fprintf(stderr, "prefcap-dpo render: %s has no chat_template (and %s is absent)\n", path, jpath); goto done; }
  }

  /* what every line gets: the special tokens */
  static const char *specials[] = {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"};
  for (size_t i = 0; cfg && i < sizeof specials / sizeof *specials; i++) {
    const char *t = token_text(cJSON_GetObjectItemCaseSensitive(cfg, specials[i]));
    if (t) cJSON_AddStringToObject(base, specials[i], t);
  }
  const cJSON *add = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens") : NULL;
  if (cJSON_IsArray(add) && cJSON_GetArraySize(add) > 0) {
    cJSON *l = cJSON_AddArrayToObject(base, "additional_special_tokens");
    for (const cJSON *e = add->child; e; e = e->next) { const char *t = token_text(e); if (t) cJSON_AddItemToArray(l, cJSON_CreateString(t)); }
  }

  in = (!input || !strcmp(input, "-")) ? stdin : fopen(input, "rb");
  if (!in) { fprintf(stderr, "prefcap-dpo render: %s: %s\n", input, strerror(errno)); goto done; }
  const char *iname = in == stdin ? "<stdin>" : input;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  long ln = 0;
  int failed = 0;
  while ((len = getline(&line, &cap, in)) >= 0) {
    ln++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    if (len == 0) continue;
    char msg[6000] = {0};
    cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (!cJSON_IsObject(j)) snprintf(msg, sizeof msg, "not a JSON object");
    else if (!cJSON_IsArray(msgs)) snprintf(msg, sizeof msg, "\"messages\" is missing or not an array");
    char *out = NULL;
    size_t on = 0;
    if (!msg[0]) {
      cJSON *vars = cJSON_Duplicate(base, 1);
      cJSON_AddItemToObject(vars, "tools", cJSON_CreateNull());
      cJSON_AddItemToObject(vars, "documents", cJSON_CreateNull());
      cJSON_AddBoolToObject(vars, "add_generation_prompt", agp);
      for (const cJSON *e = j->child; e; e = e->next) {
        cJSON_DeleteItemFromObjectCaseSensitive(vars, e->string);
        cJSON_AddItemToObject(vars, e->string, cJSON_Duplicate(e, 1));
      }
      const cJSON *tools = cJSON_GetObjectItemCaseSensitive(j, "tools");
      const pc_jinja *t = (ttools && cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0) || !tdefault ? ttools : tdefault;
      if (!t) snprintf(msg, sizeof msg, "the chat template has no \"default\" variant for a line without tools");
      else if (!(out = pc_jinja_render(t, vars, &on, err, sizeof err))) snprintf(msg, sizeof msg, "template %s, %s", from, err);
      cJSON_Delete(vars);
    }
    cJSON_Delete(j);
    if (msg[0]) {
      failed = 1;
      if (!keep_going) { fprintf(stderr, "prefcap-dpo render: %s:%ld: %s\n", iname, ln, msg); free(line); goto done; }
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "error", msg);
      char *s = cJSON_PrintUnformatted(o);
      puts(s);
      free(s); cJSON_Delete(o);
      continue;
    }
    if (memchr(out, 0, on)) { fprintf(stderr, "prefcap-dpo render: %s:%ld: the rendering contains U+0000\n", iname, ln); free(out); free(line); goto done; }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "text", out);
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    free(s); cJSON_Delete(o); free(out);
  }
  free(line);
  rc = failed;
done:
  if (in && in != stdin) fclose(in);
  pc_jinja_free(tdefault); pc_jinja_free(ttools);
  free(tsrc); free(text);
  cJSON_Delete(cfg); cJSON_Delete(base);
  return rc;
}

/* trainer/text/data.c: reads preference JSONL and tokenizes it as TRL's DPOTrainer does (see data.h for
 * the steps and the TRL source they follow). Parsing and validation come first and are per line, so
 * that a bad line is reported with its number and field whatever the tokenizer; tokenization follows
 * TRL to the token, including its quirks (prefix mismatches are kept as TRL keeps them, the implicit
 * prompt stops one short when chosen and rejected never diverge). */
#include "text/data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"
#include "text/jinja.h"
#include "util/util.h"

// ---- small helpers -----------------------------------------------------------------------------

/* snprintf for messages built from other messages: truncation is acceptable there. */
static void fmt(char *dst, size_t n, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  vsnprintf(dst, n, f, ap);
  va_end(ap);
}

typedef struct { int32_t *v; int n, cap; } ivec;

static int iv_push(ivec *a, const int32_t *x, int n) {
  if (a->n + n > a->cap) {
    int cap = a->cap ? a->cap : 64;
    while (cap < a->n + n) cap *= 2;
    int32_t *q = realloc(a->v, (size_t)cap * sizeof *q);
    if (!q) return -1;
    a->v = q; a->cap = cap;
  }
  if (n) memcpy(a->v + a->n, x, (size_t)n * sizeof *x);
  a->n += n;
  return 0;
}

static char *str_cat(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  char *s = malloc(na + nb + 1);
  if (!s) return NULL;
  memcpy(s, a, na); memcpy(s + na, b, nb); s[na + nb] = 0;
  return s;
}

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && memcmp(s + n - m, suf, m) == 0;
}

/* Checks that [s, s+n) is well-formed UTF-8 (no overlongs, no surrogates); returns the offset of the
 * first bad byte or -1. Python (and so TRL) refuses such a file; we say where. */
static long utf8_bad_at(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) { i++; continue; }
    int len; unsigned min;
    if ((c & 0xe0) == 0xc0) { len = 2; min = 0x80; c &= 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; min = 0x800; c &= 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; min = 0x10000; c &= 0x07; }
    else return (long)i;
    if (i + (size_t)len > n) return (long)i;
    for (int k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return (long)i;
      c = (c << 6) | (s[i + k] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return (long)i;
    i += (size_t)len;
  }
  return -1;
}

/* Byte length of the UTF-8 character starting at s (input already validated). */
static int u8len(const char *s) {
  unsigned c = (unsigned char)*s;
  return c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : 4;
}

// ---- tokenizer_config.json ---------------------------------------------------------------------

static char *path_join(const char *dir, const char *name) {
  size_t nd = strlen(dir);
  char *p = malloc(nd + strlen(name) + 2);
  if (!p) return NULL;
  sprintf(p, "%s%s%s", dir, (nd && dir[nd - 1] == '/') ? "" : "/", name);
  return p;
}

/* A token entry: "text", {"content": "text", ...}, or null. */
static char *token_text(const cJSON *v) {
  if (cJSON_IsString(v)) return strdup(v->valuestring);
  if (cJSON_IsObject(v)) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (cJSON_IsString(c)) return strdup(c->valuestring);
  }
  return NULL;
}

/* chat_template is a string, or a list of {"name", "template"} where "default" is the one used. */
static char *template_text(const cJSON *v) {
  if (cJSON_IsString(v)) return strdup(v->valuestring);
  if (cJSON_IsArray(v)) {
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
      const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "template");
      if (cJSON_IsString(n) && !strcmp(n->valuestring, "default") && cJSON_IsString(t)) return strdup(t->valuestring);
    }
  }
  return NULL;
}

static void fill_tokens(pc_tokcfg *c, const cJSON *j) {
  static const char *const names[] = {"eos_token", "bos_token", "pad_token", "unk_token"};
  char **slots[] = {&c->eos_token, &c->bos_token, &c->pad_token, &c->unk_token};
  for (int i = 0; i < 4; i++)
    if (!*slots[i]) *slots[i] = token_text(cJSON_GetObjectItemCaseSensitive(j, names[i]));
}

int pc_tokcfg_load(const char *dir, pc_tokcfg *c, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  c->path = path_join(dir, "tokenizer_config.json");
  if (!c->path) { snprintf(err, errlen, "out of memory"); return -1; }
  char *text = pc_read_file(c->path, NULL, NULL);
  if (!text) { snprintf(err, errlen, "%s: cannot read: %s", c->path, strerror(errno)); pc_tokcfg_free(c); return -1; }
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
  if (!cJSON_IsObject(j)) {
    snprintf(err, errlen, "%s: invalid JSON near byte %ld", c->path, end ? (long)(end - text) : 0L);
    cJSON_Delete(j); free(text); pc_tokcfg_free(c);
    return -1;
  }
  free(text);
  fill_tokens(c, j);
  c->chat_template = template_text(cJSON_GetObjectItemCaseSensitive(j, "chat_template"));
  cJSON_Delete(j);

  /* transformers keeps the special tokens in special_tokens_map.json for older checkpoints (GPT-2)
   * and the template in chat_template.jinja / chat_template.json for newer ones. */
  const char *extra[] = {"special_tokens_map.json", "chat_template.json"};
  for (int i = 0; i < 2; i++) {
    char *p = path_join(dir, extra[i]);
    char *t = p ? pc_read_file(p, NULL, NULL) : NULL;
    cJSON *e = t ? cJSON_Parse(t) : NULL;
    if (cJSON_IsObject(e)) {
      if (i == 0) fill_tokens(c, e);
      else if (!c->chat_template) c->chat_template = template_text(cJSON_GetObjectItemCaseSensitive(e, "chat_template"));
    }
    cJSON_Delete(e); free(t); free(p);
  }
  /* transformers: "if independent chat template file(s) exist, they take priority over template
   * entries in the tokenizer config"; `prefcap-dpo render` reads them in the same order */
  char *jp = path_join(dir, "chat_template.jinja");
  char *jt = jp ? pc_read_file(jp, NULL, NULL) : NULL;
  free(jp);
  if (jt) { free(c->chat_template); c->chat_template = jt; }
  return 0;
}

void pc_tokcfg_free(pc_tokcfg *c) {
  if (!c) return;
  free(c->eos_token); free(c->bos_token); free(c->pad_token); free(c->unk_token);
  free(c->chat_template); free(c->path);
  memset(c, 0, sizeof *c);
}

// ---- one row, parsed and validated -------------------------------------------------------------

enum { ROW_STANDARD = 1, ROW_CONV = 2 };

/* A conversation: messages borrowed from the row's cJSON tree. */
typedef struct { pc_chat_msg *m; int n; } conv;

typedef struct {
  int kind;
  char *prompt, *chosen, *rejected;      /* standard rows (owned) */
  conv cp, cc, cr;                       /* conversational rows (message arrays owned, strings borrowed) */
  pc_chat_opts chat;
  const cJSON *tools;                    /* the row's tool list (borrowed from tree), NULL when none */
  float weight;
  int label;                             /* unpaired (KTO) rows: 1 desirable, 0 undesirable; pairs: -1 */
  char *id;
  cJSON *tree;                           /* the parsed line; conversational rows borrow its strings */
} row;

static void row_free(row *r) {
  free(r->prompt); free(r->chosen); free(r->rejected);
  free(r->cp.m); free(r->cc.m); free(r->cr.m);
  free(r->id);
  cJSON_Delete(r->tree);
  memset(r, 0, sizeof *r);
}

/* Parses a message list into *c; on error writes the problem (without file:line) into msg. */
static int parse_messages(const cJSON *a, const char *field, conv *c, char *msg, size_t msglen) {
  int n = cJSON_GetArraySize(a);
  c->m = calloc((size_t)(n ? n : 1), sizeof *c->m);
  c->n = 0;
  if (!c->m) { snprintf(msg, msglen, "out of memory"); return -1; }
  const cJSON *it;
  cJSON_ArrayForEach(it, a) {
    int i = c->n;
    if (!cJSON_IsObject(it)) { snprintf(msg, msglen, "field '%s[%d]' must be a message object", field, i); return -1; }
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
    const cJSON *reasoning = cJSON_GetObjectItemCaseSensitive(it, "reasoning_content");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(it, "tool_calls");
    if (!role) { snprintf(msg, msglen, "field '%s[%d].role' missing", field, i); return -1; }
    if (!cJSON_IsString(role) || !*role->valuestring) {
      snprintf(msg, msglen, "field '%s[%d].role' must be a non-empty string", field, i); return -1;
    }
    int has_calls = tools && !cJSON_IsNull(tools);
    if (has_calls && !cJSON_IsArray(tools)) { snprintf(msg, msglen, "field '%s[%d].tool_calls' must be a list", field, i); return -1; }
    if (!content && !has_calls) { snprintf(msg, msglen, "field '%s[%d].content' missing", field, i); return -1; }
    if ((content && !cJSON_IsNull(content)) || !has_calls) if (!cJSON_IsString(content)) {
      snprintf(msg, msglen, "field '%s[%d].content' must be a string (multimodal content is not supported)", field, i);
      return -1;
    }
    if (reasoning && !cJSON_IsNull(reasoning) && !cJSON_IsString(reasoning)) {
      snprintf(msg, msglen, "field '%s[%d].reasoning_content' must be a string", field, i); return -1;
    }
    c->m[i].role = role->valuestring;
    c->m[i].content = cJSON_IsString(content) ? content->valuestring : "";   /* null beside tool_calls */
    c->m[i].json = it;
    c->m[i].reasoning = cJSON_IsString(reasoning) ? reasoning->valuestring : NULL;
    c->n++;
  }
  return 0;
}

static int msg_equal(const pc_chat_msg *a, const pc_chat_msg *b) {
  if (a->json && b->json) return cJSON_Compare(a->json, b->json, 1);   /* Python's dict == */
  return !strcmp(a->role, b->role) && !strcmp(a->content, b->content) &&
         ((!a->reasoning && !b->reasoning) || (a->reasoning && b->reasoning && !strcmp(a->reasoning, b->reasoning)));
}

/* TRL's extract_prompt over message lists: the loop index where chosen and rejected first differ, or
 * the last index compared when they never do (Python's loop variable keeps its last value). */
static void extract_prompt_conv(row *r) {
  int lim = r->cc.n < r->cr.n ? r->cc.n : r->cr.n, idx = 0;
  for (idx = 0; idx < lim; idx++)
    if (!msg_equal(&r->cc.m[idx], &r->cr.m[idx])) break;
  if (idx == lim) idx = lim - 1;
  /* (TRL's "chosen[idx-1] == ' '" test never holds for messages.) */
  r->cp.m = malloc((size_t)(idx ? idx : 1) * sizeof *r->cp.m);
  if (r->cp.m) memcpy(r->cp.m, r->cc.m, (size_t)idx * sizeof *r->cp.m);
  r->cp.n = idx;
  memmove(r->cc.m, r->cc.m + idx, (size_t)(r->cc.n - idx) * sizeof *r->cc.m); r->cc.n -= idx;
  memmove(r->cr.m, r->cr.m + idx, (size_t)(r->cr.n - idx) * sizeof *r->cr.m); r->cr.n -= idx;
}

/* TRL's extract_prompt over strings, by Unicode code point: prompt = the common prefix, less one
 * character when the character before the divergence is a space (so the space starts the completions).
 * Python's chosen[idx - 1] at idx 0 is chosen's last character; we keep that quirk. */
static int extract_prompt_str(row *r) {
  const char *c = r->chosen, *j = r->rejected;
  /* byte offsets of code points in chosen, to step back one character and index from the end */
  size_t nc = strlen(c), ncp = 0;
  size_t *off = malloc((nc + 2) * sizeof *off);
  if (!off) return -1;
  for (size_t i = 0; i < nc; i += (size_t)u8len(c + i)) off[ncp++] = i;
  off[ncp] = nc;
  size_t nrcp = 0;
  for (size_t i = 0, nr = strlen(j); i < nr; i += (size_t)u8len(j + i)) nrcp++;
  size_t lim = ncp < nrcp ? ncp : nrcp;
  long idx = 0;
  size_t bj = 0;  /* byte offset in rejected */
  int diverged = 0;
  for (idx = 0; (size_t)idx < lim; idx++) {
    int lc = u8len(c + off[idx]), lr = u8len(j + bj);
    if (lc != lr || memcmp(c + off[idx], j + bj, (size_t)lc) != 0) { diverged = 1; break; }
    bj += (size_t)lr;
  }
  if (!diverged) idx = (long)lim - 1;
  else {
    size_t prev = idx > 0 ? off[idx - 1] : off[ncp - 1];
    if (c[prev] == ' ') idx -= 1;
  }
  /* Python slicing with idx possibly -1: s[:-1], s[-1:]. */
  size_t cut_c = idx >= 0 ? off[idx] : off[ncp - 1];
  size_t cut_r;
  {
    size_t nr = strlen(j), cnt = 0, want = idx >= 0 ? (size_t)idx : nrcp - 1, i = 0;
    for (; i < nr && cnt < want; i += (size_t)u8len(j + i)) cnt++;
    cut_r = i;
  }
  free(off);
  char *p = strndup(c, cut_c), *nc2 = strdup(c + cut_c), *nr2 = strdup(j + cut_r);
  if (!p || !nc2 || !nr2) { free(p); free(nc2); free(nr2); return -1; }
  free(r->prompt); free(r->chosen); free(r->rejected);
  r->prompt = p; r->chosen = nc2; r->rejected = nr2;
  return 0;
}

/* Parses one JSON line into r: a pair ({prompt?, chosen, rejected}) or, unpaired, a KTO row ({prompt,
 * completion, label}) whose completion takes the chosen side's place (and is tokenized as it is).
 * Returns 0, or -1 with the problem in msg (fields named as in the file). */
static int parse_row(const char *line, size_t len, int first_kind, int unpaired, row *r, char *msg, size_t msglen) {
  memset(r, 0, sizeof *r);
  r->weight = 1.0f;
  r->label = -1;
  r->chat.enable_thinking = -1;
  if (strlen(line) != len) { snprintf(msg, msglen, "NUL byte in line"); return -1; }
  long bad = utf8_bad_at((const unsigned char *)line, len);
  if (bad >= 0) { snprintf(msg, msglen, "invalid UTF-8 at byte %ld", bad + 1); return -1; }
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithLengthOpts(line, len, &end, 0);
  if (j) {  /* only whitespace may follow the value */
    const char *q = end;
    while (q < line + len && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) q++;
    if (q < line + len) { snprintf(msg, msglen, "invalid JSON: extra text at column %ld", (long)(q - line) + 1); cJSON_Delete(j); return -1; }
  }
  if (!j) {
    const char *ep = cJSON_GetErrorPtr();
    long col = (ep && ep >= line && ep <= line + len) ? (long)(ep - line) + 1 : 1;
    snprintf(msg, msglen, "invalid JSON near column %ld", col);
    return -1;
  }
  int rc = -1;
  if (!cJSON_IsObject(j)) { snprintf(msg, msglen, "line is not a JSON object"); goto out; }

  const cJSON *fp = cJSON_GetObjectItemCaseSensitive(j, "prompt");
  const cJSON *fc = cJSON_GetObjectItemCaseSensitive(j, unpaired ? "completion" : "chosen");
  const cJSON *fr = unpaired ? fc : cJSON_GetObjectItemCaseSensitive(j, "rejected");
  const char *names[] = {unpaired ? "completion" : "chosen", "rejected"};
  const cJSON *vals[] = {fc, fr};
  /* the other kind of file says so: the commonest mistake is a KTO export given to a pair loss */
  const char *hint = unpaired ? (cJSON_GetObjectItemCaseSensitive(j, "chosen")
                                     ? " (this is a preference pair; --loss kto reads {prompt, completion, label} rows)" : "")
                              : (cJSON_GetObjectItemCaseSensitive(j, "completion")
                                     ? " (this is an unpaired {prompt, completion, label} row: train it with --loss kto)" : "");
  for (int i = 0; i < (unpaired ? 1 : 2); i++) {
    if (!vals[i]) { snprintf(msg, msglen, "field '%s' missing%s", names[i], hint); goto out; }
    if (cJSON_IsNull(vals[i])) { snprintf(msg, msglen, "field '%s' is null", names[i]); goto out; }
    if (!cJSON_IsString(vals[i]) && !cJSON_IsArray(vals[i])) {
      snprintf(msg, msglen, "field '%s' must be a string or a list of messages", names[i]); goto out;
    }
    if (cJSON_IsString(vals[i]) ? !*vals[i]->valuestring : cJSON_GetArraySize(vals[i]) == 0) {
      snprintf(msg, msglen, "field '%s' is empty", names[i]); goto out;
    }
  }
  if (cJSON_IsString(fc) != cJSON_IsString(fr)) {
    snprintf(msg, msglen, "field 'rejected' must have the type of 'chosen' (both strings or both message lists)"); goto out;
  }
  if (fp && cJSON_IsNull(fp)) { snprintf(msg, msglen, "field 'prompt' is null"); goto out; }
  if (unpaired) {  /* TRL's KTO rows carry their prompt and a boolean label */
    const cJSON *fl = cJSON_GetObjectItemCaseSensitive(j, "label");
    if (!fp) { snprintf(msg, msglen, "field 'prompt' missing"); goto out; }
    if (!fl) { snprintf(msg, msglen, "field 'label' missing"); goto out; }
    if (!cJSON_IsBool(fl)) { snprintf(msg, msglen, "field 'label' must be true or false"); goto out; }
    r->label = cJSON_IsTrue(fl);
  }
  if (fp && cJSON_IsString(fp) != cJSON_IsString(fc)) {
    snprintf(msg, msglen, cJSON_IsString(fc) ? "field 'prompt' must be a string, as 'chosen' is"
                                              : "field 'prompt' must be a list of messages, as 'chosen' is");
    goto out;
  }
  r->kind = cJSON_IsString(fc) ? ROW_STANDARD : ROW_CONV;
  if (first_kind && r->kind != first_kind) {
    snprintf(msg, msglen, "row is %s but the first row was %s (TRL reads one kind per dataset)",
             r->kind == ROW_CONV ? "conversational" : "standard", first_kind == ROW_CONV ? "conversational" : "standard");
    goto out;
  }

  /* provenance */
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "weight");
  if (w && !cJSON_IsNull(w)) {
    if (!cJSON_IsNumber(w) || !isfinite(w->valuedouble) || w->valuedouble < 0) {
      snprintf(msg, msglen, "field 'weight' must be a non-negative number"); goto out;
    }
    r->weight = (float)w->valuedouble;
  }
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
  if (id && !cJSON_IsNull(id)) {
    char buf[64];
    if (cJSON_IsString(id)) r->id = strdup(id->valuestring);
    else if (cJSON_IsNumber(id)) {
      double d = id->valuedouble;
      if (d == floor(d) && fabs(d) < 9.007199254740992e15) snprintf(buf, sizeof buf, "%.0f", d);
      else snprintf(buf, sizeof buf, "%.17g", d);
      r->id = strdup(buf);
    } else { snprintf(msg, msglen, "field 'id' must be a string or a number"); goto out; }
  }
  const cJSON *tools = cJSON_GetObjectItemCaseSensitive(j, "tools");
  if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools)) { snprintf(msg, msglen, "field 'tools' must be a list"); goto out; }
  if (cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0) {
    if (r->kind == ROW_STANDARD) { snprintf(msg, msglen, "field 'tools' needs conversational rows (a chat template renders it)"); goto out; }
    r->tools = tools;
  }
  const cJSON *kw = cJSON_GetObjectItemCaseSensitive(j, "chat_template_kwargs");
  if (kw && !cJSON_IsNull(kw)) {
    if (!cJSON_IsObject(kw)) { snprintf(msg, msglen, "field 'chat_template_kwargs' must be an object"); goto out; }
    const cJSON *it;
    cJSON_ArrayForEach(it, kw) {
      if (!strcmp(it->string, "enable_thinking") && cJSON_IsBool(it)) r->chat.enable_thinking = cJSON_IsTrue(it);
      else { snprintf(msg, msglen, "field 'chat_template_kwargs.%s' is not supported", it->string); goto out; }
    }
  }

  if (r->kind == ROW_STANDARD) {
    r->chosen = strdup(fc->valuestring);
    r->rejected = strdup(fr->valuestring);
    r->prompt = fp ? strdup(fp->valuestring) : NULL;
    if (!r->chosen || !r->rejected || (fp && !r->prompt)) { snprintf(msg, msglen, "out of memory"); goto out; }
    if (!fp && extract_prompt_str(r) != 0) { snprintf(msg, msglen, "out of memory"); goto out; }
  } else {
    if (parse_messages(fc, names[0], &r->cc, msg, msglen) || parse_messages(fr, "rejected", &r->cr, msg, msglen)) goto out;
    if (fp) { if (parse_messages(fp, "prompt", &r->cp, msg, msglen)) goto out; }
    else {
      extract_prompt_conv(r);
      if (!r->cp.m) { snprintf(msg, msglen, "out of memory"); goto out; }
    }
  }
  rc = 0;
out:
  r->tree = j;  /* freed with the row: conversational rows borrow their strings from it */
  if (rc) row_free(r);
  return rc;
}

// ---- tokenization ------------------------------------------------------------------------------

static int encode(const pc_tokenizer *tok, const char *text, int add_special, ivec *out, char *err, size_t errlen) {
  out->n = 0;
  int32_t *ids = NULL;
  size_t n = 0;
  if (pc_tok_encode(tok, text, strlen(text), add_special, &ids, &n, err, errlen) != 0) return -1;
  int rc = n > (size_t)INT32_MAX / 2 ? -1 : iv_push(out, ids, (int)n);
  free(ids);
  if (rc) snprintf(err, errlen, "out of memory");
  return rc;
}

/* seq = prompt ids + (pc ids after len(prompt)); returns 1 when prompt was not a prefix of pc. */
static int build_seq(const ivec *p, const ivec *pc, pc_seq *s) {
  /* p->v is NULL while no prompt has had a token (an empty prompt first): memcmp/memcpy need valid
   * pointers even for 0 bytes */
  int mismatch = pc->n < p->n || (p->n && memcmp(pc->v, p->v, (size_t)p->n * sizeof *p->v) != 0);
  int tail = pc->n > p->n ? pc->n - p->n : 0;
  s->n = p->n + tail;
  s->prompt_len = p->n;
  s->ids = malloc((size_t)(s->n ? s->n : 1) * sizeof *s->ids);
  if (!s->ids) return -1;
  if (p->n) memcpy(s->ids, p->v, (size_t)p->n * sizeof *s->ids);
  if (tail) memcpy(s->ids + p->n, pc->v + p->n, (size_t)tail * sizeof *s->ids);
  return mismatch;
}

int pc_seq_truncate(pc_seq *s, int max_length, int mode) {
  if (max_length <= 0 || s->n <= max_length) return 0;
  if (mode == PC_TRUNC_KEEP_END) {
    int cut = s->n - max_length;
    memmove(s->ids, s->ids + cut, (size_t)max_length * sizeof *s->ids);
    s->prompt_len = s->prompt_len > cut ? s->prompt_len - cut : 0;
  } else if (s->prompt_len > max_length) {
    s->prompt_len = max_length;  /* not reached: such pairs are dropped before */
  }
  s->n = max_length;
  return 1;
}

typedef struct {
  const char *path, *model_dir;
  const pc_tokenizer *tok;
  const pc_data_opts *o;
  pc_tokcfg cfg;
  pc_chat_format fmt;
  int fmt_ready;
  pc_jinja *tpl;             /* the model's own chat_template, run by the interpreter (NULL: a built-in format by name) */
  ivec p, pc;
  pc_chat_msg *scratch; int scratch_cap;
} loader;

/* apply_chat_template's rendering through the model's template: the variables transformers passes. */
static char *render_template(loader *L, const conv *prompt, const conv *completion, int agp, const pc_chat_opts *co,
                             const cJSON *tools, char *err, size_t errlen) {
  cJSON *vars = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(vars, "messages");
  const conv *parts[2] = {prompt, completion};
  for (int k = 0; k < 2; k++)
    for (int i = 0; parts[k] && i < parts[k]->n; i++) {
      const pc_chat_msg *m = &parts[k]->m[i];
      cJSON *o;
      if (m->json) o = cJSON_Duplicate(m->json, 1);            /* the message as given, as TRL passes it */
      else {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "role", m->role);
        cJSON_AddStringToObject(o, "content", m->content);
        if (m->reasoning) cJSON_AddStringToObject(o, "reasoning_content", m->reasoning);
      }
      cJSON_AddItemToArray(msgs, o);
    }
  if (tools) cJSON_AddItemToObject(vars, "tools", cJSON_Duplicate(tools, 1));
  else cJSON_AddNullToObject(vars, "tools");
  cJSON_AddNullToObject(vars, "documents");
  cJSON_AddBoolToObject(vars, "add_generation_prompt", agp);
  const char *names[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
  const char *vals[] = {L->cfg.bos_token, L->cfg.eos_token, L->cfg.pad_token, L->cfg.unk_token};
  for (int i = 0; i < 4; i++) if (vals[i]) cJSON_AddStringToObject(vars, names[i], vals[i]);
  if (co && co->enable_thinking >= 0) cJSON_AddBoolToObject(vars, "enable_thinking", co->enable_thinking);
  char why[512];
  char *out = pc_jinja_render(L->tpl, vars, NULL, why, sizeof why);
  cJSON_Delete(vars);
  if (!out) fmt(err, errlen, "%s: chat_template %s", L->cfg.path, why);
  return out;
}

static char *render(loader *L, const conv *prompt, const conv *completion, int agp, const pc_chat_opts *co,
                    const cJSON *tools, char *err, size_t errlen) {
  if (L->tpl) return render_template(L, prompt, completion, agp, co, tools, err, errlen);
  /* the built-in formats know no tools */
  const conv *parts[2] = {prompt, completion};
  int calls = 0;
  for (int k = 0; k < 2; k++)
    for (int i = 0; parts[k] && i < parts[k]->n; i++) {
      const cJSON *tc = parts[k]->m[i].json ? cJSON_GetObjectItemCaseSensitive(parts[k]->m[i].json, "tool_calls") : NULL;
      calls |= tc && !cJSON_IsNull(tc);
    }
  if (tools || calls) {
    snprintf(err, errlen, "tools and tool_calls need the model's own chat_template (the built-in format '%s' has none)",
             pc_chat_kind_name(L->fmt.kind));
    return NULL;
  }
  int n = prompt->n + (completion ? completion->n : 0);
  if (n > L->scratch_cap) {
    pc_chat_msg *q = realloc(L->scratch, (size_t)n * sizeof *q);
    if (!q) return NULL;
    L->scratch = q; L->scratch_cap = n;
  }
  if (prompt->n) memcpy(L->scratch, prompt->m, (size_t)prompt->n * sizeof *L->scratch);
  if (completion && completion->n) memcpy(L->scratch + prompt->n, completion->m, (size_t)completion->n * sizeof *L->scratch);
  return pc_chat_render(&L->fmt, L->scratch, n, agp, co);
}

/* The chat format, chosen at the first conversational row (standard data needs none). */
static int ensure_format(loader *L, char *err, size_t errlen) {
  if (L->fmt_ready) return 0;
  char why[256];
  if (L->o->chat_template) {
    if (pc_chat_by_name(L->o->chat_template, L->cfg.bos_token, &L->fmt, why, sizeof why)) {
      fmt(err, errlen, "--chat-template: %s", why); return -1;
    }
  } else if (!L->cfg.chat_template) {
    snprintf(err, errlen, "%s: no chat_template, and the data is conversational; pass --chat-template chatml|qwen3|llama3",
             L->cfg.path);
    return -1;
  } else {
    /* The model's own template, run as transformers runs it. A built-in format it is recognised as
     * only names it in the report. */
    if (!(L->tpl = pc_jinja_parse(L->cfg.chat_template, why, sizeof why))) {
      fmt(err, errlen, "%s: chat_template: %s", L->cfg.path, why);
      return -1;
    }
    if (pc_chat_detect(L->cfg.chat_template, L->cfg.bos_token, &L->fmt, why, sizeof why)) L->fmt.kind = PC_CHAT_NONE;
  }
  L->fmt_ready = 1;
  return 0;
}

/* Tokenizes row r into pair *out. Returns 0, 1 when the pair was dropped (prompt too long), -1 on error. */
static int tokenize_row(loader *L, row *r, int line, pc_pair *out, pc_dataset *d, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  char *texts[3] = {0};
  int add_special, rc = -1;
  int nsides = r->label >= 0 ? 1 : 2;  /* an unpaired (KTO) row is its chosen side alone */
  if (r->kind == ROW_STANDARD) {
    /* TRL's add_eos, then tokenizer(text) with the default special tokens. */
    const char *eos = L->cfg.eos_token;
    if (!eos) {
      snprintf(err, errlen, "%s: no eos_token (TRL ends every standard completion with it)", L->cfg.path);
      return -1;
    }
    const char *prompt = r->prompt ? r->prompt : "";
    char *c = ends_with(r->chosen, eos) ? strdup(r->chosen) : str_cat(r->chosen, eos);
    char *j = ends_with(r->rejected, eos) ? strdup(r->rejected) : str_cat(r->rejected, eos);
    texts[0] = strdup(prompt);
    texts[1] = c ? str_cat(prompt, c) : NULL;
    texts[2] = j ? str_cat(prompt, j) : NULL;
    free(c); free(j);
    add_special = 1;
  } else {
    if (ensure_format(L, err, errlen)) return -1;
    err[0] = 0;
    texts[0] = render(L, &r->cp, NULL, 1, &r->chat, r->tools, err, errlen);
    if (texts[0]) texts[1] = render(L, &r->cp, &r->cc, 0, &r->chat, r->tools, err, errlen);
    if (texts[1] && nsides == 2) texts[2] = render(L, &r->cp, &r->cr, 0, &r->chat, r->tools, err, errlen);
    add_special = 0;  /* apply_chat_template tokenizes without them: the template wrote BOS itself */
    if (err[0]) goto out;
    /* TRL takes the completion as the tokens after the prompt's. When the template renders the
     * prompt (with its generation prompt) as text that the joint rendering does not start with, that
     * split lands in the wrong place: refuse the row rather than train on a shifted mask. */
    for (int k = 1; k <= nsides && texts[0] && texts[k]; k++)
      if (strncmp(texts[k], texts[0], strlen(texts[0])) != 0) {
        snprintf(err, errlen, "the chat template renders the prompt (with add_generation_prompt) as text that does not "
                 "begin its rendering of prompt + %s: the completion would not start where the prompt ends",
                 k == 1 ? "chosen" : "rejected");
        goto out;
      }
  }
  if (!texts[0] || !texts[1] || (nsides == 2 && !texts[2])) { snprintf(err, errlen, "out of memory"); goto out; }

  if (encode(L->tok, texts[0], add_special, &L->p, err, errlen)) goto out;
  int mismatch = 0;
  pc_seq *seqs[2] = {&out->chosen, &out->rejected};
  for (int k = 0; k < nsides; k++) {
    if (encode(L->tok, texts[1 + k], add_special, &L->pc, err, errlen)) goto out;
    int m = build_seq(&L->p, &L->pc, seqs[k]);
    if (m < 0) { snprintf(err, errlen, "out of memory"); goto out; }
    mismatch |= m;
  }
  if (mismatch) {
    d->prefix_mismatch++;
    if (!d->first_mismatch_line) d->first_mismatch_line = line;
  }

  int max_length = L->o->max_length;
  if (max_length > 0 && L->o->truncation == PC_TRUNC_KEEP_START && L->p.n >= max_length) {
    /* TRL filters these out: keep_start would leave no completion token. */
    d->dropped_too_long++;
    rc = 1;
    goto out;
  }
  int cut = pc_seq_truncate(&out->chosen, max_length, L->o->truncation);
  cut |= pc_seq_truncate(&out->rejected, max_length, L->o->truncation);
  if (cut) d->truncated++;
  out->line = line;
  out->weight = r->weight;
  out->label = (signed char)r->label;
  out->id = r->id; r->id = NULL;
  rc = 0;
out:
  for (int k = 0; k < 3; k++) free(texts[k]);
  if (rc != 0) { free(out->chosen.ids); free(out->rejected.ids); memset(out, 0, sizeof *out); }
  return rc;
}

// ---- the file ----------------------------------------------------------------------------------

int pc_data_truncation_from_name(const char *name) {
  if (!strcmp(name, "keep_start")) return PC_TRUNC_KEEP_START;
  if (!strcmp(name, "keep_end")) return PC_TRUNC_KEEP_END;
  return -1;
}

static int blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
  return 1;
}

int pc_data_load(const char *path, const pc_tokenizer *tok, const char *model_dir, const pc_data_opts *o,
                 pc_dataset *d, char *err, size_t errlen) {
  static const pc_data_opts defaults = {0, PC_TRUNC_KEEP_START, 0, NULL, 0};
  memset(d, 0, sizeof *d);
  if (!o) o = &defaults;
  if (o->truncation != PC_TRUNC_KEEP_START && o->truncation != PC_TRUNC_KEEP_END) {
    snprintf(err, errlen, "truncation mode %d unknown (keep_start or keep_end)", o->truncation);
    return -1;
  }
  if (o->max_length < 0) { snprintf(err, errlen, "max_length %d is negative", o->max_length); return -1; }
  loader L = {.path = path, .model_dir = model_dir, .tok = tok, .o = o};
  if (pc_tokcfg_load(model_dir, &L.cfg, err, errlen)) return -1;
  FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
  if (!f) { snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno)); pc_tokcfg_free(&L.cfg); return -1; }

  int rc = 0, lineno = 0, first_kind = 0;
  size_t cap = 0;
  char *line = NULL;
  ssize_t len;
  char msg[512];
  while ((len = getline(&line, &cap, f)) >= 0) {
    lineno++;
    if (blank(line, (size_t)len)) continue;  /* like the JSON-lines readers TRL loads through */
    row r;
    if (parse_row(line, (size_t)len, first_kind, o->unpaired, &r, msg, sizeof msg) != 0) {
      if (!o->skip_bad) { fmt(err, errlen, "%s:%d: %s", path, lineno, msg); rc = -1; break; }
      d->skipped_bad++;
      if (!d->first_skipped_line) {
        d->first_skipped_line = lineno;
        fmt(d->first_skipped_msg, sizeof d->first_skipped_msg, "%s:%d: %s", path, lineno, msg);
      }
      continue;
    }
    if (!first_kind) first_kind = r.kind;
    if (d->n % 256 == 0) {
      pc_pair *q = realloc(d->pairs, (d->n + 256) * sizeof *q);
      if (!q) { snprintf(err, errlen, "out of memory"); row_free(&r); rc = -1; break; }
      d->pairs = q;
    }
    char terr[512];
    int t = tokenize_row(&L, &r, lineno, &d->pairs[d->n], d, terr, sizeof terr);
    row_free(&r);
    if (t < 0) { fmt(err, errlen, "%s:%d: %s", path, lineno, terr); rc = -1; break; }
    if (t == 0) d->n++;
  }
  if (rc == 0 && ferror(f)) { snprintf(err, errlen, "%s: read error: %s", path, strerror(errno)); rc = -1; }
  free(line);
  if (f != stdin) fclose(f);
  d->conversational = first_kind == ROW_CONV;
  if (L.fmt_ready) snprintf(d->chat_format, sizeof d->chat_format, "%s",
                            L.fmt.kind == PC_CHAT_NONE ? "template" : pc_chat_kind_name(L.fmt.kind));
  pc_jinja_free(L.tpl);
  free(L.p.v); free(L.pc.v); free(L.scratch);
  pc_chat_format_free(&L.fmt);
  pc_tokcfg_free(&L.cfg);
  if (rc) pc_data_free(d);
  return rc;
}

void pc_data_free(pc_dataset *d) {
  if (!d) return;
  for (size_t i = 0; i < d->n; i++) {
    free(d->pairs[i].chosen.ids);
    free(d->pairs[i].rejected.ids);
    free(d->pairs[i].id);
  }
  free(d->pairs);
  d->pairs = NULL;
  d->n = 0;
}

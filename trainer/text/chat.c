/* trainer/text/chat.c: the built-in chat formats (ChatML, Qwen3, Llama 3) and their recognition from a
 * tokenizer_config.json `chat_template`. Each renderer follows its Jinja template statement by
 * statement, including Python's string semantics where the template calls them (`trim` is Python's
 * str.strip(), `strip('\n')`, `split('</think>')`), because Hugging Face runs those templates with
 * Python's jinja2 and the tokens TRL trains on come from that exact string. See chat.h. */
#include "text/chat.h"
#include "text/jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- a growing string --------------------------------------------------------------------------

typedef struct { char *p; size_t n, cap; int oom; } sbuf;

static void sb_addn(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) { b->oom = 1; return; }
    b->p = q; b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}
static void sb_add(sbuf *b, const char *s) { sb_addn(b, s, strlen(s)); }

static char *sb_finish(sbuf *b) {
  if (b->oom) { free(b->p); return NULL; }
  if (!b->p) { char *e = malloc(1); if (e) e[0] = 0; return e; }
  return b->p;
}

// ---- Python string semantics used by the templates ---------------------------------------------

/* Length of the UTF-8 sequence at s if it is a character Python's str.isspace() accepts, else 0
 * (jinja.h's pc_py_space). */
static int py_space_len(const unsigned char *s, const unsigned char *end) {
  return s < end ? (int)pc_py_space((const char *)s, (size_t)(end - s)) : 0;
}

/* Is the byte at position p (in [s, end)) the start of a Python whitespace char that ends at end? */
static int py_space_ending_at(const unsigned char *s, const unsigned char *end) {
  for (int k = 1; k <= 3; k++) {
    if (end - k < s) break;
    const unsigned char *q = end - k;
    if ((*q & 0xc0) == 0x80) continue;            /* continuation byte: look further back */
    return py_space_len(q, end) == k ? k : 0;
  }
  return 0;
}

/* str.strip() into b. */
static void add_py_strip(sbuf *b, const char *s) {
  const unsigned char *p = (const unsigned char *)s, *e = p + strlen(s);
  int k;
  while ((k = py_space_len(p, e)) > 0) p += k;
  while (e > p && (k = py_space_ending_at(p, e)) > 0) e -= k;
  sb_addn(b, (const char *)p, (size_t)(e - p));
}

/* s[a..b) with leading (lead) and/or trailing (trail) '\n' removed: str.lstrip/rstrip/strip('\n'). */
static void nl_trim(const char **a, const char **e, int lead, int trail) {
  if (lead) while (*a < *e && **a == '\n') (*a)++;
  if (trail) while (*e > *a && (*e)[-1] == '\n') (*e)--;
}

static int starts_with(const char *s, const char *pre) { return strncmp(s, pre, strlen(pre)) == 0; }
static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && memcmp(s + n - m, suf, m) == 0;
}

/* Last occurrence of needle in [s, e), or NULL. */
static const char *find_last(const char *s, const char *e, const char *needle) {
  size_t m = strlen(needle);
  const char *last = NULL;
  for (const char *p = s; p + m <= e; p++) {
    const char *q = memmem(p, (size_t)(e - p), needle, m);
    if (!q) break;
    last = q; p = q;
  }
  return last;
}

// ---- renderers ---------------------------------------------------------------------------------

static void render_chatml(sbuf *b, const pc_chat_format *f, const pc_chat_msg *m, int n, int agp) {
  for (int i = 0; i < n; i++) {
    /* SmolLM2 / Qwen2 put their default system message in the loop's first iteration. */
    if (i == 0 && f->default_system && strcmp(m[0].role, "system") != 0) {
      sb_add(b, "<|im_start|>system\n"); sb_add(b, f->default_system); sb_add(b, "<|im_end|>\n");
    }
    sb_add(b, "<|im_start|>"); sb_add(b, m[i].role); sb_add(b, "\n");
    sb_add(b, m[i].content); sb_add(b, "<|im_end|>\n");
  }
  if (agp) sb_add(b, "<|im_start|>assistant\n");
}

static void render_llama3(sbuf *b, const pc_chat_format *f, const pc_chat_msg *m, int n, int agp) {
  for (int i = 0; i < n; i++) {
    if (i == 0 && f->bos) sb_add(b, f->bos);
    sb_add(b, "<|start_header_id|>"); sb_add(b, m[i].role); sb_add(b, "<|end_header_id|>\n\n");
    add_py_strip(b, m[i].content);                 /* `message['content'] | trim` */
    sb_add(b, "<|eot_id|>");
  }
  if (agp || f->gen_prompt_always) sb_add(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Qwen3's template without tools, statement by statement. */
static void render_qwen3(sbuf *b, const pc_chat_msg *m, int n, int agp, const pc_chat_opts *o) {
  if (n > 0 && strcmp(m[0].role, "system") == 0) {
    sb_add(b, "<|im_start|>system\n"); sb_add(b, m[0].content); sb_add(b, "<|im_end|>\n");
  }
  /* The last user message that is not a tool response: assistant turns after it show their thinking. */
  int multi_step_tool = 1, last_query_index = n - 1;
  for (int i = n - 1; i >= 0; i--) {
    if (multi_step_tool && strcmp(m[i].role, "user") == 0 &&
        !(starts_with(m[i].content, "<tool_response>") && ends_with(m[i].content, "</tool_response>"))) {
      multi_step_tool = 0;
      last_query_index = i;
    }
  }
  for (int i = 0; i < n; i++) {
    const char *role = m[i].role;
    if (strcmp(role, "user") == 0 || (strcmp(role, "system") == 0 && i != 0)) {
      sb_add(b, "<|im_start|>"); sb_add(b, role); sb_add(b, "\n"); sb_add(b, m[i].content);
      sb_add(b, "<|im_end|>\n");
    } else if (strcmp(role, "assistant") == 0) {
      const char *c = m[i].content, *ca = c, *ce = c + strlen(c);    /* content = [ca, ce) */
      const char *ra = "", *re = ra;                                    /* reasoning = [ra, re) */
      if (m[i].reasoning) {
        ra = m[i].reasoning; re = ra + strlen(ra);
      } else if (strstr(c, "</think>")) {
        /* content.split('</think>')[-1].lstrip('\n') */
        ca = find_last(c, ce, "</think>") + strlen("</think>");
        nl_trim(&ca, &ce, 1, 0);
        /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
        const char *h = strstr(c, "</think>");
        ra = c; re = h;
        nl_trim(&ra, &re, 0, 1);
        const char *t = find_last(ra, re, "<think>");
        if (t) ra = t + strlen("<think>");
        nl_trim(&ra, &re, 1, 0);
      }
      sb_add(b, "<|im_start|>assistant\n");
      if (i > last_query_index && (i == n - 1 || re > ra)) {
        const char *sa = ra, *se = re;
        nl_trim(&sa, &se, 1, 1);                                        /* reasoning_content.strip('\n') */
        sb_add(b, "<think>\n"); sb_addn(b, sa, (size_t)(se - sa)); sb_add(b, "\n</think>\n\n");
        nl_trim(&ca, &ce, 1, 0);                                        /* content.lstrip('\n') */
      }
      sb_addn(b, ca, (size_t)(ce - ca));
      sb_add(b, "<|im_end|>\n");
    } else if (strcmp(role, "tool") == 0) {
      if (i == 0 || strcmp(m[i - 1].role, "tool") != 0) sb_add(b, "<|im_start|>user");
      sb_add(b, "\n<tool_response>\n"); sb_add(b, m[i].content); sb_add(b, "\n</tool_response>");
      if (i == n - 1 || strcmp(m[i + 1].role, "tool") != 0) sb_add(b, "<|im_end|>\n");
    }
    /* Any other role prints nothing: the template has no branch for it. */
  }
  if (agp) {
    sb_add(b, "<|im_start|>assistant\n");
    if (o && o->enable_thinking == 0) sb_add(b, "<think>\n\n</think>\n\n");
  }
}

char *pc_chat_render(const pc_chat_format *f, const pc_chat_msg *msgs, int n, int agp, const pc_chat_opts *o) {
  sbuf b = {0};
  switch (f->kind) {
    case PC_CHAT_CHATML: render_chatml(&b, f, msgs, n, agp); break;
    case PC_CHAT_QWEN3: render_qwen3(&b, msgs, n, agp, o); break;
    case PC_CHAT_LLAMA3: render_llama3(&b, f, msgs, n, agp); break;
    default: break;
  }
  return sb_finish(&b);
}

// ---- recognition -------------------------------------------------------------------------------

/* Decodes the Jinja string literal starting at the quote q; returns the malloc'd text (or NULL). */
static char *jinja_literal(const char *q) {
  char quote = *q++;
  sbuf b = {0};
  for (; *q && *q != quote; q++) {
    if (*q == '\\' && q[1]) {
      q++;
      char c = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q == 'r' ? '\r' : *q;
      sb_addn(&b, &c, 1);
    } else {
      sb_addn(&b, q, 1);
    }
  }
  if (*q != quote) { free(b.p); return NULL; }
  return sb_finish(&b);
}

/* A literal '<|im_start|>system\n…<|im_end|>\n' with text in it is a default system message. */
static char *find_default_system(const char *t) {
  for (const char *p = t; (p = strstr(p, "<|im_start|>system")) != NULL; p++) {
    if (p == t || (p[-1] != '\'' && p[-1] != '"')) continue;
    char *lit = jinja_literal(p - 1);
    if (!lit) continue;
    const char *pre = "<|im_start|>system\n", *suf = "<|im_end|>\n";
    size_t n = strlen(lit), np = strlen(pre), ns = strlen(suf);
    if (n > np + ns && starts_with(lit, pre) && ends_with(lit, suf)) {
      memmove(lit, lit + np, n - np - ns);
      lit[n - np - ns] = 0;
      return lit;
    }
    free(lit);
  }
  return NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int pc_chat_detect(const char *t, const char *bos, pc_chat_format *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!t || !*t) { snprintf(err, errlen, "no chat_template"); return -1; }
  if (strstr(t, "<|start_header_id|>") && strstr(t, "<|eot_id|>")) {
    if (strstr(t, "Cutting Knowledge Date") || strstr(t, "ipython")) {
      snprintf(err, errlen, "a Llama 3.1+ chat_template (dates, tool preamble) is not reproduced; "
               "pass --chat-template llama3 to use the plain Llama 3 format");
      return -1;
    }
    out->kind = PC_CHAT_LLAMA3;
    out->gen_prompt_always = strstr(t, "add_generation_prompt") == NULL;
    out->bos = dup_or_null(bos);
    return 0;
  }
  if (strstr(t, "<|im_start|>")) {
    if (strstr(t, "<think>")) {
      if (strstr(t, "reasoning_content") && strstr(t, "last_query_index")) { out->kind = PC_CHAT_QWEN3; return 0; }
      snprintf(err, errlen, "a ChatML chat_template with <think> handling other than Qwen3's is not reproduced");
      return -1;
    }
    if (strstr(t, "| trim") || strstr(t, "|trim")) {
      snprintf(err, errlen, "a ChatML chat_template that trims message content is not reproduced");
      return -1;
    }
    out->kind = PC_CHAT_CHATML;
    out->default_system = find_default_system(t);
    return 0;
  }
  snprintf(err, errlen, "chat_template not recognised (known: chatml, qwen3, llama3)");
  return -1;
}

int pc_chat_by_name(const char *name, const char *bos, pc_chat_format *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!strcmp(name, "chatml") || !strcmp(name, "smollm") || !strcmp(name, "qwen2")) out->kind = PC_CHAT_CHATML;
  else if (!strcmp(name, "qwen3")) out->kind = PC_CHAT_QWEN3;
  else if (!strcmp(name, "llama3")) { out->kind = PC_CHAT_LLAMA3; out->bos = dup_or_null(bos); }
  else { snprintf(err, errlen, "unknown chat template '%s' (known: chatml, qwen3, llama3)", name); return -1; }
  return 0;
}

const char *pc_chat_kind_name(int kind) {
  switch (kind) {
    case PC_CHAT_CHATML: return "chatml";
    case PC_CHAT_QWEN3: return "qwen3";
    case PC_CHAT_LLAMA3: return "llama3";
    default: return "none";
  }
}

void pc_chat_format_free(pc_chat_format *f) {
  if (!f) return;
  free(f->default_system);
  free(f->bos);
  memset(f, 0, sizeof *f);
}

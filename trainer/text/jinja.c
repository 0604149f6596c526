/* trainer/text/jinja.c: the Jinja subset of Hugging Face chat templates, with jinja2's semantics (see
 * jinja.h for the subset and the limits).
 *
 * Three stages: the template source is cut into text, {{ }} and {% %} segments with jinja2's whitespace
 * rules (trim_blocks, lstrip_blocks, -/+ markers, the final newline dropped, newlines normalised);
 * each tag is parsed by recursive descent into nodes (jinja2's precedence: or < and < not < compare
 * < + - < ~ < * / // % < ** < unary < postfix/filters/tests); rendering walks the nodes over values
 * allocated in a per-render arena, so nothing is freed one by one and a render that fails frees all
 * at once. Python semantics where templates can see them: truthiness, str() and repr() of values,
 * int/float arithmetic, code-point string slicing, str.strip/split and friends, json.dumps. */
#include "text/jinja.h"
#include "util/err.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What one render may do. A fuzzing build (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, libFuzzer's
 * convention; tests/fuzz/fuzz.mk) has caps 50x, 16x and 8x lower: the same checks end runaway
 * templates, at a quarter of the CPU per execution over the fuzz corpus (docs/fuzzing.md).
 * tests/data/test_jinja.c checks the real caps. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define MAX_LOOP_ITERS 20000L
#define MAX_OUTPUT ((size_t)1 << 20)
#define MAX_ARENA ((size_t)32 << 20)
#else
#define MAX_LOOP_ITERS 1000000L
#define MAX_OUTPUT ((size_t)16 << 20)
#define MAX_ARENA ((size_t)256 << 20)
#endif
#define MAX_DEPTH 64
#define MAX_PARSE_DEPTH 200

// ---- arena ---------------------------------------------------------------------------------------------

typedef struct blk { struct blk *next; size_t used, cap; char data[]; } blk;
typedef struct { blk *head; size_t total; } arena;

static void *ar_alloc(arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (!a->head || a->head->used + n > a->head->cap) {
    size_t cap = n > 65536 ? n : 65536;
    blk *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = a->head; b->used = 0; b->cap = cap; a->head = b;
    a->total += cap;
  }
  void *p = a->head->data + a->head->used;
  a->head->used += n;
  memset(p, 0, n);
  return p;
}

static void ar_free(arena *a) {
  while (a->head) { blk *n = a->head->next; free(a->head); a->head = n; }
  a->total = 0;
}

// ---- values --------------------------------------------------------------------------------------------

enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_MACRO, V_NS, V_FUNC, V_LOOP };

typedef struct val val;
typedef struct node node;
struct val {
  int t;
  int64_t i;                 /* BOOL, INT */
  double f;                  /* FLOAT */
  const char *s; size_t n;   /* STR (not NUL-terminated); UNDEF: the name, for messages; FUNC: the name */
  val **items; size_t len, cap;        /* LIST; DICT values */
  const char **keys; size_t *klen;     /* DICT keys (insertion order) */
  const node *macro;                   /* MACRO */
  const struct frame *closure;         /* MACRO: caller() sees the frame of its call block */
  val *self;                           /* FUNC: bound method's object */
};

// ---- nodes ---------------------------------------------------------------------------------------------

enum {
  /* expressions */
  E_LIT, E_VAR, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS, E_NOT, E_AND, E_OR, E_BIN,
  E_COND, E_LIST, E_DICT,
  /* statements */
  S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_CALLBLOCK, S_BREAK, S_CONTINUE, S_GEN
};
enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
       OP_IN, OP_NOTIN };

struct node {
  int k, line, op, neg;
  const char *s; size_t sn;        /* names, text */
  val *lit;
  node *a, *b, *c, *d;
  node **args; size_t nargs;       /* call/filter args, list items, bodies */
  const char **kw; node **kwv; size_t nkw;   /* keyword args; macro params with defaults; for targets */
  node **body; size_t nbody;
  node **orelse; size_t norelse;
};

struct pc_jinja { arena a; node **body; size_t nbody; };

// ---- growing arrays in an arena ------------------------------------------------------------------------

typedef struct { void **v; size_t n, cap; } pvec;

static int pv_push(arena *a, pvec *p, void *x) {
  if (p->n == p->cap) {
    size_t nc = p->cap ? p->cap * 2 : 8;
    void **nv = ar_alloc(a, nc * sizeof *nv);
    if (!nv) return -1;
    if (p->n) memcpy(nv, p->v, p->n * sizeof *nv);
    p->v = nv; p->cap = nc;
  }
  p->v[p->n++] = x;
  return 0;
}

// ---- the lexer: template segments ----------------------------------------------------------------------

enum { SEG_TEXT, SEG_VAR, SEG_BLOCK };
typedef struct { int kind, line; const char *s; size_t n; } seg;

typedef struct {
  arena *a;
  char *err; size_t errlen;
  const char *src; size_t n;       /* normalised source */
  seg *segs; size_t nsegs, segcap;
  /* expression tokens of the current tag */
  const char *p, *end; int line;
  size_t si;                        /* next segment */
  int depth;
  jmp_buf jb;
} parser;

#define PFAIL(P, line_, ...) do { char m_[300]; snprintf(m_, sizeof m_, __VA_ARGS__); \
  pc_seterr((P)->err, (P)->errlen, "line %d: %s", (line_), m_); longjmp((P)->jb, 1); } while (0)

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static void add_seg(parser *P, int kind, int line, const char *s, size_t n) {
  if (kind == SEG_TEXT && n == 0) return;
  if (P->nsegs == P->segcap) {
    size_t nc = P->segcap ? P->segcap * 2 : 64;
    seg *ns = realloc(P->segs, nc * sizeof *ns);
    if (!ns) PFAIL(P, line, "out of memory");
    P->segs = ns; P->segcap = nc;
  }
  P->segs[P->nsegs++] = (seg){kind, line, s, n};
}

/* The line of p. The lexer asks for positions that only move forward, so the cursor counts each
 * newline once: counting from the start every time was quadratic in the number of tags (a 64 KiB
 * template of "{{x}}\n" lines took a second per parse). */
typedef struct { const char *at; int line; } line_cursor;
static int line_at(line_cursor *c, const char *p) {
  for (; c->at < p; c->at++) c->line += *c->at == '\n';
  return c->line;
}

/* Finds the end marker of a {{ or {% tag, skipping string literals. */
static const char *find_tag_end(const char *p, const char *end, char closer) {
  while (p + 1 < end) {
    if (*p == '\'' || *p == '"') {
      char q = *p++;
      while (p < end && *p != q) { if (*p == '\\' && p + 1 < end) p++; p++; }
      if (p < end) p++;
      continue;
    }
    if (*p == closer && p[1] == '}') return p;
    p++;
  }
  return NULL;
}

static void lex(parser *P) {
  const char *s = P->src, *end = s + P->n, *p = s;
  line_cursor lc = {s, 1};
  int line_starting = 1;
  while (p < end) {
    const char *t = p;
    while (t + 1 < end && !(t[0] == '{' && (t[1] == '{' || t[1] == '%' || t[1] == '#'))) t++;
    if (t + 1 >= end) { add_seg(P, SEG_TEXT, line_at(&lc, p), p, (size_t)(end - p)); break; }
    char kind = t[1];
    const char *body = t + 2;
    char sign = body < end && (*body == '-' || *body == '+') ? *body : 0;
    size_t tn = (size_t)(t - p);
    if (sign == '-') {
      while (tn > 0 && is_ws(p[tn - 1])) tn--;
    } else if (sign != '+' && kind != '{') {           /* lstrip_blocks */
      size_t l = tn;
      while (l > 0 && p[l - 1] != '\n') l--;
      if (l > 0 || line_starting) {
        size_t k = l;
        while (k < tn && is_ws(p[k])) k++;
        if (k == tn) tn = l;
      }
    }
    add_seg(P, SEG_TEXT, line_at(&lc, p), p, tn);
    if (sign) body++;
    int line = line_at(&lc, t);
    const char *close;
    if (kind == '#') {
      close = NULL;
      for (const char *q = body; q + 1 < end; q++) if (q[0] == '#' && q[1] == '}') { close = q; break; }
    } else close = find_tag_end(body, end, kind == '{' ? '}' : '%');
    if (!close) PFAIL(P, line, "%s is not closed", kind == '{' ? "{{" : kind == '%' ? "{%" : "{#");
    const char *inner_end = close;
    char esign = close > body && (close[-1] == '-' || close[-1] == '+') ? close[-1] : 0;
    if (esign) inner_end--;
    if (kind != '#') add_seg(P, kind == '{' ? SEG_VAR : SEG_BLOCK, line, body, (size_t)(inner_end - body));
    p = close + 2;
    line_starting = 0;
    if (esign == '-') { while (p < end && is_ws(*p)) { line_starting = *p == '\n'; p++; } }
    else if (kind != '{' && esign != '+' && p < end && *p == '\n') { p++; line_starting = 1; }   /* trim_blocks */
  }
}

// ---- the expression tokenizer --------------------------------------------------------------------------

enum { T_EOF, T_NAME, T_STR, T_INT, T_FLOAT, T_OP };
typedef struct { int k; const char *s; size_t n; int64_t i; double f; } tok;

static void skip_ws(parser *P) { while (P->p < P->end && is_ws(*P->p)) { if (*P->p == '\n') P->line++; P->p++; } }

static tok peek_tok(parser *P) {
  skip_ws(P);
  tok t = {T_EOF, P->p, 0, 0, 0};
  const char *p = P->p, *e = P->end;
  if (p >= e) return t;
  char c = *p;
  if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
    const char *q = p;
    while (q < e && (*q == '_' || (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9'))) q++;
    t.k = T_NAME; t.n = (size_t)(q - p);
    return t;
  }
  if (c >= '0' && c <= '9') {
    const char *q = p;
    int fl = 0;
    while (q < e && ((*q >= '0' && *q <= '9') || *q == '_')) q++;
    if (q + 1 < e && *q == '.' && q[1] >= '0' && q[1] <= '9') { fl = 1; q++; while (q < e && *q >= '0' && *q <= '9') q++; }
    if (q < e && (*q == 'e' || *q == 'E')) {
      const char *r = q + 1;
      if (r < e && (*r == '+' || *r == '-')) r++;
      if (r < e && *r >= '0' && *r <= '9') { fl = 1; q = r; while (q < e && *q >= '0' && *q <= '9') q++; }
    }
    char buf[64]; size_t l = 0;
    for (const char *r = p; r < q && l < 63; r++) if (*r != '_') buf[l++] = *r;
    buf[l] = 0;
    t.n = (size_t)(q - p);
    if (fl) { t.k = T_FLOAT; t.f = strtod(buf, NULL); } else { t.k = T_INT; t.i = strtoll(buf, NULL, 10); }
    return t;
  }
  if (c == '\'' || c == '"') {
    const char *q = p + 1;
    while (q < e && *q != c) { if (*q == '\\' && q + 1 < e) q++; q++; }
    t.k = T_STR; t.n = (size_t)(q + 1 - p);
    return t;
  }
  static const char *ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")",
                              "[", "]", "{", "}", ",", ".", ":", "|", "=", NULL};
  for (int i = 0; ops[i]; i++) {
    size_t l = strlen(ops[i]);
    if ((size_t)(e - p) >= l && memcmp(p, ops[i], l) == 0) { t.k = T_OP; t.n = l; return t; }
  }
  PFAIL(P, P->line, "unexpected character '%c' in an expression", c);
}

static tok next_tok(parser *P) { tok t = peek_tok(P); P->p = t.s + t.n; return t; }
static int tok_is(tok t, int k, const char *s) { return t.k == k && t.n == strlen(s) && memcmp(t.s, s, t.n) == 0; }
static int at_op(parser *P, const char *s) { return tok_is(peek_tok(P), T_OP, s); }
static int at_name(parser *P, const char *s) { return tok_is(peek_tok(P), T_NAME, s); }
static int accept_op(parser *P, const char *s) { if (at_op(P, s)) { next_tok(P); return 1; } return 0; }
static int accept_name(parser *P, const char *s) { if (at_name(P, s)) { next_tok(P); return 1; } return 0; }
static void expect_op(parser *P, const char *s) {
  tok t = peek_tok(P);
  if (!tok_is(t, T_OP, s)) PFAIL(P, P->line, "expected '%s', found '%.*s'", s, t.k == T_EOF ? 3 : (int)t.n, t.k == T_EOF ? "end" : t.s);
  next_tok(P);
}
static tok expect_name(parser *P) {
  tok t = next_tok(P);
  if (t.k != T_NAME) PFAIL(P, P->line, "expected a name, found '%.*s'", t.k == T_EOF ? 3 : (int)t.n, t.k == T_EOF ? "end" : t.s);
  return t;
}

static node *mk(parser *P, int k) {
  node *n = ar_alloc(P->a, sizeof *n);
  if (!n) PFAIL(P, P->line, "out of memory");
  n->k = k; n->line = P->line;
  return n;
}

static const char *dupn(parser *P, const char *s, size_t n) {
  char *d = ar_alloc(P->a, n + 1);
  if (!d) PFAIL(P, P->line, "out of memory");
  memcpy(d, s, n); d[n] = 0;
  return d;
}

static val *mkval(arena *a, int t) { val *v = ar_alloc(a, sizeof *v); if (v) v->t = t; return v; }

/* Decodes a string literal's escapes (Python's: \n \t \r \\ \' \" \uXXXX \xXX). */
static val *str_lit(parser *P, tok t) {
  char *d = ar_alloc(P->a, t.n + 1);
  val *v = mkval(P->a, V_STR);
  if (!d || !v) PFAIL(P, P->line, "out of memory");
  size_t o = 0;
  for (size_t i = 1; i + 1 < t.n; i++) {
    char c = t.s[i];
    if (c != '\\' || i + 2 >= t.n) { d[o++] = c; continue; }
    char e = t.s[++i];
    switch (e) {
      case 'n': d[o++] = '\n'; break;
      case 't': d[o++] = '\t'; break;
      case 'r': d[o++] = '\r'; break;
      case '0': d[o++] = '\0'; break;
      case '\\': case '\'': case '"': d[o++] = e; break;
      case 'x': case 'u': {
        int nd = e == 'x' ? 2 : 4;
        unsigned cp = 0;
        if (i + nd >= t.n) PFAIL(P, P->line, "bad \\%c escape in a string", e);
        for (int k = 0; k < nd; k++) {
          char h = t.s[++i];
          cp = cp * 16 + (unsigned)(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 0);
        }
        if (cp < 0x80) d[o++] = (char)cp;
        else if (cp < 0x800) { d[o++] = (char)(0xC0 | cp >> 6); d[o++] = (char)(0x80 | (cp & 0x3F)); }
        else { d[o++] = (char)(0xE0 | cp >> 12); d[o++] = (char)(0x80 | ((cp >> 6) & 0x3F)); d[o++] = (char)(0x80 | (cp & 0x3F)); }
        break;
      }
      default: d[o++] = '\\'; d[o++] = e;            /* Python keeps unknown escapes */
    }
  }
  v->s = d; v->n = o;
  return v;
}

// ---- expressions ---------------------------------------------------------------------------------------

static node *p_expr(parser *P);
static node *p_or(parser *P);

static const char *FILTERS[] = {"trim", "length", "count", "tojson", "upper", "lower", "capitalize", "title",
  "default", "d", "items", "selectattr", "rejectattr", "map", "join", "first", "last", "replace", "string", "int",
  "float", "list", "safe", "abs", "unique", "indent", "e", "escape", "wordcount", "reverse", "sort", "dictsort", NULL};
static const char *TESTS[] = {"defined", "undefined", "none", "string", "number", "integer", "float", "boolean",
  "mapping", "iterable", "sequence", "true", "false", "equalto", "eq", "ne", "odd", "even", "callable", "lower",
  "upper", "in", NULL};

static int in_list(const char **l, const char *s, size_t n) {
  for (int i = 0; l[i]; i++) if (strlen(l[i]) == n && memcmp(l[i], s, n) == 0) return 1;
  return 0;
}

/* (args, kw=args) after '(' has been read */
static void p_args(parser *P, node *n) {
  pvec a = {0}, kw = {0}, kwv = {0};
  while (!accept_op(P, ")")) {
    tok t = peek_tok(P);
    if (t.k == T_NAME) {
      const char *save = P->p; int sl = P->line;
      next_tok(P);
      if (at_op(P, "=") ) {
        next_tok(P);
        if (pv_push(P->a, &kw, (void *)dupn(P, t.s, t.n)) || pv_push(P->a, &kwv, p_expr(P))) PFAIL(P, P->line, "out of memory");
        if (!accept_op(P, ",")) { expect_op(P, ")"); break; }
        continue;
      }
      P->p = save; P->line = sl;
    }
    if (pv_push(P->a, &a, p_expr(P))) PFAIL(P, P->line, "out of memory");
    if (!accept_op(P, ",")) { expect_op(P, ")"); break; }
  }
  n->args = (node **)a.v; n->nargs = a.n;
  n->kw = (const char **)kw.v; n->kwv = (node **)kwv.v; n->nkw = kw.n;
}

static node *p_primary(parser *P) {
  tok t = next_tok(P);
  node *n;
  if (t.k == T_STR) {
    n = mk(P, E_LIT); n->lit = str_lit(P, t);
    while (peek_tok(P).k == T_STR) {                 /* "a" "b": adjacent literals concatenate */
      val *b = str_lit(P, next_tok(P)), *c = mkval(P->a, V_STR);
      char *d = ar_alloc(P->a, n->lit->n + b->n + 1);
      if (!c || !d) PFAIL(P, P->line, "out of memory");
      memcpy(d, n->lit->s, n->lit->n); memcpy(d + n->lit->n, b->s, b->n);
      c->s = d; c->n = n->lit->n + b->n; n->lit = c;
    }
    return n;
  }
  if (t.k == T_INT || t.k == T_FLOAT) {
    n = mk(P, E_LIT); n->lit = mkval(P->a, t.k == T_INT ? V_INT : V_FLOAT);
    if (!n->lit) PFAIL(P, P->line, "out of memory");
    n->lit->i = t.i; n->lit->f = t.f;
    return n;
  }
  if (t.k == T_NAME) {
    static const struct { const char *name; int t, b; } consts[] = {{"true", V_BOOL, 1}, {"True", V_BOOL, 1},
      {"false", V_BOOL, 0}, {"False", V_BOOL, 0}, {"none", V_NONE, 0}, {"None", V_NONE, 0}};
    for (size_t i = 0; i < 6; i++)
      if (tok_is(t, T_NAME, consts[i].name)) {
        n = mk(P, E_LIT); n->lit = mkval(P->a, consts[i].t);
        if (!n->lit) PFAIL(P, P->line, "out of memory");
        n->lit->i = consts[i].b;
        return n;
      }
    n = mk(P, E_VAR); n->s = dupn(P, t.s, t.n); n->sn = t.n;
    return n;
  }
  if (tok_is(t, T_OP, "(")) {
    node *e = p_expr(P);
    if (accept_op(P, ",")) {                         /* a tuple: a list for our purposes */
      pvec a = {0};
      if (pv_push(P->a, &a, e)) PFAIL(P, P->line, "out of memory");
      while (!at_op(P, ")")) { if (pv_push(P->a, &a, p_expr(P))) PFAIL(P, P->line, "out of memory"); if (!accept_op(P, ",")) break; }
      n = mk(P, E_LIST); n->args = (node **)a.v; n->nargs = a.n;
      e = n;
    }
    expect_op(P, ")");
    return e;
  }
  if (tok_is(t, T_OP, "[")) {
    pvec a = {0};
    while (!at_op(P, "]")) { if (pv_push(P->a, &a, p_expr(P))) PFAIL(P, P->line, "out of memory"); if (!accept_op(P, ",")) break; }
    expect_op(P, "]");
    n = mk(P, E_LIST); n->args = (node **)a.v; n->nargs = a.n;
    return n;
  }
  if (tok_is(t, T_OP, "{")) {
    pvec k = {0}, v = {0};
    while (!at_op(P, "}")) {
      if (pv_push(P->a, &k, p_expr(P))) PFAIL(P, P->line, "out of memory");
      expect_op(P, ":");
      if (pv_push(P->a, &v, p_expr(P))) PFAIL(P, P->line, "out of memory");
      if (!accept_op(P, ",")) break;
    }
    expect_op(P, "}");
    n = mk(P, E_DICT); n->args = (node **)k.v; n->nargs = k.n; n->kwv = (node **)v.v;
    return n;
  }
  PFAIL(P, P->line, "unexpected '%.*s' in an expression", t.k == T_EOF ? 3 : (int)t.n, t.k == T_EOF ? "end" : t.s);
}

static node *p_postfix(parser *P, node *n) {
  for (;;) {
    if (accept_op(P, ".")) {
      tok t = next_tok(P);
      if (t.k != T_NAME && t.k != T_INT) PFAIL(P, P->line, "expected an attribute name after '.'");
      node *m = mk(P, E_ATTR); m->a = n; m->s = dupn(P, t.s, t.n); m->sn = t.n;
      n = m;
    } else if (accept_op(P, "[")) {
      node *idx[3] = {NULL, NULL, NULL};
      int is_slice = 0;
      for (int part = 0; part < 3; part++) {
        if (!at_op(P, ":") && !at_op(P, "]")) idx[part] = p_expr(P);
        if (part < 2 && accept_op(P, ":")) { is_slice = 1; continue; }
        break;
      }
      expect_op(P, "]");
      node *m = mk(P, is_slice ? E_SLICE : E_ITEM);
      m->a = n; m->b = idx[0]; m->c = idx[1]; m->d = idx[2];
      if (!is_slice && !idx[0]) PFAIL(P, P->line, "empty subscript");
      n = m;
    } else if (accept_op(P, "(")) {
      node *m = mk(P, E_CALL); m->a = n;
      p_args(P, m);
      n = m;
    } else return n;
  }
}

static node *p_filters_tests(parser *P, node *n) {
  for (;;) {
    if (accept_op(P, "|")) {
      tok t = expect_name(P);
      if (!in_list(FILTERS, t.s, t.n)) PFAIL(P, P->line, "filter '%.*s' is not supported", (int)t.n, t.s);
      node *m = mk(P, E_FILTER); m->a = n; m->s = dupn(P, t.s, t.n); m->sn = t.n;
      if (accept_op(P, "(")) p_args(P, m);
      n = m;
    } else if (at_name(P, "is")) {
      next_tok(P);
      node *m = mk(P, E_TEST); m->a = n;
      if (accept_name(P, "not")) m->neg = 1;
      tok t = next_tok(P);
      if (t.k == T_NAME && (tok_is(t, T_NAME, "none") || tok_is(t, T_NAME, "true") || tok_is(t, T_NAME, "false"))) {}
      else if (t.k != T_NAME) PFAIL(P, P->line, "expected a test name after 'is'");
      if (!in_list(TESTS, t.s, t.n)) PFAIL(P, P->line, "test '%.*s' is not supported", (int)t.n, t.s);
      m->s = dupn(P, t.s, t.n); m->sn = t.n;
      if (accept_op(P, "(")) p_args(P, m);
      else {
        /* `is equalto 3`, `is sameas x`: one argument without parentheses */
        tok u = peek_tok(P);
        if ((u.k == T_STR || u.k == T_INT || u.k == T_FLOAT || (u.k == T_NAME && !tok_is(u, T_NAME, "and") &&
             !tok_is(u, T_NAME, "or") && !tok_is(u, T_NAME, "else") && !tok_is(u, T_NAME, "if") && !tok_is(u, T_NAME, "in") &&
             !tok_is(u, T_NAME, "not") && !tok_is(u, T_NAME, "is") && !tok_is(u, T_NAME, "recursive")))) {
          node *arg = p_postfix(P, p_primary(P));
          m->args = ar_alloc(P->a, sizeof(node *));
          if (!m->args) PFAIL(P, P->line, "out of memory");
          m->args[0] = arg; m->nargs = 1;
        }
      }
      n = m;
    } else return n;
  }
}

static node *p_unary(parser *P) {
  if (++P->depth > MAX_PARSE_DEPTH) PFAIL(P, P->line, "expression nested too deeply");
  node *n;
  if (accept_op(P, "-")) { n = mk(P, E_NEG); n->a = p_unary(P); }
  else if (accept_op(P, "+")) { n = mk(P, E_POS); n->a = p_unary(P); }
  else n = p_filters_tests(P, p_postfix(P, p_primary(P)));
  P->depth--;
  return n;
}

static node *bin(parser *P, int op, node *a, node *b) { node *n = mk(P, E_BIN); n->op = op; n->a = a; n->b = b; return n; }

static node *p_pow(parser *P) {
  node *n = p_unary(P);
  while (accept_op(P, "**")) n = bin(P, OP_POW, n, p_unary(P));
  return n;
}
static node *p_mul(parser *P) {
  node *n = p_pow(P);
  for (;;) {
    if (accept_op(P, "//")) n = bin(P, OP_FDIV, n, p_pow(P));
    else if (accept_op(P, "*")) n = bin(P, OP_MUL, n, p_pow(P));
    else if (accept_op(P, "/")) n = bin(P, OP_DIV, n, p_pow(P));
    else if (accept_op(P, "%")) n = bin(P, OP_MOD, n, p_pow(P));
    else return n;
  }
}
static node *p_cat(parser *P) {
  node *n = p_mul(P);
  while (accept_op(P, "~")) n = bin(P, OP_CAT, n, p_mul(P));
  return n;
}
static node *p_add(parser *P) {
  node *n = p_cat(P);
  for (;;) {
    if (accept_op(P, "+")) n = bin(P, OP_ADD, n, p_cat(P));
    else if (accept_op(P, "-")) n = bin(P, OP_SUB, n, p_cat(P));
    else return n;
  }
}
static node *p_cmp(parser *P) {
  node *n = p_add(P);
  for (;;) {
    static const struct { const char *s; int op; } ops[] = {{"==", OP_EQ}, {"!=", OP_NE}, {"<=", OP_LE}, {">=", OP_GE},
                                                             {"<", OP_LT}, {">", OP_GT}};
    int hit = 0;
    for (int i = 0; i < 6 && !hit; i++) if (accept_op(P, ops[i].s)) { n = bin(P, ops[i].op, n, p_add(P)); hit = 1; }
    if (hit) continue;
    if (accept_name(P, "in")) { n = bin(P, OP_IN, n, p_add(P)); continue; }
    if (at_name(P, "not")) {
      const char *save = P->p; int sl = P->line;
      next_tok(P);
      if (accept_name(P, "in")) { n = bin(P, OP_NOTIN, n, p_add(P)); continue; }
      P->p = save; P->line = sl;
    }
    return n;
  }
}
static node *p_not(parser *P) {
  if (accept_name(P, "not")) {
    if (++P->depth > MAX_PARSE_DEPTH) PFAIL(P, P->line, "expression nested too deeply");
    node *n = mk(P, E_NOT); n->a = p_not(P);
    P->depth--;
    return n;
  }
  return p_cmp(P);
}
static node *p_and(parser *P) {
  node *n = p_not(P);
  while (accept_name(P, "and")) { node *m = mk(P, E_AND); m->a = n; m->b = p_not(P); n = m; }
  return n;
}
static node *p_or(parser *P) {
  node *n = p_and(P);
  while (accept_name(P, "or")) { node *m = mk(P, E_OR); m->a = n; m->b = p_and(P); n = m; }
  return n;
}
static node *p_expr(parser *P) {
  if (++P->depth > MAX_PARSE_DEPTH) PFAIL(P, P->line, "expression nested too deeply");
  node *n = p_or(P);
  while (accept_name(P, "if")) {
    node *m = mk(P, E_COND); m->a = n; m->b = p_or(P);
    if (accept_name(P, "else")) m->c = p_expr(P);
    n = m;
  }
  P->depth--;
  return n;
}

static void expect_end(parser *P) {
  tok t = peek_tok(P);
  if (t.k != T_EOF) PFAIL(P, P->line, "unexpected '%.*s' at the end of a tag", (int)t.n, t.s);
}

// ---- statements ----------------------------------------------------------------------------------------

static void begin_tag(parser *P, const seg *s) { P->p = s->s; P->end = s->s + s->n; P->line = s->line; }

/* Parses statements until a block tag whose first word is in `stops`; returns which one (its index),
 * leaving P positioned after that word. -1 at the end of the template (only valid when stops is NULL). */
static int p_body(parser *P, const char **stops, pvec *out);

static const char *STMTS_REFUSED[] = {"include", "extends", "import", "from", "block", "filter", "raw", "with",
                                      "autoescape", "do", "trans", "pluralize", NULL};

static node *p_stmt(parser *P, tok kw, int line) {
  node *n;
  if (tok_is(kw, T_NAME, "if") || tok_is(kw, T_NAME, "elif")) {
    n = mk(P, S_IF); n->line = line;
    n->a = p_expr(P);
    expect_end(P);
    static const char *stops[] = {"elif", "else", "endif", NULL};
    pvec body = {0}, orelse = {0};
    int which = p_body(P, stops, &body);
    n->body = (node **)body.v; n->nbody = body.n;
    if (which == 0) {
      node *e = p_stmt(P, (tok){T_NAME, "elif", 4, 0, 0}, P->line);
      if (pv_push(P->a, &orelse, e)) PFAIL(P, line, "out of memory");
      n->orelse = (node **)orelse.v; n->norelse = orelse.n;
      return n;                                      /* the nested if consumed endif */
    }
    if (which == 1) {
      expect_end(P);
      static const char *stops2[] = {"endif", NULL};
      p_body(P, stops2, &orelse);
      n->orelse = (node **)orelse.v; n->norelse = orelse.n;
    }
    expect_end(P);
    return n;
  }
  if (tok_is(kw, T_NAME, "for")) {
    n = mk(P, S_FOR); n->line = line;
    pvec names = {0};
    do {
      tok t = expect_name(P);
      if (pv_push(P->a, &names, (void *)dupn(P, t.s, t.n))) PFAIL(P, line, "out of memory");
    } while (accept_op(P, ","));
    n->kw = (const char **)names.v; n->nkw = names.n;
    if (!accept_name(P, "in")) PFAIL(P, line, "expected 'in' in a for loop");
    n->a = p_or(P);                                  /* no conditional expression: `if` filters */
    if (accept_name(P, "if")) n->b = p_or(P);
    if (accept_name(P, "recursive")) PFAIL(P, line, "recursive for loops are not supported");
    expect_end(P);
    static const char *stops[] = {"else", "endfor", NULL};
    pvec body = {0}, orelse = {0};
    int which = p_body(P, stops, &body);
    n->body = (node **)body.v; n->nbody = body.n;
    if (which == 0) {
      expect_end(P);
      static const char *stops2[] = {"endfor", NULL};
      p_body(P, stops2, &orelse);
      n->orelse = (node **)orelse.v; n->norelse = orelse.n;
    }
    expect_end(P);
    return n;
  }
  if (tok_is(kw, T_NAME, "set")) {
    tok t = expect_name(P);
    n = mk(P, S_SET); n->line = line;
    n->s = dupn(P, t.s, t.n); n->sn = t.n;
    if (accept_op(P, ".")) { tok a = expect_name(P); n->kw = ar_alloc(P->a, sizeof(char *)); if (!n->kw) PFAIL(P, line, "out of memory"); n->kw[0] = dupn(P, a.s, a.n); n->nkw = 1; }
    else if (at_op(P, ",")) {
      pvec names = {0};
      if (pv_push(P->a, &names, (void *)n->s)) PFAIL(P, line, "out of memory");
      while (accept_op(P, ",")) { tok u = expect_name(P); if (pv_push(P->a, &names, (void *)dupn(P, u.s, u.n))) PFAIL(P, line, "out of memory"); }
      n->args = (node **)names.v; n->nargs = names.n;   /* tuple unpacking: names in args */
      n->op = 1;
    }
    if (accept_op(P, "=")) { n->a = p_expr(P); expect_end(P); return n; }
    if (n->nkw || n->op) PFAIL(P, line, "a block set takes one plain name");
    expect_end(P);
    n->k = S_SETBLOCK;
    static const char *stops[] = {"endset", NULL};
    pvec body = {0};
    p_body(P, stops, &body);
    n->body = (node **)body.v; n->nbody = body.n;
    expect_end(P);
    return n;
  }
  if (tok_is(kw, T_NAME, "macro")) {
    tok t = expect_name(P);
    n = mk(P, S_MACRO); n->line = line;
    n->s = dupn(P, t.s, t.n); n->sn = t.n;
    expect_op(P, "(");
    pvec names = {0}, defs = {0};
    while (!accept_op(P, ")")) {
      tok a = expect_name(P);
      node *def = NULL;
      if (accept_op(P, "=")) def = p_expr(P);
      if (pv_push(P->a, &names, (void *)dupn(P, a.s, a.n)) || pv_push(P->a, &defs, def)) PFAIL(P, line, "out of memory");
      if (!accept_op(P, ",")) { expect_op(P, ")"); break; }
    }
    n->kw = (const char **)names.v; n->kwv = (node **)defs.v; n->nkw = names.n;
    expect_end(P);
    static const char *stops[] = {"endmacro", NULL};
    pvec body = {0};
    p_body(P, stops, &body);
    n->body = (node **)body.v; n->nbody = body.n;
    expect_end(P);
    return n;
  }
  if (tok_is(kw, T_NAME, "call")) {
    n = mk(P, S_CALLBLOCK); n->line = line;
    pvec names = {0};
    if (accept_op(P, "(")) {
      while (!accept_op(P, ")")) {
        tok a = expect_name(P);
        if (pv_push(P->a, &names, (void *)dupn(P, a.s, a.n))) PFAIL(P, line, "out of memory");
        if (!accept_op(P, ",")) { expect_op(P, ")"); break; }
      }
    }
    n->kw = (const char **)names.v; n->nkw = names.n;
    n->a = p_expr(P);
    if (n->a->k != E_CALL) PFAIL(P, line, "{%% call %%} needs a macro call");
    expect_end(P);
    static const char *stops[] = {"endcall", NULL};
    pvec body = {0};
    p_body(P, stops, &body);
    n->body = (node **)body.v; n->nbody = body.n;
    expect_end(P);
    return n;
  }
  if (tok_is(kw, T_NAME, "generation")) {          /* transformers' AssistantTracker: renders its body */
    n = mk(P, S_GEN); n->line = line;
    expect_end(P);
    static const char *stops[] = {"endgeneration", NULL};
    pvec body = {0};
    p_body(P, stops, &body);
    n->body = (node **)body.v; n->nbody = body.n;
    expect_end(P);
    return n;
  }
  if (tok_is(kw, T_NAME, "break") || tok_is(kw, T_NAME, "continue")) {
    n = mk(P, kw.s[0] == 'b' ? S_BREAK : S_CONTINUE); n->line = line;
    expect_end(P);
    return n;
  }
  if (kw.k == T_NAME && in_list(STMTS_REFUSED, kw.s, kw.n))
    PFAIL(P, line, "{%% %.*s %%} is not supported in chat templates", (int)kw.n, kw.s);
  PFAIL(P, line, "unknown statement '%.*s'", kw.k == T_EOF ? 5 : (int)kw.n, kw.k == T_EOF ? "empty" : kw.s);
}

static int p_body(parser *P, const char **stops, pvec *out) {
  while (P->si < P->nsegs) {
    const seg *s = &P->segs[P->si++];
    if (s->kind == SEG_TEXT) {
      node *n = mk(P, S_TEXT); n->line = s->line; n->s = s->s; n->sn = s->n;
      if (pv_push(P->a, out, n)) PFAIL(P, s->line, "out of memory");
      continue;
    }
    begin_tag(P, s);
    if (s->kind == SEG_VAR) {
      node *n = mk(P, S_OUT); n->a = p_expr(P);
      expect_end(P);
      if (pv_push(P->a, out, n)) PFAIL(P, s->line, "out of memory");
      continue;
    }
    tok kw = next_tok(P);
    if (stops) for (int i = 0; stops[i]; i++) if (tok_is(kw, T_NAME, stops[i])) return i;
    if (kw.k == T_NAME && (kw.n > 3 && memcmp(kw.s, "end", 3) == 0)) {
      if (stops) { const char *c = stops[0]; for (int i = 0; stops[i]; i++) c = stops[i];
        PFAIL(P, s->line, "unexpected '%.*s' (expected '%s')", (int)kw.n, kw.s, c); }
      PFAIL(P, s->line, "unexpected '%.*s'", (int)kw.n, kw.s);
    }
    if ((tok_is(kw, T_NAME, "else") || tok_is(kw, T_NAME, "elif")) && !stops) PFAIL(P, s->line, "unexpected '%.*s'", (int)kw.n, kw.s);
    if (++P->depth > MAX_PARSE_DEPTH) PFAIL(P, s->line, "blocks nested too deeply");
    node *n = p_stmt(P, kw, s->line);
    P->depth--;
    if (pv_push(P->a, out, n)) PFAIL(P, s->line, "out of memory");
  }
  if (stops) {
    int line = P->nsegs ? P->segs[P->nsegs - 1].line : 1;
    const char *closer = stops[0];
    for (int i = 0; stops[i]; i++) closer = stops[i];      /* the last stop is the end tag */
    PFAIL(P, line, "the template ends without {%% %s %%}", closer);
  }
  return -1;
}

pc_jinja *pc_jinja_parse(const char *src, char *err, size_t errlen) {
  pc_jinja *volatile t = calloc(1, sizeof *t);
  if (!t) { pc_seterr(err, errlen, "out of memory"); return NULL; }
  parser Pc = {.a = &t->a, .err = err, .errlen = errlen}, *P = &Pc;
  /* jinja2 reads the source line by line: \r\n and \r become \n, and one final newline is dropped
   * (keep_trailing_newline is off) */
  size_t n = strlen(src);
  char *norm = ar_alloc(&t->a, n + 1);
  if (!norm) { free(t); pc_seterr(err, errlen, "out of memory"); return NULL; }
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (src[i] == '\r') { norm[o++] = '\n'; if (i + 1 < n && src[i + 1] == '\n') i++; }
    else norm[o++] = src[i];
  }
  if (o && norm[o - 1] == '\n') o--;
  norm[o] = 0;
  P->src = norm; P->n = o;
  if (setjmp(P->jb)) { free(P->segs); pc_jinja_free(t); return NULL; }
  lex(P);
  pvec body = {0};
  p_body(P, NULL, &body);
  t->body = (node **)body.v; t->nbody = body.n;
  free(P->segs);
  return t;
}

void pc_jinja_free(pc_jinja *t) {
  if (!t) return;
  ar_free(&t->a);
  free(t);
}

// ---- rendering: state, scopes ----------------------------------------------------------------------------

typedef struct frame {
  const struct frame *parent;
  const char **names; val **vals; size_t n, cap;
} frame;

typedef struct {
  arena a;
  char *out; size_t on, ocap;
  char *err; size_t errlen;
  long iters;
  int depth;
  jmp_buf jb;
  frame *root;
  val *caller;        /* the current call block's body, as caller() */
  int brk, cont;
} rstate;

#define RFAIL(R, line_, ...) do { char m_[400]; snprintf(m_, sizeof m_, __VA_ARGS__); \
  pc_seterr((R)->err, (R)->errlen, "line %d: %s", (line_), m_); longjmp((R)->jb, 1); } while (0)

static void *ralloc(rstate *R, size_t n, int line) {
  if (R->a.total > MAX_ARENA) RFAIL(R, line, "the template uses more than %zu MiB of memory", MAX_ARENA >> 20);
  void *p = ar_alloc(&R->a, n);
  if (!p) RFAIL(R, line, "out of memory");
  return p;
}

static val *rval(rstate *R, int t, int line) { val *v = ralloc(R, sizeof *v, line); v->t = t; return v; }

static val g_undef = {.t = V_UNDEF}, g_none = {.t = V_NONE}, g_true = {.t = V_BOOL, .i = 1}, g_false = {.t = V_BOOL, .i = 0};
static val *vbool(int b) { return b ? &g_true : &g_false; }

static val *vstr(rstate *R, const char *s, size_t n, int line) {
  val *v = rval(R, V_STR, line);
  char *d = ralloc(R, n + 1, line);
  if (n) memcpy(d, s, n);
  v->s = d; v->n = n;
  return v;
}
/* Small ints are shared (loop counters would otherwise allocate on every iteration). */
#define N_SMALL_INTS 4096
static val g_ints[N_SMALL_INTS];
static pthread_once_t g_ints_once = PTHREAD_ONCE_INIT;
static void ints_init(void) { for (int i = 0; i < N_SMALL_INTS; i++) { g_ints[i].t = V_INT; g_ints[i].i = i; } }

static val *vint(rstate *R, int64_t i, int line) {
  if (i >= 0 && i < N_SMALL_INTS) return &g_ints[i];
  val *v = rval(R, V_INT, line);
  v->i = i;
  return v;
}
static val *vfloat(rstate *R, double f, int line) { val *v = rval(R, V_FLOAT, line); v->f = f; return v; }

static void list_push(rstate *R, val *l, val *x, int line) {
  if (l->len == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 8;
    val **ni = ralloc(R, nc * sizeof *ni, line);
    if (l->len) memcpy(ni, l->items, l->len * sizeof *ni);
    if (l->t == V_DICT || l->t == V_NS) {
      const char **nk = ralloc(R, nc * sizeof *nk, line);
      size_t *nl = ralloc(R, nc * sizeof *nl, line);
      if (l->len) { memcpy(nk, l->keys, l->len * sizeof *nk); memcpy(nl, l->klen, l->len * sizeof *nl); }
      l->keys = nk; l->klen = nl;
    }
    l->items = ni; l->cap = nc;
  }
  l->items[l->len++] = x;
}

static val *dict_get(const val *d, const char *k, size_t n) {
  for (size_t i = 0; i < d->len; i++) if (d->klen[i] == n && memcmp(d->keys[i], k, n) == 0) return d->items[i];
  return NULL;
}

static void dict_set(rstate *R, val *d, const char *k, size_t n, val *x, int line) {
  for (size_t i = 0; i < d->len; i++) if (d->klen[i] == n && memcmp(d->keys[i], k, n) == 0) { d->items[i] = x; return; }
  list_push(R, d, x, line);
  d->keys[d->len - 1] = k; d->klen[d->len - 1] = n;
}

static void frame_set(rstate *R, frame *f, const char *name, val *v, int line) {
  size_t n = strlen(name);
  for (size_t i = 0; i < f->n; i++) if (strlen(f->names[i]) == n && !memcmp(f->names[i], name, n)) { f->vals[i] = v; return; }
  if (f->n == f->cap) {
    size_t nc = f->cap ? f->cap * 2 : 8;
    const char **nn = ralloc(R, nc * sizeof *nn, line);
    val **nv = ralloc(R, nc * sizeof *nv, line);
    if (f->n) { memcpy(nn, f->names, f->n * sizeof *nn); memcpy(nv, f->vals, f->n * sizeof *nv); }
    f->names = nn; f->vals = nv; f->cap = nc;
  }
  f->names[f->n] = name; f->vals[f->n++] = v;
}

static val *lookup(const frame *f, const char *name, size_t n) {
  for (; f; f = f->parent)
    for (size_t i = f->n; i-- > 0;) if (strlen(f->names[i]) == n && !memcmp(f->names[i], name, n)) return f->vals[i];
  return NULL;
}

// ---- output --------------------------------------------------------------------------------------------

static void out_add(rstate *R, const char *s, size_t n, int line) {
  if (R->on + n > MAX_OUTPUT) RFAIL(R, line, "the output is larger than %zu MiB", MAX_OUTPUT >> 20);
  if (R->on + n + 1 > R->ocap) {
    size_t nc = R->ocap ? R->ocap : 4096;
    while (nc < R->on + n + 1) nc *= 2;
    char *no = realloc(R->out, nc);
    if (!no) RFAIL(R, line, "out of memory");
    R->out = no; R->ocap = nc;
  }
  memcpy(R->out + R->on, s, n);
  R->on += n;
}

/* A temporary string builder in the arena (grows by copying; fine for the sizes templates build). */
typedef struct { char *p; size_t n, cap; } sb;
static void sb_add(rstate *R, sb *b, const char *s, size_t n, int line) {
  if (b->n + n + 1 > b->cap) {
    size_t nc = b->cap ? b->cap * 2 : 64;
    while (nc < b->n + n + 1) nc *= 2;
    char *np = ralloc(R, nc, line);
    if (b->n) memcpy(np, b->p, b->n);
    b->p = np; b->cap = nc;
  }
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
}
static void sb_str(rstate *R, sb *b, const char *s, int line) { sb_add(R, b, s, strlen(s), line); }

// ---- Python semantics: truth, str, repr, json --------------------------------------------------------------

static int truthy(const val *v) {
  switch (v->t) {
    case V_UNDEF: case V_NONE: return 0;
    case V_BOOL: case V_INT: return v->i != 0;
    case V_FLOAT: return v->f != 0.0;
    case V_STR: return v->n != 0;
    case V_LIST: case V_DICT: return v->len != 0;
    default: return 1;
  }
}

/* Python's repr(float): the shortest string that reads back the same, exponent outside 1e-4..1e16. */
static void py_float(double f, char *buf, size_t n) {
  if (isnan(f)) { snprintf(buf, n, "nan"); return; }
  if (isinf(f)) { snprintf(buf, n, f > 0 ? "inf" : "-inf"); return; }
  int p;
  for (p = 1; p < 17; p++) { snprintf(buf, n, "%.*e", p - 1, f); if (strtod(buf, NULL) == f) break; }
  snprintf(buf, n, "%.*e", p - 1, f);
  char *e = strchr(buf, 'e');
  int exp = atoi(e + 1);
  if (exp >= -5 && exp < 16) {                       /* Python: repr uses fixed notation for 1e-5 < |x| < 1e16 */
    if (exp < -4) { /* 1e-05 stays exponent in Python */ }
    else {
      int dec = p - 1 - exp;
      snprintf(buf, n, "%.*f", dec > 0 ? dec : 0, f);
      if (!strchr(buf, '.')) strncat(buf, ".0", n - strlen(buf) - 1);
      return;
    }
  }
  /* exponent form: mantissa without trailing zeros, exponent at least two digits (1e-05, 1e+16) */
  char mant[40]; size_t ml = (size_t)(e - buf);
  memcpy(mant, buf, ml); mant[ml] = 0;
  if (strchr(mant, '.')) { while (mant[strlen(mant) - 1] == '0') mant[strlen(mant) - 1] = 0; if (mant[strlen(mant) - 1] == '.') mant[strlen(mant) - 1] = 0; }
  snprintf(buf, n, "%se%c%02d", mant, exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
}

static void repr_into(rstate *R, sb *b, const val *v, int line);

static void str_into(rstate *R, sb *b, const val *v, int line) {
  char num[64];
  switch (v->t) {
    case V_UNDEF: return;
    case V_NONE: sb_str(R, b, "None", line); return;
    case V_BOOL: sb_str(R, b, v->i ? "True" : "False", line); return;
    case V_INT: snprintf(num, sizeof num, "%lld", (long long)v->i); sb_str(R, b, num, line); return;
    case V_FLOAT: py_float(v->f, num, sizeof num); sb_str(R, b, num, line); return;
    case V_STR: sb_add(R, b, v->s, v->n, line); return;
    case V_MACRO: case V_FUNC: sb_str(R, b, "<function>", line); return;
    case V_NS: sb_str(R, b, "<Namespace>", line); return;
    case V_LOOP: sb_str(R, b, "<LoopContext>", line); return;
    default: repr_into(R, b, v, line);
  }
}

static void repr_into(rstate *R, sb *b, const val *v, int line) {
  if (v->t == V_STR) {
    int dq = memchr(v->s, '\'', v->n) && !memchr(v->s, '"', v->n);
    char q = dq ? '"' : '\'';
    sb_add(R, b, &q, 1, line);
    for (size_t i = 0; i < v->n; i++) {
      unsigned char c = (unsigned char)v->s[i];
      char esc[8];
      if (c == '\\' || c == (unsigned char)q) { esc[0] = '\\'; esc[1] = (char)c; sb_add(R, b, esc, 2, line); }
      else if (c == '\n') sb_str(R, b, "\\n", line);
      else if (c == '\r') sb_str(R, b, "\\r", line);
      else if (c == '\t') sb_str(R, b, "\\t", line);
      else if (c < 0x20 || c == 0x7f) { snprintf(esc, sizeof esc, "\\x%02x", c); sb_str(R, b, esc, line); }
      else sb_add(R, b, (const char *)&v->s[i], 1, line);
    }
    sb_add(R, b, &q, 1, line);
    return;
  }
  if (v->t == V_LIST) {
    sb_str(R, b, "[", line);
    for (size_t i = 0; i < v->len; i++) { if (i) sb_str(R, b, ", ", line); repr_into(R, b, v->items[i], line); }
    sb_str(R, b, "]", line);
    return;
  }
  if (v->t == V_DICT) {
    sb_str(R, b, "{", line);
    for (size_t i = 0; i < v->len; i++) {
      if (i) sb_str(R, b, ", ", line);
      val k = {.t = V_STR, .s = v->keys[i], .n = v->klen[i]};
      repr_into(R, b, &k, line);
      sb_str(R, b, ": ", line);
      repr_into(R, b, v->items[i], line);
    }
    sb_str(R, b, "}", line);
    return;
  }
  str_into(R, b, v, line);
}

static val *to_str(rstate *R, const val *v, int line) {
  if (v->t == V_STR) return (val *)v;
  sb b = {0};
  str_into(R, &b, v, line);
  return vstr(R, b.p ? b.p : "", b.n, line);
}

/* json.dumps(x, ensure_ascii=False, indent=indent, separators=..., sort_keys=...) */
typedef struct { int indent; const char *item_sep, *key_sep; int sort_keys; } jopts;

static void json_str(rstate *R, sb *b, const char *s, size_t n, int line) {
  sb_str(R, b, "\"", line);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    switch (c) {
      case '"': sb_str(R, b, "\\\"", line); break;
      case '\\': sb_str(R, b, "\\\\", line); break;
      case '\n': sb_str(R, b, "\\n", line); break;
      case '\r': sb_str(R, b, "\\r", line); break;
      case '\t': sb_str(R, b, "\\t", line); break;
      case '\b': sb_str(R, b, "\\b", line); break;
      case '\f': sb_str(R, b, "\\f", line); break;
      default:
        if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); sb_str(R, b, esc, line); }
        else sb_add(R, b, (const char *)&s[i], 1, line);
    }
  }
  sb_str(R, b, "\"", line);
}

static int cmp_keys(const void *x, const void *y, void *ctx) {
  const val *d = ctx;
  size_t a = *(const size_t *)x, c = *(const size_t *)y;
  size_t la = d->klen[a], lc = d->klen[c];
  int r = memcmp(d->keys[a], d->keys[c], la < lc ? la : lc);
  return r ? r : (la < lc ? -1 : la > lc);
}

static void json_into(rstate *R, sb *b, const val *v, const jopts *o, int level, int line) {
  if (level > MAX_DEPTH * 4) RFAIL(R, line, "tojson: value nested too deeply");
  char num[64];
  switch (v->t) {
    case V_UNDEF: case V_NONE: sb_str(R, b, "null", line); return;
    case V_BOOL: sb_str(R, b, v->i ? "true" : "false", line); return;
    case V_INT: snprintf(num, sizeof num, "%lld", (long long)v->i); sb_str(R, b, num, line); return;
    case V_FLOAT:
      if (isnan(v->f)) sb_str(R, b, "NaN", line);
      else if (isinf(v->f)) sb_str(R, b, v->f > 0 ? "Infinity" : "-Infinity", line);
      else { py_float(v->f, num, sizeof num); sb_str(R, b, num, line); }
      return;
    case V_STR: json_str(R, b, v->s, v->n, line); return;
    case V_LIST: case V_DICT: {
      int is_d = v->t == V_DICT;
      if (v->len == 0) { sb_str(R, b, is_d ? "{}" : "[]", line); return; }
      sb_str(R, b, is_d ? "{" : "[", line);
      size_t *order = ralloc(R, v->len * sizeof *order, line);
      for (size_t i = 0; i < v->len; i++) order[i] = i;
      if (is_d && o->sort_keys) qsort_r(order, v->len, sizeof *order, cmp_keys, (void *)v);
      for (size_t k = 0; k < v->len; k++) {
        size_t i = order[k];
        if (k) sb_str(R, b, o->item_sep, line);
        if (o->indent >= 0) {
          sb_str(R, b, "\n", line);
          for (int s = 0; s < o->indent * (level + 1); s++) sb_str(R, b, " ", line);
        }
        if (is_d) { json_str(R, b, v->keys[i], v->klen[i], line); sb_str(R, b, o->key_sep, line); }
        json_into(R, b, v->items[i], o, level + 1, line);
      }
      if (o->indent >= 0) {
        sb_str(R, b, "\n", line);
        for (int s = 0; s < o->indent * level; s++) sb_str(R, b, " ", line);
      }
      sb_str(R, b, is_d ? "}" : "]", line);
      return;
    }
    default: RFAIL(R, line, "tojson: a %s is not JSON serializable", v->t == V_NS ? "namespace" : "function");
  }
}

static int val_eq(const val *a, const val *b) {
  int an = a->t == V_INT || a->t == V_BOOL || a->t == V_FLOAT, bn = b->t == V_INT || b->t == V_BOOL || b->t == V_FLOAT;
  if (an && bn) {
    double x = a->t == V_FLOAT ? a->f : (double)a->i, y = b->t == V_FLOAT ? b->f : (double)b->i;
    if (a->t != V_FLOAT && b->t != V_FLOAT) return a->i == b->i;
    return x == y;
  }
  if (a->t != b->t) return 0;
  switch (a->t) {
    case V_UNDEF: case V_NONE: return 1;
    case V_STR: return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
    case V_LIST:
      if (a->len != b->len) return 0;
      for (size_t i = 0; i < a->len; i++) if (!val_eq(a->items[i], b->items[i])) return 0;
      return 1;
    case V_DICT:
      if (a->len != b->len) return 0;
      for (size_t i = 0; i < a->len; i++) {
        const val *o = dict_get(b, a->keys[i], a->klen[i]);
        if (!o || !val_eq(a->items[i], o)) return 0;
      }
      return 1;
    default: return a == b;
  }
}

static const char *type_name(const val *v) {
  static const char *n[] = {"undefined", "None", "bool", "int", "float", "str", "list", "dict", "macro", "namespace", "function", "LoopContext"};
  return n[v->t];
}

// ---- UTF-8 and Python string helpers ---------------------------------------------------------------------

static size_t u8len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static size_t cp_count(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i += u8len((unsigned char)s[i])) c++;
  return c;
}

/* byte offset of code point k (k <= count) */
static size_t cp_offset(const char *s, size_t n, size_t k) {
  size_t i = 0;
  while (k-- > 0 && i < n) i += u8len((unsigned char)s[i]);
  return i < n ? i : n;
}

/* jinja.h. Python's set (bidi WS/B/S or category Zs) differs from JavaScript's trim: it includes
 * U+001C..U+001F and U+0085 and excludes U+FEFF. We follow Python, as Hugging Face does. */
size_t pc_py_space(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  if (!n) return 0;
  unsigned c = u[0];
  if (c < 0x80) return (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) ? 1 : 0;
  if (c == 0xc2 && n > 1 && (u[1] == 0x85 || u[1] == 0xa0)) return 2;
  if (c == 0xe1 && n > 2 && u[1] == 0x9a && u[2] == 0x80) return 3;
  if (c == 0xe2 && n > 2) {
    if (u[1] == 0x80 && (u[2] <= 0x8a || u[2] == 0xa8 || u[2] == 0xa9 || u[2] == 0xaf)) return 3;
    if (u[1] == 0x81 && u[2] == 0x9f) return 3;
  }
  if (c == 0xe3 && n > 2 && u[1] == 0x80 && u[2] == 0x80) return 3;
  return 0;
}

/* str.strip / lstrip / rstrip with chars (NULL: whitespace) */
static val *py_strip(rstate *R, const val *s, const val *chars, int left, int right, int line) {
  size_t b = 0, e = s->n;
  while (left && b < e) {
    size_t l = u8len((unsigned char)s->s[b]);
    int hit;
    if (chars) { hit = 0; for (size_t k = 0; k < chars->n; k += u8len((unsigned char)chars->s[k])) if (u8len((unsigned char)chars->s[k]) == l && !memcmp(chars->s + k, s->s + b, l)) hit = 1; }
    else hit = pc_py_space(s->s + b, e - b) != 0;
    if (!hit) break;
    b += l;
  }
  while (right && e > b) {
    size_t p = e - 1;
    while (p > b && ((unsigned char)s->s[p] & 0xC0) == 0x80) p--;
    size_t l = e - p;
    int hit;
    if (chars) { hit = 0; for (size_t k = 0; k < chars->n; k += u8len((unsigned char)chars->s[k])) if (u8len((unsigned char)chars->s[k]) == l && !memcmp(chars->s + k, s->s + p, l)) hit = 1; }
    else hit = pc_py_space(s->s + p, e - p) != 0;
    if (!hit) break;
    e = p;
  }
  return vstr(R, s->s + b, e - b, line);
}

static val *py_case(rstate *R, const val *s, int mode, int line) {   /* 0 lower, 1 upper, 2 title, 3 capitalize */
  val *o = vstr(R, s->s, s->n, line);
  char *d = (char *)o->s;
  int prev_cased = 0;
  for (size_t i = 0; i < o->n; i++) {
    char c = d[i];
    int is_alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    int up;
    if (mode == 0) up = 0;
    else if (mode == 1) up = 1;
    else if (mode == 2) up = !prev_cased;
    else up = i == 0;
    if (is_alpha) d[i] = up ? (char)(c & ~0x20) : (char)(c | 0x20);
    /* non-ASCII letters are left as they are (templates only case ASCII role names) */
    prev_cased = is_alpha || ((unsigned char)c >= 0x80 && mode == 2 && prev_cased);
  }
  return o;
}

static val *py_replace(rstate *R, const val *s, const val *a, const val *b, int64_t count, int line) {
  sb o = {0};
  size_t i = 0;
  int64_t done = 0;
  if (a->n == 0) {                                   /* Python inserts the replacement between chars */
    while (count < 0 || done < count) {
      sb_add(R, &o, b->s, b->n, line); done++;
      if (i >= s->n) break;
      size_t l = u8len((unsigned char)s->s[i]);
      sb_add(R, &o, s->s + i, l, line); i += l;
    }
    sb_add(R, &o, s->s + i, s->n - i, line);
    return vstr(R, o.p ? o.p : "", o.n, line);
  }
  while (i <= s->n && (count < 0 || done < count)) {
    const char *h = a->n <= s->n - i ? memmem(s->s + i, s->n - i, a->s, a->n) : NULL;
    if (!h) break;
    size_t at = (size_t)(h - s->s);
    sb_add(R, &o, s->s + i, at - i, line);
    sb_add(R, &o, b->s, b->n, line);
    i = at + a->n; done++;
  }
  sb_add(R, &o, s->s + i, s->n - i, line);
  return vstr(R, o.p ? o.p : "", o.n, line);
}

static val *py_split(rstate *R, const val *s, const val *sep, int64_t maxsplit, int line) {
  val *l = rval(R, V_LIST, line);
  if (sep && sep->n == 0) RFAIL(R, line, "split(): empty separator");
  if (sep) {
    size_t i = 0;
    for (;;) {
      const char *h = (maxsplit < 0 || (int64_t)l->len < maxsplit) && sep->n <= s->n - i ? memmem(s->s + i, s->n - i, sep->s, sep->n) : NULL;
      if (!h) { list_push(R, l, vstr(R, s->s + i, s->n - i, line), line); break; }
      list_push(R, l, vstr(R, s->s + i, (size_t)(h - s->s) - i, line), line);
      i = (size_t)(h - s->s) + sep->n;
    }
    return l;
  }
  size_t i = 0, n = s->n;
  for (;;) {
    size_t w;
    while (i < n && (w = pc_py_space(s->s + i, n - i))) i += w;
    if (i >= n) break;
    if (maxsplit >= 0 && (int64_t)l->len >= maxsplit) {
      size_t e = n;
      while (e > i) { size_t p = e - 1; while (p > i && ((unsigned char)s->s[p] & 0xC0) == 0x80) p--; if (!pc_py_space(s->s + p, e - p)) break; e = p; }
      list_push(R, l, vstr(R, s->s + i, e - i, line), line);
      break;
    }
    size_t st = i;
    while (i < n && !pc_py_space(s->s + i, n - i)) i += u8len((unsigned char)s->s[i]);
    list_push(R, l, vstr(R, s->s + st, i - st, line), line);
  }
  return l;
}

// ---- evaluation ----------------------------------------------------------------------------------------

static val *eval(rstate *R, const node *n, frame *f);
static void exec_body(rstate *R, node *const *body, size_t n, frame *f);

static int64_t as_int(rstate *R, const val *v, int line, const char *what) {
  if (v->t == V_INT || v->t == V_BOOL) return v->i;
  RFAIL(R, line, "%s must be an integer, not %s", what, type_name(v));
}

static double as_num(const val *v) { return v->t == V_FLOAT ? v->f : (double)v->i; }
static int is_num(const val *v) { return v->t == V_INT || v->t == V_BOOL || v->t == V_FLOAT; }

/* Python's comparison < for numbers and strings */
static int val_lt(rstate *R, const val *a, const val *b, int line) {
  if (is_num(a) && is_num(b)) return as_num(a) < as_num(b);
  if (a->t == V_STR && b->t == V_STR) {
    int r = memcmp(a->s, b->s, a->n < b->n ? a->n : b->n);
    return r < 0 || (r == 0 && a->n < b->n);
  }
  RFAIL(R, line, "'<' is not supported between %s and %s", type_name(a), type_name(b));
}

static int contains(rstate *R, const val *hay, const val *x, int line) {
  if (hay->t == V_STR) {
    if (x->t != V_STR) RFAIL(R, line, "'in <string>' requires a string, not %s", type_name(x));
    return x->n == 0 || (x->n <= hay->n && memmem(hay->s, hay->n, x->s, x->n) != NULL);
  }
  if (hay->t == V_LIST) { for (size_t i = 0; i < hay->len; i++) if (val_eq(hay->items[i], x)) return 1; return 0; }
  if (hay->t == V_DICT || hay->t == V_NS) return x->t == V_STR && dict_get(hay, x->s, x->n) != NULL;
  if (hay->t == V_UNDEF) RFAIL(R, line, "'%.*s' is undefined", (int)hay->n, hay->s ? hay->s : "value");
  RFAIL(R, line, "argument of type %s is not iterable", type_name(hay));
}

/* What `for` and the list filters iterate: a list, a dict's keys, a string's chars; undefined is empty. */
static val *iter_list(rstate *R, val *v, int line) {
  if (v->t == V_LIST) return v;
  val *l = rval(R, V_LIST, line);
  if (v->t == V_UNDEF || v->t == V_NONE) {
    if (v->t == V_NONE) RFAIL(R, line, "'NoneType' object is not iterable");
    return l;
  }
  if (v->t == V_DICT) { for (size_t i = 0; i < v->len; i++) list_push(R, l, vstr(R, v->keys[i], v->klen[i], line), line); return l; }
  if (v->t == V_STR) { for (size_t i = 0; i < v->n;) { size_t k = u8len((unsigned char)v->s[i]); list_push(R, l, vstr(R, v->s + i, k, line), line); i += k; } return l; }
  RFAIL(R, line, "'%s' object is not iterable", type_name(v));
}

static val *loop_attr(rstate *R, const val *l, const char *name, size_t n, int line);
static val *getitem(rstate *R, val *o, val *k, int line) {
  if (o->t == V_LOOP && k->t == V_STR) return loop_attr(R, o, k->s, k->n, line);
  if (o->t == V_UNDEF) RFAIL(R, line, "'%.*s' is undefined", (int)o->n, o->s ? o->s : "value");
  if (o->t == V_DICT || o->t == V_NS) {
    if (k->t != V_STR) return &g_undef;
    val *v = dict_get(o, k->s, k->n);
    return v ? v : &g_undef;
  }
  if (o->t == V_LIST || o->t == V_STR) {
    if (k->t != V_INT && k->t != V_BOOL) return &g_undef;
    int64_t len = o->t == V_LIST ? (int64_t)o->len : (int64_t)cp_count(o->s, o->n), i = k->i;
    if (i < 0) i += len;
    if (i < 0 || i >= len) return &g_undef;
    if (o->t == V_LIST) return o->items[i];
    size_t b = cp_offset(o->s, o->n, (size_t)i);
    return vstr(R, o->s + b, u8len((unsigned char)o->s[b]), line);
  }
  return &g_undef;
}

static val *slice(rstate *R, val *o, val *a, val *b, val *c, int line) {
  if (o->t != V_LIST && o->t != V_STR) RFAIL(R, line, "cannot slice a %s", type_name(o));
  int64_t len = o->t == V_LIST ? (int64_t)o->len : (int64_t)cp_count(o->s, o->n);
  int64_t step = c && c->t != V_NONE && c->t != V_UNDEF ? as_int(R, c, line, "slice step") : 1;
  if (step == 0) RFAIL(R, line, "slice step cannot be zero");
  int has_a = a && a->t != V_NONE && a->t != V_UNDEF, has_b = b && b->t != V_NONE && b->t != V_UNDEF;
  int64_t start, stop;
  if (step > 0) {
    start = has_a ? as_int(R, a, line, "slice index") : 0;
    stop = has_b ? as_int(R, b, line, "slice index") : len;
    if (start < 0) start += len;
    if (start < 0) start = 0;
    if (start > len) start = len;
    if (stop < 0) stop += len;
    if (stop < 0) stop = 0;
    if (stop > len) stop = len;
  } else {
    start = has_a ? as_int(R, a, line, "slice index") : len - 1;
    stop = has_b ? as_int(R, b, line, "slice index") : -len - 1;
    if (start < 0) start += len;
    if (start < 0) start = -1;
    if (start >= len) start = len - 1;
    if (stop < 0) stop += len;
    if (stop < -1) stop = -1;
    if (stop >= len) stop = len - 1;
  }
  if (o->t == V_LIST) {
    val *l = rval(R, V_LIST, line);
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) list_push(R, l, o->items[i], line);
    return l;
  }
  sb s = {0};
  size_t *offs = ralloc(R, (size_t)(len + 1) * sizeof *offs, line);
  for (size_t i = 0, k = 0; k <= (size_t)len; k++) { offs[k] = i; if (i < o->n) i += u8len((unsigned char)o->s[i]); }
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) sb_add(R, &s, o->s + offs[i], offs[i + 1] - offs[i], line);
  return vstr(R, s.p ? s.p : "", s.n, line);
}

static val *loop_attr(rstate *R, const val *l, const char *name, size_t n, int line) {
  int64_t i = l->i, len = (int64_t)l->len;
  char k[16];
  snprintf(k, sizeof k, "%.*s", (int)(n < 15 ? n : 15), name);
  if (!strcmp(k, "index")) return vint(R, i + 1, line);
  if (!strcmp(k, "index0")) return vint(R, i, line);
  if (!strcmp(k, "revindex")) return vint(R, len - i, line);
  if (!strcmp(k, "revindex0")) return vint(R, len - i - 1, line);
  if (!strcmp(k, "first")) return vbool(i == 0);
  if (!strcmp(k, "last")) return vbool(i + 1 == len);
  if (!strcmp(k, "length")) return vint(R, len, line);
  if (!strcmp(k, "depth")) return vint(R, 1, line);
  if (!strcmp(k, "depth0")) return vint(R, 0, line);
  if (!strcmp(k, "previtem")) return i > 0 ? l->items[i - 1] : &g_undef;
  if (!strcmp(k, "nextitem")) return i + 1 < len ? l->items[i + 1] : &g_undef;
  RFAIL(R, line, "loop.%s is not supported", k);
}

static val *attr(rstate *R, val *o, const char *name, size_t n, int line) {
  if (o->t == V_LOOP) return loop_attr(R, o, name, n, line);
  if (o->t == V_UNDEF) RFAIL(R, line, "'%.*s' is undefined (reading .%.*s)", (int)o->n, o->s ? o->s : "value", (int)n, name);
  if (o->t == V_DICT || o->t == V_NS) { val *v = dict_get(o, name, n); if (v) return v; }
  /* a method, bound when called: only the names we implement, so that `x.missing is defined` is false */
  static const char *dict_m[] = {"items", "keys", "values", "get", NULL};
  static const char *str_m[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "replace",
                                "upper", "lower", "title", "capitalize", "find", "count", "isdigit", "isspace", NULL};
  if ((o->t == V_DICT && in_list(dict_m, name, n)) || (o->t == V_STR && in_list(str_m, name, n))) {
    val *m = rval(R, V_FUNC, line);
    m->s = name; m->n = n; m->self = o;
    return m;
  }
  return &g_undef;
}

typedef struct { val **pos; size_t npos; const char **kw; val **kwv; size_t nkw; } argv_t;

static argv_t eval_args(rstate *R, const node *n, frame *f) {
  argv_t a = {0};
  a.npos = n->nargs; a.nkw = n->nkw;
  a.pos = ralloc(R, (n->nargs + 1) * sizeof *a.pos, n->line);
  for (size_t i = 0; i < n->nargs; i++) a.pos[i] = eval(R, n->args[i], f);
  a.kw = n->kw;
  a.kwv = ralloc(R, (n->nkw + 1) * sizeof *a.kwv, n->line);
  for (size_t i = 0; i < n->nkw; i++) a.kwv[i] = eval(R, n->kwv[i], f);
  return a;
}

/* positional i, or keyword name, or NULL */
static val *arg(const argv_t *a, size_t i, const char *name) {
  if (i < a->npos) return a->pos[i];
  for (size_t k = 0; k < a->nkw; k++) if (!strcmp(a->kw[k], name)) return a->kwv[k];
  return NULL;
}

static val *need_str(rstate *R, val *v, int line, const char *what) {
  if (!v || v->t != V_STR) RFAIL(R, line, "%s must be a string, not %s", what, v ? type_name(v) : "missing");
  return v;
}

static val *call_macro(rstate *R, val *m, argv_t *a, val *caller, int line);

static int run_test(rstate *R, const char *name, val *v, argv_t *a, int line) {
  if (!strcmp(name, "defined")) return v->t != V_UNDEF;
  if (!strcmp(name, "undefined")) return v->t == V_UNDEF;
  if (!strcmp(name, "none")) return v->t == V_NONE;
  if (!strcmp(name, "string")) return v->t == V_STR;
  if (!strcmp(name, "number")) return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL;
  if (!strcmp(name, "integer")) return v->t == V_INT;
  if (!strcmp(name, "float")) return v->t == V_FLOAT;
  if (!strcmp(name, "boolean")) return v->t == V_BOOL;
  if (!strcmp(name, "mapping")) return v->t == V_DICT;
  if (!strcmp(name, "iterable")) return v->t == V_LIST || v->t == V_DICT || v->t == V_STR;
  if (!strcmp(name, "sequence")) return v->t == V_LIST || v->t == V_DICT || v->t == V_STR;
  if (!strcmp(name, "callable")) return v->t == V_MACRO || v->t == V_FUNC;
  if (!strcmp(name, "true")) return v->t == V_BOOL && v->i;
  if (!strcmp(name, "false")) return v->t == V_BOOL && !v->i;
  if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
    if (v->t != V_STR) return 0;
    for (size_t i = 0; i < v->n; i++) if (name[0] == 'l' ? (v->s[i] >= 'A' && v->s[i] <= 'Z') : (v->s[i] >= 'a' && v->s[i] <= 'z')) return 0;
    return 1;
  }
  if (!strcmp(name, "odd") || !strcmp(name, "even")) { int64_t i = as_int(R, v, line, "odd/even"); return (i % 2 != 0) == (name[0] == 'o'); }
  val *x = arg(a, 0, "value");
  if (!x) RFAIL(R, line, "test '%s' needs an argument", name);
  if (!strcmp(name, "equalto") || !strcmp(name, "eq")) return val_eq(v, x);
  if (!strcmp(name, "ne")) return !val_eq(v, x);
  if (!strcmp(name, "in")) return contains(R, x, v, line);
  RFAIL(R, line, "test '%s' is not supported", name);
}

static val *apply_filter(rstate *R, const char *name, val *v, argv_t *a, frame *f, int line);

static val *call_method(rstate *R, val *m, argv_t *a, int line) {
  val *o = m->self;
  char name[32];
  snprintf(name, sizeof name, "%.*s", (int)m->n, m->s);
  if (o->t == V_STR) {
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
      val *c = arg(a, 0, "chars");
      if (c && c->t == V_NONE) c = NULL;
      if (c) need_str(R, c, line, "strip()'s argument");
      return py_strip(R, o, c, name[0] != 'r', name[0] != 'l', line);
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
      val *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
      if (sep && sep->t == V_NONE) sep = NULL;
      if (sep) need_str(R, sep, line, "split()'s separator");
      if (name[0] == 'r' && mx && as_int(R, mx, line, "maxsplit") >= 0) RFAIL(R, line, "rsplit() with maxsplit is not supported");
      return py_split(R, o, sep, mx ? as_int(R, mx, line, "maxsplit") : -1, line);
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
      val *p = arg(a, 0, "prefix");
      if (!p) RFAIL(R, line, "%s() needs an argument", name);
      val one = {0}; val *cands[1]; val **list = cands; size_t nl = 1;
      if (p->t == V_LIST) { list = p->items; nl = p->len; } else cands[0] = p;
      (void)one;
      for (size_t i = 0; i < nl; i++) {
        val *x = need_str(R, list[i], line, "the prefix");
        if (x->n <= o->n && !memcmp(name[0] == 's' ? o->s : o->s + o->n - x->n, x->s, x->n)) return &g_true;
      }
      return &g_false;
    }
    if (!strcmp(name, "replace")) {
      val *x = need_str(R, arg(a, 0, "old"), line, "replace()'s old"), *y = need_str(R, arg(a, 1, "new"), line, "replace()'s new");
      val *c = arg(a, 2, "count");
      return py_replace(R, o, x, y, c ? as_int(R, c, line, "count") : -1, line);
    }
    if (!strcmp(name, "upper")) return py_case(R, o, 1, line);
    if (!strcmp(name, "lower")) return py_case(R, o, 0, line);
    if (!strcmp(name, "title")) return py_case(R, o, 2, line);
    if (!strcmp(name, "capitalize")) { val *l = py_case(R, o, 0, line); return py_case(R, l, 3, line); }
    if (!strcmp(name, "find") || !strcmp(name, "count")) {
      val *x = need_str(R, arg(a, 0, "sub"), line, "the substring");
      if (name[0] == 'f') {
        const char *h = x->n <= o->n ? memmem(o->s, o->n, x->s, x->n) : NULL;
        return vint(R, h ? (int64_t)cp_count(o->s, (size_t)(h - o->s)) : -1, line);
      }
      int64_t c = 0;
      if (x->n == 0) return vint(R, (int64_t)cp_count(o->s, o->n) + 1, line);
      for (size_t i = 0; i + x->n <= o->n;) { const char *h = memmem(o->s + i, o->n - i, x->s, x->n); if (!h) break; c++; i = (size_t)(h - o->s) + x->n; }
      return vint(R, c, line);
    }
    if (!strcmp(name, "isdigit") || !strcmp(name, "isspace")) {
      if (!o->n) return &g_false;
      for (size_t i = 0; i < o->n;) {
        size_t w = name[2] == 'd' ? (o->s[i] >= '0' && o->s[i] <= '9') : pc_py_space(o->s + i, o->n - i);
        if (!w) return &g_false;
        i += w;
      }
      return &g_true;
    }
  } else if (o->t == V_DICT) {
    if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
      val *l = rval(R, V_LIST, line);
      for (size_t i = 0; i < o->len; i++) {
        val *k = vstr(R, o->keys[i], o->klen[i], line);
        if (name[0] == 'k') list_push(R, l, k, line);
        else if (name[0] == 'v') list_push(R, l, o->items[i], line);
        else { val *p = rval(R, V_LIST, line); list_push(R, p, k, line); list_push(R, p, o->items[i], line); list_push(R, l, p, line); }
      }
      return l;
    }
    if (!strcmp(name, "get")) {
      val *k = arg(a, 0, "key"), *d = arg(a, 1, "default");
      if (!k) RFAIL(R, line, "get() needs a key");
      val *v = k->t == V_STR ? dict_get(o, k->s, k->n) : NULL;
      return v ? v : d ? d : &g_none;
    }
  }
  RFAIL(R, line, "method %s.%s() is not supported", type_name(o), name);
}

static val *call_global(rstate *R, const char *name, argv_t *a, frame *f, int line) {
  if (!strcmp(name, "raise_exception")) {
    val *m = arg(a, 0, "message");
    val *s = m ? to_str(R, m, line) : vstr(R, "", 0, line);
    RFAIL(R, line, "raise_exception: %.*s", (int)s->n, s->s);
  }
  if (!strcmp(name, "strftime_now")) {
    val *fmt = need_str(R, arg(a, 0, "format"), line, "strftime_now's format");
    char fb[256], out[512];
    snprintf(fb, sizeof fb, "%.*s", (int)fmt->n, fmt->s);
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    size_t n = strftime(out, sizeof out, fb, &tmv);
    return vstr(R, out, n, line);
  }
  if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
    val *ns = rval(R, name[0] == 'n' ? V_NS : V_DICT, line);
    for (size_t i = 0; i < a->npos; i++) {
      val *d = a->pos[i];
      if (d->t != V_DICT) RFAIL(R, line, "%s() takes a mapping or keyword arguments", name);
      for (size_t k = 0; k < d->len; k++) dict_set(R, ns, d->keys[k], d->klen[k], d->items[k], line);
    }
    for (size_t i = 0; i < a->nkw; i++) dict_set(R, ns, a->kw[i], strlen(a->kw[i]), a->kwv[i], line);
    return ns;
  }
  if (!strcmp(name, "range")) {
    int64_t s = 0, e, st = 1;
    if (a->npos == 1) e = as_int(R, a->pos[0], line, "range()");
    else if (a->npos >= 2) { s = as_int(R, a->pos[0], line, "range()"); e = as_int(R, a->pos[1], line, "range()"); if (a->npos > 2) st = as_int(R, a->pos[2], line, "range()"); }
    else RFAIL(R, line, "range() needs arguments");
    if (st == 0) RFAIL(R, line, "range() step cannot be zero");
    val *l = rval(R, V_LIST, line);
    for (int64_t i = s; st > 0 ? i < e : i > e;) {
      if (++R->iters > MAX_LOOP_ITERS) RFAIL(R, line, "more than %ld loop iterations", MAX_LOOP_ITERS);
      list_push(R, l, vint(R, i, line), line);
      if (__builtin_add_overflow(i, st, &i)) break;   /* past INT64_MAX (or MIN): the range has ended */
    }
    return l;
  }
  (void)f;
  RFAIL(R, line, "'%s' is undefined (not a function the templates may call)", name);
}

static val *eval_call(rstate *R, const node *n, frame *f) {
  const node *fn = n->a;
  if (fn->k == E_VAR) {
    val *v = lookup(f, fn->s, fn->sn);
    if (v && v->t == V_MACRO) { argv_t a = eval_args(R, n, f); return call_macro(R, v, &a, NULL, n->line); }
    if (!v || v->t == V_UNDEF) { argv_t a = eval_args(R, n, f); return call_global(R, fn->s, &a, f, n->line); }
    RFAIL(R, n->line, "'%s' is a %s, not callable", fn->s, type_name(v));
  }
  val *v = eval(R, fn, f);
  argv_t a = eval_args(R, n, f);
  if (v->t == V_UNDEF && fn->k == E_ATTR) {
    val *o = eval(R, fn->a, f);
    if (o->t == V_STR || o->t == V_DICT || o->t == V_LIST) RFAIL(R, n->line, "method %s.%s() is not supported", type_name(o), fn->s);
  }
  if (v->t == V_FUNC) return call_method(R, v, &a, n->line);
  if (v->t == V_MACRO) return call_macro(R, v, &a, NULL, n->line);
  RFAIL(R, n->line, "a %s is not callable", type_name(v));
}

static val *binop(rstate *R, int op, val *a, val *b, int line) {
  if (op == OP_CAT) {
    sb s = {0};
    str_into(R, &s, a, line); str_into(R, &s, b, line);
    return vstr(R, s.p ? s.p : "", s.n, line);
  }
  if (op == OP_EQ) return vbool(val_eq(a, b));
  if (op == OP_NE) return vbool(!val_eq(a, b));
  if (op == OP_LT) return vbool(val_lt(R, a, b, line));
  if (op == OP_GT) return vbool(val_lt(R, b, a, line));
  if (op == OP_LE) return vbool(!val_lt(R, b, a, line));
  if (op == OP_GE) return vbool(!val_lt(R, a, b, line));
  if (op == OP_IN) return vbool(contains(R, b, a, line));
  if (op == OP_NOTIN) return vbool(!contains(R, b, a, line));
  if (op == OP_ADD && a->t == V_STR && b->t == V_STR) {
    sb s = {0};
    sb_add(R, &s, a->s, a->n, line); sb_add(R, &s, b->s, b->n, line);
    return vstr(R, s.p ? s.p : "", s.n, line);
  }
  if (op == OP_ADD && a->t == V_LIST && b->t == V_LIST) {
    val *l = rval(R, V_LIST, line);
    for (size_t i = 0; i < a->len; i++) list_push(R, l, a->items[i], line);
    for (size_t i = 0; i < b->len; i++) list_push(R, l, b->items[i], line);
    return l;
  }
  if (op == OP_MUL && ((a->t == V_STR && (b->t == V_INT || b->t == V_BOOL)) || (b->t == V_STR && (a->t == V_INT || a->t == V_BOOL)))) {
    val *s = a->t == V_STR ? a : b;
    int64_t k = a->t == V_STR ? b->i : a->i;
    /* '' * k is '' for any k, as in Python: without this the loop below ran k times (fuzz_jinja: a
     * template that multiplied an empty string by 10^18 never ended) */
    if (k <= 0 || !s->n) return vstr(R, "", 0, line);
    if ((size_t)k > MAX_OUTPUT / s->n) RFAIL(R, line, "string repetition too large");   /* n * k could wrap */
    sb o = {0};
    for (int64_t i = 0; i < k; i++) sb_add(R, &o, s->s, s->n, line);
    return vstr(R, o.p ? o.p : "", o.n, line);
  }
  if (a->t == V_UNDEF || b->t == V_UNDEF) {           /* jinja2's Undefined raises on arithmetic */
    const val *u = a->t == V_UNDEF ? a : b;
    RFAIL(R, line, "'%.*s' is undefined", (int)u->n, u->s ? u->s : "value");
  }
  static const char *const opname[] = {"+", "-", "*", "/", "//", "%", "**"};
  if (!is_num(a) || !is_num(b))
    RFAIL(R, line, "unsupported operand types for %s: %s and %s", opname[op], type_name(a), type_name(b));
  int ints = a->t != V_FLOAT && b->t != V_FLOAT;
  double x = as_num(a), y = as_num(b);
  /* Python's ints have no bound and ours are 64-bit: a result that does not fit is an error naming the
   * operator, never a wrapped value (signed overflow is undefined behaviour in C; fuzz_jinja found
   * 22222 ** 2 ** 222). */
  int64_t r;
#define INT_OVERFLOW() RFAIL(R, line, "integer overflow: the result of %s does not fit in 64 bits", opname[op])
  switch (op) {
    case OP_ADD: if (!ints) return vfloat(R, x + y, line); if (__builtin_add_overflow(a->i, b->i, &r)) INT_OVERFLOW(); return vint(R, r, line);
    case OP_SUB: if (!ints) return vfloat(R, x - y, line); if (__builtin_sub_overflow(a->i, b->i, &r)) INT_OVERFLOW(); return vint(R, r, line);
    case OP_MUL: if (!ints) return vfloat(R, x * y, line); if (__builtin_mul_overflow(a->i, b->i, &r)) INT_OVERFLOW(); return vint(R, r, line);
    case OP_DIV: if (y == 0) RFAIL(R, line, "division by zero"); return vfloat(R, x / y, line);
    case OP_FDIV: case OP_MOD:
      if (y == 0) RFAIL(R, line, "division by zero");
      if (ints) {
        if (a->i == INT64_MIN && b->i == -1) { if (op == OP_FDIV) INT_OVERFLOW(); return vint(R, 0, line); }
        int64_t q = a->i / b->i;
        r = a->i % b->i;
        if (r != 0 && ((r < 0) != (b->i < 0))) { q--; r += b->i; }   /* Python floors */
        return vint(R, op == OP_FDIV ? q : r, line);
      } else {
        double q = floor(x / y), m = x - q * y;
        return vfloat(R, op == OP_FDIV ? q : m, line);
      }
    case OP_POW:
      if (ints && b->i >= 0) {
        if (a->i == 0 || a->i == 1) return vint(R, b->i == 0 ? 1 : a->i, line);
        if (a->i == -1) return vint(R, b->i % 2 ? -1 : 1, line);
        r = 1;   /* |a| >= 2: overflows within 63 steps, so the loop is short */
        for (int64_t i = 0; i < b->i; i++) if (__builtin_mul_overflow(r, a->i, &r)) INT_OVERFLOW();
        return vint(R, r, line);
      }
      return vfloat(R, pow(x, y), line);
  }
#undef INT_OVERFLOW
  return &g_undef;
}

static val *eval(rstate *R, const node *n, frame *f) {
  switch (n->k) {
    case E_LIT: return n->lit;
    case E_VAR: {
      val *v = lookup(f, n->s, n->sn);
      if (v && v->t == V_LOOP) { val *c = rval(R, V_LOOP, n->line); *c = *v; return c; }
      if (v) return v;
      val *u = rval(R, V_UNDEF, n->line);
      u->s = n->s; u->n = n->sn;
      return u;
    }
    case E_ATTR: {
      val *o = n->a->k == E_VAR ? lookup(f, n->a->s, n->a->sn) : NULL;   /* loop.x: no snapshot */
      return attr(R, o && o->t == V_LOOP ? o : eval(R, n->a, f), n->s, n->sn, n->line);
    }
    case E_ITEM: {
      val *o = eval(R, n->a, f), *k = eval(R, n->b, f);
      return getitem(R, o, k, n->line);
    }
    case E_SLICE: {
      val *o = eval(R, n->a, f);
      return slice(R, o, n->b ? eval(R, n->b, f) : NULL, n->c ? eval(R, n->c, f) : NULL, n->d ? eval(R, n->d, f) : NULL, n->line);
    }
    case E_CALL: return eval_call(R, n, f);
    case E_FILTER: {
      val *v = eval(R, n->a, f);
      argv_t a = eval_args(R, n, f);
      return apply_filter(R, n->s, v, &a, f, n->line);
    }
    case E_TEST: {
      val *v = eval(R, n->a, f);
      argv_t a = eval_args(R, n, f);
      int r = run_test(R, n->s, v, &a, n->line);
      return vbool(n->neg ? !r : r);
    }
    case E_NEG: case E_POS: {
      val *v = eval(R, n->a, f);
      if (!is_num(v)) RFAIL(R, n->line, "bad operand type for unary %c: %s", n->k == E_NEG ? '-' : '+', type_name(v));
      if (n->k == E_POS) return v;
      if (v->t != V_FLOAT && v->i == INT64_MIN) RFAIL(R, n->line, "integer overflow: -(%lld) does not fit in 64 bits", (long long)v->i);
      return v->t == V_FLOAT ? vfloat(R, -v->f, n->line) : vint(R, -v->i, n->line);
    }
    case E_NOT: return vbool(!truthy(eval(R, n->a, f)));
    case E_AND: { val *a = eval(R, n->a, f); return truthy(a) ? eval(R, n->b, f) : a; }
    case E_OR: { val *a = eval(R, n->a, f); return truthy(a) ? a : eval(R, n->b, f); }
    case E_BIN: {
      val *a = eval(R, n->a, f), *b = eval(R, n->b, f);
      return binop(R, n->op, a, b, n->line);
    }
    case E_COND: return truthy(eval(R, n->b, f)) ? eval(R, n->a, f) : n->c ? eval(R, n->c, f) : &g_undef;
    case E_LIST: {
      val *l = rval(R, V_LIST, n->line);
      for (size_t i = 0; i < n->nargs; i++) list_push(R, l, eval(R, n->args[i], f), n->line);
      return l;
    }
    case E_DICT: {
      val *d = rval(R, V_DICT, n->line);
      for (size_t i = 0; i < n->nargs; i++) {
        val *k = eval(R, n->args[i], f);
        if (k->t != V_STR) RFAIL(R, n->line, "dict keys must be strings here");
        dict_set(R, d, k->s, k->n, eval(R, n->kwv[i], f), n->line);
      }
      return d;
    }
  }
  RFAIL(R, n->line, "internal error: unknown expression");
}

// ---- filters -------------------------------------------------------------------------------------------

static val *attr_path(rstate *R, val *o, val *path, int line) {
  /* "a.b" or an int index, as jinja2's make_attrgetter */
  if (path->t == V_INT) return getitem(R, o, path, line);
  const char *s = path->s; size_t n = path->n;
  while (n) {
    const char *dot = memchr(s, '.', n);
    size_t l = dot ? (size_t)(dot - s) : n;
    if (o->t == V_UNDEF) return o;
    o = (o->t == V_DICT || o->t == V_NS) ? (dict_get(o, s, l) ? dict_get(o, s, l) : &g_undef) : &g_undef;
    if (!dot) break;
    s = dot + 1; n -= l + 1;
  }
  return o;
}

static val *apply_filter(rstate *R, const char *name, val *v, argv_t *a, frame *f, int line) {
  if (!strcmp(name, "safe") || !strcmp(name, "e") || !strcmp(name, "escape")) {
    if (name[0] == 'e') RFAIL(R, line, "filter 'escape' is not supported (transformers renders without autoescape)");
    return v;
  }
  if (!strcmp(name, "trim")) {
    val *s = to_str(R, v, line), *c = arg(a, 0, "chars");
    if (c && c->t == V_NONE) c = NULL;
    return py_strip(R, s, c ? need_str(R, c, line, "trim's chars") : NULL, 1, 1, line);
  }
  if (!strcmp(name, "length") || !strcmp(name, "count")) {
    if (v->t == V_STR) return vint(R, (int64_t)cp_count(v->s, v->n), line);
    if (v->t == V_LIST || v->t == V_DICT || v->t == V_NS) return vint(R, (int64_t)v->len, line);
    if (v->t == V_UNDEF) return vint(R, 0, line);
    RFAIL(R, line, "object of type %s has no len()", type_name(v));
  }
  if (!strcmp(name, "tojson")) {
    jopts o = {-1, ", ", ": ", 0};
    val *ind = arg(a, 0, "indent"), *sk = arg(a, 99, "sort_keys"), *sep = arg(a, 99, "separators");
    if (ind && ind->t != V_NONE) { o.indent = (int)as_int(R, ind, line, "tojson's indent"); o.item_sep = ","; }
    if (sk) o.sort_keys = truthy(sk);
    if (sep && sep->t == V_LIST && sep->len == 2) {
      val *x = need_str(R, sep->items[0], line, "separators"), *y = need_str(R, sep->items[1], line, "separators");
      char *xs = ralloc(R, x->n + 1, line), *ys = ralloc(R, y->n + 1, line);
      memcpy(xs, x->s, x->n); memcpy(ys, y->s, y->n);
      o.item_sep = xs; o.key_sep = ys;
    }
    for (size_t k = 0; k < a->nkw; k++)
      if (strcmp(a->kw[k], "indent") && strcmp(a->kw[k], "sort_keys") && strcmp(a->kw[k], "separators") && strcmp(a->kw[k], "ensure_ascii"))
        RFAIL(R, line, "tojson: argument '%s' is not supported", a->kw[k]);
    val *ea = arg(a, 99, "ensure_ascii");
    if (ea && truthy(ea)) RFAIL(R, line, "tojson: ensure_ascii=True is not supported");
    sb b = {0};
    json_into(R, &b, v, &o, 0, line);
    return vstr(R, b.p ? b.p : "", b.n, line);
  }
  if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "title") || !strcmp(name, "capitalize")) {
    val *s = to_str(R, v, line);
    if (name[0] == 'c') return py_case(R, py_case(R, s, 0, line), 3, line);
    return py_case(R, s, name[0] == 'u' ? 1 : name[0] == 'l' ? 0 : 2, line);
  }
  if (!strcmp(name, "default") || !strcmp(name, "d")) {
    val *d = arg(a, 0, "default_value"), *b = arg(a, 1, "boolean");
    if (!d) d = vstr(R, "", 0, line);
    if (v->t == V_UNDEF || (b && truthy(b) && !truthy(v))) return d;
    return v;
  }
  if (!strcmp(name, "items")) {
    if (v->t == V_UNDEF) return rval(R, V_LIST, line);
    if (v->t != V_DICT) RFAIL(R, line, "items: expected a mapping, got %s", type_name(v));
    val m = {.t = V_FUNC, .s = "items", .n = 5, .self = v};
    return call_method(R, &m, a, line);
  }
  if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr")) {
    val *l = iter_list(R, v, line), *out = rval(R, V_LIST, line);
    val *path = need_str(R, arg(a, 0, "attr"), line, "the attribute");
    val *tn = a->npos > 1 ? need_str(R, a->pos[1], line, "the test name") : NULL;
    argv_t ta = {0};
    if (a->npos > 2) { ta.pos = a->pos + 2; ta.npos = a->npos - 2; }
    char tname[32];
    if (tn) {
      snprintf(tname, sizeof tname, "%.*s", (int)tn->n, tn->s);
      if (!in_list(TESTS, tname, strlen(tname))) RFAIL(R, line, "test '%s' is not supported", tname);
    }
    for (size_t i = 0; i < l->len; i++) {
      val *x = attr_path(R, l->items[i], path, line);
      int r = tn ? run_test(R, tname, x, &ta, line) : truthy(x);
      if (r == (name[0] == 's')) list_push(R, out, l->items[i], line);
    }
    return out;
  }
  if (!strcmp(name, "map")) {
    val *l = iter_list(R, v, line), *out = rval(R, V_LIST, line);
    val *at = arg(a, 99, "attribute");
    if (at) {
      val *d = arg(a, 99, "default");
      for (size_t i = 0; i < l->len; i++) {
        val *x = attr_path(R, l->items[i], at, line);
        list_push(R, out, x->t == V_UNDEF && d ? d : x, line);
      }
      return out;
    }
    val *fn = need_str(R, arg(a, 0, "filter"), line, "map's filter name");
    char fname[32];
    snprintf(fname, sizeof fname, "%.*s", (int)fn->n, fn->s);
    if (!in_list(FILTERS, fname, strlen(fname))) RFAIL(R, line, "filter '%s' is not supported", fname);
    argv_t fa = {0};
    if (a->npos > 1) { fa.pos = a->pos + 1; fa.npos = a->npos - 1; }
    for (size_t i = 0; i < l->len; i++) list_push(R, out, apply_filter(R, fname, l->items[i], &fa, f, line), line);
    return out;
  }
  if (!strcmp(name, "join")) {
    val *l = iter_list(R, v, line), *sep = arg(a, 0, "d"), *at = arg(a, 1, "attribute");
    sb b = {0};
    for (size_t i = 0; i < l->len; i++) {
      if (i && sep) str_into(R, &b, sep, line);
      str_into(R, &b, at ? attr_path(R, l->items[i], at, line) : l->items[i], line);
    }
    return vstr(R, b.p ? b.p : "", b.n, line);
  }
  if (!strcmp(name, "first") || !strcmp(name, "last")) {
    val *l = iter_list(R, v, line);
    if (!l->len) return &g_undef;
    return name[0] == 'f' ? l->items[0] : l->items[l->len - 1];
  }
  if (!strcmp(name, "reverse")) {
    if (v->t == V_STR) { val k = {.t = V_INT, .i = -1}; return slice(R, v, NULL, NULL, &k, line); }
    val *l = iter_list(R, v, line), *out = rval(R, V_LIST, line);
    for (size_t i = l->len; i-- > 0;) list_push(R, out, l->items[i], line);
    return out;
  }
  if (!strcmp(name, "replace")) {
    val *s = to_str(R, v, line);
    val *x = to_str(R, arg(a, 0, "old") ? arg(a, 0, "old") : &g_undef, line), *y = to_str(R, arg(a, 1, "new") ? arg(a, 1, "new") : &g_undef, line);
    val *c = arg(a, 2, "count");
    return py_replace(R, s, x, y, c && c->t != V_NONE ? as_int(R, c, line, "count") : -1, line);
  }
  if (!strcmp(name, "string")) return to_str(R, v, line);
  if (!strcmp(name, "int") || !strcmp(name, "float")) {
    val *d = arg(a, 0, "default");
    int to_int = name[0] == 'i';
    if (v->t == V_INT || v->t == V_BOOL) return to_int ? vint(R, v->i, line) : vfloat(R, (double)v->i, line);
    if (v->t == V_FLOAT) return to_int ? vint(R, (int64_t)v->f, line) : v;
    if (v->t == V_STR) {
      char buf[64]; snprintf(buf, sizeof buf, "%.*s", (int)(v->n < 63 ? v->n : 63), v->s);
      char *e; double x = strtod(buf, &e);
      while (*e == ' ' || *e == '\t' || *e == '\n') e++;
      if (e != buf && !*e) return to_int ? vint(R, (int64_t)x, line) : vfloat(R, x, line);
    }
    return d ? d : to_int ? vint(R, 0, line) : vfloat(R, 0.0, line);
  }
  if (!strcmp(name, "list")) {
    val *l = iter_list(R, v, line), *out = rval(R, V_LIST, line);
    for (size_t i = 0; i < l->len; i++) list_push(R, out, l->items[i], line);
    return out;
  }
  if (!strcmp(name, "abs")) {
    if (!is_num(v)) RFAIL(R, line, "abs: expected a number");
    if (v->t != V_FLOAT && v->i == INT64_MIN) RFAIL(R, line, "abs: integer overflow (%lld)", (long long)v->i);
    return v->t == V_FLOAT ? vfloat(R, fabs(v->f), line) : vint(R, v->i < 0 ? -v->i : v->i, line);
  }
  if (!strcmp(name, "unique")) {
    val *l = iter_list(R, v, line), *out = rval(R, V_LIST, line);
    for (size_t i = 0; i < l->len; i++) if (!contains(R, out, l->items[i], line)) list_push(R, out, l->items[i], line);
    return out;
  }
  if (!strcmp(name, "wordcount")) { val *s = to_str(R, v, line); return vint(R, (int64_t)py_split(R, s, NULL, -1, line)->len, line); }
  if (!strcmp(name, "indent")) {
    /* jinja2: indent(width=4, first=False, blank=False); lines after the first get the indent */
    val *w = arg(a, 0, "width"), *fi = arg(a, 1, "first"), *bl = arg(a, 2, "blank");
    sb pad = {0};
    if (w && w->t == V_STR) sb_add(R, &pad, w->s, w->n, line);
    else { int64_t k = w ? as_int(R, w, line, "indent's width") : 4; for (int64_t i = 0; i < k; i++) sb_str(R, &pad, " ", line); }
    val *s = to_str(R, v, line);
    sb o = {0};
    int first = 1;
    size_t i = 0;
    for (;;) {
      const char *nl = memchr(s->s + i, '\n', s->n - i);
      size_t e = nl ? (size_t)(nl - s->s) : s->n;
      int blank = e == i;
      if ((first ? (fi && truthy(fi)) : 1) && (!blank || (bl && truthy(bl)))) sb_add(R, &o, pad.p, pad.n, line);
      sb_add(R, &o, s->s + i, e - i, line);
      if (!nl) break;
      sb_str(R, &o, "\n", line);
      i = e + 1; first = 0;
    }
    return vstr(R, o.p ? o.p : "", o.n, line);
  }
  if (!strcmp(name, "sort") || !strcmp(name, "dictsort"))
    RFAIL(R, line, "filter '%s' is not supported", name);
  RFAIL(R, line, "filter '%s' is not supported", name);
}

// ---- statements ----------------------------------------------------------------------------------------

static val *call_macro(rstate *R, val *m, argv_t *a, val *caller, int line) {
  const node *mn = m->macro;
  if (++R->depth > MAX_DEPTH) RFAIL(R, line, "macro calls nested more than %d deep", MAX_DEPTH);
  frame fr = {.parent = m->closure ? m->closure : R->root};
  for (size_t i = 0; i < mn->nkw; i++) {
    val *v = i < a->npos ? a->pos[i] : NULL;
    for (size_t k = 0; k < a->nkw; k++) if (!strcmp(a->kw[k], mn->kw[i])) v = a->kwv[k];
    if (!v) v = mn->kwv[i] ? eval(R, mn->kwv[i], &fr) : &g_undef;
    frame_set(R, &fr, mn->kw[i], v, line);
  }
  if (a->npos > mn->nkw) RFAIL(R, line, "macro '%s' takes %zu arguments, got %zu", mn->s, mn->nkw, a->npos);
  if (caller) frame_set(R, &fr, "caller", caller, line);
  /* render the body into its own output */
  char *save = R->out; size_t son = R->on, socap = R->ocap;
  R->out = NULL; R->on = R->ocap = 0;
  exec_body(R, mn->body, mn->nbody, &fr);
  val *r = vstr(R, R->out ? R->out : "", R->on, line);
  free(R->out);
  R->out = save; R->on = son; R->ocap = socap;
  R->depth--;
  return r;
}

static void assign_targets(rstate *R, frame *f, const char **names, size_t n, val *v, int line) {
  if (n == 1) { frame_set(R, f, names[0], v, line); return; }
  if (v->t != V_LIST || v->len != n) RFAIL(R, line, "cannot unpack a %s into %zu names", type_name(v), n);
  for (size_t i = 0; i < n; i++) frame_set(R, f, names[i], v->items[i], line);
}

static void exec_node(rstate *R, const node *n, frame *f) {
  switch (n->k) {
    case S_TEXT: out_add(R, n->s, n->sn, n->line); return;
    case S_OUT: {
      val *v = eval(R, n->a, f);
      sb b = {0};
      str_into(R, &b, v, n->line);
      out_add(R, b.p ? b.p : "", b.n, n->line);
      return;
    }
    case S_IF:
      if (truthy(eval(R, n->a, f))) exec_body(R, n->body, n->nbody, f);
      else exec_body(R, n->orelse, n->norelse, f);
      return;
    case S_FOR: {
      val *src = iter_list(R, eval(R, n->a, f), n->line);
      val *items = src;
      if (n->b) {                                    /* the loop filter runs before loop.* is computed */
        items = rval(R, V_LIST, n->line);
        for (size_t i = 0; i < src->len; i++) {
          frame tf = {.parent = f};
          assign_targets(R, &tf, n->kw, n->nkw, src->items[i], n->line);
          if (truthy(eval(R, n->b, &tf))) list_push(R, items, src->items[i], n->line);
        }
      }
      if (items->len == 0) { exec_body(R, n->orelse, n->norelse, f); return; }
      size_t len = items->len;
      /* one frame and one loop object for the whole loop, refilled each iteration: a loop of a million
       * iterations must not allocate per iteration */
      /* One frame and one `loop` for the whole loop, updated each iteration: loop.* is computed when
       * read, and a bare `loop` that escapes (set x = loop) is a snapshot (see E_VAR), so a loop of
       * a million iterations allocates nothing per iteration. */
      frame lf = {.parent = f};
      val *loop = rval(R, V_LOOP, n->line);
      loop->items = items->items; loop->len = len;
      for (size_t i = 0; i < len; i++) {
        if (++R->iters > MAX_LOOP_ITERS) RFAIL(R, n->line, "more than %ld loop iterations", MAX_LOOP_ITERS);
        lf.n = 0;
        loop->i = (int64_t)i;
        frame_set(R, &lf, "loop", loop, n->line);
        assign_targets(R, &lf, n->kw, n->nkw, items->items[i], n->line);
        exec_body(R, n->body, n->nbody, &lf);
        if (R->brk) { R->brk = 0; break; }
        R->cont = 0;
      }
      return;
    }
    case S_SET: {
      val *v = eval(R, n->a, f);
      if (n->nkw) {                                  /* ns.attr = v */
        val *ns = lookup(f, n->s, n->sn);
        if (!ns || ns->t != V_NS) RFAIL(R, n->line, "cannot set attribute '%s' of %s: only a namespace() can be assigned to", n->kw[0], ns ? type_name(ns) : "an undefined name");
        dict_set(R, ns, n->kw[0], strlen(n->kw[0]), v, n->line);
      } else if (n->op) assign_targets(R, f, (const char **)n->args, n->nargs, v, n->line);
      else frame_set(R, f, n->s, v, n->line);
      return;
    }
    case S_SETBLOCK: {
      char *save = R->out; size_t son = R->on, socap = R->ocap;
      R->out = NULL; R->on = R->ocap = 0;
      exec_body(R, n->body, n->nbody, f);
      val *v = vstr(R, R->out ? R->out : "", R->on, n->line);
      free(R->out);
      R->out = save; R->on = son; R->ocap = socap;
      frame_set(R, f, n->s, v, n->line);
      return;
    }
    case S_MACRO: {
      val *m = rval(R, V_MACRO, n->line);
      m->macro = n;
      frame_set(R, f, n->s, m, n->line);
      return;
    }
    case S_CALLBLOCK: {
      /* caller() renders the block body in the frame where the call block stands */
      node *cm = ralloc(R, sizeof *cm, n->line);
      cm->k = S_MACRO; cm->line = n->line; cm->s = "caller";
      cm->kw = n->kw; cm->nkw = n->nkw; cm->kwv = ralloc(R, (n->nkw + 1) * sizeof(node *), n->line);
      cm->body = n->body; cm->nbody = n->nbody;
      val *caller = rval(R, V_MACRO, n->line);
      caller->macro = cm; caller->closure = f;
      const node *call = n->a;
      val *fn = eval(R, call->a, f);
      if (fn->t != V_MACRO) RFAIL(R, n->line, "{%% call %%} needs a macro, got %s", type_name(fn));
      argv_t a = eval_args(R, call, f);
      val *r = call_macro(R, fn, &a, caller, n->line);
      out_add(R, r->s, r->n, n->line);
      return;
    }
    case S_GEN: exec_body(R, n->body, n->nbody, f); return;
    case S_BREAK: R->brk = 1; return;
    case S_CONTINUE: R->cont = 1; return;
  }
  RFAIL(R, n->line, "internal error: unknown statement");
}

static void exec_body(rstate *R, node *const *body, size_t n, frame *f) {
  for (size_t i = 0; i < n && !R->brk && !R->cont; i++) exec_node(R, body[i], f);
}

// ---- JSON in -------------------------------------------------------------------------------------------

static val *from_json(rstate *R, const cJSON *j, int depth) {
  if (depth > 512) RFAIL(R, 0, "the variables are nested too deeply");
  if (cJSON_IsNull(j) || !j) return &g_none;
  if (cJSON_IsTrue(j)) return &g_true;
  if (cJSON_IsFalse(j)) return &g_false;
  if (cJSON_IsNumber(j)) {
    double d = j->valuedouble;
    if (d == floor(d) && fabs(d) < 9007199254740992.0) return vint(R, (int64_t)d, 0);
    return vfloat(R, d, 0);
  }
  if (cJSON_IsString(j)) return vstr(R, j->valuestring, strlen(j->valuestring), 0);
  if (cJSON_IsArray(j)) {
    val *l = rval(R, V_LIST, 0);
    for (const cJSON *e = j->child; e; e = e->next) list_push(R, l, from_json(R, e, depth + 1), 0);
    return l;
  }
  val *d = rval(R, V_DICT, 0);
  for (const cJSON *e = j->child; e; e = e->next) {
    size_t kl = strlen(e->string);
    char *k = ralloc(R, kl + 1, 0);
    memcpy(k, e->string, kl);
    dict_set(R, d, k, kl, from_json(R, e, depth + 1), 0);
  }
  return d;
}

char *pc_jinja_render(const pc_jinja *t, const cJSON *vars, size_t *out_len, char *err, size_t errlen) {
  rstate Rs = {.err = err, .errlen = errlen}, *R = &Rs;
  frame root = {0};
  pthread_once(&g_ints_once, ints_init);
  R->root = &root;
  if (setjmp(R->jb)) { free(R->out); ar_free(&R->a); return NULL; }
  if (vars && !cJSON_IsObject(vars)) RFAIL(R, 0, "the variables must be a JSON object");
  if (vars)
    for (const cJSON *e = vars->child; e; e = e->next) {
      size_t kl = strlen(e->string);
      char *k = ralloc(R, kl + 1, 0);
      memcpy(k, e->string, kl);
      frame_set(R, &root, k, from_json(R, e, 0), 0);
    }
  exec_body(R, t->body, t->nbody, &root);
  out_add(R, "", 0, 0);
  char *res = malloc(R->on + 1);
  if (!res) { free(R->out); ar_free(&R->a); pc_seterr(err, errlen, "out of memory"); return NULL; }
  if (R->on) memcpy(res, R->out, R->on);
  res[R->on] = 0;
  if (out_len) *out_len = R->on;
  free(R->out);
  ar_free(&R->a);
  return res;
}

/* sdk/redact.c: capture-time redaction of personal data and secrets (rules, and what they miss, in
 * docs/redaction.md). One left-to-right pass: at each token boundary the matchers are tried in a fixed
 * order (secrets, e-mail, card, phone); the first that matches replaces its span with a placeholder and
 * the scan resumes after it. Every matcher is a small hand-written scanner over ASCII classes, and it
 * never splits a UTF-8 sequence (bytes >= 0x80 are never part of a replaced span).
 *
 * Linear, with a bound: a match may start at every boundary, and many boundaries can share one long
 * run ("a.a.a.a…" is one e-mail local part with a boundary after each dot). A scanner that walked the
 * run again from each start would be quadratic (200 kB took 25 s). So each scanner either stops after
 * a fixed number of bytes (numbers: at most 20 digits), or keeps what does not depend on the start in
 * a memo (scan_ctx) that the pass carries along: the end of the current run of a class, the verdict on
 * the domain after an '@', on the value after a key word, the next "-----END". Starts only move right,
 * so each memo entry is computed once and every byte is examined a bounded number of times
 * (tests/sdk/test_redact.c times adversarial inputs; bench/redact_bench.c measures each pattern). */
#include "redact.h"
#include "internal.h"

#include "prefcap.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// ---- byte classes ------------------------------------------------------------------------------------
static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static bool is_alpha(uint8_t c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; }
static bool is_alnum(uint8_t c) { return is_digit(c) || is_alpha(c); }
static bool is_word(uint8_t c) { return is_alnum(c) || c == '_'; }
static bool is_hex(uint8_t c) { return is_digit(c) || ((c | 32) >= 'a' && (c | 32) <= 'f'); }
static uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
/* characters of API keys and tokens: base64, base64url and the usual separators inside keys */
static bool is_tok(uint8_t c) { return is_word(c) || c == '-' || c == '+' || c == '/' || c == '=' || c == '.' || c == '~'; }

static bool starts_ci(const uint8_t *s, size_t n, size_t i, const char *lit) {
  size_t l = strlen(lit);
  if (i + l > n) return false;
  for (size_t k = 0; k < l; k++) if (lower(s[i + k]) != (uint8_t)lit[k]) return false;
  return true;
}

// ---- memos: what a scanner learns that does not depend on where the match starts ---------------

/* For every p in [lo, hi], the run of a class starting at p ends at hi (s[lo..hi) are all in the
 * class, s[hi] is not, or hi == n). */
typedef struct { size_t lo, hi; bool ok; } run_memo;

/* The value scanned for a key word: its window's byte counts, kept while the start moves right. */
typedef struct { size_t st, end; int counts[256], nonhex, up, lo, dg; bool ok; } window;

typedef struct {
  run_memo local, jwt, ident, tok;
  struct { size_t at, end; bool ok; } dom;              /* e-mail: the domain after the '@' at `at` (end 0: none) */
  struct { size_t from, at, line_end; bool ok; } pem;   /* the first "-----END" at or after `from`, and its line's end */
  struct { size_t j; size_t kmax; bool any, ok; } named; /* key word: the last start of a key word that ends by j */
  struct { size_t j, st; bool ok, found; } kv;          /* key word: where the value after the identifier ending at j starts */
  size_t tok_trim;                                      /* the tok run's end without trailing dots */
  window w;
} scan_ctx;

static size_t run_end(run_memo *m, const uint8_t *s, size_t n, size_t p, bool (*cls)(uint8_t)) {
  if (m->ok && p >= m->lo && p <= m->hi) return m->hi;
  size_t j = p;
  while (j < n && cls(s[j])) j++;
  *m = (run_memo){p, j, true};
  return j;
}

// ---- secrets -----------------------------------------------------------------------------------------------
/* Known key formats: a literal prefix, then at least min characters of the class. */
typedef struct { const char *prefix; int min; bool (*cls)(uint8_t); bool ci; } key_format;

static bool is_key_body(uint8_t c) { return is_word(c) || c == '-'; }
static bool is_upper_digit(uint8_t c) { return is_digit(c) || (c >= 'A' && c <= 'Z'); }

static const key_format formats[] = {
  { "sk-", 20, is_key_body, false },        /* OpenAI (sk-..., sk-proj-...), Anthropic (sk-ant-...) */
  { "sk_live_", 16, is_key_body, false }, { "sk_test_", 16, is_key_body, false },   /* Stripe */
  { "rk_live_", 16, is_key_body, false },
  { "AKIA", 16, is_upper_digit, false }, { "ASIA", 16, is_upper_digit, false },    /* AWS key ids */
  { "ghp_", 30, is_word, false }, { "gho_", 30, is_word, false }, { "ghu_", 30, is_word, false },
  { "ghs_", 30, is_word, false }, { "ghr_", 30, is_word, false }, { "github_pat_", 22, is_word, false },
  { "glpat-", 20, is_key_body, false },                                           /* GitLab */
  { "xoxb-", 10, is_key_body, false }, { "xoxp-", 10, is_key_body, false },       /* Slack */
  { "xoxa-", 10, is_key_body, false }, { "xoxr-", 10, is_key_body, false }, { "xoxs-", 10, is_key_body, false },
  { "AIza", 30, is_key_body, false },                                             /* Google API keys */
  { "hf_", 30, is_alnum, false },                                                 /* Hugging Face */
};

static size_t match_key_format(const uint8_t *s, size_t n, size_t i) {
  for (size_t f = 0; f < sizeof formats / sizeof *formats; f++) {
    const key_format *k = &formats[f];
    size_t pl = strlen(k->prefix);
    if (i + pl > n || memcmp(s + i, k->prefix, pl) != 0) continue;
    size_t j = i + pl;
    while (j < n && k->cls(s[j])) j++;
    if ((int)(j - i - pl) >= k->min && (j == n || !is_word(s[j]))) return j - i;
  }
  return 0;
}

/* A JWT: three base64url parts, the first two starting with "eyJ" ('{"' encoded). */
static size_t match_jwt(scan_ctx *x, const uint8_t *s, size_t n, size_t i) {
  if (i + 3 > n || memcmp(s + i, "eyJ", 3) != 0) return 0;
  /* the first part's end is the same from every start in its run; the rest is scanned once per first
   * part (a run is the second part of at most one JWT attempt and the third of at most one) */
  size_t j = run_end(&x->jwt, s, n, i, is_key_body);
  if (j - i < 10 || j >= n || s[j] != '.') return 0;
  j++;
  for (int part = 1; part < 3; part++) {
    size_t st = j;
    while (j < n && is_key_body(s[j])) j++;
    if (j - st < 10) return 0;
    if (part < 2) { if (j >= n || s[j] != '.') return 0; j++; }
  }
  return j - i;
}

/* "-----BEGIN ... PRIVATE KEY-----" up to the matching END line. */
static size_t match_pem(scan_ctx *x, const uint8_t *s, size_t n, size_t i) {
  if (i + 11 > n || memcmp(s + i, "-----BEGIN ", 11) != 0) return 0;
  size_t j = i + 11;   /* header lines of different BEGINs never overlap: each stops at a '-' */
  while (j < n && s[j] != '\n' && s[j] != '-') j++;
  if (j < 12 || j + 5 > n || memcmp(s + j, "-----", 5) != 0) return 0;
  if (j - i < 11 + 11 || memcmp(s + j - 11, "PRIVATE KEY", 11) != 0) return 0;
  size_t k = j + 5;
  /* many BEGIN lines before one END (or none) must not each search the rest of the text */
  if (!(x->pem.ok && k >= x->pem.from && k <= x->pem.at)) {
    const uint8_t *e = k + 8 <= n ? memmem(s + k, n - k, "-----END", 8) : NULL;
    size_t at = e ? (size_t)(e - s) : n, le = n;
    if (e) {
      le = at + 8;
      while (le < n && s[le] != '\n' && s[le] != '-') le++;
    }
    x->pem.from = k; x->pem.at = at; x->pem.line_end = le; x->pem.ok = true;
  }
  if (x->pem.at == n) return 0;
  size_t e = x->pem.line_end;
  return e + 5 <= n && memcmp(s + e, "-----", 5) == 0 ? e + 5 - i : 0;
}

static void window_count(window *w, uint8_t c, int d) {
  w->counts[c] += d;
  w->nonhex += d * !is_hex(c);
  w->up += d * (c >= 'A' && c <= 'Z');
  w->lo += d * (c >= 'a' && c <= 'z');
  w->dg += d * is_digit(c);
}

/* Looks random enough to be a secret: long hex, or mixed character classes with high entropy. The
 * counts are of s[st..end); values scanned from later starts in the same run share its end, so the
 * window only drops bytes from its front. */
static bool high_entropy(window *w, const uint8_t *s, size_t st, size_t end) {
  size_t len = end - st;
  if (len < 16) return false;
  if (!(w->ok && w->end == end && st >= w->st)) {
    memset(w, 0, sizeof *w);
    w->st = w->end = end;
    w->ok = true;
    for (size_t k = st; k < end; k++) window_count(w, s[k], 1);
  } else
    for (size_t k = w->st; k < st; k++) window_count(w, s[k], -1);
  w->st = st;
  if (!w->nonhex && len >= 32 && w->dg) return true;
  if (!!w->up + !!w->lo + !!w->dg < 2 || !w->dg) return false;   /* words, CamelCaseWords and snake_case are not keys */
  double h = 0;
  for (int c = 0; c < 256; c++)
    if (w->counts[c]) { double p = (double)w->counts[c] / (double)len; h -= p * log2(p); }
  return h >= 3.3;
}

/* "Bearer <token>" / "Basic <base64>": keeps the scheme word, replaces the credential. */
static size_t match_auth_scheme(const uint8_t *s, size_t n, size_t i, size_t *keep) {
  size_t w;
  if (starts_ci(s, n, i, "bearer ")) w = 7;
  else if (starts_ci(s, n, i, "basic ")) w = 6;
  else return 0;
  size_t j = i + w;
  while (j < n && s[j] == ' ') j++;
  size_t st = j;
  while (j < n && is_tok(s[j])) j++;
  while (j > st && s[j - 1] == '.') j--;   /* a sentence's full stop is not part of it */
  if (j - st < (w == 7 ? 16u : 12u)) return 0;
  *keep = st - i;
  return j - i;
}

static bool is_ident(uint8_t c) { return is_word(c) || c == '-' || c == '.'; }

/* An identifier naming a secret (api_key, token, client_secret, password, ...) then '=' or ':', then
 * a value that looks random: the value is replaced, the name kept. Quotes around either are allowed
 * (JSON, YAML, env files, headers such as "X-Api-Key: ..."). */
static size_t match_keyword_value(scan_ctx *x, const uint8_t *s, size_t n, size_t i, size_t *keep) {
  size_t j = run_end(&x->ident, s, n, i, is_ident);
  size_t il = j - i;
  if (il < 3 || il > 64) return 0;
  static const char *const words[] = { "key", "token", "secret", "passw", "pwd", "auth", "credential", "signature", NULL };
  if (!(x->named.ok && x->named.j == j)) {   /* once per identifier end: the last key word inside the 64 bytes before it */
    x->named.j = j; x->named.ok = true; x->named.any = false;
    size_t lo = j > 64 ? j - 64 : 0;
    if (lo < x->ident.lo) lo = x->ident.lo;
    for (size_t k = j; k-- > lo && !x->named.any;)
      for (int w = 0; words[w] && !x->named.any; w++)
        if (k + strlen(words[w]) <= j && starts_ci(s, j, k, words[w])) { x->named.any = true; x->named.kmax = k; }
  }
  if (!x->named.any || i > x->named.kmax) return 0;
  if (!(x->kv.ok && x->kv.j == j)) {   /* what follows the identifier does not depend on where it started */
    x->kv.j = j; x->kv.ok = true; x->kv.found = false;
    size_t v = j;
    if (v < n && (s[v] == '"' || s[v] == '\'')) v++;
    while (v < n && s[v] == ' ') v++;
    if (v < n && (s[v] == '=' || s[v] == ':')) {
      v++;
      while (v < n && s[v] == ' ') v++;
      if (v < n && (s[v] == '"' || s[v] == '\'')) v++;
      x->kv.found = true;
      x->kv.st = v;
    }
  }
  if (!x->kv.found) return 0;
  size_t st = x->kv.st;
  bool fresh = !(x->tok.ok && st >= x->tok.lo && st <= x->tok.hi);
  size_t end = run_end(&x->tok, s, n, st, is_tok);
  if (fresh) {   /* a sentence's full stop is not part of it (once per run) */
    x->tok_trim = end;
    while (x->tok_trim > x->tok.lo && s[x->tok_trim - 1] == '.') x->tok_trim--;
  }
  if (end > st) end = x->tok_trim > st ? x->tok_trim : st;
  if (!high_entropy(&x->w, s, st, end)) return 0;
  *keep = st - i;
  return end - i;
}

// ---- e-mail ----------------------------------------------------------------------------------------------
static bool is_local(uint8_t c) { return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }

/* local@label.label...tld, ASCII; the TLD is 2+ letters; a trailing dot is left out. */
static size_t email_domain(const uint8_t *s, size_t n, size_t at);

static size_t match_email(scan_ctx *x, const uint8_t *s, size_t n, size_t i) {
  size_t j = run_end(&x->local, s, n, i, is_local);   /* "a.a.a…": every start shares the run's end */
  if (j == i || j >= n || s[j] != '@' || s[i] == '.' || s[j - 1] == '.') return 0;
  if (!(x->dom.ok && x->dom.at == j)) { x->dom.at = j; x->dom.end = email_domain(s, n, j); x->dom.ok = true; }
  return x->dom.end ? x->dom.end - i : 0;
}

/* The end of a valid domain after the '@' at `at`, 0 if there is none. */
static size_t email_domain(const uint8_t *s, size_t n, size_t at) {
  size_t j = at + 1;
  size_t labels = 0, last_start = j, last_alpha = 0;
  for (;;) {
    size_t st = j;
    bool alpha = true;
    while (j < n && (is_alnum(s[j]) || s[j] == '-')) { alpha &= is_alpha(s[j]); j++; }
    if (j == st || s[st] == '-' || s[j - 1] == '-') { j = st; break; }
    labels++; last_start = st; last_alpha = alpha ? j - st : 0;
    if (j + 1 < n && s[j] == '.' && is_alnum(s[j + 1])) { j++; continue; }
    break;
  }
  (void)last_start;
  if (labels < 2 || last_alpha < 2 || j == at + 1) return 0;
  if (j < n && (is_word(s[j]) || s[j] == '@')) return 0;
  return j;
}

// ---- numbers: cards and phones ----------------------------------------------------------------------------
/* A run of digit groups separated by single separators from seps (the same one throughout when
 * same_sep). Fills the digits (at most 20), the group count and the longest/shortest group. Returns the
 * run's length in bytes (trailing separators not included). Stops once it has seen more than max_nd
 * (<= 19) digits: then nd > max_nd and the rest is unset. */
typedef struct { char d[24]; int nd, groups, min_group, max_group, first_group; uint8_t sep; } digit_run;

static size_t scan_groups(const uint8_t *s, size_t n, size_t i, const char *seps, bool same_sep, int max_nd, digit_run *r) {
  memset(r, 0, sizeof *r);
  r->min_group = 99;
  size_t j = i, end = i;
  for (;;) {
    size_t st = j;
    /* past max_nd digits the caller refuses the number: stop there ("2 2 2 2 …" has a start at every digit) */
    while (j < n && is_digit(s[j]) && r->nd <= max_nd) { if (r->nd < 20) r->d[r->nd] = (char)s[j]; r->nd++; j++; }
    int g = (int)(j - st);
    if (!g || r->nd > max_nd) break;
    if (!r->groups) r->first_group = g;
    r->groups++;
    if (g < r->min_group) r->min_group = g;
    if (g > r->max_group) r->max_group = g;
    end = j;
    if (j + 1 < n && s[j] && strchr(seps, s[j]) && is_digit(s[j + 1])) {
      if (same_sep && r->sep && s[j] != r->sep) break;
      r->sep = s[j];
      j++;
      continue;
    }
    break;
  }
  return end - i;
}

/* The character after a number must not continue it: no digit, letter, or ".5"/",5"/"-5"-style tail. */
static bool number_ends(const uint8_t *s, size_t n, size_t j) {
  if (j >= n) return true;
  if (is_word(s[j])) return false;
  if ((s[j] == '.' || s[j] == ',' || s[j] == '-' || s[j] == '/' || s[j] == ':') && j + 1 < n && is_digit(s[j + 1])) return false;
  return true;
}

static bool luhn(const char *d, int nd) {
  int sum = 0;
  for (int k = 0; k < nd; k++) {
    int v = d[nd - 1 - k] - '0';
    if (k & 1) { v *= 2; if (v > 9) v -= 9; }
    sum += v;
  }
  return sum % 10 == 0;
}

/* 13-19 digits, first digit 2-6 (the card networks' ranges), in groups of 3+ separated by one space or
 * dash, Luhn-valid. */
static size_t match_card(const uint8_t *s, size_t n, size_t i) {
  if (s[i] < '2' || s[i] > '6') return 0;
  digit_run r;
  size_t len = scan_groups(s, n, i, " -", true, 19, &r);
  if (r.nd < 13 || r.nd > 19 || (r.groups > 1 && r.min_group < 3) || !number_ends(s, n, i + len)) return 0;
  return luhn(r.d, r.nd) ? len : 0;
}

/* +CC then groups separated by space, dash, dot or parentheses: 8-15 digits (E.164). */
static size_t match_intl_phone(const uint8_t *s, size_t n, size_t i) {
  if (s[i] != '+' || i + 1 >= n || s[i + 1] < '1' || s[i + 1] > '9') return 0;
  size_t j = i + 1, end = j;
  int nd = 0, paren = 0;
  while (j < n) {
    if (is_digit(s[j])) { if (++nd > 15) return 0; j++; end = j; continue; }
    if (s[j] == '(' && !paren && j + 1 < n && is_digit(s[j + 1])) { paren = 1; j++; continue; }
    if (s[j] == ')' && paren == 1) { paren = 2; j++; if (j < n && s[j] == ' ') j++; continue; }
    if ((s[j] == ' ' || s[j] == '-' || s[j] == '.') && j + 1 < n && (is_digit(s[j + 1]) || (s[j + 1] == '(' && !paren))) { j++; continue; }
    break;
  }
  if (paren == 1 || nd < 8 || nd > 15 || !number_ends(s, n, end)) return 0;
  return end - i;
}

/* North American: [1 sep] (NXX) NXX-XXXX or NXX-NXX-XXXX with '-', '.' or ' ' (area and exchange
 * codes start with 2-9, as NANP assigns them). */
static size_t match_nanp(const uint8_t *s, size_t n, size_t i) {
  size_t j = i;
  if (j + 1 < n && s[j] == '1' && (s[j + 1] == '-' || s[j + 1] == ' ' || s[j + 1] == '.')) j += 2;
  uint8_t sep = 0;
  if (j < n && s[j] == '(') {
    if (j + 5 > n || !is_digit(s[j + 1]) || !is_digit(s[j + 2]) || !is_digit(s[j + 3]) || s[j + 4] != ')') return 0;
    if (s[j + 1] < '2') return 0;
    j += 5;
    if (j < n && (s[j] == ' ' || s[j] == '-')) j++;
  } else {
    if (j + 4 > n || !is_digit(s[j]) || !is_digit(s[j + 1]) || !is_digit(s[j + 2]) || s[j] < '2') return 0;
    sep = s[j + 3];
    if (sep != '-' && sep != '.' && sep != ' ') return 0;
    if (j > i && s[i + 1] != sep) return 0;   /* "1-555 123.4567": mixed, not a number format */
    j += 4;
  }
  if (j + 8 > n || !is_digit(s[j]) || !is_digit(s[j + 1]) || !is_digit(s[j + 2]) || s[j] < '2') return 0;
  uint8_t sep2 = s[j + 3];
  if (sep2 != '-' && sep2 != '.' && sep2 != ' ') return 0;
  if (sep && sep2 != sep) return 0;
  j += 4;
  for (int k = 0; k < 4; k++) if (!is_digit(s[j + k])) return 0;
  j += 4;
  return number_ends(s, n, j) ? j - i : 0;
}

/* National with a trunk 0: "020 7946 0958", "07700 900123", "01 23 45 67 89", "(030) 1234567",
 * "0151-12345678": 2-5 digits starting with 0 (optionally in parentheses), then groups of 2-8 digits
 * separated by one space or dash, 9-12 digits in all. Dots are not accepted ("0.123456789" is a
 * decimal). */
static size_t match_trunk_phone(const uint8_t *s, size_t n, size_t i) {
  size_t j = i;
  bool paren = s[j] == '(';
  if (paren) j++;
  if (j + 1 >= n || s[j] != '0') return 0;
  size_t st = j;
  while (j < n && is_digit(s[j])) j++;
  size_t g1 = j - st;
  if (g1 < 2 || g1 > 5 + (paren ? 0 : 8)) return 0;
  if (paren) { if (j >= n || s[j] != ')') return 0; j++; }
  if (j >= n || (s[j] != ' ' && s[j] != '-')) return 0;
  if (paren || g1 <= 5) j++; else return 0;
  digit_run r;
  size_t len = scan_groups(s, n, j, " -", true, 12, &r);
  if (!len || r.min_group < 2 || r.max_group > 8) return 0;
  int total = (int)g1 + r.nd;
  if (total < 9 || total > 12 || !number_ends(s, n, j + len)) return 0;
  return j + len - i;
}

/* After a phone word ("phone", "tel", "call", "mobile", ...): any 7-15 digit number in groups separated
 * by space, dash, dot, slash or parentheses. */
static size_t match_context_phone(const uint8_t *s, size_t n, size_t i) {
  size_t j = i, end = i;
  int nd = 0, seps = 0;   /* at most 15 digits, and 3 separators in a row ("((((" is no number) */
  while (j < n) {
    if (is_digit(s[j])) { if (++nd > 15) return 0; seps = 0; j++; end = j; continue; }
    if ((s[j] == ' ' || s[j] == '-' || s[j] == '.' || s[j] == '/' || s[j] == '(' || s[j] == ')') && j + 1 < n &&
        (is_digit(s[j + 1]) || s[j + 1] == '(' || (s[j] == ')' && s[j + 1] == ' ')) && ++seps <= 3) { j++; continue; }
    break;
  }
  if (nd < 7 || nd > 15 || !number_ends(s, n, end)) return 0;
  return end - i;
}

static bool phone_word(const uint8_t *s, size_t n, size_t i, size_t len) {
  static const char *const words[] = { "phone", "tel", "telephone", "mobile", "cell", "call", "fax", "whatsapp",
                                       "sms", "handy", "telefono", "telefon", NULL };
  for (int w = 0; words[w]; w++)
    if (strlen(words[w]) == len && starts_ci(s, n, i, words[w])) return true;
  return false;
}

// ---- output -------------------------------------------------------------------------------------------------
// ---- the pass -------------------------------------------------------------------------------------------------
int prefcap__redact(const char *in, size_t len, char **out, size_t *out_len) {
  if (!out || !out_len || (!in && len)) return PREFCAP_EINVAL;
  *out = NULL; *out_len = 0;
  prefcap__buf b = {0};
  prefcap__buf_reserve(&b, len + len / 8 + 32);   /* placeholders rarely grow the text by much */
  if (b.oom) return PREFCAP_ENOMEM;
  const uint8_t *s = (const uint8_t *)in;
  scan_ctx x;
  memset(&x, 0, sizeof x);
  size_t phone_ctx_until = 0;   /* a phone word was seen: numbers up to here may be phones */
  size_t i = 0;
  while (i < len && !b.oom) {
    uint8_t c = s[i];
    bool boundary = i == 0 || !is_word(s[i - 1]);
    if (boundary && (is_alnum(c) || c == '+' || c == '(' || c == '-' || c == '_')) {
      size_t m, keep = 0;
      const char *ph = NULL;
      if ((m = match_pem(&x, s, len, i))) ph = "[API_KEY]";
      else if ((m = match_key_format(s, len, i)) || (m = match_jwt(&x, s, len, i))) ph = "[API_KEY]";
      else if ((m = match_auth_scheme(s, len, i, &keep))) ph = "[API_KEY]";
      else if ((m = match_email(&x, s, len, i))) ph = "[EMAIL]";
      else if ((m = match_keyword_value(&x, s, len, i, &keep))) ph = "[API_KEY]";
      else if (is_digit(c) && (m = match_card(s, len, i))) ph = "[CARD]";
      else if ((c == '+' && (i == 0 || !is_digit(s[i - 1])) && (m = match_intl_phone(s, len, i))) ||
               ((is_digit(c) || c == '(') && (m = match_nanp(s, len, i))) ||
               ((c == '0' || c == '(') && (m = match_trunk_phone(s, len, i))) ||
               (i < phone_ctx_until && (is_digit(c) || c == '(') && (m = match_context_phone(s, len, i))))
        ph = "[PHONE]";
      if (ph) {
        prefcap__buf_putn(&b, (const char *)s + i, keep);
        prefcap__buf_putn(&b, (const char *)ph, strlen(ph));
        i += m;
        continue;
      }
      if (is_alnum(c)) {   /* no match here: copy the whole word (no match can start inside it) */
        size_t j = i;
        while (j < len && is_word(s[j])) j++;
        if (is_alpha(c) && phone_word(s, len, i, j - i)) phone_ctx_until = j + 24;
        prefcap__buf_putn(&b, (const char *)s + i, j - i);
        i = j;
        continue;
      }
    }
    prefcap__buf_putn(&b, (const char *)s + i, 1);
    i++;
  }
  if (b.oom) { free(b.p); return PREFCAP_ENOMEM; }
  *out = b.p;
  *out_len = b.len;
  return PREFCAP_OK;
}

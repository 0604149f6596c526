/* trainer/text/tokenizer.c: BPE from a Hugging Face tokenizer.json, encoding as `tokenizers` (Rust) does.
 *
 * The pipeline of HF's TokenizerImpl::encode, step by step:
 *   1. added tokens whose `normalized` is false are cut out of the raw text (leftmost-longest, as the
 *      Rust crate's Aho-Corasick does), honouring single_word / lstrip / rstrip;
 *   2. each remaining section goes through the normalizers (Unicode forms through ICU, Prepend,
 *      Replace, Strip, Lowercase), then the `normalized` added tokens are cut out of it;
 *   3. the pre-tokenizers split each piece (Split with the file's regex through PCRE2 + JIT; ByteLevel's
 *      optional prefix space and GPT-2 regex; Metaspace's ▁; Digits; Punctuation);
 *   4. each word goes through BPE. Byte-level vocabularies: we work on raw bytes, not on ByteLevel's
 *      printable alphabet: the map byte <-> char is a bijection, so merging bytes is merging those
 *      chars; vocabulary strings are mapped back to bytes once, at load. SentencePiece-style ones (no
 *      ByteLevel step): one symbol per char, <0xNN> byte tokens or unk for chars outside the vocabulary;
 *   5. the post-processor adds template tokens (BOS) when asked.
 * Decoding runs the decoder steps over the list of token strings, as Rust's decode_chain does.
 * Regexes are written for Oniguruma (the Rust crate's engine); translate_regex() rewrites the few
 * escapes whose meaning differs in PCRE2 (\s, \h, \w, \b and `^`/`$` being line anchors).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tokenizer.h"
#include "util/err.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

// ---- errors and small helpers -----------------------------------------------------------------------


/* A growable array of int32 (ids), used for per-call output. */
typedef struct { int32_t *v; size_t n, cap; } ivec;

static int ivec_push(ivec *a, int32_t x) {
  if (a->n == a->cap) {
    size_t nc = a->cap ? a->cap * 2 : 64;
    int32_t *nv = realloc(a->v, nc * sizeof *nv);
    if (!nv) return -1;
    a->v = nv; a->cap = nc;
  }
  a->v[a->n++] = x;
  return 0;
}

static int ivec_append(ivec *a, const int32_t *x, size_t n) {
  for (size_t i = 0; i < n; i++) if (ivec_push(a, x[i])) return -1;
  return 0;
}

/* A growable byte buffer. */
typedef struct { char *p; size_t n, cap; } bbuf;

static int bbuf_reserve(bbuf *b, size_t extra) {
  if (b->n + extra <= b->cap) return 0;
  size_t nc = b->cap ? b->cap : 256;
  while (nc < b->n + extra) nc *= 2;
  char *np = realloc(b->p, nc);
  if (!np) return -1;
  b->p = np; b->cap = nc;
  return 0;
}

static int bbuf_add(bbuf *b, const void *s, size_t n) {
  if (bbuf_reserve(b, n)) return -1;
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  return 0;
}

static uint64_t hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 1469598103934665603ULL;              /* FNV-1a, then a final mix for the low bits */
  for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ULL; }
  h ^= h >> 29; h *= 0xbf58476d1ce4e5b9ULL; h ^= h >> 32;
  return h;
}

static uint64_t hash_u64(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return x;
}

/* Length of the UTF-8 sequence starting with lead byte c (input already validated). */
static size_t utf8_len(unsigned char c) {
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Returns the offset of the first invalid byte, or len when s is valid UTF-8 (no surrogates, <= U+10FFFF). */
static size_t utf8_check(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    if (c < 0x80) { i++; continue; }
    size_t n; uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; min = 0x10000; }
    else return i;
    if (i + n > len) return i;
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n;
  }
  return len;
}

/* Decodes one code point from valid UTF-8 at s; *n gets its length. */
static uint32_t utf8_decode(const unsigned char *s, size_t *n) {
  size_t l = utf8_len(s[0]);
  *n = l;
  if (l == 1) return s[0];
  uint32_t cp = s[0] & (l == 2 ? 0x1F : l == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < l; k++) cp = (cp << 6) | (s[k] & 0x3F);
  return cp;
}

/* Appends data as UTF-8 with each maximal invalid subsequence replaced by one U+FFFD: the rule both
 * Rust's String::from_utf8_lossy and the WHATWG decoder (tokenizers.js) follow. */
static int utf8_lossy_append(bbuf *out, const unsigned char *s, size_t len) {
  static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    if (c < 0x80) { if (bbuf_add(out, s + i, 1)) return -1; i++; continue; }
    size_t need; unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else { if (bbuf_add(out, fffd, 3)) return -1; i++; continue; }
    size_t k = 1;
    for (; k <= need && i + k < len; k++) {
      unsigned char d = s[i + k];
      if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) break;
    }
    if (k == need + 1) { if (bbuf_add(out, s + i, need + 1)) return -1; i += need + 1; }
    else { if (bbuf_add(out, fffd, 3)) return -1; i += k; }
  }
  return 0;
}

// ---- hash maps: byte string -> id, merge pair -> (rank, id) -----------------------------------------

typedef struct { const char *k; uint32_t n; int32_t v; } smap_ent;
typedef struct { smap_ent *e; size_t cap, count; } smap;

static int smap_init(smap *m, size_t expect) {
  size_t cap = 16;
  while (cap < expect * 2 + 16) cap *= 2;
  m->e = calloc(cap, sizeof *m->e);
  m->cap = cap; m->count = 0;
  return m->e ? 0 : -1;
}

static int32_t smap_get(const smap *m, const void *k, size_t n) {
  if (!m->e) return -1;
  size_t mask = m->cap - 1, i = hash_bytes(k, n) & mask;
  for (;;) {
    const smap_ent *e = &m->e[i];
    if (!e->k) return -1;
    if (e->n == n && memcmp(e->k, k, n) == 0) return e->v;
    i = (i + 1) & mask;
  }
}

/* Inserts or overwrites; the key must outlive the map (it points into the tokenizer's arena). */
static int smap_put(smap *m, const char *k, size_t n, int32_t v) {
  if ((m->count + 1) * 2 > m->cap) {
    smap old = *m;
    if (smap_init(m, old.count + 1)) { *m = old; return -1; }
    for (size_t i = 0; i < old.cap; i++) if (old.e[i].k) smap_put(m, old.e[i].k, old.e[i].n, old.e[i].v);
    free(old.e);
  }
  size_t mask = m->cap - 1, i = hash_bytes(k, n) & mask;
  for (;;) {
    smap_ent *e = &m->e[i];
    if (!e->k) { e->k = k; e->n = (uint32_t)n; e->v = v; m->count++; return 0; }
    if (e->n == n && memcmp(e->k, k, n) == 0) { e->v = v; return 0; }
    i = (i + 1) & mask;
  }
}

typedef struct { uint64_t key; uint32_t rank; int32_t id; } pmap_ent;
typedef struct { pmap_ent *e; size_t cap; } pmap;
#define PMAP_EMPTY UINT64_MAX

static int pmap_init(pmap *m, size_t expect) {
  size_t cap = 16;
  while (cap < expect * 2 + 16) cap *= 2;
  m->e = malloc(cap * sizeof *m->e);
  if (!m->e) return -1;
  for (size_t i = 0; i < cap; i++) m->e[i].key = PMAP_EMPTY;
  m->cap = cap;
  return 0;
}

static void pmap_put(pmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  size_t mask = m->cap - 1, i = hash_u64(key) & mask;
  while (m->e[i].key != PMAP_EMPTY && m->e[i].key != key) i = (i + 1) & mask;
  m->e[i].key = key; m->e[i].rank = rank; m->e[i].id = id;   /* a later duplicate wins, as in HF */
}

static const pmap_ent *pmap_get(const pmap *m, int32_t a, int32_t b) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  size_t mask = m->cap - 1, i = hash_u64(key) & mask;
  for (;;) {
    const pmap_ent *e = &m->e[i];
    if (e->key == key) return e;
    if (e->key == PMAP_EMPTY) return NULL;
    i = (i + 1) & mask;
  }
}

// ---- arena: stable storage for every string the tokenizer keeps -------------------------------------

typedef struct arena_blk { struct arena_blk *next; size_t used, cap; char data[]; } arena_blk;

/* 8-byte aligned, so id arrays can live there too. Blocks double from 16 KiB to 1 MiB: a real
 * vocabulary's megabytes still take few blocks, and a small tokenizer.json no longer maps (and on
 * free unmaps) a whole MiB, which was most of fuzz_tok_load's time under ASan. */
#define ARENA_FIRST ((size_t)16 << 10)
#define ARENA_MAX ((size_t)1 << 20)
static char *arena_alloc(arena_blk **a, size_t n) {
  if (*a) (*a)->used = ((*a)->used + 7) & ~(size_t)7;
  if (!*a || (*a)->used + n > (*a)->cap) {
    size_t grow = *a && (*a)->cap < ARENA_MAX / 2 ? (*a)->cap * 2 : *a ? ARENA_MAX : ARENA_FIRST;
    size_t cap = n > grow ? n : grow;
    arena_blk *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = *a; b->used = 0; b->cap = cap; *a = b;
  }
  char *p = (*a)->data + (*a)->used;
  (*a)->used += n;
  return p;
}

static char *arena_dup(arena_blk **a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

// ---- the tokenizer ----------------------------------------------------------------------------------

enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
enum { NORM_UNICODE, NORM_LOWER, NORM_STRIP, NORM_PREPEND, NORM_REPLACE };
enum { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE };
enum { BEH_REMOVED, BEH_ISOLATED, BEH_MERGED_PREV, BEH_MERGED_NEXT, BEH_CONTIGUOUS };
enum { POST_BYTELEVEL, POST_TEMPLATE };

typedef struct {
  int kind;
  pcre2_code *re;            /* Split: the file's pattern; ByteLevel with use_regex: GPT-2's */
  int behavior, invert;
  int add_prefix_space;
  char repl[8]; size_t repl_len;   /* Metaspace: the replacement char (UTF-8) */
  int prepend_scheme;              /* Metaspace: PREPEND_* */
} pre_step;

/* One normalizer. NORM_UNICODE: nf with `stable_below` (bytes under it are unchanged by the form);
 * NORM_STRIP: left/right; NORM_PREPEND: a; NORM_REPLACE: pattern a (literal) or re, content b. */
typedef struct {
  int kind;
  const UNormalizer2 *nf; unsigned char stable_below;
  int left, right;
  char *a; size_t alen; char *b; size_t blen;
  pcre2_code *re;
} norm_step;

/* One decoder. DEC_REPLACE: a -> b; DEC_STRIP: cp removed up to start/stop times; DEC_METASPACE:
 * cp -> ' ', dropped in the first token when prepend (Rust's decoder, not tokenizers.js's: see decode). */
typedef struct {
  int kind;
  char *a; size_t alen; char *b; size_t blen;
  uint32_t cp; int start, stop, prepend;
} dec_step;

typedef struct { int is_seq; int32_t *ids; size_t n; } tmpl_item;   /* a run of special ids, or "$A" */
typedef struct { int kind; tmpl_item *items; size_t n_items; } post_step;

typedef struct {
  const char *content; size_t len;    /* what is matched in text (normalized content when normalized) */
  int32_t id;
  int single_word, lstrip, rstrip, normalized, special;
} added_tok;

/* Candidates by first byte, longest first, so the first hit at a position is the longest one. With
 * many candidates for one byte (Gemma's 6,000 "<unusedN>" tokens), each position tries only the
 * distinct lengths among them, looking the substring up in `map`. */
typedef struct { int32_t *idx[256]; size_t n[256]; size_t count; uint32_t *lens[256]; size_t nlens[256]; smap map; } added_matcher;

/* Word cache: shards of a small open-addressing table, each behind its own mutex. A shard starts at
 * CACHE_SLOTS_MIN slots and doubles up to CACHE_SLOTS, so a tokenizer that encodes a few texts does
 * not allocate (and zero) 4 MiB of tables; a full shard at its largest is emptied (the cache only
 * ever saves work, so forgetting is harmless). */
#define CACHE_SHARDS 64
#define CACHE_SLOTS 4096             /* per shard, at most */
#define CACHE_SLOTS_MIN 64
#define CACHE_MAX_WORD 256           /* longer words are not cached (HF: MAX_LENGTH 256) */
#define TOK_ID_MARGIN 65536.0        /* unused ids tolerated beyond the count of tokens */
typedef struct { uint64_t h; char *blob; } cache_ent;   /* blob: uint32 klen, uint32 nids, key, ids */
typedef struct { pthread_mutex_t mu; cache_ent *e; size_t count, cap; } cache_shard;   /* cap: a power of 2 */

struct pc_tokenizer {
  char *path;
  arena_blk *arena;
  size_t n_ids;                 /* max id + 1 */
  const char **id_str;          /* token text per id (NULL for a hole) */
  const unsigned char **id_dec; /* bytes the ByteLevel decoder gives for the token */
  uint32_t *id_dec_len;
  unsigned char *id_special;    /* 1: added token marked special */
  smap vocab_str;               /* model vocabulary, token text -> id */
  smap vocab_bytes;             /* model vocabulary as raw bytes -> id (byte-level tokens only) */
  smap added_str;               /* added tokens, content -> id */
  int32_t byte_id[256];
  pmap merges;
  int32_t unk_id;
  int fuse_unk, ignore_merges;
  int byte_level;               /* vocabulary in ByteLevel's alphabet: BPE over bytes, else over chars */
  int byte_fallback;            /* chars outside the vocabulary become <0xNN> tokens */
  int32_t fallback_id[256];     /* ids of <0x00>..<0xFF>, -1 when absent */
  added_tok *added; size_t n_added;
  added_matcher raw_match, norm_match;
  norm_step *norm; size_t n_norm;  /* the normalizer pipeline (empty: none) */
  pre_step *pre; size_t n_pre;
  uint32_t max_ovec;
  post_step *post; size_t n_post;
  dec_step *dec; size_t n_dec;    /* the decoder pipeline (empty: tokens joined by spaces) */
  cache_shard cache[CACHE_SHARDS];
};

// ---- byte-level alphabet (GPT-2's bytes_to_unicode) -------------------------------------------------

static uint32_t g_byte2cp[256];
static int16_t g_cp2byte[0x144];
static pthread_once_t g_bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void) {
  for (int i = 0; i < 0x144; i++) g_cp2byte[i] = -1;
  int n = 0;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    uint32_t cp = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    g_byte2cp[b] = cp;
    g_cp2byte[cp] = (int16_t)b;
  }
}

/* Maps a ByteLevel token text to its raw bytes; -1 when a char is outside the alphabet. */
static long bl_to_bytes(const char *s, size_t n, unsigned char *out) {
  size_t i = 0, o = 0;
  while (i < n) {
    size_t l = utf8_len((unsigned char)s[i]);
    if (l > n - i) return -1;                      /* a truncated sequence: never decode past the end */
    uint32_t cp = utf8_decode((const unsigned char *)s + i, &l);
    if (cp >= 0x144 || g_cp2byte[cp] < 0) return -1;
    out[o++] = (unsigned char)g_cp2byte[cp];
    i += l;
  }
  return (long)o;
}

// ---- regex: Oniguruma syntax to PCRE2 ---------------------------------------------------------------

/* Oniguruma's \s is Unicode White_Space. PCRE2 10.42's \s adds U+180E, so spell the set out. */
#define WS_SET "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* Oniguruma's \w: Alphabetic, marks, decimal digits, connector punctuation. */
#define WORD_SET "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}"
#define WORD_CLS "[" WORD_SET "]"

/* Rewrites the escapes whose meaning differs; everything else (\p{..}, (?i:..), look-around,
 * quantifiers) reads the same in both engines. NULL with err for what cannot be rewritten. */
static char *translate_regex(const char *re, char *err, size_t errlen) {
  bbuf o = {0};
  int in_class = 0;
  size_t n = strlen(re);
  for (size_t i = 0; i < n; i++) {
    char c = re[i];
    const char *add = NULL;
    if (c == '\\' && i + 1 < n) {
      char d = re[i + 1];
      if (d == 's') add = in_class ? WS_SET : "[" WS_SET "]";
      else if (d == 'S' && !in_class) add = "[^" WS_SET "]";
      else if (d == 'h') add = in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
      else if (d == 'H' && !in_class) add = "[^0-9a-fA-F]";
      else if (d == 'w') add = in_class ? WORD_SET : WORD_CLS;
      else if (d == 'W' && !in_class) add = "[^" WORD_SET "]";
      else if (d == 'b' && !in_class) add = "(?:(?<!" WORD_CLS ")(?=" WORD_CLS ")|(?<=" WORD_CLS ")(?!" WORD_CLS "))";
      else if (d == 'B' && !in_class) add = "(?:(?<!" WORD_CLS ")(?!" WORD_CLS ")|(?<=" WORD_CLS ")(?=" WORD_CLS "))";
      else if ((d == 'S' || d == 'H' || d == 'W') && in_class) {
        pc_seterr(err, errlen, "regex escape \\%c inside a character class is not supported", d);
        free(o.p);
        return NULL;
      }
      if (add) { if (bbuf_add(&o, add, strlen(add))) goto oom; i++; continue; }
      if (bbuf_add(&o, re + i, 2)) goto oom;      /* any other escape is copied whole */
      i++;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = 1;
      if (bbuf_add(&o, "[", 1)) goto oom;
      /* a ']' right after '[' or '[^' is a literal in both engines */
      if (i + 1 < n && re[i + 1] == '^') { if (bbuf_add(&o, "^", 1)) goto oom; i++; }
      if (i + 1 < n && re[i + 1] == ']') { if (bbuf_add(&o, "]", 1)) goto oom; i++; }
      continue;
    }
    if (in_class && c == '[') {
      if (i + 1 < n && re[i + 1] == ':') {             /* POSIX class [:alpha:] is copied as is */
        const char *end = strstr(re + i + 2, ":]");
        if (end) { size_t l = (size_t)(end + 2 - (re + i)); if (bbuf_add(&o, re + i, l)) goto oom; i += l - 1; continue; }
      }
      pc_seterr(err, errlen, "nested character classes in a regex are not supported");
      free(o.p);
      return NULL;
    }
    if (in_class && c == ']') in_class = 0;
    if (bbuf_add(&o, &c, 1)) goto oom;
  }
  if (bbuf_add(&o, "", 1)) goto oom;
  return o.p;
oom:
  free(o.p);
  pc_seterr(err, errlen, "out of memory");
  return NULL;
}

static pcre2_code *compile_regex(const char *onig, int literal, char *err, size_t errlen) {
  char *pat;
  if (literal) {                                      /* a {"String": ...} pattern: quote it */
    bbuf b = {0};
    for (const char *p = onig; *p; p++) {
      if (strchr("\\^$.|?*+()[]{}", *p) && bbuf_add(&b, "\\", 1)) { free(b.p); return NULL; }
      if (bbuf_add(&b, p, 1)) { free(b.p); return NULL; }
    }
    if (bbuf_add(&b, "", 1)) { free(b.p); return NULL; }
    pat = b.p;
  } else {
    pat = translate_regex(onig, err, errlen);
    if (!pat) return NULL;
  }
  int ec; PCRE2_SIZE eo;
  /* MULTILINE: in Oniguruma ^ and $ are always line anchors. */
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &ec, &eo, NULL);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(ec, msg, sizeof msg);
    pc_seterr(err, errlen, "regex /%s/ does not compile (%s at offset %zu)", onig, (char *)msg, (size_t)eo);
    free(pat);
    return NULL;
  }
  free(pat);
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);           /* best effort: the interpreter gives the same answers */
  return re;
}

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// ---- loading ----------------------------------------------------------------------------------------

typedef struct { pc_tokenizer *t; const char *path; char *err; size_t errlen; } loadctx;

#define LERR(...) do { char m_[400]; snprintf(m_, sizeof m_, __VA_ARGS__); \
  pc_seterr(L->err, L->errlen, "%s: %s", L->path, m_); return -1; } while (0)

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Reads a boolean field: 1/0, or dflt when absent or null. */
static int jbool(const cJSON *o, const char *k, int dflt) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  if (cJSON_IsTrue(v)) return 1;
  if (cJSON_IsFalse(v)) return 0;
  return dflt;
}

static int set_id_str(loadctx *L, int32_t id, const char *s, size_t n) {
  pc_tokenizer *t = L->t;
  if (id < 0 || (size_t)id >= t->n_ids) LERR("token id %d out of range", id);
  /* Token texts are matched and decoded as UTF-8 (HF's JSON reader refuses anything else). */
  size_t bad = utf8_check((const unsigned char *)s, n);
  if (bad != n) LERR("token %d: its text is not valid UTF-8 (byte %zu)", id, bad);
  char *p = arena_dup(&t->arena, s, n);
  if (!p) LERR("out of memory");
  t->id_str[id] = p;
  /* What the ByteLevel decoder gives: the bytes behind each char, or the text itself when a char is
   * outside the alphabet (Rust's ByteLevel::decode_chain falls back to the token's own UTF-8). */
  unsigned char *d = (unsigned char *)arena_alloc(&t->arena, n + 1);
  if (!d) LERR("out of memory");
  long bl = bl_to_bytes(s, n, d);
  if (bl < 0) { memcpy(d, s, n); bl = (long)n; }
  t->id_dec[id] = d;
  t->id_dec_len[id] = (uint32_t)bl;
  return 0;
}

static int load_model(loadctx *L, const cJSON *model, const cJSON *added) {
  pc_tokenizer *t = L->t;
  if (!cJSON_IsObject(model)) LERR("field \"model\" is missing or not an object");
  const char *type = jstr(model, "type");
  if (!type) {                                   /* old files omit the type of a BPE model */
    if (!cJSON_GetObjectItemCaseSensitive(model, "merges")) LERR("field \"model.type\" is missing");
    type = "BPE";
  }
  if (strcmp(type, "BPE") != 0)
    LERR("model type \"%s\" is not supported: only BPE models (byte-level, or SentencePiece-style with "
         "byte fallback) can be read; Unigram, WordPiece and WordLevel tokenizers are not used by the causal "
         "LM families this trainer loads", type);
  const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
  if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0.0 && dropout->valuedouble != 1.0)
    LERR("model.dropout %g is not supported (training-time randomness)", dropout->valuedouble);
  const char *cont = jstr(model, "continuing_subword_prefix");
  if (cont && *cont) LERR("model.continuing_subword_prefix \"%s\" is not supported", cont);
  const char *eow = jstr(model, "end_of_word_suffix");
  if (eow && *eow) LERR("model.end_of_word_suffix \"%s\" is not supported", eow);
  t->byte_fallback = jbool(model, "byte_fallback", 0);
  t->ignore_merges = jbool(model, "ignore_merges", 0);
  t->fuse_unk = jbool(model, "fuse_unk", 0);

  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  if (!cJSON_IsObject(vocab)) LERR("field \"model.vocab\" is missing or not an object");
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  if (!cJSON_IsArray(merges)) LERR("field \"model.merges\" is missing or not an array");

  /* ids: max over the vocabulary and the added tokens */
  int64_t maxid = -1; size_t nv = 0;
  for (const cJSON *e = vocab->child; e; e = e->next, nv++) {
    if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 0x7FFFFFFE || e->valuedouble != (double)e->valueint)
      LERR("model.vocab[\"%s\"] is not a valid token id", e->string);
    if (e->valueint > maxid) maxid = e->valueint;
  }
  /* Ids index dense tables, so they are bounded by the number of tokens plus a margin for unused ids
   * (real files leave none or a few): a stray 2^31 - 1 must be an error, not a multi-GiB calloc. */
  size_t n_add = cJSON_IsArray(added) ? (size_t)cJSON_GetArraySize(added) : 0;
  double id_limit = (double)nv + (double)n_add + TOK_ID_MARGIN;
  if (maxid >= id_limit)
    LERR("model.vocab has token id %lld but only %zu entries (ids must stay below %.0f)", (long long)maxid, nv, id_limit);
  size_t i = 0;
  if (cJSON_IsArray(added))
    for (const cJSON *a = added->child; a; a = a->next, i++) {
      const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
      if (!cJSON_IsNumber(id)) continue;          /* load_added names it */
      if (id->valuedouble < 0 || id->valuedouble >= id_limit || id->valuedouble != floor(id->valuedouble))
        LERR("added_tokens[%zu].id %.17g is not a token id below %.0f (the vocabulary has %zu entries, "
             "%zu added tokens)", i, id->valuedouble, id_limit, nv, n_add);
      if (id->valueint > maxid) maxid = id->valueint;
    }
  t->n_ids = (size_t)(maxid + 1);
  t->id_str = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->id_str);
  t->id_dec = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->id_dec);
  t->id_dec_len = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->id_dec_len);
  t->id_special = calloc(t->n_ids ? t->n_ids : 1, 1);
  if (!t->id_str || !t->id_dec || !t->id_dec_len || !t->id_special) LERR("out of memory");
  if (smap_init(&t->vocab_str, nv) || smap_init(&t->vocab_bytes, nv)) LERR("out of memory");

  for (int b = 0; b < 256; b++) t->byte_id[b] = t->fallback_id[b] = -1;
  for (const cJSON *e = vocab->child; e; e = e->next) {
    size_t n = strlen(e->string);
    if (set_id_str(L, e->valueint, e->string, n)) return -1;
    const char *k = t->id_str[e->valueint];
    if (smap_put(&t->vocab_str, k, n, e->valueint)) LERR("out of memory");
    if (!t->byte_level) continue;
    long bl = bl_to_bytes(k, n, (unsigned char *)t->id_dec[e->valueint]);
    if (bl >= 0 && t->id_dec_len[e->valueint] == (uint32_t)bl) {
      if (smap_put(&t->vocab_bytes, (const char *)t->id_dec[e->valueint], (size_t)bl, e->valueint)) LERR("out of memory");
      if (bl == 1) t->byte_id[t->id_dec[e->valueint][0]] = e->valueint;
    }
  }
  if (t->byte_fallback)
    for (int b = 0; b < 256; b++) {
      char name[8];
      snprintf(name, sizeof name, "<0x%02X>", b);     /* Rust: format!("<{b:#04X}>") */
      t->fallback_id[b] = smap_get(&t->vocab_str, name, 6);
    }
  t->unk_id = -1;
  const char *unk = jstr(model, "unk_token");
  if (unk) {
    t->unk_id = smap_get(&t->vocab_str, unk, strlen(unk));
    if (t->unk_id < 0) LERR("model.unk_token \"%s\" is not in the vocabulary", unk);
  }

  size_t nm = (size_t)cJSON_GetArraySize(merges), rank = 0;
  if (pmap_init(&t->merges, nm)) LERR("out of memory");
  char tmp[1024];
  for (const cJSON *m = merges->child; m; m = m->next, rank++) {
    const char *a, *b; size_t la, lb;
    if (cJSON_IsString(m)) {                        /* "a b" */
      const char *s = m->valuestring, *sp = strchr(s, ' ');
      if (!sp || strchr(sp + 1, ' ')) LERR("model.merges[%zu] \"%s\" is not two tokens separated by one space", rank, s);
      a = s; la = (size_t)(sp - s); b = sp + 1; lb = strlen(b);
    } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
               cJSON_IsString(m->child->next)) {   /* ["a", "b"] */
      a = m->child->valuestring; la = strlen(a); b = m->child->next->valuestring; lb = strlen(b);
    } else LERR("model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", rank);
    int32_t ia = smap_get(&t->vocab_str, a, la), ib = smap_get(&t->vocab_str, b, lb);
    if (ia < 0) LERR("model.merges[%zu]: token \"%.*s\" is not in the vocabulary", rank, (int)la, a);
    if (ib < 0) LERR("model.merges[%zu]: token \"%.*s\" is not in the vocabulary", rank, (int)lb, b);
    if (la + lb > sizeof tmp) LERR("model.merges[%zu]: tokens too long", rank);
    memcpy(tmp, a, la); memcpy(tmp + la, b, lb);
    int32_t im = smap_get(&t->vocab_str, tmp, la + lb);
    if (im < 0) LERR("model.merges[%zu]: merged token \"%.*s\" is not in the vocabulary", rank, (int)(la + lb), tmp);
    pmap_put(&t->merges, ia, ib, (uint32_t)rank, im);
  }
  return 0;
}

static int cmp_added_len_desc(const void *x, const void *y, void *ctx) {
  const added_tok *A = ctx;
  size_t la = A[*(const int32_t *)x].len, lb = A[*(const int32_t *)y].len;
  return la < lb ? 1 : la > lb ? -1 : 0;
}

static int matcher_build(added_matcher *m, const added_tok *A, size_t n, int normalized) {
  for (size_t i = 0; i < n; i++) {
    if (A[i].normalized != normalized || A[i].len == 0) continue;
    unsigned char c = (unsigned char)A[i].content[0];
    int32_t *ni = realloc(m->idx[c], (m->n[c] + 1) * sizeof *ni);
    if (!ni) return -1;
    m->idx[c] = ni;
    ni[m->n[c]++] = (int32_t)i;
    m->count++;
  }
  for (int c = 0; c < 256; c++)
    if (m->n[c] > 1) qsort_r(m->idx[c], m->n[c], sizeof(int32_t), cmp_added_len_desc, (void *)A);
  if (smap_init(&m->map, m->count)) return -1;
  for (int c = 0; c < 256; c++)
    for (size_t k = m->n[c]; k-- > 0;) {              /* shortest first: on equal contents the first listed wins */
      const added_tok *a = &A[m->idx[c][k]];
      if (smap_put(&m->map, a->content, a->len, m->idx[c][k])) return -1;
      if (m->nlens[c] && m->lens[c][m->nlens[c] - 1] == a->len) continue;
      uint32_t *nl = realloc(m->lens[c], (m->nlens[c] + 1) * sizeof *nl);
      if (!nl) return -1;
      m->lens[c] = nl;
      nl[m->nlens[c]++] = (uint32_t)a->len;
    }
  for (int c = 0; c < 256; c++)                        /* longest first */
    for (size_t i = 0, j = m->nlens[c]; i + 1 < j; i++, j--) { uint32_t x = m->lens[c][i]; m->lens[c][i] = m->lens[c][j - 1]; m->lens[c][j - 1] = x; }
  return 0;
}

static int norm_apply(const pc_tokenizer *t, const char *s, size_t n, bbuf *out);

static int load_added(loadctx *L, const cJSON *added) {
  pc_tokenizer *t = L->t;
  if (!added || cJSON_IsNull(added)) return 0;
  if (!cJSON_IsArray(added)) LERR("field \"added_tokens\" is not an array");
  size_t n = (size_t)cJSON_GetArraySize(added), i = 0;
  t->added = calloc(n ? n : 1, sizeof *t->added);
  if (!t->added || smap_init(&t->added_str, n)) LERR("out of memory");
  for (const cJSON *a = added->child; a; a = a->next, i++) {
    const char *content = jstr(a, "content");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
    if (!content) LERR("added_tokens[%zu].content is missing or not a string", i);
    if (!cJSON_IsNumber(id) || id->valueint < 0) LERR("added_tokens[%zu].id is missing or not a token id", i);
    added_tok *k = &t->added[t->n_added++];
    k->id = id->valueint;
    k->special = jbool(a, "special", 0);
    k->normalized = jbool(a, "normalized", !k->special);
    k->single_word = jbool(a, "single_word", 0);
    k->lstrip = jbool(a, "lstrip", 0);
    k->rstrip = jbool(a, "rstrip", 0);
    size_t cl = strlen(content);
    if (set_id_str(L, k->id, content, cl)) return -1;
    if (smap_put(&t->added_str, t->id_str[k->id], cl, k->id)) LERR("out of memory");
    t->id_special[k->id] = (unsigned char)k->special;
    k->content = t->id_str[k->id]; k->len = cl;
    if (k->normalized && t->n_norm) {            /* matched against normalized text: normalize it too */
      bbuf nb = {0};
      if (norm_apply(t, content, cl, &nb)) { free(nb.p); LERR("added_tokens[%zu]: normalization failed", i); }
      if (nb.n != cl || (cl && memcmp(nb.p, content, cl) != 0)) { k->content = arena_dup(&t->arena, nb.p ? nb.p : "", nb.n); k->len = nb.n; }
      free(nb.p);
      if (!k->content) LERR("out of memory");
    }
    if (!t->n_norm) k->normalized = 0;          /* no normalizer: both passes see the same text */
  }
  if (matcher_build(&t->raw_match, t->added, t->n_added, 0) ||
      matcher_build(&t->norm_match, t->added, t->n_added, 1)) LERR("out of memory");
  return 0;
}

static int add_norm(loadctx *L, norm_step n) {
  pc_tokenizer *t = L->t;
  norm_step *np = realloc(t->norm, (t->n_norm + 1) * sizeof *np);
  if (!np) { if (n.re) pcre2_code_free(n.re); LERR("out of memory"); }
  t->norm = np;
  t->norm[t->n_norm++] = n;
  return 0;
}

static pcre2_code *compile_regex(const char *onig, int literal, char *err, size_t errlen);

/* A {"String": s} or {"Regex": r} pattern of Replace: the literal in *lit (arena), or a compiled regex. */
static int load_pattern(loadctx *L, const cJSON *pat, const char *where, char **lit, size_t *litlen, pcre2_code **re) {
  const char *rx = jstr(pat, "Regex"), *str = jstr(pat, "String");
  *lit = NULL; *litlen = 0; *re = NULL;
  if (str) {
    if (!*str) LERR("%s.pattern.String is empty", where);
    if (!(*lit = arena_dup(&L->t->arena, str, strlen(str)))) LERR("out of memory");
    *litlen = strlen(str);
    return 0;
  }
  if (!rx) LERR("%s.pattern needs a \"Regex\" or a \"String\"", where);
  char e2[300];
  if (!(*re = compile_regex(rx, 0, e2, sizeof e2))) LERR("%s.pattern: %s", where, e2);
  return 0;
}

static int load_normalizer(loadctx *L, const cJSON *nz, const char *where) {
  if (!nz || cJSON_IsNull(nz)) return 0;
  const char *type = jstr(nz, "type");
  if (!type) LERR("%s.type is missing", where);
  norm_step n = {0};
  if (!strcmp(type, "NFC") || !strcmp(type, "NFKC") || !strcmp(type, "NFD") || !strcmp(type, "NFKD")) {
    UErrorCode ue = U_ZERO_ERROR;
    n.kind = NORM_UNICODE;
    /* Below U+0300 nothing composes or decomposes canonically; the compatibility forms change
     * Latin-1 (NBSP, superscripts, fractions), so only ASCII is skipped for them. */
    n.stable_below = type[2] == 'K' ? 0x80 : 0xCC;
    n.nf = !strcmp(type, "NFC") ? unorm2_getNFCInstance(&ue) : !strcmp(type, "NFKC") ? unorm2_getNFKCInstance(&ue)
         : !strcmp(type, "NFD") ? unorm2_getNFDInstance(&ue) : unorm2_getNFKDInstance(&ue);
    if (U_FAILURE(ue)) LERR("%s: ICU %s normalizer unavailable (%s)", where, type, u_errorName(ue));
    return add_norm(L, n);
  }
  if (strcmp(type, "Lowercase") == 0) { n.kind = NORM_LOWER; return add_norm(L, n); }
  if (strcmp(type, "Strip") == 0) {
    n.kind = NORM_STRIP;
    n.left = jbool(nz, "strip_left", 1); n.right = jbool(nz, "strip_right", 1);
    return add_norm(L, n);
  }
  if (strcmp(type, "Prepend") == 0) {
    const char *pre = jstr(nz, "prepend");
    if (!pre) LERR("%s.prepend is missing or not a string", where);
    n.kind = NORM_PREPEND; n.alen = strlen(pre);
    if (!(n.a = arena_dup(&L->t->arena, pre, n.alen))) LERR("out of memory");
    return add_norm(L, n);
  }
  if (strcmp(type, "Replace") == 0) {
    const char *content = jstr(nz, "content");
    if (!content) LERR("%s.content is missing or not a string", where);
    n.kind = NORM_REPLACE; n.blen = strlen(content);
    if (!(n.b = arena_dup(&L->t->arena, content, n.blen))) LERR("out of memory");
    if (load_pattern(L, cJSON_GetObjectItemCaseSensitive(nz, "pattern"), where, &n.a, &n.alen, &n.re)) return -1;
    return add_norm(L, n);
  }
  if (strcmp(type, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(nz, "normalizers");
    if (!cJSON_IsArray(list)) LERR("%s.normalizers is missing or not an array", where);
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
      char w[128];
      snprintf(w, sizeof w, "%s.normalizers[%d]", where, i);
      if (load_normalizer(L, e, w)) return -1;
    }
    return 0;
  }
  LERR("%s: normalizer type \"%s\" is not supported (supported: NFC, NFKC, NFD, NFKD, Lowercase, Strip, "
       "Prepend, Replace, Sequence)", where, type);
}

static int add_pre(loadctx *L, pre_step s) {
  pc_tokenizer *t = L->t;
  pre_step *np = realloc(t->pre, (t->n_pre + 1) * sizeof *np);
  if (!np) { if (s.re) pcre2_code_free(s.re); LERR("out of memory"); }
  t->pre = np;
  t->pre[t->n_pre++] = s;
  if (s.re) {
    uint32_t cap = 0;
    pcre2_pattern_info(s.re, PCRE2_INFO_CAPTURECOUNT, &cap);
    if (cap + 1 > t->max_ovec) t->max_ovec = cap + 1;
  }
  return 0;
}

static int parse_behavior(const char *beh, int *out) {
  static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
  static const int vals[] = {BEH_REMOVED, BEH_ISOLATED, BEH_MERGED_PREV, BEH_MERGED_NEXT, BEH_CONTIGUOUS};
  for (int i = 0; i < 5; i++) if (strcmp(beh, names[i]) == 0) { *out = vals[i]; return 0; }
  return -1;
}

static int load_pre(loadctx *L, const cJSON *p, const char *where) {
  pc_tokenizer *t = L->t;
  if (!p || cJSON_IsNull(p)) return 0;
  const char *type = jstr(p, "type");
  if (!type) LERR("%s.type is missing", where);
  if (t->n_pre && t->pre[t->n_pre - 1].kind == PRE_BYTELEVEL)
    LERR("%s: a pre-tokenizer after ByteLevel is not supported", where);
  char e2[300];
  if (strcmp(type, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
    if (!cJSON_IsArray(list)) LERR("%s.pretokenizers is missing or not an array", where);
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
      char w[128];
      snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, i);
      if (load_pre(L, e, w)) return -1;
    }
    return 0;
  }
  if (strcmp(type, "ByteLevel") == 0) {
    pre_step s = {PRE_BYTELEVEL, NULL, BEH_ISOLATED, 0, jbool(p, "add_prefix_space", 1), {0}, 0, 0};
    if (jbool(p, "use_regex", 1)) {
      s.re = compile_regex(GPT2_REGEX, 0, e2, sizeof e2);
      if (!s.re) LERR("%s: %s", where, e2);
    }
    return add_pre(L, s);
  }
  if (strcmp(type, "Split") == 0) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    const char *rx = jstr(pat, "Regex"), *lit = jstr(pat, "String");
    if (!rx && !lit) LERR("%s.pattern needs a \"Regex\" or a \"String\"", where);
    const char *beh = jstr(p, "behavior");
    pre_step s = {PRE_SPLIT, NULL, BEH_ISOLATED, jbool(p, "invert", 0), 0, {0}, 0, 0};
    if (!beh) LERR("%s.behavior is missing", where);
    if (parse_behavior(beh, &s.behavior)) LERR("%s.behavior \"%s\" is not supported", where, beh);
    s.re = compile_regex(rx ? rx : lit, rx == NULL, e2, sizeof e2);
    if (!s.re) LERR("%s.pattern: %s", where, e2);
    return add_pre(L, s);
  }
  if (strcmp(type, "Metaspace") == 0) {
    const char *rep = jstr(p, "replacement");
    pre_step s = {PRE_METASPACE, NULL, BEH_MERGED_NEXT, 0, 0, {0}, 0, PREPEND_ALWAYS};
    if (!rep) rep = "\xe2\x96\x81";                       /* U+2581, the default */
    size_t rl = strlen(rep);
    if (rl == 0 || rl > 4 || utf8_check((const unsigned char *)rep, rl) != rl || utf8_len((unsigned char)rep[0]) != rl)
      LERR("%s.replacement must be one character", where);
    memcpy(s.repl, rep, rl); s.repl_len = rl;
    const char *scheme = jstr(p, "prepend_scheme");
    int aps = jbool(p, "add_prefix_space", -1);
    if (scheme) {
      if (!strcmp(scheme, "always")) s.prepend_scheme = PREPEND_ALWAYS;
      else if (!strcmp(scheme, "first")) s.prepend_scheme = PREPEND_FIRST;
      else if (!strcmp(scheme, "never")) s.prepend_scheme = PREPEND_NEVER;
      else LERR("%s.prepend_scheme \"%s\" is not one of always, first, never", where, scheme);
    }
    if (aps == 0) {                                         /* the legacy field, as Rust reads it */
      if (scheme && s.prepend_scheme != PREPEND_NEVER) LERR("%s: add_prefix_space false contradicts prepend_scheme \"%s\"", where, scheme);
      s.prepend_scheme = PREPEND_NEVER;
    }
    if (jbool(p, "split", 1)) {
      s.re = compile_regex(s.repl, 1, e2, sizeof e2);
      if (!s.re) LERR("%s: %s", where, e2);
    }
    return add_pre(L, s);
  }
  if (strcmp(type, "Digits") == 0) {
    /* Rust: split on char::is_numeric (Nd, Nl, No), runs kept together unless individual_digits */
    pre_step s = {PRE_SPLIT, NULL, jbool(p, "individual_digits", 0) ? BEH_ISOLATED : BEH_CONTIGUOUS, 0, 0, {0}, 0, 0};
    if (!(s.re = compile_regex("\\p{N}", 0, e2, sizeof e2))) LERR("%s: %s", where, e2);
    return add_pre(L, s);
  }
  if (strcmp(type, "Punctuation") == 0) {
    /* Rust: split on char::is_ascii_punctuation or a Unicode P* category, behavior default Isolated */
    pre_step s = {PRE_SPLIT, NULL, BEH_ISOLATED, 0, 0, {0}, 0, 0};
    const char *beh = jstr(p, "behavior");
    if (beh && parse_behavior(beh, &s.behavior)) LERR("%s.behavior \"%s\" is not supported", where, beh);
    if (!(s.re = compile_regex("[\\p{P}!-/:-@\\[-`{-~]", 0, e2, sizeof e2))) LERR("%s: %s", where, e2);
    return add_pre(L, s);
  }
  LERR("%s: pre-tokenizer type \"%s\" is not supported (supported: ByteLevel, Split, Metaspace, Digits, "
       "Punctuation, Sequence)", where, type);
}

static int load_post(loadctx *L, const cJSON *p, const char *where) {
  pc_tokenizer *t = L->t;
  if (!p || cJSON_IsNull(p)) return 0;
  const char *type = jstr(p, "type");
  if (!type) LERR("%s.type is missing", where);
  if (strcmp(type, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors");
    if (!cJSON_IsArray(list)) LERR("%s.processors is missing or not an array", where);
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
      char w[128];
      snprintf(w, sizeof w, "%s.processors[%d]", where, i);
      if (load_post(L, e, w)) return -1;
    }
    return 0;
  }
  post_step s = {POST_BYTELEVEL, NULL, 0};
  if (strcmp(type, "ByteLevel") == 0) {
    /* ids are untouched: ByteLevel post-processing only trims offsets */
  } else if (strcmp(type, "TemplateProcessing") == 0) {
    s.kind = POST_TEMPLATE;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    if (!cJSON_IsArray(single)) LERR("%s.single is missing or not an array", where);
    size_t n = (size_t)cJSON_GetArraySize(single), i = 0;
    s.items = calloc(n ? n : 1, sizeof *s.items);
    if (!s.items) LERR("out of memory");
    for (const cJSON *it = single->child; it; it = it->next, i++) {
      const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
      const cJSON *sq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
      tmpl_item *ti = &s.items[s.n_items++];
      if (sq) {
        const char *sid = jstr(sq, "id");
        if (!sid || strcmp(sid, "A") != 0) { free(s.items); LERR("%s.single[%zu]: only sequence \"A\" can appear in a single template", where, i); }
        ti->is_seq = 1;
      } else if (sp) {
        const char *name = jstr(sp, "id");
        const cJSON *def = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
        if (!cJSON_IsArray(ids)) { free(s.items); LERR("%s.single[%zu]: special token \"%s\" is not in special_tokens with its ids", where, i, name ? name : "?"); }
        ti->n = (size_t)cJSON_GetArraySize(ids);
        ti->ids = (int32_t *)arena_alloc(&t->arena, (ti->n ? ti->n : 1) * sizeof(int32_t));
        if (!ti->ids) { free(s.items); LERR("out of memory"); }
        size_t k = 0;
        for (const cJSON *x = ids->child; x; x = x->next, k++) {
          if (!cJSON_IsNumber(x) || x->valueint < 0 || (size_t)x->valueint >= t->n_ids) { free(s.items); LERR("%s.special_tokens[\"%s\"].ids[%zu] is not a token id", where, name, k); }
          ti->ids[k] = x->valueint;
        }
      } else { free(s.items); LERR("%s.single[%zu] is neither SpecialToken nor Sequence", where, i); }
    }
  } else {
    LERR("%s: post-processor type \"%s\" is not supported (supported: ByteLevel, TemplateProcessing, Sequence)", where, type);
  }
  post_step *np = realloc(t->post, (t->n_post + 1) * sizeof *np);
  if (!np) { free(s.items); LERR("out of memory"); }
  t->post = np;
  t->post[t->n_post++] = s;
  return 0;
}

static int add_dec(loadctx *L, dec_step d) {
  pc_tokenizer *t = L->t;
  dec_step *nd = realloc(t->dec, (t->n_dec + 1) * sizeof *nd);
  if (!nd) LERR("out of memory");
  t->dec = nd;
  t->dec[t->n_dec++] = d;
  return 0;
}

/* A one-character field (Strip's content, Metaspace's replacement) as a code point. */
static int one_char(const char *s, uint32_t *cp) {
  size_t n = s ? strlen(s) : 0, l;
  if (n == 0 || utf8_check((const unsigned char *)s, n) != n) return -1;
  *cp = utf8_decode((const unsigned char *)s, &l);
  return l == n ? 0 : -1;
}

static int load_decoder(loadctx *L, const cJSON *d, const char *where) {
  if (!d || cJSON_IsNull(d)) return 0;
  const char *type = jstr(d, "type");
  if (!type) LERR("%s.type is missing", where);
  dec_step s = {0};
  if (strcmp(type, "ByteLevel") == 0) { s.kind = DEC_BYTELEVEL; return add_dec(L, s); }
  if (strcmp(type, "ByteFallback") == 0) { s.kind = DEC_BYTEFALLBACK; return add_dec(L, s); }
  if (strcmp(type, "Fuse") == 0) { s.kind = DEC_FUSE; return add_dec(L, s); }
  if (strcmp(type, "Replace") == 0) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(d, "pattern");
    const char *str = jstr(pat, "String"), *content = jstr(d, "content");
    if (!str || !*str) LERR("%s.pattern: only a non-empty {\"String\": ...} pattern is supported in a decoder", where);
    if (!content) LERR("%s.content is missing or not a string", where);
    s.kind = DEC_REPLACE; s.alen = strlen(str); s.blen = strlen(content);
    if (!(s.a = arena_dup(&L->t->arena, str, s.alen)) || !(s.b = arena_dup(&L->t->arena, content, s.blen))) LERR("out of memory");
    return add_dec(L, s);
  }
  if (strcmp(type, "Strip") == 0) {
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(d, "start"), *sp = cJSON_GetObjectItemCaseSensitive(d, "stop");
    s.kind = DEC_STRIP;
    if (one_char(jstr(d, "content"), &s.cp)) LERR("%s.content must be one character", where);
    if (!cJSON_IsNumber(st) || !cJSON_IsNumber(sp) || st->valueint < 0 || sp->valueint < 0)
      LERR("%s.start and .stop must be counts", where);
    s.start = st->valueint; s.stop = sp->valueint;
    return add_dec(L, s);
  }
  if (strcmp(type, "Metaspace") == 0) {
    const char *rep = jstr(d, "replacement"), *scheme = jstr(d, "prepend_scheme");
    s.kind = DEC_METASPACE;
    if (one_char(rep ? rep : "\xe2\x96\x81", &s.cp)) LERR("%s.replacement must be one character", where);
    s.prepend = scheme ? strcmp(scheme, "never") != 0 : jbool(d, "add_prefix_space", 1);
    return add_dec(L, s);
  }
  if (strcmp(type, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
    if (!cJSON_IsArray(list)) LERR("%s.decoders is missing or not an array", where);
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
      char w[128];
      snprintf(w, sizeof w, "%s.decoders[%d]", where, i);
      if (load_decoder(L, e, w)) return -1;
    }
    return 0;
  }
  LERR("%s: decoder type \"%s\" is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, "
       "Metaspace, Sequence)", where, type);
}

/* The file's text, or NULL with err set (naming the file). */
static char *read_text(const char *path, size_t *n, char *err, size_t errlen) {
  char *t = pc_read_file(path, n, NULL);
  if (!t && errno == ENOMEM) pc_seterr(err, errlen, "%s: out of memory", path);
  else if (!t && errno == EIO) pc_seterr(err, errlen, "%s: read error", path);
  else if (!t) pc_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  return t;
}

/* transformers' Llama/Gemma fast tokenizers rebuild the post-processor from tokenizer_config.json's
 * add_bos_token / add_eos_token (update_post_processor). Where tokenizer.json itself has no template
 * (DeepSeek V3 ships a ByteLevel post-processor and add_bos_token true), we add the same template;
 * a template in tokenizer.json is kept as it is. A missing config file is not an error. */
static int load_config_template(loadctx *L) {
  pc_tokenizer *t = L->t;
  for (size_t i = 0; i < t->n_post; i++) if (t->post[i].kind == POST_TEMPLATE) return 0;
  const char *slash = strrchr(L->path, '/');
  size_t dl = slash ? (size_t)(slash - L->path + 1) : 0;
  char *cpath = malloc(dl + 32);
  if (!cpath) LERR("out of memory");
  memcpy(cpath, L->path, dl);
  strcpy(cpath + dl, "tokenizer_config.json");
  size_t n;
  char e2[300];
  FILE *f = fopen(cpath, "rb");
  if (!f) { free(cpath); return 0; }
  fclose(f);
  char *text = read_text(cpath, &n, e2, sizeof e2);
  cJSON *root = text ? cJSON_ParseWithLength(text, n) : NULL;
  free(text);
  int rc = 0;
  if (!root) { pc_seterr(L->err, L->errlen, "%s: not valid JSON", cpath); free(cpath); return -1; }
  int add[2] = {jbool(root, "add_bos_token", 0), jbool(root, "add_eos_token", 0)};
  const char *names[2] = {"bos_token", "eos_token"};
  post_step ps = {POST_TEMPLATE, calloc(3, sizeof(tmpl_item)), 0};
  if (!ps.items) rc = -1;
  for (int k = 0; k < 2 && !rc; k++) {
    if (k == 1) ps.items[ps.n_items++].is_seq = 1;                 /* $A between BOS and EOS */
    if (!add[k]) continue;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, names[k]);
    const char *content = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    int32_t id = content ? pc_tok_token_to_id(t, content) : -1;
    if (id < 0) {
      pc_seterr(L->err, L->errlen, "%s: add_%s is true but %s %s%s%s is not a token of %s", cpath, names[k], names[k],
                content ? "\"" : "", content ? content : "is missing", content ? "\"" : "", L->path);
      rc = -1; break;
    }
    tmpl_item *ti = &ps.items[ps.n_items++];
    ti->n = 1;
    if (!(ti->ids = (int32_t *)arena_alloc(&t->arena, sizeof(int32_t)))) { rc = -1; break; }
    ti->ids[0] = id;
  }
  cJSON_Delete(root);
  free(cpath);
  if (!rc && (add[0] || add[1])) {
    post_step *np = realloc(t->post, (t->n_post + 1) * sizeof *np);
    if (!np) rc = -1; else { t->post = np; t->post[t->n_post++] = ps; ps.items = NULL; }
  }
  free(ps.items);
  if (rc && L->err && !L->err[0]) pc_seterr(L->err, L->errlen, "%s: out of memory", L->path);
  return rc;
}

pc_tokenizer *pc_tok_load(const char *path, char *err, size_t errlen) {
  pthread_once(&g_bl_once, bl_init);
  size_t n;
  char *text = read_text(path, &n, err, errlen);
  if (!text) return NULL;
  cJSON *root = cJSON_ParseWithLength(text, n);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    size_t off = at && at >= text && at <= text + n ? (size_t)(at - text) : 0, line = 1;
    for (size_t i = 0; i < off; i++) line += text[i] == '\n';
    pc_seterr(err, errlen, "%s: not valid JSON (near byte %zu, line %zu)", path, off, line);
    free(text);
    return NULL;
  }
  free(text);
  pc_tokenizer *t = calloc(1, sizeof *t);
  loadctx Lc = {t, path, err, errlen}, *L = &Lc;
  int rc = -1;
  if (!t) { pc_seterr(err, errlen, "%s: out of memory", path); cJSON_Delete(root); return NULL; }
  for (int i = 0; i < CACHE_SHARDS; i++) pthread_mutex_init(&t->cache[i].mu, NULL);
  t->path = strdup(path);
  t->max_ovec = 1;
  do {
    if (!cJSON_IsObject(root)) { pc_seterr(err, errlen, "%s: not a JSON object", path); break; }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (load_normalizer(L, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer")) break;
    if (load_pre(L, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer")) break;
    /* a ByteLevel pre-tokenizer means the vocabulary is written in its byte alphabet */
    for (size_t i = 0; i < t->n_pre; i++) t->byte_level |= t->pre[i].kind == PRE_BYTELEVEL;
    if (load_model(L, cJSON_GetObjectItemCaseSensitive(root, "model"), added)) break;
    if (load_added(L, added)) break;
    if (load_post(L, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor")) break;
    if (load_decoder(L, cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoder")) break;
    if (err && errlen) err[0] = 0;
    if (load_config_template(L)) break;
    const cJSON *trunc = cJSON_GetObjectItemCaseSensitive(root, "truncation");
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(root, "padding");
    if (trunc && !cJSON_IsNull(trunc)) { pc_seterr(err, errlen, "%s: \"truncation\" is set; not supported (the trainer truncates itself)", path); break; }
    if (pad && !cJSON_IsNull(pad)) { pc_seterr(err, errlen, "%s: \"padding\" is set; not supported (the trainer pads itself)", path); break; }
    rc = 0;
  } while (0);
  cJSON_Delete(root);
  if (rc) { pc_tok_free(t); return NULL; }
  return t;
}

void pc_tok_free(pc_tokenizer *t) {
  if (!t) return;
  for (size_t i = 0; i < t->n_pre; i++) if (t->pre[i].re) pcre2_code_free(t->pre[i].re);
  free(t->pre);
  for (size_t i = 0; i < t->n_norm; i++) if (t->norm[i].re) pcre2_code_free(t->norm[i].re);
  free(t->norm);
  free(t->dec);
  for (size_t i = 0; i < t->n_post; i++) free(t->post[i].items);
  free(t->post);
  for (int c = 0; c < 256; c++) {
    free(t->raw_match.idx[c]); free(t->norm_match.idx[c]); free(t->raw_match.lens[c]); free(t->norm_match.lens[c]);
  }
  free(t->raw_match.map.e); free(t->norm_match.map.e);
  for (int i = 0; i < CACHE_SHARDS; i++) {
    if (t->cache[i].e) for (size_t k = 0; k < t->cache[i].cap; k++) free(t->cache[i].e[k].blob);
    free(t->cache[i].e);
    pthread_mutex_destroy(&t->cache[i].mu);
  }
  free(t->added);
  free(t->vocab_str.e); free(t->vocab_bytes.e); free(t->added_str.e); free(t->merges.e);
  free(t->id_str); free(t->id_dec); free(t->id_dec_len); free(t->id_special);
  while (t->arena) { arena_blk *n = t->arena->next; free(t->arena); t->arena = n; }
  free(t->path);
  free(t);
}

// ---- normalizers -------------------------------------------------------------------------------------

/* Unicode normalization of s into out (out->n reset). Text whose bytes are all below `stable_below` is
 * copied without asking ICU. */
static int unicode_apply(const UNormalizer2 *nf, unsigned char stable_below, const char *s, size_t n, bbuf *out) {
  out->n = 0;
  size_t i = 0;
  while (i < n && (unsigned char)s[i] < stable_below) i++;
  if (i == n) return bbuf_add(out, s, n);
  UErrorCode ue = U_ZERO_ERROR;
  int32_t ulen = 0;
  if (n > INT32_MAX / 4) return -1;
  UChar *u = malloc((n + 1) * sizeof(UChar));
  if (!u) return -1;
  u_strFromUTF8(u, (int32_t)n + 1, &ulen, s, (int32_t)n, &ue);
  if (U_FAILURE(ue)) { free(u); return -1; }
  int32_t span = unorm2_spanQuickCheckYes(nf, u, ulen, &ue);
  if (U_FAILURE(ue)) { free(u); return -1; }
  if (span == ulen) { free(u); return bbuf_add(out, s, n); }
  /* NFKC/NFKD can expand a code point up to 18 times (U+FDFA); ask ICU for the size when short */
  int32_t cap = ulen * 3 + 16, nl;
  UChar *v = malloc((size_t)cap * sizeof(UChar));
  if (!v) { free(u); return -1; }
  nl = unorm2_normalize(nf, u, ulen, v, cap, &ue);
  if (ue == U_BUFFER_OVERFLOW_ERROR) {
    ue = U_ZERO_ERROR; free(v); cap = nl + 1;
    if (!(v = malloc((size_t)cap * sizeof(UChar)))) { free(u); return -1; }
    nl = unorm2_normalize(nf, u, ulen, v, cap, &ue);
  }
  free(u);
  if (U_FAILURE(ue)) { free(v); return -1; }
  int32_t blen = 0;
  ue = U_ZERO_ERROR;
  u_strToUTF8(NULL, 0, &blen, v, nl, &ue);          /* preflight */
  ue = U_ZERO_ERROR;
  if (bbuf_reserve(out, (size_t)blen + 1)) { free(v); return -1; }
  u_strToUTF8(out->p, blen + 1, &blen, v, nl, &ue);
  free(v);
  if (U_FAILURE(ue)) return -1;
  out->n = (size_t)blen;
  return 0;
}

/* Rust's NormalizedString::lowercase maps each char on its own (char::to_lowercase, the full mapping,
 * no final-sigma context); ICU on a one-char string gives exactly that. */
static int lower_apply(const char *s, size_t n, bbuf *out) {
  out->n = 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) { char l = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c); if (bbuf_add(out, &l, 1)) return -1; i++; continue; }
    size_t l;
    UChar32 cp = (UChar32)utf8_decode((const unsigned char *)s + i, &l);
    UChar src[2], dst[8]; int32_t sl = 0, dl; UBool bad = 0;
    U16_APPEND(src, sl, 2, cp, bad);
    UErrorCode ue = U_ZERO_ERROR;
    dl = u_strToLower(dst, 8, src, sl, "", &ue);
    if (U_FAILURE(ue) || bad) return -1;
    char u8[32]; int32_t bl = 0;
    u_strToUTF8(u8, sizeof u8, &bl, dst, dl, &ue);
    if (U_FAILURE(ue) || bbuf_add(out, u8, (size_t)bl)) return -1;
    i += l;
  }
  return 0;
}

static int is_space_cp(uint32_t c);

static int replace_apply(const norm_step *ns, const char *s, size_t n, bbuf *out) {
  out->n = 0;
  if (!ns->re) {
    size_t i = 0;
    while (i < n) {
      const char *hit = ns->alen <= n - i ? memmem(s + i, n - i, ns->a, ns->alen) : NULL;
      if (!hit) break;
      size_t at = (size_t)(hit - s);
      if (bbuf_add(out, s + i, at - i) || bbuf_add(out, ns->b, ns->blen)) return -1;
      i = at + ns->alen;
    }
    return bbuf_add(out, s + i, n - i);
  }
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(ns->re, NULL);
  if (!md) return -1;
  size_t pos = 0, prev = 0;
  int rc = 0;
  while (pos <= n) {
    int m = pcre2_match(ns->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
    if (m == PCRE2_ERROR_NOMATCH) break;
    if (m < 0) { rc = -1; break; }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    if (bbuf_add(out, s + prev, ov[0] - prev) || bbuf_add(out, ns->b, ns->blen)) { rc = -1; break; }
    prev = ov[1];
    if (ov[1] == ov[0]) { if (ov[0] >= n) break; pos = ov[0] + utf8_len((unsigned char)s[ov[0]]); }
    else pos = ov[1];
  }
  pcre2_match_data_free(md);
  if (!rc && prev < n) rc = bbuf_add(out, s + prev, n - prev);
  return rc;
}

/* Runs the normalizer pipeline over s[0..n) into out (out->n reset). */
static int norm_apply(const pc_tokenizer *t, const char *s, size_t n, bbuf *out) {
  bbuf tmp = {0};
  out->n = 0;
  if (bbuf_add(out, s, n)) return -1;
  int rc = 0;
  for (size_t k = 0; k < t->n_norm && !rc; k++) {
    const norm_step *ns = &t->norm[k];
    tmp.n = 0;
    switch (ns->kind) {
      case NORM_UNICODE: rc = unicode_apply(ns->nf, ns->stable_below, out->p, out->n, &tmp); break;
      case NORM_LOWER: rc = lower_apply(out->p, out->n, &tmp); break;
      case NORM_STRIP: {
        size_t b = 0, e = out->n, l;
        while (ns->left && b < e && is_space_cp(utf8_decode((const unsigned char *)out->p + b, &l))) b += l;
        while (ns->right && e > b) {
          size_t p = e - 1;
          while (p > b && ((unsigned char)out->p[p] & 0xC0) == 0x80) p--;
          if (!is_space_cp(utf8_decode((const unsigned char *)out->p + p, &l))) break;
          e = p;
        }
        rc = bbuf_add(&tmp, out->p + b, e - b);
        break;
      }
      case NORM_PREPEND:               /* Rust: only a non-empty string gets the prefix */
        if (out->n) rc = bbuf_add(&tmp, ns->a, ns->alen);
        if (!rc) rc = bbuf_add(&tmp, out->p, out->n);
        break;
      case NORM_REPLACE: rc = replace_apply(ns, out->p, out->n, &tmp); break;
    }
    bbuf x = *out; *out = tmp; tmp = x;
  }
  free(tmp.p);
  return rc;
}

// ---- BPE ----------------------------------------------------------------------------------------------

typedef struct { uint64_t key; int32_t id; } heap_ent;   /* key: rank << 32 | position */

static void heap_push(heap_ent *h, size_t *n, heap_ent x) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (h[p].key <= x.key) break;
    h[i] = h[p]; i = p;
  }
  h[i] = x;
}

static heap_ent heap_pop(heap_ent *h, size_t *n) {
  heap_ent top = h[0], x = h[--(*n)];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    uint64_t mk = x.key;
    if (l < *n && h[l].key < mk) { m = l; mk = h[l].key; }
    if (r < *n && h[r].key < mk) m = r;
    if (m == i) break;
    h[i] = h[m]; i = m;
  }
  if (*n) h[i] = x;
  return top;
}

/* BPE over the bytes of one word, appending ids to out. Merges the lowest-ranked adjacent pair first,
 * the leftmost on ties: Word::merge_all in the Rust crate, with the same stale-entry checks. O(n log n). */
static int bpe_word(const pc_tokenizer *t, const unsigned char *w, size_t n, ivec *out) {
  if (t->ignore_merges) {
    int32_t id = smap_get(t->byte_level ? &t->vocab_bytes : &t->vocab_str, w, n);
    if (id >= 0) return ivec_push(out, id);
  }
  /* Heap bound: n - 1 initial pairs, and each of the at most n - 1 merges pops one entry and pushes
   * at most two, so the heap never holds more than 2n entries. */
  int32_t sid_s[64], prev_s[64], next_s[64];
  heap_ent heap_s[128];
  int32_t *sid = sid_s, *prev = prev_s, *next = next_s;
  heap_ent *heap = heap_s;
  if (n > 64) {
    sid = malloc(n * sizeof *sid); prev = malloc(n * sizeof *prev); next = malloc(n * sizeof *next);
    heap = malloc(2 * n * sizeof *heap);
    if (!sid || !prev || !next || !heap) { if (n > 64) { free(sid); free(prev); free(next); free(heap); } return -1; }
  }
  /* symbols: one per byte; a byte missing from the vocabulary becomes unk (fused if asked) or is dropped,
   * as Rust's merge_word does */
  size_t ns = 0;
#define PUSH_SYM(x) do { sid[ns] = (x); prev[ns] = (int32_t)ns - 1; next[ns] = (int32_t)ns + 1; ns++; } while (0)
  if (t->byte_level) {
    for (size_t i = 0; i < n; i++) {
      int32_t id = t->byte_id[w[i]];
      if (id < 0) {
        if (t->unk_id < 0) continue;
        if (t->fuse_unk && ns > 0 && sid[ns - 1] == t->unk_id) continue;
        id = t->unk_id;
      }
      PUSH_SYM(id);
    }
  } else {
    /* one symbol per char (Rust's merge_word): a char outside the vocabulary becomes its <0xNN> byte
     * tokens when all exist, else unk; a pending unk is only written out before the next known char
     * or at the end, so (as in Rust) byte tokens that follow it come first */
    int pending_unk = 0;
    for (size_t i = 0; i < n;) {
      size_t l = utf8_len(w[i]);
      if (l > n - i) l = n - i;
      int32_t id = smap_get(&t->vocab_str, w + i, l);
      if (id >= 0) {
        if (pending_unk) { PUSH_SYM(t->unk_id); pending_unk = 0; }
        PUSH_SYM(id);
      } else {
        int fell_back = 0;
        if (t->byte_fallback) {
          fell_back = 1;
          for (size_t k = 0; k < l; k++) if (t->fallback_id[w[i + k]] < 0) fell_back = 0;
          if (fell_back) for (size_t k = 0; k < l; k++) PUSH_SYM(t->fallback_id[w[i + k]]);
        }
        if (!fell_back && t->unk_id >= 0) {
          if (pending_unk && !t->fuse_unk) PUSH_SYM(t->unk_id);
          pending_unk = 1;
        }
      }
      i += l;
    }
    if (pending_unk) PUSH_SYM(t->unk_id);
  }
#undef PUSH_SYM
  if (ns) next[ns - 1] = -1;
  size_t hn = 0;
  for (size_t i = 0; i + 1 < ns; i++) {
    const pmap_ent *m = pmap_get(&t->merges, sid[i], sid[i + 1]);
    if (m) heap_push(heap, &hn, (heap_ent){((uint64_t)m->rank << 32) | i, m->id});
  }
  while (hn) {
    heap_ent top = heap_pop(heap, &hn);
    int32_t pos = (int32_t)(top.key & 0xFFFFFFFFu);
    uint32_t rank = (uint32_t)(top.key >> 32);
    if (sid[pos] < 0) continue;                      /* merged away */
    int32_t nx = next[pos];
    if (nx < 0) continue;
    const pmap_ent *m = pmap_get(&t->merges, sid[pos], sid[nx]);
    if (!m || m->rank != rank || m->id != top.id) continue;   /* the pair changed since it was queued */
    sid[pos] = m->id;
    sid[nx] = -1;
    next[pos] = next[nx];
    if (next[nx] >= 0) prev[next[nx]] = pos;
    if (prev[pos] >= 0) {
      const pmap_ent *pm = pmap_get(&t->merges, sid[prev[pos]], sid[pos]);
      if (pm) heap_push(heap, &hn, (heap_ent){((uint64_t)pm->rank << 32) | (uint32_t)prev[pos], pm->id});
    }
    if (next[pos] >= 0) {
      const pmap_ent *nm = pmap_get(&t->merges, sid[pos], sid[next[pos]]);
      if (nm) heap_push(heap, &hn, (heap_ent){((uint64_t)nm->rank << 32) | (uint32_t)pos, nm->id});
    }
  }
  int rc = 0;
  for (int32_t i = ns ? 0 : -1; i >= 0; i = next[i])
    if (ivec_push(out, sid[i])) { rc = -1; break; }
  if (n > 64) { free(sid); free(prev); free(next); free(heap); }
  return rc;
}


// ---- word cache ---------------------------------------------------------------------------------------

static int cache_get(const pc_tokenizer *t_, const unsigned char *w, size_t n, ivec *out) {
  pc_tokenizer *t = (pc_tokenizer *)t_;            /* the cache is the only mutable part, under its lock */
  uint64_t h = hash_bytes(w, n);
  cache_shard *s = &t->cache[h % CACHE_SHARDS];
  int hit = 0;
  pthread_mutex_lock(&s->mu);
  if (s->e) {
    size_t i = (h >> 8) & (s->cap - 1);
    for (;;) {
      cache_ent *e = &s->e[i];
      if (!e->blob) break;
      uint32_t kl, ni;
      memcpy(&kl, e->blob, 4); memcpy(&ni, e->blob + 4, 4);
      if (e->h == h && kl == n && memcmp(e->blob + 8, w, n) == 0) {
        hit = 1;
        for (uint32_t k = 0; k < ni && hit == 1; k++) {
          int32_t id;
          memcpy(&id, e->blob + 8 + ((n + 3) & ~(size_t)3) + 4 * k, 4);
          if (ivec_push(out, id)) hit = -1;
        }
        break;
      }
      i = (i + 1) & (s->cap - 1);
    }
  }
  pthread_mutex_unlock(&s->mu);
  return hit;
}

static void cache_put(const pc_tokenizer *t_, const unsigned char *w, size_t n, const int32_t *ids, size_t ni) {
  pc_tokenizer *t = (pc_tokenizer *)t_;
  uint64_t h = hash_bytes(w, n);
  cache_shard *s = &t->cache[h % CACHE_SHARDS];
  size_t kp = (n + 3) & ~(size_t)3;
  char *blob = malloc(8 + kp + 4 * ni);
  if (!blob) return;                                 /* a cache that cannot grow just stays as it is */
  uint32_t kl = (uint32_t)n, nn = (uint32_t)ni;
  memcpy(blob, &kl, 4); memcpy(blob + 4, &nn, 4);
  memcpy(blob + 8, w, n);
  if (ni) memcpy(blob + 8 + kp, ids, 4 * ni);
  pthread_mutex_lock(&s->mu);
  if (!s->e && (s->e = calloc(CACHE_SLOTS_MIN, sizeof *s->e))) s->cap = CACHE_SLOTS_MIN;
  if (s->e && s->count * 10 >= s->cap * 7) {
    cache_ent *ne = s->cap < CACHE_SLOTS ? calloc(2 * s->cap, sizeof *ne) : NULL;
    if (ne) {                                        /* grow: rehash every entry into twice the slots */
      size_t nc = 2 * s->cap;
      for (size_t k = 0; k < s->cap; k++) {
        if (!s->e[k].blob) continue;
        size_t j = (s->e[k].h >> 8) & (nc - 1);
        while (ne[j].blob) j = (j + 1) & (nc - 1);
        ne[j] = s->e[k];
      }
      free(s->e);
      s->e = ne; s->cap = nc;
    } else {                                         /* full at its largest: start over rather than evict one by one */
      for (size_t k = 0; k < s->cap; k++) { free(s->e[k].blob); s->e[k].blob = NULL; }
      s->count = 0;
    }
  }
  if (!s->e) { pthread_mutex_unlock(&s->mu); free(blob); return; }
  size_t i = (h >> 8) & (s->cap - 1);
  for (;;) {
    cache_ent *e = &s->e[i];
    if (!e->blob) { e->h = h; e->blob = blob; s->count++; blob = NULL; break; }
    uint32_t ekl;
    memcpy(&ekl, e->blob, 4);
    if (e->h == h && ekl == n && memcmp(e->blob + 8, w, n) == 0) break;   /* another thread was first */
    i = (i + 1) & (s->cap - 1);
  }
  pthread_mutex_unlock(&s->mu);
  free(blob);
}

// ---- Unicode classes for added-token flags (Rust's regex: \w and \s are Unicode) ------------------

static int is_word_cp(uint32_t c) {
  if (u_hasBinaryProperty((UChar32)c, UCHAR_ALPHABETIC) || u_hasBinaryProperty((UChar32)c, UCHAR_JOIN_CONTROL))
    return 1;
  int8_t ty = u_charType((UChar32)c);
  return ty == U_NON_SPACING_MARK || ty == U_ENCLOSING_MARK || ty == U_COMBINING_SPACING_MARK ||
         ty == U_DECIMAL_DIGIT_NUMBER || ty == U_CONNECTOR_PUNCTUATION;
}

static int is_space_cp(uint32_t c) { return u_hasBinaryProperty((UChar32)c, UCHAR_WHITE_SPACE); }

/* Start of the code point that ends at s[end-1]. */
static size_t utf8_prev(const char *s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
  return i;
}

// ---- encoding -----------------------------------------------------------------------------------------

typedef struct { size_t off, len; } span;
typedef struct { span *v; size_t n, cap; } spanvec;

static int spanvec_push(spanvec *a, size_t off, size_t len) {
  if (a->n == a->cap) {
    size_t nc = a->cap ? a->cap * 2 : 64;
    span *nv = realloc(a->v, nc * sizeof *nv);
    if (!nv) return -1;
    a->v = nv; a->cap = nc;
  }
  a->v[a->n++] = (span){off, len};
  return 0;
}

typedef struct { size_t s, e; int m; } seg;
typedef struct { seg *v; size_t n, cap; } segvec;

static int segvec_push(segvec *a, size_t s, size_t e, int m) {
  if (a->n == a->cap) {
    size_t nc = a->cap ? a->cap * 2 : 64;
    seg *nv = realloc(a->v, nc * sizeof *nv);
    if (!nv) return -1;
    a->v = nv; a->cap = nc;
  }
  a->v[a->n++] = (seg){s, e, m};
  return 0;
}

typedef struct {
  const pc_tokenizer *t;
  pcre2_match_data *md;
  bbuf buf;          /* the pieces' bytes */
  spanvec pa, pb;    /* pieces before / after a pre-tokenizer step */
  segvec sg, sg2;
  int first_raw, first_norm;   /* the section being encoded starts the text / its normalized section */
  ivec *out;
  char *err; size_t errlen;
} encstate;

/* Matches and gaps of re over s[0..n), in order, covering it (the Rust crate's Pattern::find_matches). */
static int regex_segments(encstate *st, const pcre2_code *re, const char *s, size_t n, segvec *sg) {
  sg->n = 0;
  if (n == 0) return segvec_push(sg, 0, 0, 0);
  size_t pos = 0, prev = 0;
  while (pos <= n) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, st->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[200];
      pcre2_get_error_message(rc, msg, sizeof msg);
      pc_seterr(st->err, st->errlen, "pre-tokenizer regex failed: %s", (char *)msg);
      return -1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
    size_t ms = ov[0], me = ov[1];
    if (prev != ms && segvec_push(sg, prev, ms, 0)) return -1;
    if (segvec_push(sg, ms, me, 1)) return -1;
    prev = me;
    if (me == ms) {                                  /* empty match: step over one character */
      if (ms >= n) break;
      pos = ms + utf8_len((unsigned char)s[ms]);
    } else pos = me;
  }
  if (prev != n && segvec_push(sg, prev, n, 0)) return -1;
  return 0;
}

/* Applies a split behaviour (NormalizedString::split) to segments, appending non-empty pieces. */
static int apply_behavior(encstate *st, int beh, int invert, size_t base, spanvec *dst) {
  segvec *sg = &st->sg, *o = &st->sg2;
  if (invert) for (size_t i = 0; i < sg->n; i++) sg->v[i].m = !sg->v[i].m;
  o->n = 0;
  int prev_m = 0;
  switch (beh) {
    case BEH_REMOVED:
      for (size_t i = 0; i < sg->n; i++) if (!sg->v[i].m && segvec_push(o, sg->v[i].s, sg->v[i].e, 0)) return -1;
      break;
    case BEH_ISOLATED:
      for (size_t i = 0; i < sg->n; i++) if (segvec_push(o, sg->v[i].s, sg->v[i].e, 0)) return -1;
      break;
    case BEH_MERGED_PREV:
      for (size_t i = 0; i < sg->n; i++) {
        if (sg->v[i].m && !prev_m && o->n) o->v[o->n - 1].e = sg->v[i].e;
        else if (segvec_push(o, sg->v[i].s, sg->v[i].e, 0)) return -1;
        prev_m = sg->v[i].m;
      }
      break;
    case BEH_MERGED_NEXT:
      for (size_t i = sg->n; i-- > 0;) {
        if (sg->v[i].m && !prev_m && o->n) o->v[o->n - 1].s = sg->v[i].s;
        else if (segvec_push(o, sg->v[i].s, sg->v[i].e, 0)) return -1;
        prev_m = sg->v[i].m;
      }
      for (size_t i = 0; i < o->n / 2; i++) { seg x = o->v[i]; o->v[i] = o->v[o->n - 1 - i]; o->v[o->n - 1 - i] = x; }
      break;
    case BEH_CONTIGUOUS:
      for (size_t i = 0; i < sg->n; i++) {
        if (sg->v[i].m && prev_m && o->n) o->v[o->n - 1].e = sg->v[i].e;
        else if (segvec_push(o, sg->v[i].s, sg->v[i].e, 0)) return -1;
        prev_m = sg->v[i].m;
      }
      break;
  }
  for (size_t i = 0; i < o->n; i++)
    if (o->v[i].e > o->v[i].s && spanvec_push(dst, base + o->v[i].s, o->v[i].e - o->v[i].s)) return -1;
  return 0;
}

/* Pre-tokenizes text[0..n) and runs BPE over every word, appending ids. */
static int encode_plain(encstate *st, const char *text, size_t n) {
  const pc_tokenizer *t = st->t;
  if (n == 0) return 0;
  st->buf.n = 0;
  if (bbuf_add(&st->buf, text, n)) return -1;
  st->pa.n = 0;
  if (spanvec_push(&st->pa, 0, n)) return -1;
  for (size_t k = 0; k < t->n_pre; k++) {
    const pre_step *ps = &t->pre[k];
    st->pb.n = 0;
    for (size_t i = 0; i < st->pa.n; i++) {
      span p = st->pa.v[i];
      if (ps->kind == PRE_METASPACE) {
        /* spaces become the replacement; the replacement is prepended (always, or only to the piece
         * that starts the original text: Rust's offsets_original().0 == 0) unless already there */
        int first = st->first_raw && st->first_norm && p.off == 0;
        if (bbuf_reserve(&st->buf, p.len * ps->repl_len + ps->repl_len)) return -1;
        const char *src = st->buf.p + p.off;
        char *dst = st->buf.p + st->buf.n;
        size_t o = 0;
        int starts = src[0] == ' ' || (p.len >= ps->repl_len && memcmp(src, ps->repl, ps->repl_len) == 0);
        if (!starts && (ps->prepend_scheme == PREPEND_ALWAYS || (ps->prepend_scheme == PREPEND_FIRST && first))) {
          memcpy(dst, ps->repl, ps->repl_len); o = ps->repl_len;
        }
        for (size_t c = 0; c < p.len; c++) {
          if (src[c] == ' ') { memcpy(dst + o, ps->repl, ps->repl_len); o += ps->repl_len; }
          else dst[o++] = src[c];
        }
        p = (span){st->buf.n, o};
        st->buf.n += o;
      }
      if (ps->kind == PRE_BYTELEVEL && ps->add_prefix_space && st->buf.p[p.off] != ' ') {
        if (bbuf_reserve(&st->buf, p.len + 1)) return -1;
        size_t no = st->buf.n;
        st->buf.p[no] = ' ';
        memcpy(st->buf.p + no + 1, st->buf.p + p.off, p.len);
        st->buf.n += p.len + 1;
        p = (span){no, p.len + 1};
      }
      if (!ps->re) { if (spanvec_push(&st->pb, p.off, p.len)) return -1; continue; }
      if (regex_segments(st, ps->re, st->buf.p + p.off, p.len, &st->sg)) return -1;
      if (apply_behavior(st, ps->kind == PRE_BYTELEVEL ? BEH_ISOLATED : ps->behavior,
                         ps->kind == PRE_SPLIT ? ps->invert : 0, p.off, &st->pb)) return -1;
    }
    spanvec tmp = st->pa; st->pa = st->pb; st->pb = tmp;
  }
  for (size_t i = 0; i < st->pa.n; i++) {
    const unsigned char *w = (const unsigned char *)st->buf.p + st->pa.v[i].off;
    size_t wl = st->pa.v[i].len;
    if (wl <= CACHE_MAX_WORD) {
      int hit = cache_get(t, w, wl, st->out);
      if (hit < 0) return -1;
      if (hit) continue;
    }
    size_t before = st->out->n;
    if (bpe_word(t, w, wl, st->out)) return -1;
    /* a word of bytes outside the vocabulary (and no unk) gives no ids: out->v may still be NULL */
    if (wl <= CACHE_MAX_WORD) cache_put(t, w, wl, st->out->v ? st->out->v + before : NULL, st->out->n - before);
  }
  return 0;
}

/* Cuts the added tokens of matcher m out of s[0..n) (AddedVocabulary::find_matches): tokens get their
 * id, the text between goes to `plain`. */
static int split_added(encstate *st, const added_matcher *m, const char *s, size_t n,
                       int (*plain)(encstate *, const char *, size_t)) {
  const pc_tokenizer *t = st->t;
  int *first = m == &t->raw_match ? &st->first_raw : &st->first_norm;
  *first = 1;
  if (m->count == 0) return plain(st, s, n);
  size_t pos = 0, start_off = 0;
  while (pos < n) {
    unsigned char c = (unsigned char)s[pos];
    const added_tok *hit = NULL;
    if (m->n[c] <= 8) {
      for (size_t k = 0; k < m->n[c]; k++) {
        const added_tok *a = &t->added[m->idx[c][k]];
        if (a->len <= n - pos && memcmp(s + pos, a->content, a->len) == 0) { hit = a; break; }
      }
    } else
      for (size_t k = 0; k < m->nlens[c]; k++) {
        if (m->lens[c][k] > n - pos) continue;
        int32_t i = smap_get(&m->map, s + pos, m->lens[c][k]);
        if (i >= 0) { hit = &t->added[i]; break; }
      }
    if (!hit) { pos++; continue; }
    size_t ms = pos, me = pos + hit->len;
    if (hit->single_word) {
      size_t l;
      int start_ok = ms == 0 || !is_word_cp(utf8_decode((const unsigned char *)s + utf8_prev(s, ms), &l));
      int stop_ok = me == n || !is_word_cp(utf8_decode((const unsigned char *)s + me, &l));
      if (!start_ok || !stop_ok) { pos = me; continue; }
    }
    if (hit->lstrip) {
      size_t ns = ms, l;
      while (ns > 0) {
        size_t p = utf8_prev(s, ns);
        if (!is_space_cp(utf8_decode((const unsigned char *)s + p, &l))) break;
        ns = p;
      }
      ms = ns > start_off ? ns : start_off;
    }
    if (hit->rstrip) {
      size_t l;
      while (me < n && is_space_cp(utf8_decode((const unsigned char *)s + me, &l))) me += l;
    }
    if (start_off < ms) {
      *first = start_off == 0;
      if (plain(st, s + start_off, ms - start_off)) return -1;
    }
    if (ivec_push(st->out, hit->id)) return -1;
    start_off = pos = me;
  }
  if (start_off < n) {
    *first = start_off == 0;
    if (plain(st, s + start_off, n - start_off)) return -1;
  }
  return 0;
}

/* A section between raw-matched added tokens: normalize, cut out normalized added tokens, encode. */
static int encode_section(encstate *st, const char *s, size_t n) {
  const pc_tokenizer *t = st->t;
  if (!t->n_norm) { st->first_norm = 1; return encode_plain(st, s, n); }
  bbuf norm = {0};
  int rc;
  if (norm_apply(t, s, n, &norm)) { free(norm.p); pc_seterr(st->err, st->errlen, "normalization failed"); return -1; }
  rc = split_added(st, &t->norm_match, norm.p ? norm.p : "", norm.n, encode_plain);
  free(norm.p);
  return rc;
}

int pc_tok_encode(const pc_tokenizer *t, const char *text, size_t len, int add_special,
                  int32_t **ids, size_t *n_ids, char *err, size_t errlen) {
  *ids = NULL; *n_ids = 0;
  if (!t || (!text && len)) { pc_seterr(err, errlen, "encode: no tokenizer or no text"); return -1; }
  size_t bad = utf8_check((const unsigned char *)text, len);
  if (bad != len) { pc_seterr(err, errlen, "encode: text is not valid UTF-8 (byte %zu)", bad); return -1; }
  ivec core = {0};
  encstate st = {.t = t, .out = &core, .err = err, .errlen = errlen};
  st.md = pcre2_match_data_create(t->max_ovec, NULL);
  int rc = st.md ? 0 : -1;
  if (err && errlen) err[0] = 0;
  if (!rc && len) rc = split_added(&st, &t->raw_match, text, len, encode_section);
  pcre2_match_data_free(st.md);
  free(st.buf.p); free(st.pa.v); free(st.pb.v); free(st.sg.v); free(st.sg2.v);
  if (!rc && add_special) {
    for (size_t k = 0; k < t->n_post && !rc; k++) {
      if (t->post[k].kind != POST_TEMPLATE) continue;
      ivec o = {0};
      for (size_t i = 0; i < t->post[k].n_items && !rc; i++) {
        const tmpl_item *it = &t->post[k].items[i];
        rc = it->is_seq ? ivec_append(&o, core.v, core.n) : ivec_append(&o, it->ids, it->n);
      }
      free(core.v);
      core = o;
    }
  }
  if (rc) {
    free(core.v);
    if (err && errlen && !err[0]) pc_seterr(err, errlen, "encode: out of memory");
    return -1;
  }
  if (!core.v) core.v = malloc(sizeof(int32_t));     /* a valid pointer even for no ids */
  if (!core.v) { pc_seterr(err, errlen, "encode: out of memory"); return -1; }
  *ids = core.v; *n_ids = core.n;
  return 0;
}

// ---- decoding and lookups ------------------------------------------------------------------------------

/* The decoder pipeline over a list of token strings, as Rust's decode_chain: each step maps the list to
 * a new one. Where tokenizers.js differs from the Rust crate, we follow Rust (what transformers runs):
 * ByteFallback writes one U+FFFD per byte of an invalid run (tokenizers.js: one per maximal invalid
 * subsequence), and Metaspace drops every replacement char of the first token (tokenizers.js: one
 * leading space). Our encoder never produces either case from valid text. */
typedef struct { bbuf *v; size_t n, cap; } tlist;

static bbuf *tlist_add(tlist *l) {
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 16;
    bbuf *nv = realloc(l->v, nc * sizeof *nv);
    if (!nv) return NULL;
    l->v = nv; l->cap = nc;
  }
  l->v[l->n] = (bbuf){0};
  return &l->v[l->n++];
}

static void tlist_free(tlist *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i].p);
  free(l->v);
  *l = (tlist){0};
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int dec_step_run(const dec_step *d, tlist *in, tlist *out) {
  if (d->kind == DEC_BYTELEVEL || d->kind == DEC_FUSE) {
    bbuf raw = {0}, *o = tlist_add(out);
    if (!o) return -1;
    for (size_t i = 0; i < in->n; i++) {
      bbuf *tk = &in->v[i];
      if (d->kind == DEC_FUSE) { if (bbuf_add(o, tk->p, tk->n)) return -1; continue; }
      if (bbuf_reserve(&raw, tk->n)) { free(raw.p); return -1; }
      long bl = tk->n ? bl_to_bytes(tk->p, tk->n, (unsigned char *)raw.p + raw.n) : 0;
      if (bl < 0) memcpy(raw.p + raw.n, tk->p, tk->n), bl = (long)tk->n;
      raw.n += (size_t)bl;
    }
    if (d->kind == DEC_BYTELEVEL) {
      int rc = utf8_lossy_append(o, (const unsigned char *)(raw.p ? raw.p : ""), raw.n);
      free(raw.p);
      if (rc) return -1;
    }
    return 0;
  }
  if (d->kind == DEC_BYTEFALLBACK) {
    bbuf bytes = {0};
    for (size_t i = 0; i <= in->n; i++) {
      bbuf *tk = i < in->n ? &in->v[i] : NULL;
      int byte = -1;
      if (tk && tk->n == 6 && !memcmp(tk->p, "<0x", 3) && tk->p[5] == '>') {
        int h = hexval(tk->p[3]), l = hexval(tk->p[4]);
        if (h >= 0 && l >= 0) byte = h * 16 + l;
      }
      if (byte >= 0) { unsigned char c = (unsigned char)byte; if (bbuf_add(&bytes, &c, 1)) goto fail; continue; }
      if (bytes.n) {
        if (utf8_check((const unsigned char *)bytes.p, bytes.n) == bytes.n) {
          bbuf *o = tlist_add(out);
          if (!o || bbuf_add(o, bytes.p, bytes.n)) goto fail;
        } else
          for (size_t k = 0; k < bytes.n; k++) {
            bbuf *o = tlist_add(out);
            if (!o || bbuf_add(o, "\xEF\xBF\xBD", 3)) goto fail;
          }
        bytes.n = 0;
      }
      if (tk) { bbuf *o = tlist_add(out); if (!o || bbuf_add(o, tk->p, tk->n)) goto fail; }
    }
    free(bytes.p);
    return 0;
  fail:
    free(bytes.p);
    return -1;
  }
  for (size_t i = 0; i < in->n; i++) {
    const char *p = in->v[i].p ? in->v[i].p : "";
    size_t n = in->v[i].n, l;
    bbuf *o = tlist_add(out);
    if (!o) return -1;
    if (d->kind == DEC_REPLACE) {
      norm_step ns = {.kind = NORM_REPLACE, .a = d->a, .alen = d->alen, .b = d->b, .blen = d->blen};
      if (replace_apply(&ns, p, n, o)) return -1;
    } else if (d->kind == DEC_STRIP) {
      size_t b = 0, e = n;
      for (int k = 0; k < d->start && b < e && utf8_decode((const unsigned char *)p + b, &l) == d->cp; k++) b += l;
      for (int k = 0; k < d->stop && e > b; k++) {
        size_t q = utf8_prev(p, e);
        if (utf8_decode((const unsigned char *)p + q, &l) != d->cp) break;
        e = q;
      }
      if (bbuf_add(o, p + b, e - b)) return -1;
    } else {                                              /* DEC_METASPACE */
      for (size_t k = 0; k < n; k += l) {
        uint32_t cp = utf8_decode((const unsigned char *)p + k, &l);
        int rc = cp != d->cp ? bbuf_add(o, p + k, l) : (i == 0 && d->prepend) ? 0 : bbuf_add(o, " ", 1);
        if (rc) return -1;
      }
    }
  }
  return 0;
}

char *pc_tok_decode_len(const pc_tokenizer *t, const int32_t *ids, size_t n, int skip_special, size_t *out_len) {
  bbuf raw = {0}, out = {0};
  int first = 1, fail = 0;
  int fast = t->n_dec == 1 && t->dec[0].kind == DEC_BYTELEVEL;
  tlist a = {0}, b = {0};
  for (size_t i = 0; i < n && !fail; i++) {
    int32_t id = ids[i];
    if (id < 0 || (size_t)id >= t->n_ids || !t->id_str[id]) continue;   /* unknown ids are dropped, as in HF */
    if (skip_special && t->id_special[id]) continue;
    if (fast) fail = bbuf_add(&raw, t->id_dec[id], t->id_dec_len[id]);
    else if (t->n_dec) {
      bbuf *tk = tlist_add(&a);
      fail = !tk || bbuf_add(tk, t->id_str[id], strlen(t->id_str[id]));
    } else {
      if (!first) fail = bbuf_add(&raw, " ", 1);
      fail = fail || bbuf_add(&raw, t->id_str[id], strlen(t->id_str[id]));
    }
    first = 0;
  }
  if (!fast && t->n_dec) {
    for (size_t k = 0; k < t->n_dec && !fail; k++) {
      b.n = 0;
      fail = dec_step_run(&t->dec[k], &a, &b);
      tlist x = a; a = b; b = x;
      for (size_t i = 0; i < b.n; i++) free(b.v[i].p);
      b.n = 0;
    }
    for (size_t i = 0; i < a.n && !fail; i++) fail = bbuf_add(&raw, a.v[i].p, a.v[i].n);
    tlist_free(&a); tlist_free(&b);
  }
  if (!fail) fail = utf8_lossy_append(&out, (const unsigned char *)(raw.p ? raw.p : ""), raw.n);
  if (!fail) fail = bbuf_add(&out, "", 1);
  free(raw.p);
  if (fail) { free(out.p); return NULL; }
  if (out_len) *out_len = out.n - 1;
  return out.p;
}

char *pc_tok_decode(const pc_tokenizer *t, const int32_t *ids, size_t n, int skip_special) {
  return pc_tok_decode_len(t, ids, n, skip_special, NULL);
}

int32_t pc_tok_token_to_id(const pc_tokenizer *t, const char *token) {
  size_t n = strlen(token);
  int32_t id = smap_get(&t->added_str, token, n);
  return id >= 0 ? id : smap_get(&t->vocab_str, token, n);
}

const char *pc_tok_id_to_token(const pc_tokenizer *t, int32_t id) {
  if (id < 0 || (size_t)id >= t->n_ids) return NULL;
  return t->id_str[id];
}

size_t pc_tok_vocab_size(const pc_tokenizer *t) { return t->n_ids; }

int pc_tok_is_special(const pc_tokenizer *t, int32_t id) {
  return id >= 0 && (size_t)id < t->n_ids && t->id_special[id];
}

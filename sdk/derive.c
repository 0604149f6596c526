/* sdk/derive.c: the pairing rules. Events are facts and are never rewritten; pairs and labels are
 * what the rules conclude from them, and can be concluded again at any time (a rule or weight fix
 * re-derives history with `prefcap derive --all`). docs/pairing.md is the long form of this file.
 *
 * The unit of derivation is one generation g. Everything derived "belongs" to exactly one unit:
 *   edit pairs       (g's edited text > g)                   unit g (the rejected one)
 *   choice pairs     (g > r, side by side)                   unit g (the chosen one)
 *   regenerate pairs (g > each generation g replaced)        unit g (the chosen one)
 *   rating pairs     (g rated +1 > h rated -1, same prompt)  unit g (the +1 one)
 *   g's label        (desirable / undesirable, for KTO)      unit g
 * Recomputing a unit reads only events and generations, and writes by a stable key (update, else
 * insert), so running it twice changes nothing (not even the id sequence), and a pair keeps its id
 * (and lineage) while its inputs do not change.
 *
 * Incrementally, two cursors (the last generation seq and event seq derived) say what is new; each
 * new event names the units it can change (its generation, the one it replaced, the generations
 * that replaced it, the choices and ratings that mention it), and only those are recomputed. A pass
 * recomputes a unit once: a later batch of the same pass skips a unit for rows its recompute already
 * saw (the done map), unless the `rated` table, which the rules read and derivation itself writes,
 * changed under it (tests/sdk/test_pairing.c checks passes against derive --all, with rows landing
 * between batches).
 *
 * Recomputing a unit is three steps: read its facts (read_unit), apply the rules to them
 * (pairing_rules: a pure function, facts in, pairs and label out, no store), write the result
 * (write_unit). Failing safe: a read that fails is an error that aborts the batch and rolls it back,
 * never "no rows": a unit read short would conclude fewer pairs and delete the ones it still
 * deserves (tests/sdk/test_faults.c fails reads one at a time to check it). */
#include "internal.h"
#include "sha256.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- rules and their defaults --------------------------------------------------------------------

void prefcap__rules_default(prefcap__rules *r) {
  *r = (prefcap__rules){
      .edit = 0.9, .edit_light_max = 0.3, .edit_rewrite_min = 0.8, .edit_rewrite_factor = 0.5,
      .regenerate = 0.8, .regenerate_light_edit = 0.8,
      .choice = 1.0, .rating = 1.0,
      .label_accept = 0.9, .label_copy = 0.8, .label_rating = 1.0, .label_regenerated = 0.7, .label_abandon = 0.2,
  };
}

const char *const prefcap__rule_names[] = {
    "edit", "edit.light_max", "edit.rewrite_min", "edit.rewrite_factor", "regenerate",
    "regenerate.light_edit", "choice", "rating", "label.accept", "label.copy", "label.rating",
    "label.regenerated", "label.abandon", NULL};

double *prefcap__rules_field(prefcap__rules *r, const char *name) {
  double *f[] = {&r->edit, &r->edit_light_max, &r->edit_rewrite_min, &r->edit_rewrite_factor,
                 &r->regenerate, &r->regenerate_light_edit, &r->choice, &r->rating, &r->label_accept,
                 &r->label_copy, &r->label_rating, &r->label_regenerated, &r->label_abandon};
  for (int i = 0; prefcap__rule_names[i]; i++)
    if (strcmp(prefcap__rule_names[i], name) == 0) return f[i];
  return NULL;
}

// ---- text distance -------------------------------------------------------------------------------

bool prefcap__same_but_whitespace(const char *a, const char *b) {
  for (;;) {
    while (*a && isspace((unsigned char)*a)) a++;
    while (*b && isspace((unsigned char)*b)) b++;
    if (!*a || !*b) return !*a && !*b;
    if (*a++ != *b++) return false;
  }
}

/* Words as 64-bit FNV-1a hashes: the distance counts words changed, which is what a reader sees as
 * "how much was edited", and it is blind to whitespace-only changes by construction. */
static size_t words(const char *s, uint64_t **out) {
  size_t n = 0, cap = 64;
  uint64_t *w = malloc(cap * sizeof *w);
  if (!w) { *out = NULL; return 0; }
  while (*s) {
    while (*s && isspace((unsigned char)*s)) s++;
    if (!*s) break;
    uint64_t h = 1469598103934665603ULL;
    while (*s && !isspace((unsigned char)*s)) { h ^= (unsigned char)*s++; h *= 1099511628211ULL; }
    if (n == cap) {
      uint64_t *nw = realloc(w, (cap *= 2) * sizeof *w);
      if (!nw) break;
      w = nw;
    }
    w[n++] = h;
  }
  *out = w;
  return n;
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

/* Levenshtein distance over words divided by the longer text's word count. Past 16M cells (two texts
 * of ~4,000 words) the exact table costs too much for a capture path, and the distance is taken from
 * the multiset difference of the words instead (docs/pairing.md). */
double prefcap__edit_distance(const char *a, const char *b) {
  uint64_t *wa, *wb;
  size_t n = words(a, &wa), m = words(b, &wb);
  double d;
  if (n == 0 || m == 0) d = (n == 0 && m == 0) ? 0.0 : 1.0;
  else if ((double)n * (double)m > 16e6) {
    qsort(wa, n, sizeof *wa, cmp_u64);
    qsort(wb, m, sizeof *wb, cmp_u64);
    size_t i = 0, j = 0, common = 0;
    while (i < n && j < m) {
      if (wa[i] == wb[j]) { common++; i++; j++; }
      else if (wa[i] < wb[j]) i++;
      else j++;
    }
    d = 1.0 - (double)common / (double)(n > m ? n : m);
  } else {
    size_t *prev = malloc((m + 1) * sizeof *prev), *cur = malloc((m + 1) * sizeof *cur);
    if (!prev || !cur) d = 1.0;
    else {
      for (size_t j = 0; j <= m; j++) prev[j] = j;
      for (size_t i = 1; i <= n; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= m; j++) {
          size_t sub = prev[j - 1] + (wa[i - 1] != wb[j - 1]);
          size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
          cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        size_t *t = prev; prev = cur; cur = t;
      }
      d = (double)prev[m] / (double)(n > m ? n : m);
    }
    free(prev); free(cur);
  }
  free(wa); free(wb);
  return d > 1.0 ? 1.0 : d;
}

// ---- the derivation context ----------------------------------------------------------------------

typedef struct {
  char *id, *user, *session, *regenerates, *prompt, *messages, *system, *completion;
} gen_t;

typedef struct {
  char *key, *signal, *chosen_id, *chosen_text, *rejected_id, *source, *flags;
  double weight;
} pair_t;

typedef struct {
  prefcap__store *s;
  sqlite3 *db;
  prefcap__rules r;
  int64_t version, now;
  sqlite3_stmt *get_gen, *get_fb, *has_child, *children, *choices_of, *rated_peers, *rated_up,
      *unit_keys, *set_pair, *add_pair, *del_pair, *set_label, *add_label, *del_label, *last_rating, *referred;
  char *err; size_t errlen;
  int64_t gsnap, esnap;      /* the batch's snapshot: the newest generation and event seq it sees */
  struct done_map *done;     /* the units recomputed so far in this call, and the snapshot they saw */
} ctx_t;

static char *dup_col(sqlite3_stmt *st, int i) {
  const unsigned char *t = sqlite3_column_text(st, i);
  return t ? strdup((const char *)t) : NULL;
}

static void gen_free(gen_t *g) {
  free(g->id); free(g->user); free(g->session); free(g->regenerates);
  free(g->prompt); free(g->messages); free(g->system); free(g->completion);
  memset(g, 0, sizeof *g);
}

/* A step's result as a code: a read error is never taken for "no more rows". */
static int step_code(int rc) { return rc == SQLITE_ROW || rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc); }

/* Loads generation id; *found is false when it is not (yet) stored. A code on a read error or out of
 * memory. */
static int load_gen(ctx_t *c, const char *id, gen_t *g, bool *found) {
  memset(g, 0, sizeof *g);
  sqlite3_bind_text(c->get_gen, 1, id, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(c->get_gen);
  *found = rc == SQLITE_ROW;
  if (*found) {
    g->id = dup_col(c->get_gen, 0); g->user = dup_col(c->get_gen, 1); g->session = dup_col(c->get_gen, 2);
    g->regenerates = dup_col(c->get_gen, 3); g->prompt = dup_col(c->get_gen, 4);
    g->messages = dup_col(c->get_gen, 5); g->system = dup_col(c->get_gen, 6);
    g->completion = dup_col(c->get_gen, 7);
    if (!g->id || !g->completion) rc = SQLITE_NOMEM;
  }
  sqlite3_reset(c->get_gen);
  rc = step_code(rc);
  if (rc) { gen_free(g); *found = false; }
  return rc;
}

/* What identifies "the same prompt": the system prompt and the prompt text or messages. */
static void prompt_key(const gen_t *g, char out[65]) {
  prefcap__sha256_ctx h;
  prefcap__sha256_init(&h);
  prefcap__sha256_opt(&h, g->system);
  prefcap__sha256_opt(&h, g->prompt);
  prefcap__sha256_opt(&h, g->messages);
  uint8_t d[32];
  prefcap__sha256_final(&h, d);
  prefcap__hex(d, 32, out);
}

// ---- the affected set ----------------------------------------------------------------------------

/* A set of ids; oom is set when an id could not be added (the caller fails instead of deriving less). */
typedef struct { char **v; size_t n, cap; bool oom; } strset;

static void set_add(strset *s, const char *id) {
  if (!id) return;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 256;
    char **v = realloc(s->v, cap * sizeof *v);
    if (!v) { s->oom = true; return; }
    s->v = v; s->cap = cap;
  }
  char *d = strdup(id);
  if (d) s->v[s->n++] = d;
  else s->oom = true;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void set_unique(strset *s) {
  if (!s->n) return;
  qsort(s->v, s->n, sizeof *s->v, cmp_str);
  size_t k = 1;
  for (size_t i = 1; i < s->n; i++) {
    if (strcmp(s->v[i], s->v[k - 1]) == 0) free(s->v[i]);
    else s->v[k++] = s->v[i];
  }
  s->n = k;
}

static void set_free(strset *s) {
  for (size_t i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
  memset(s, 0, sizeof *s);
}

/* The units recomputed during one prefcap__derive call, each with the snapshot it was recomputed in
 * (the newest generation and event seq its transaction could see). A later batch of the same call
 * that meets the unit again, for a generation or event it already saw, has nothing new for it: after
 * a bulk ingest, a generation with feedback comes up once in its generations batch and again in the
 * events batch that holds its feedback, and was recomputed twice (2.4 times per unit on average in
 * bench/fleet_bench's central store). Open addressing, FNV-1a; a failed allocation only means that
 * less is skipped. */
typedef struct { char *id; int64_t g, e; } done_ent;
typedef struct done_map { done_ent *v; size_t cap, n; } done_map;

static uint64_t fnv1a(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

static done_ent *done_slot(done_ent *v, size_t cap, const char *id) {
  for (size_t i = fnv1a(id) & (cap - 1);; i = (i + 1) & (cap - 1))
    if (!v[i].id || !strcmp(v[i].id, id)) return &v[i];
}

static const done_ent *done_find(const done_map *m, const char *id) {
  if (!m || !m->n) return NULL;
  const done_ent *d = done_slot(m->v, m->cap, id);
  return d->id ? d : NULL;
}

static void done_put(done_map *m, const char *id, int64_t g, int64_t e) {
  if (!m) return;
  if ((m->n + 1) * 10 > m->cap * 7) {  // grow past 70% load
    size_t cap = m->cap ? m->cap * 2 : 1024;
    done_ent *v = calloc(cap, sizeof *v);
    if (!v) return;
    for (size_t i = 0; i < m->cap; i++)
      if (m->v[i].id) *done_slot(v, cap, m->v[i].id) = m->v[i];
    free(m->v);
    m->v = v; m->cap = cap;
  }
  done_ent *d = done_slot(m->v, m->cap, id);
  if (!d->id) {
    if (!(d->id = strdup(id))) return;
    m->n++;
  }
  d->g = g; d->e = e;
}

static void done_free(done_map *m) {
  if (!m) return;
  for (size_t i = 0; i < m->cap; i++) free(m->v[i].id);
  free(m->v);
  free(m);
}

/* The units a batch recomputes, each with why: the newest generation (g) and event (e) seq that
 * brought it in, or force when derived state it reads (the `rated` table) changed, which no snapshot
 * covers. */
typedef struct { char *id; int64_t g, e; bool force; } trig;
typedef struct { trig *v; size_t n, cap; bool oom; } trigset;

static void trig_add(trigset *t, const char *id, int64_t g, int64_t e, bool force) {
  if (!id) return;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 256;
    trig *v = realloc(t->v, cap * sizeof *v);
    if (!v) { t->oom = true; return; }
    t->v = v; t->cap = cap;
  }
  char *d = strdup(id);
  if (d) t->v[t->n++] = (trig){d, g, e, force};
  else t->oom = true;
}

static void trig_add_set(trigset *t, const strset *s, int64_t g, int64_t e, bool force) {
  for (size_t i = 0; i < s->n; i++) trig_add(t, s->v[i], g, e, force);
}

static int cmp_trig(const void *a, const void *b) { return strcmp(((const trig *)a)->id, ((const trig *)b)->id); }

/* Sorted by id, one entry per unit: the newest reasons, force if any forced it. */
static void trig_unique(trigset *t) {
  if (!t->n) return;
  qsort(t->v, t->n, sizeof *t->v, cmp_trig);
  size_t k = 1;
  for (size_t i = 1; i < t->n; i++) {
    trig *last = &t->v[k - 1];
    if (strcmp(t->v[i].id, last->id) == 0) {
      if (t->v[i].g > last->g) last->g = t->v[i].g;
      if (t->v[i].e > last->e) last->e = t->v[i].e;
      last->force |= t->v[i].force;
      free(t->v[i].id);
    } else t->v[k++] = t->v[i];
  }
  t->n = k;
}

static void trig_free(trigset *t) {
  for (size_t i = 0; i < t->n; i++) free(t->v[i].id);
  free(t->v);
  memset(t, 0, sizeof *t);
}

/* Steps a bound statement to completion: a code. *changed (when not NULL): it changed a row. */
static int step_write(ctx_t *c, sqlite3_stmt *st, bool *changed) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (changed) *changed = rc == SQLITE_DONE && sqlite3_changes(c->db) > 0;
  return rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

/* Adds every row's first column of a statement bound to id; a code on a read error. */
static int add_rows(sqlite3_stmt *st, const char *id, strset *out) {
  sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) set_add(out, (const char *)sqlite3_column_text(st, 0));
  sqlite3_reset(st);
  return out->oom ? PREFCAP_ENOMEM : step_code(rc);
}

/* The latest rating of a generation (by event time, then arrival) in *value, 0 if none; *source
 * (malloc'd) says who gave it. A code on a read error. */
static int latest_rating(ctx_t *c, const char *id, int *value, char **source) {
  *value = 0;
  *source = NULL;
  sqlite3_bind_text(c->last_rating, 1, id, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(c->last_rating);
  if (rc == SQLITE_ROW) {
    *value = sqlite3_column_int(c->last_rating, 0);
    *source = dup_col(c->last_rating, 1);
  }
  sqlite3_reset(c->last_rating);
  return step_code(rc);
}

/* Adds to out the rated generations with latest rating `value` on the same prompt as g, by the same
 * user or in the same session, other than g itself; with their rating's source when sources is set. */
static int rated_peers(ctx_t *c, const char *key, const char *id, const char *user, const char *session,
                       int value, strset *out, strset *sources) {
  sqlite3_stmt *st = c->rated_peers;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 2, value);
  sqlite3_bind_text(st, 3, id, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 4, user, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 5, session, -1, SQLITE_TRANSIENT);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    set_add(out, (const char *)sqlite3_column_text(st, 0));
    if (sources) set_add(sources, (const char *)sqlite3_column_text(st, 1));
  }
  sqlite3_reset(st);
  return out->oom || (sources && sources->oom) ? PREFCAP_ENOMEM : step_code(rc);
}

/* Keeps the `rated` table (prompt key and latest rating of each rated generation) current for id. When
 * its row changed, id and the +1-rated generations it can pair with are forced into the batch (their
 * rating pairs read the table); a row already as it was changes nothing for anyone. */
static int refresh_rated(ctx_t *c, const char *id, trigset *affected) {
  char *source = NULL;
  int value;
  int rc = latest_rating(c, id, &value, &source);
  gen_t g;
  bool found = false;
  if (!rc && value) rc = load_gen(c, id, &g, &found);
  if (rc || !found) { free(source); return rc; }
  char key[65];
  prompt_key(&g, key);
  sqlite3_bind_text(c->rated_up, 1, id, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(c->rated_up, 2, key, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(c->rated_up, 3, g.user, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(c->rated_up, 4, g.session, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(c->rated_up, 5, value);
  sqlite3_bind_text(c->rated_up, 6, source ? source : "human", -1, SQLITE_TRANSIENT);
  bool changed;
  rc = step_write(c, c->rated_up, &changed);
  free(source);
  if (!rc && changed) {
    strset peers = {0};
    rc = rated_peers(c, key, id, g.user, g.session, 1, &peers, NULL);
    trig_add(affected, id, 0, 0, true);
    trig_add_set(affected, &peers, 0, 0, true);
    set_free(&peers);
  }
  gen_free(&g);
  return rc;
}

// ---- reading one unit's facts -------------------------------------------------------------------

/* One feedback event on the unit, as stored. */
typedef struct { char *type, *other_id, *text, *source; int value; } fb_event;

/* Everything the rules look at for one unit; read by read_unit, owned here, freed by facts_free. */
typedef struct {
  bool exists;                 /* the generation is stored; if not, the unit derives nothing */
  gen_t g;
  fb_event *fb; int nfb;       /* its feedback, oldest first (by event time, then arrival) */
  gen_t *rejected;             /* per feedback event: a choice's rejected generation (id NULL when not stored) */
  bool has_child;              /* a stored generation regenerates it */
  gen_t *chain; int nchain;    /* the generations it replaced, nearest first: stops at one not stored, at
                                * the unit itself (a loop) or after 32 */
  strset peers, peer_sources;  /* when its latest rating is +1: the generations rated -1 on the same
                                * prompt by the same user or in the same session, with their sources */
} unit_facts;

static void facts_free(unit_facts *u) {
  for (int i = 0; i < u->nfb; i++) {
    free(u->fb[i].type); free(u->fb[i].other_id); free(u->fb[i].text); free(u->fb[i].source);
    if (u->rejected) gen_free(&u->rejected[i]);
  }
  for (int i = 0; i < u->nchain; i++) gen_free(&u->chain[i]);
  free(u->fb); free(u->rejected); free(u->chain);
  gen_free(&u->g);
  set_free(&u->peers); set_free(&u->peer_sources);
  memset(u, 0, sizeof *u);
}

/* Reads the unit's facts. Any failed read is a code (and a partly filled *u for facts_free). */
static int read_unit(ctx_t *c, const char *unit, unit_facts *u) {
  memset(u, 0, sizeof *u);
  int rc = load_gen(c, unit, &u->g, &u->exists);
  if (rc || !u->exists) return rc;
  int cap = 0, step = SQLITE_DONE;
  sqlite3_bind_text(c->get_fb, 1, unit, -1, SQLITE_TRANSIENT);
  while (!rc && (step = sqlite3_step(c->get_fb)) == SQLITE_ROW) {
    if (u->nfb == cap) {
      cap = cap ? cap * 2 : 16;
      fb_event *v = realloc(u->fb, (size_t)cap * sizeof *v);
      if (!v) { rc = PREFCAP_ENOMEM; break; }
      u->fb = v;
    }
    fb_event *e = &u->fb[u->nfb++];
    *e = (fb_event){dup_col(c->get_fb, 0), dup_col(c->get_fb, 1), NULL, dup_col(c->get_fb, 4), sqlite3_column_int(c->get_fb, 3)};
    if (e->type && !strcmp(e->type, "edit")) e->text = dup_col(c->get_fb, 2);   /* only an edit's text is used */
    if (!e->type || (!e->other_id && sqlite3_column_type(c->get_fb, 1) != SQLITE_NULL) ||
        (!e->text && !strcmp(e->type, "edit") && sqlite3_column_type(c->get_fb, 2) != SQLITE_NULL) ||
        (!e->source && sqlite3_column_type(c->get_fb, 4) != SQLITE_NULL)) rc = PREFCAP_ENOMEM;
  }
  sqlite3_reset(c->get_fb);
  if (!rc) rc = step_code(step);
  if (!rc && u->nfb && !(u->rejected = calloc((size_t)u->nfb, sizeof *u->rejected))) rc = PREFCAP_ENOMEM;
  int rating = 0;
  for (int i = 0; i < u->nfb && !rc; i++) {
    if (!strcmp(u->fb[i].type, "rating")) rating = u->fb[i].value;
    bool found;
    if (!strcmp(u->fb[i].type, "choice") && u->fb[i].other_id) rc = load_gen(c, u->fb[i].other_id, &u->rejected[i], &found);
  }
  if (rc) return rc;
  sqlite3_bind_text(c->has_child, 1, unit, -1, SQLITE_TRANSIENT);
  step = sqlite3_step(c->has_child);
  u->has_child = step == SQLITE_ROW;
  sqlite3_reset(c->has_child);
  if ((rc = step_code(step))) return rc;
  /* the chain it replaced (read whatever the rules will make of it: most generations replace none) */
  const char *prev = u->g.regenerates;
  for (int depth = 0; prev && depth < 32; depth++) {
    gen_t *v = realloc(u->chain, (size_t)(u->nchain + 1) * sizeof *v);
    if (!v) return PREFCAP_ENOMEM;
    u->chain = v;
    bool found;
    if ((rc = load_gen(c, prev, &u->chain[u->nchain], &found))) return rc;
    if (!found) break;
    gen_t *a = &u->chain[u->nchain++];
    if (!strcmp(a->id, unit)) break;   /* a loop back to the unit: kept, and the rules stop there */
    prev = a->regenerates;
  }
  if (rating > 0) {
    char key[65];
    prompt_key(&u->g, key);
    rc = rated_peers(c, key, unit, u->g.user, u->g.session, -1, &u->peers, &u->peer_sources);
  }
  return rc;
}

// ---- the rules: facts in, pairs and a label out ----------------------------------------------------

/* The source of a conclusion drawn from two labels: an AI judge's if either came from one. */
static const char *either_source(const char *a, const char *b) {
  if (a && strncmp(a, "ai:", 3) == 0) return a;
  if (b && strncmp(b, "ai:", 3) == 0) return b;
  return "human";
}

/* What one unit derives: its pairs (pointing into the facts, or into strings owned here), and its
 * label. */
typedef struct {
  pair_t *v; int n, cap; char **owned; int nowned, capowned; bool oom;
  bool have_label; int desirable; const char *lsignal, *lsource; double lweight;
} derived;

static char *own(derived *d, char *p) {
  if (!p) { d->oom = true; return NULL; }
  if (d->nowned == d->capowned) {
    int cap = d->capowned ? d->capowned * 2 : 32;
    char **v = realloc(d->owned, (size_t)cap * sizeof *v);
    if (!v) { d->oom = true; free(p); return NULL; }
    d->owned = v; d->capowned = cap;
  }
  return d->owned[d->nowned++] = p;
}

static void derived_free(derived *d) {
  for (int i = 0; i < d->nowned; i++) free(d->owned[i]);
  free(d->owned); free(d->v);
  memset(d, 0, sizeof *d);
}

static void add_pair(derived *d, pair_t p) {
  if (!p.key) { d->oom = true; return; }
  if (d->n == d->cap) {
    int cap = d->cap ? d->cap * 2 : 16;
    pair_t *v = realloc(d->v, (size_t)cap * sizeof *v);
    if (!v) { d->oom = true; return; }
    d->v = v; d->cap = cap;
  }
  d->v[d->n++] = p;
}

static char *keyf(derived *d, const char *signal, const char *a, const char *b) {
  size_t n = strlen(signal) + strlen(a) + (b ? strlen(b) : 0) + 3;
  char *k = malloc(n);
  if (k) snprintf(k, n, b ? "%s:%s:%s" : "%s:%s", signal, a, b);
  return own(d, k);
}

/* The pairing rules (docs/pairing.md): a pure function of the unit's facts and the weights. It reads
 * no store and writes none; d->oom is set if memory ran out (then d is incomplete). */
static void pairing_rules(const unit_facts *u, const prefcap__rules *r, derived *d) {
  memset(d, 0, sizeof *d);
  if (!u->exists) return;
  const gen_t *g = &u->g;
  const char *unit = g->id;
  /* ---- the feedback, oldest first (so "latest" wins by overwriting) */
  const char *edit_text = NULL, *edit_source = NULL, *rating_source = NULL;
  const char *copy_source = NULL, *accept_source = NULL, *abandon_source = NULL, *regen_source = NULL;
  int rating = 0;
  bool copy = false, accept = false, abandon = false, regen_fb = false;
  for (int i = 0; i < u->nfb; i++) {
    const fb_event *e = &u->fb[i];
    if (!strcmp(e->type, "edit")) { edit_text = e->text; edit_source = e->source; }
    else if (!strcmp(e->type, "rating")) { rating = e->value; rating_source = e->source; }
    else if (!strcmp(e->type, "copy")) { copy = true; copy_source = e->source; }
    else if (!strcmp(e->type, "accept")) { accept = true; accept_source = e->source; }
    else if (!strcmp(e->type, "abandon")) { abandon = true; abandon_source = e->source; }
    else if (!strcmp(e->type, "regenerate")) { regen_fb = true; regen_source = e->source; }
  }
  bool regenerated = regen_fb || u->has_child;

  /* ---- edit: the user's final text over the generation */
  bool light_edit = false;
  if (edit_text && !prefcap__same_but_whitespace(edit_text, g->completion)) {
    double dist = prefcap__edit_distance(edit_text, g->completion);
    double w = r->edit;
    const char *flags = "";
    if (dist >= r->edit_rewrite_min) { w *= r->edit_rewrite_factor; flags = "rewrite"; }
    else if (dist < r->edit_light_max) w *= 0.5 + 0.5 * dist / r->edit_light_max;
    light_edit = dist < r->edit_light_max;
    add_pair(d, (pair_t){keyf(d, "edit", unit, NULL), "edit", NULL, (char *)edit_text, g->id,
                         (char *)edit_source, (char *)flags, w});
  }

  /* ---- side-by-side choices: g over each rejected generation that is stored */
  char gkey[65];
  prompt_key(g, gkey);
  for (int i = 0; i < u->nfb; i++) {
    const gen_t *rj = &u->rejected[i];
    if (strcmp(u->fb[i].type, "choice") || !rj->id) continue;
    char rkey[65];
    prompt_key(rj, rkey);
    add_pair(d, (pair_t){keyf(d, "choice", unit, rj->id), "choice", g->id, NULL, rj->id,
                         u->fb[i].source ? u->fb[i].source : "human", strcmp(gkey, rkey) ? "prompt_mismatch" : "", r->choice});
  }

  /* ---- regeneration chain: a kept answer beats every answer it replaced. An explicit -1 outranks
   * implicit approval, and a generation that was itself regenerated is never chosen. */
  double strength = 0; const char *psource = NULL;
  if (rating >= 0) {
    if (rating > 0) { strength = 1.0; psource = rating_source; }
    if (accept && strength < 1.0) { strength = 1.0; psource = accept_source; }
    if (copy && strength < 0.9) { strength = 0.9; psource = copy_source; }
    if (light_edit && strength < r->regenerate_light_edit) { strength = r->regenerate_light_edit; psource = edit_source; }
  }
  if (strength > 0 && !regenerated)
    for (int i = 0; i < u->nchain && strcmp(u->chain[i].id, unit); i++)
      add_pair(d, (pair_t){keyf(d, "regenerate", unit, u->chain[i].id), "regenerate", g->id, NULL, u->chain[i].id,
                           (char *)psource, "", r->regenerate * strength});

  /* ---- ratings: +1 over -1 on the same prompt, by the same user or in the same session */
  if (rating > 0)
    for (size_t i = 0; i < u->peers.n && i < u->peer_sources.n; i++)
      add_pair(d, (pair_t){keyf(d, "rating", unit, u->peers.v[i]), "rating", g->id, NULL, u->peers.v[i],
                           (char *)either_source(rating_source, u->peer_sources.v[i]), "", r->rating});

  /* ---- the unpaired label: an explicit rating decides; else implicit signals, none if they
   * contradict each other (copied, then regenerated anyway) */
  if (rating) {
    d->have_label = true; d->desirable = rating > 0; d->lsignal = "rating"; d->lweight = r->label_rating; d->lsource = rating_source;
  } else if ((accept || copy) && regenerated) {
    d->have_label = false;
  } else if (accept) {
    d->have_label = true; d->desirable = 1; d->lsignal = "accept"; d->lweight = r->label_accept; d->lsource = accept_source;
  } else if (copy) {
    d->have_label = true; d->desirable = 1; d->lsignal = "copy"; d->lweight = r->label_copy; d->lsource = copy_source;
  } else if (regenerated) {
    d->have_label = true; d->desirable = 0; d->lsignal = "regenerate"; d->lweight = r->label_regenerated; d->lsource = regen_source;
  } else if (abandon) {
    d->have_label = true; d->desirable = 0; d->lsignal = "abandon"; d->lweight = r->label_abandon; d->lsource = abandon_source;
  }
}

// ---- writing one unit ----------------------------------------------------------------------------

/* Binds an update (?1..?10) or an insert (?1..?11, ?11 the creation time) of one pair. */
static void bind_pair(ctx_t *c, sqlite3_stmt *st, const char *unit, const pair_t *p) {
  sqlite3_bind_text(st, 1, p->key, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, unit, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 3, p->signal, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, p->chosen_id, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 5, p->chosen_text, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 6, p->rejected_id, -1, SQLITE_TRANSIENT);
  sqlite3_bind_double(st, 7, p->weight);
  sqlite3_bind_text(st, 8, p->source ? p->source : "human", -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 9, p->flags ? p->flags : "", -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 10, c->version);
  if (st == c->add_pair) sqlite3_bind_int64(st, 11, c->now);
}

/* Binds an update (?1..?6) or an insert (?1..?7, ?7 the creation time) of a unit's label. */
static void bind_label(ctx_t *c, sqlite3_stmt *st, const char *unit, const derived *d) {
  sqlite3_bind_text(st, 1, unit, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 2, d->desirable);
  sqlite3_bind_text(st, 3, d->lsignal, -1, SQLITE_STATIC);
  sqlite3_bind_double(st, 4, d->lweight);
  sqlite3_bind_text(st, 5, d->lsource ? d->lsource : "human", -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 6, c->version);
  if (st == c->add_label) sqlite3_bind_int64(st, 7, c->now);
}

/* Pairs and labels are written as an UPDATE by key and, when it matched none, an INSERT. Not an
 * upsert: SQLite's INSERT ... ON CONFLICT DO UPDATE takes a number from an AUTOINCREMENT sequence
 * even when it updates, so every re-derivation of a pair burned an id, and the ids of new pairs
 * depended on how often the writer happened to derive (an export's "id" differed between two ingests
 * of the same events). */
static int put_pair(ctx_t *c, const char *unit, const pair_t *p) {
  bool updated;
  bind_pair(c, c->set_pair, unit, p);
  int rc = step_write(c, c->set_pair, &updated);
  if (rc || updated) return rc;
  bind_pair(c, c->add_pair, unit, p);
  return step_write(c, c->add_pair, NULL);
}

static int put_label(ctx_t *c, const char *unit, const derived *d) {
  bool updated;
  bind_label(c, c->set_label, unit, d);
  int rc = step_write(c, c->set_label, &updated);
  if (rc || updated) return rc;
  bind_label(c, c->add_label, unit, d);
  return step_write(c, c->add_label, NULL);
}

/* Stores what was derived (update, else insert), and deletes what this unit derived before and no longer does. */
static int write_unit(ctx_t *c, const char *unit, const derived *d) {
  int rc = d->oom ? PREFCAP_ENOMEM : PREFCAP_OK;
  for (int i = 0; i < d->n && !rc; i++) rc = put_pair(c, unit, &d->v[i]);
  if (!rc) {
    strset old = {0};
    rc = add_rows(c->unit_keys, unit, &old);
    for (size_t i = 0; i < old.n && !rc; i++) {
      bool keep = false;
      for (int j = 0; j < d->n && !keep; j++) keep = !strcmp(d->v[j].key, old.v[i]);
      if (keep) continue;
      sqlite3_bind_text(c->del_pair, 1, old.v[i], -1, SQLITE_TRANSIENT);
      rc = step_write(c, c->del_pair, NULL);
    }
    set_free(&old);
  }
  if (!rc) {
    if (d->have_label) rc = put_label(c, unit, d);
    else {
      sqlite3_bind_text(c->del_label, 1, unit, -1, SQLITE_TRANSIENT);
      rc = step_write(c, c->del_label, NULL);
    }
  }
  return rc;
}

/* Read, conclude, write. A failed read aborts before anything is written: what is stored stays. */
static int recompute(ctx_t *c, const char *unit) {
  unit_facts u;
  derived d = {0};
  int rc = read_unit(c, unit, &u);
  if (!rc) {
    pairing_rules(&u, &c->r, &d);
    rc = write_unit(c, unit, &d);
  }
  if (rc) snprintf(c->err, c->errlen, "deriving pairs for generation '%.200s': %.400s", unit,
                   rc == PREFCAP_ENOMEM ? "out of memory" : sqlite3_errmsg(c->db));
  derived_free(&d);
  facts_free(&u);
  return rc;
}

// ---- the driver ----------------------------------------------------------------------------------

/* A number from meta (0 when absent). A read error is a code: a cursor or version read as 0 would
 * re-derive everything under an old version number, and exports would miss the pairs. */
static int meta_int(sqlite3 *db, const char *key, int64_t *v) {
  sqlite3_stmt *st;
  *v = 0;
  int rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?1", -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return step_code(rc);
}

static int set_meta_int(sqlite3 *db, const char *key, int64_t v) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, v);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

static void ctx_free(ctx_t *c) {
  sqlite3_stmt *all[] = {c->get_gen, c->get_fb, c->has_child, c->children, c->choices_of, c->rated_peers,
                         c->rated_up, c->unit_keys, c->set_pair, c->add_pair, c->del_pair, c->set_label, c->add_label, c->del_label,
                         c->last_rating, c->referred};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) sqlite3_finalize(all[i]);
  done_free(c->done);
  c->done = NULL;
}

static int ctx_init(ctx_t *c, prefcap__store *s, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  c->s = s; c->db = prefcap__store_db(s); c->err = err; c->errlen = errlen;
  struct { sqlite3_stmt **st; const char *sql; } q[] = {
      {&c->get_gen, "SELECT id, user_id, session_id, regenerates, prompt, messages, system, completion FROM generations WHERE id = ?1"},
      {&c->get_fb, "SELECT type, other_id, text, value, source FROM events WHERE gen_id = ?1 ORDER BY ts, seq"},
      {&c->has_child, "SELECT 1 FROM generations WHERE regenerates = ?1 LIMIT 1"},
      {&c->children, "WITH RECURSIVE d(id, depth) AS (SELECT id, 1 FROM generations WHERE regenerates = ?1"
                     " UNION SELECT g.id, d.depth + 1 FROM generations g JOIN d ON g.regenerates = d.id WHERE d.depth < 32)"
                     " SELECT id FROM d"},
      {&c->choices_of, "SELECT gen_id FROM events WHERE other_id = ?1 AND type = 'choice'"},
      {&c->rated_peers, "SELECT gen_id, source FROM rated WHERE prompt_key = ?1 AND user_id = ?4 AND value = ?2 AND gen_id != ?3"
                        " UNION SELECT gen_id, source FROM rated WHERE prompt_key = ?1 AND session_id = ?5 AND value = ?2 AND gen_id != ?3"},
      /* changes() is 0 when the row was already as given: nothing to force (refresh_rated) */
      {&c->rated_up, "INSERT INTO rated(gen_id, prompt_key, user_id, session_id, value, source) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
                     " ON CONFLICT(gen_id) DO UPDATE SET prompt_key = excluded.prompt_key, user_id = excluded.user_id,"
                     " session_id = excluded.session_id, value = excluded.value, source = excluded.source"
                     " WHERE prompt_key IS NOT excluded.prompt_key OR user_id IS NOT excluded.user_id"
                     " OR session_id IS NOT excluded.session_id OR value IS NOT excluded.value OR source IS NOT excluded.source"},
      {&c->unit_keys, "SELECT key FROM pairs WHERE unit = ?1"},
      /* the version moves only when what an export writes changes (values of the row before the update) */
      {&c->set_pair, "UPDATE pairs SET"
                     " version = CASE WHEN weight IS NOT ?7 OR chosen_text IS NOT ?5 OR source IS NOT ?8 OR flags IS NOT ?9"
                     "   THEN ?10 ELSE version END,"
                     " unit = ?2, signal = ?3, chosen_id = ?4, chosen_text = ?5, rejected_id = ?6, weight = ?7, source = ?8, flags = ?9"
                     " WHERE key = ?1"},
      {&c->add_pair, "INSERT INTO pairs(key, unit, signal, chosen_id, chosen_text, rejected_id, weight, source, flags, version, created)"
                     " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"},
      {&c->del_pair, "DELETE FROM pairs WHERE key = ?1"},
      {&c->set_label, "UPDATE labels SET"
                      " version = CASE WHEN desirable IS NOT ?2 OR signal IS NOT ?3 OR weight IS NOT ?4 OR source IS NOT ?5"
                      "   THEN ?6 ELSE version END,"
                      " desirable = ?2, signal = ?3, weight = ?4, source = ?5 WHERE gen_id = ?1"},
      {&c->add_label, "INSERT INTO labels(gen_id, desirable, signal, weight, source, version, created) VALUES(?1,?2,?3,?4,?5,?6,?7)"},
      {&c->del_label, "DELETE FROM labels WHERE gen_id = ?1"},
      {&c->referred, "SELECT EXISTS(SELECT 1 FROM events WHERE gen_id = ?1) OR EXISTS(SELECT 1 FROM events WHERE other_id = ?1)"
                     " OR EXISTS(SELECT 1 FROM generations WHERE regenerates = ?1)"},
      {&c->last_rating, "SELECT value, source FROM events WHERE gen_id = ?1 AND type = 'rating' ORDER BY ts DESC, seq DESC LIMIT 1"},
  };
  for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
    int rc = sqlite3_prepare_v2(c->db, q[i].sql, -1, q[i].st, NULL);
    if (rc) {
      snprintf(err, errlen, "cannot prepare the pairing rules' queries: %s", sqlite3_errmsg(c->db));
      ctx_free(c);
      return prefcap__sqlite_code(rc);
    }
  }
  return PREFCAP_OK;
}

/* New generations (and new events) taken per batch, each batch one transaction. A variable only so
 * that tests/sdk/test_pairing.c can make a small history span hundreds of batches. */
int prefcap__derive_batch = 2000;
#define DERIVE_BATCH prefcap__derive_batch
/* Called after each committed batch when set (tests: rows that land between the batches of a pass). */
void (*prefcap__derive_after_batch)(void *arg);
void *prefcap__derive_after_batch_arg;

/* One transaction: the next batch of new generations and events, and the units they touch. Sets
 * *more when there may be more to do. */
static int derive_batch(ctx_t *c, bool all, int64_t *all_cursor, bool *more) {
  int rc = prefcap__store_begin(c->s, c->err, c->errlen);
  if (rc) return rc;
  int64_t gcur = 0, ecur = 0, version = 0;
  rc = prefcap__store_load_rules(c->s, &c->r);
  if (!rc) rc = meta_int(c->db, "derive.version", &version);
  if (!rc) rc = meta_int(c->db, "derive.gen_seq", &gcur);
  if (!rc) rc = meta_int(c->db, "derive.event_seq", &ecur);
  c->version = version + 1;
  c->now = prefcap__now_ms();
  int64_t gmax = gcur, emax = ecur;
  trigset affected = {0};
  strset rated_ids = {0}, rows = {0};
  sqlite3_stmt *st = NULL;
  int step = SQLITE_DONE;
  *more = false;
  if (!rc) {  // the snapshot this batch's recomputes see
    sqlite3_prepare_v2(c->db, "SELECT (SELECT ifnull(max(seq),0) FROM generations), (SELECT ifnull(max(seq),0) FROM events)", -1, &st, NULL);
    if ((step = sqlite3_step(st)) == SQLITE_ROW) { c->gsnap = sqlite3_column_int64(st, 0); c->esnap = sqlite3_column_int64(st, 1); }
    sqlite3_finalize(st);
    rc = step_code(step);
  }
  if (rc) {
    /* nothing read: fall through to the rollback */
  } else if (all) {
    /* every generation, a batch at a time; the cursors are set to the ends once done */
    sqlite3_prepare_v2(c->db, "SELECT seq, id FROM generations WHERE seq > ?1 ORDER BY seq LIMIT ?2", -1, &st, NULL);
    sqlite3_bind_int64(st, 1, *all_cursor);
    sqlite3_bind_int(st, 2, DERIVE_BATCH);
    int n = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
      *all_cursor = sqlite3_column_int64(st, 0);
      const char *id = (const char *)sqlite3_column_text(st, 1);
      trig_add(&affected, id, 0, 0, true);
      set_add(&rated_ids, id);
      n++;
    }
    sqlite3_finalize(st);
    rc = step_code(step);
    *more = n == DERIVE_BATCH;
    if (!rc && !*more) {
      gmax = c->gsnap;   /* the ends of both tables, read at the batch's start in this transaction */
      emax = c->esnap;
      /* derived rows whose generation is gone (erased) go too */
      rc = prefcap__sqlite_code(sqlite3_exec(c->db, "DELETE FROM pairs WHERE unit NOT IN (SELECT id FROM generations);"
                                                             "DELETE FROM labels WHERE gen_id NOT IN (SELECT id FROM generations);", NULL, NULL, NULL));
    }
  } else {
    sqlite3_prepare_v2(c->db, "SELECT seq, id, regenerates FROM generations WHERE seq > ?1 ORDER BY seq LIMIT ?2", -1, &st, NULL);
    sqlite3_bind_int64(st, 1, gcur);
    sqlite3_bind_int(st, 2, DERIVE_BATCH);
    int n = 0;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
      int64_t gseq = gmax = sqlite3_column_int64(st, 0);
      const char *id = (const char *)sqlite3_column_text(st, 1);
      trig_add(&affected, (const char *)sqlite3_column_text(st, 2), gseq, 0, false);   /* the replaced one is now regenerated */
      n++;
      /* Most new generations have nothing referring to them yet (their feedback comes later, and is
       * derived then): one check of three indexes, and nothing more to do for them. */
      sqlite3_bind_text(c->referred, 1, id, -1, SQLITE_TRANSIENT);
      int r = sqlite3_step(c->referred);
      bool referred = r == SQLITE_ROW && sqlite3_column_int(c->referred, 0);
      sqlite3_reset(c->referred);
      rc = step_code(r);
      if (rc || !referred) continue;
      trig_add(&affected, id, gseq, 0, false);
      /* the recursive query builds two temporary tables per call, whose pages glibc hands back to the
       * kernel on free (madvise, a TLB flush on every core: 40% of a central ingest's time in perf);
       * most generations have no replacement, which one index probe tells */
      sqlite3_bind_text(c->has_child, 1, id, -1, SQLITE_TRANSIENT);
      r = sqlite3_step(c->has_child);
      bool child = r == SQLITE_ROW;
      sqlite3_reset(c->has_child);
      rc = step_code(r);
      if (!rc && child) rc = add_rows(c->children, id, &rows);   /* replacements logged before it can now chain through it */
      if (!rc) rc = add_rows(c->choices_of, id, &rows);    /* choices that rejected it before it arrived */
      trig_add_set(&affected, &rows, gseq, 0, false);
      set_free(&rows);
      set_add(&rated_ids, id);
    }
    sqlite3_finalize(st);
    if (!rc) rc = step_code(step);
    if (n == DERIVE_BATCH) *more = true;
    if (!rc) {
      sqlite3_prepare_v2(c->db, "SELECT seq, gen_id, type FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2", -1, &st, NULL);
      sqlite3_bind_int64(st, 1, ecur);
      sqlite3_bind_int(st, 2, DERIVE_BATCH);
      n = 0;
      while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        emax = sqlite3_column_int64(st, 0);
        const char *id = (const char *)sqlite3_column_text(st, 1);
        trig_add(&affected, id, 0, emax, false);
        if (!strcmp((const char *)sqlite3_column_text(st, 2), "rating")) set_add(&rated_ids, id);
        n++;
      }
      sqlite3_finalize(st);
      rc = step_code(step);
      if (n == DERIVE_BATCH) *more = true;
    }
  }
  if (!rc && (affected.oom || rated_ids.oom)) rc = PREFCAP_ENOMEM;
  if (rc) snprintf(c->err, c->errlen, "deriving pairs: reading what is new: %.400s", rc == PREFCAP_ENOMEM ? "out of memory" : sqlite3_errmsg(c->db));
  set_unique(&rated_ids);
  for (size_t i = 0; i < rated_ids.n && !rc; i++) {
    rc = refresh_rated(c, rated_ids.v[i], &affected);
    if (!rc && affected.oom) rc = PREFCAP_ENOMEM;
    if (rc) snprintf(c->err, c->errlen, "deriving pairs: the ratings of '%.200s': %.400s", rated_ids.v[i],
                     rc == PREFCAP_ENOMEM ? "out of memory" : sqlite3_errmsg(c->db));
  }
  trig_unique(&affected);
  for (size_t i = 0; i < affected.n && !rc; i++) {
    const trig *t = &affected.v[i];
    const done_ent *d = t->force ? NULL : done_find(c->done, t->id);
    if (d && t->g <= d->g && t->e <= d->e) continue;   /* recomputed earlier in this call, with this in view */
    rc = recompute(c, t->id);
    if (!rc && !all) done_put(c->done, t->id, c->gsnap, c->esnap);   /* --all forces every unit: nothing to skip */
  }
  trig_free(&affected); set_free(&rated_ids); set_free(&rows);
  if (!rc && (gmax != gcur || emax != ecur || all)) {
    if (!all || !*more) {
      rc = set_meta_int(c->db, "derive.gen_seq", gmax);
      if (!rc) rc = set_meta_int(c->db, "derive.event_seq", emax);
    }
    if (!rc) rc = set_meta_int(c->db, "derive.version", c->version);
    if (rc) snprintf(c->err, c->errlen, "deriving pairs: moving the cursors: %.400s", sqlite3_errmsg(c->db));
  }
  if (rc) { prefcap__store_rollback(c->s); return rc; }
  return prefcap__store_commit(c->s, c->err, c->errlen);
}

int prefcap__derive(prefcap__store *s, int all, char *err, size_t errlen) {
  ctx_t c;
  int rc = ctx_init(&c, s, err, errlen);
  if (rc) return rc;
  bool more = true;
  int64_t all_cursor = 0;
  c.done = calloc(1, sizeof *c.done);   /* NULL: nothing is skipped */
  while (more && !rc) {
    rc = derive_batch(&c, all != 0, &all_cursor, &more);
    if (!rc && more && prefcap__derive_after_batch) prefcap__derive_after_batch(prefcap__derive_after_batch_arg);
  }
  ctx_free(&c);
  return rc;
}

/* sdk/forget.h: what sdk/forget.c shares with the CLI (sdk/cli/cli_forget.c) beyond the public API: the
 * counts of what an erasure or a prune removed, table by table, and a prune that can be dry-run. */
#ifndef PREFCAP_FORGET_H
#define PREFCAP_FORGET_H
#include "prefcap.h"
#include <stdbool.h>

/* Rows removed (or, for a dry run, that would be), by table. */
typedef struct prefcap__erase_counts {
  uint64_t generations, events, pairs, labels, rated;
  uint64_t kept_old;     /* prune: generations older than the cutoff kept because a live pair needs them */
  bool committed;        /* forget: the erasure committed (rows gone, tombstone set), even if a later step failed */
  bool rederived;        /* forget: the erased user shared pairs with others, whose units were re-derived */
  bool wal_truncated;    /* the WAL was checkpointed and truncated to zero bytes */
} prefcap__erase_counts;

static inline uint64_t prefcap__erase_total(const prefcap__erase_counts *c) {
  return c->generations + c->events + c->pairs + c->labels + c->rated;
}

/* prefcap_forget_user, with the counts by table (counts may be NULL). */
int prefcap__forget_user_ex(prefcap_t *pc, const char *user_id, prefcap_export_fn fn, void *userdata,
                            prefcap__erase_counts *counts);
/* prefcap_prune, with the counts by table; dry_run computes them in a transaction that is rolled
 * back; vacuum rewrites the file afterwards (VACUUM: the space is given back, and no stale copy of a
 * pruned row is left in the slack of a page; writers wait meanwhile). */
int prefcap__prune_ex(prefcap_t *pc, int64_t older_than_ms, bool dry_run, bool vacuum, prefcap__erase_counts *counts);
#endif

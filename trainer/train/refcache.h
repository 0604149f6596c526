/* trainer/train/refcache.h: the reference log-prob cache: the reference model's log-prob sum of a
 * sequence, stored on disk under a key that names everything the number depends on, so that a second
 * run on the same (or overlapping) data skips the reference pass for what it has seen.
 *
 * Keys. The model key is the SHA-256 (libcrypto) of a text that lists, by name and SHA-256 of their
 * bytes: config.json, model.safetensors.index.json and every *.safetensors file of the model
 * directory, the tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 * chat_template.json, chat_template.jinja; "absent" when missing), the adapter merged into the
 * reference (adapter_config.json, adapter_model.safetensors) or "none", the tokenization options and
 * the backend's numerical mode (CPU fp32 and CUDA bf16 never share entries). A sequence's key is the
 * SHA-256 of the model key, its first scored position and its token ids. The files' bytes are hashed
 * by every run (about 1.6 GB/s here): a size-and-mtime shortcut can be fooled by a same-size rewrite
 * whose mtime is restored, and the reference pass it saves costs far more than the hash. Within one
 * run a file is read once (pc_sha256_file remembers it by inode and ctime too: run.json's hashes of
 * the same weights cost nothing more).
 *
 * Values. What the trainer keeps per sequence: the sum of the scored tokens' log-probs (a double, bit
 * for bit as the model returned it) and the number of tokens summed.
 *
 * On disk. DIR/ref-v1/<model key>/<SHA-256 of the file>.pack: immutable packs of 48-byte records
 * (key, sum, count, CRC-32 of the three), behind a 64-byte header (magic, model key, record count,
 * its own CRC-32). A run writes at most one pack, of the entries it computed: a temporary file
 * created O_EXCL|O_NOFOLLOW (0600), written, fsynced, renamed into place, the directory fsynced.
 * Readers only ever see whole packs, so concurrent runs that share the cache are safe (two runs that
 * compute the same sequence both store it; the first pack in name order wins on reading). A record
 * whose CRC fails or that a truncated pack lost is not trusted: it is a miss (recomputed) with a
 * warning, the pack's good records are rewritten into the run's new pack and the damaged pack is
 * removed. More than PC_REFCACHE_MAX_PACKS packs are merged into one the same way.
 *
 * Nothing here fails a run: a cache that cannot be created gives a warning on the FILE given (NULL:
 * silent) and the run goes on without it; one that can be read but not written gives a warning at
 * commit (what it had was used). Not thread-safe: one thread uses a cache. */
#ifndef PC_REFCACHE_H
#define PC_REFCACHE_H
#include <stddef.h>
#include <stdio.h>

#include "model/model.h"

#define PC_REFCACHE_MAX_PACKS 8

typedef struct pc_refcache pc_refcache;

/* What the reference model is (see the key above). Strings are read during pc_refcache_open only. */
typedef struct {
  const char *model_dir;     /* the checkpoint directory */
  const char *adapter_dir;   /* a PEFT LoRA adapter merged into the reference, or NULL */
  const char *tokenization;  /* the tokenization options as text ("max_length=1024 truncation=...") */
  const char *numerics;      /* the backend's numerical mode as text ("cpu fp32", "cuda bf16") */
} pc_refcache_ident;

typedef struct {
  size_t hits;      /* sequences found */
  size_t misses;    /* sequences looked up and not found (including damaged ones) */
  size_t damaged;   /* records found corrupt or lost to a truncated pack (not trusted, recomputed) */
  size_t stored;    /* records written by pc_refcache_commit (new ones, and good ones moved from retired packs) */
  size_t loaded;    /* good records read from the packs */
  int write_failed; /* 1 when commit could not write (warned) */
} pc_refcache_stats;

/* Opens the cache under dir for the reference model id names: creates DIR/ref-v1/<model key>/
 * (0700), hashes the model's files and reads its packs. NULL (with a warning on log) when the cache
 * cannot be used: the directory cannot be created, a file of the model cannot be read. */
pc_refcache *pc_refcache_open(const char *dir, const pc_refcache_ident *id, FILE *log);

/* Looks up seqs[0..n) (shared_prefix is ignored: it changes how a sequence is computed, not its
 * value). Found: hit[i] = 1, sum[i], cnt[i]; else hit[i] = 0 and sum[i], cnt[i] are untouched. An
 * entry whose token count is not the sequence's (n - max(score_from, 1)) is not trusted (a miss,
 * counted as damaged). Returns the number found. */
size_t pc_refcache_get(pc_refcache *c, const pc_model_seq *seqs, size_t n, double *sum, int *cnt, char *hit);

/* Remembers the values of seqs[0..n) for the next commit (a key already held keeps its value).
 * 0, or -1 when out of memory (the entries are then not cached). */
int pc_refcache_put(pc_refcache *c, const pc_model_seq *seqs, size_t n, const double *sum, const int *cnt);

/* Writes what put added (and the good records of retired packs) as one new pack, then removes the
 * retired packs. A failure is a warning on log. */
void pc_refcache_commit(pc_refcache *c, FILE *log);

const pc_refcache_stats *pc_refcache_get_stats(const pc_refcache *c);
/* DIR/ref-v1/<model key>, and the model key as 64 hex digits; owned by the cache. */
const char *pc_refcache_path(const pc_refcache *c);
const char *pc_refcache_model_key(const pc_refcache *c);

/* Frees the cache (without committing). NULL is a no-op. */
void pc_refcache_close(pc_refcache *c);

#endif

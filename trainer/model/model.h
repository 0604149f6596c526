/* trainer/model/model.h: a Hugging Face causal LM (GPT-2 or the Llama family) on a pc_backend, and the
 * log-probabilities of completion tokens.
 *
 * pc_model_load reads DIR/config.json and the safetensors weights (mapped; F32 used in place, F16/BF16
 * converted to float32), optionally merging a PEFT LoRA adapter. pc_model_logps runs the forward pass
 * over a packed batch of sequences and returns, per sequence, the sum of log p(token | prefix) over
 * its completion tokens, computed through the backend's fused chunked log-prob (the whole logits
 * tensor is never stored).
 *
 * Ownership: the model borrows the backend (which must outlive it) and owns everything else. Errors
 * go to err; nothing here prints or exits. A model is driven by one thread at a time. */
#ifndef PC_MODEL_H
#define PC_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/config.h"

typedef struct pc_model pc_model;

typedef struct {
  const int32_t *ids;  /* the whole sequence: prompt then completion */
  int n;               /* its length */
  int score_from;      /* first scored position: tokens score_from..n-1 (each predicted from the ones
                          before it); positions below 1 are never scored (nothing predicts token 0) */
  int shared_prefix;   /* 0, or k > 0: ids[0..k) equal the previous sequence's, which shares nothing
                          itself; those positions are computed once (a pair's prompt) */
} pc_model_seq;

/* The host-side layout of a packed batch, shared by scoring and training: each sequence's own rows
 * (positions shared_prefix..n-1), their token ids and positions, and the M scored rows: the row
 * whose output predicts each scored token, and that token. Checks the sequences (ids inside the
 * vocabulary, lengths within learned positions, shared prefixes that match). */
typedef struct {
  size_t N, M;      /* rows, scored rows */
  int maxT;         /* longest sequence */
  int shares;       /* some sequence shares a prefix */
  int *start;       /* (nseq + 1) row offsets */
  int *plen;        /* (nseq) shared prefix lengths */
  int *cnt;         /* (nseq) scored tokens per sequence */
  int32_t *ids, *pos, *rows, *targets;  /* (N), (N), (M), (M) */
} pc_layout;
int pc_layout_build(const pc_config *c, const pc_model_seq *seqs, int nseq, pc_layout *L, char *err, size_t errlen);
void pc_layout_free(pc_layout *L);
/* RoPE inverse frequencies (head_dim / 2 of them) with Llama 3's rescaling, in double. */
void pc_rope_inv_freq(const pc_config *c, double *out);
/* cos/sin tables (T, HD/2) for positions 0..T-1 computed in double and rounded once; host memory,
 * free() both. -1 when out of memory. */
int pc_rope_tables(const double *inv_freq, int half, int T, float **cos_out, float **sin_out);

/* Reads a PEFT LoRA adapter's adapter_config.json in DIR: r and lora_alpha, refusing what the model
 * code does not compute (DoRA, rsLoRA, biases, rank/alpha patterns, modules_to_save). */
int pc_adapter_config(const char *dir, double *r, double *alpha, char *err, size_t errlen);
/* W += s B A (nn.Linear, W (out, in)) or its transpose (Conv1D, W (in, out)); A (r, in), B (out, r). */
void pc_lora_apply(float *w, pc_wlayout layout, int out_f, int in_f, const float *a, const float *b, int r, float s);

/* adapter_dir: NULL, or a PEFT LoRA directory (adapter_config.json + adapter_model.safetensors),
 * merged into the weights at load (W += alpha/r * B A). */
int pc_model_load(const char *dir, const char *adapter_dir, pc_backend *be, pc_model **out, char *err,
                  size_t errlen);
void pc_model_free(pc_model *m);
const pc_config *pc_model_config(const pc_model *m);

/* Scores nseq sequences as one packed batch. sum[s] (natural log) and count[s] per sequence;
 * tok_logps, when not NULL, receives each scored token's log-prob, sequence after sequence
 * (sum of count[] floats). A token id outside the vocabulary, or a sequence longer than the model's
 * positions (GPT-2), is an error naming the sequence and position. */
int pc_model_logps(pc_model *m, const pc_model_seq *seqs, int nseq, double *sum, int *count, float *tok_logps,
                   char *err, size_t errlen);

#endif

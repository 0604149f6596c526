/* trainer/model/model.h: the model: a Hugging Face causal LM (GPT-2 or the Llama family) on a
 * pc_backend. ONE model serves every use: scoring (`score`), the reference log-probs of training, the
 * policy's forward and backward in training, and evaluation. There is one forward pass and one
 * backward pass (model.c); the tensor names and shapes come from one table per family (families.h).
 *
 * The model/ folder: config.c (config.json), safetensors.c (the weight files), families.c (the tensor
 * tables), model.c (loading, the forward and backward passes, LoRA, the writers).
 *
 * Two ways to load (pc_model_opts.trainable):
 *   frozen     scoring and reference log-probs: F32 weights are used in place from the mapping (others
 *              converted to float32), no gradients; optionally a PEFT adapter merged at load
 *              (W += alpha/r B A, score --adapter).
 *   trainable  writable float32 copies of every weight, their gradients (all of them, or only the
 *              LoRA matrices), LoRA modules computed as PEFT does: y = x W^T + b + (alpha/r)(x A^T) B^T
 *              with A (r, in), B (out, r), also on GPT-2's Conv1D modules (W stored (in, out)).
 *
 * pc_model_forward runs a packed batch of sequences and returns, per sequence, the sum of log
 * p(token | prefix) over its completion tokens through the backend's fused chunked log-prob (the
 * whole logits tensor is never stored). With keep = 1 it keeps every layer's activations for
 * pc_model_backward; with keep = 0 one set of buffers serves all layers.
 *
 * Ownership: the model borrows the backend (which must outlive it) and owns everything else; pointers
 * it returns (config, parameters, names) are borrowed and live until pc_model_free. Errors go to err;
 * nothing here prints or exits. A model is driven by one thread at a time. */
#ifndef PC_MODEL_H
#define PC_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/config.h"
#include "model/safetensors.h"

typedef struct pc_model pc_model;

typedef struct {
  const int32_t *ids;  /* the whole sequence: prompt then completion */
  int n;               /* its length */
  int score_from;      /* first scored position: tokens score_from..n-1 (each predicted from the ones
                          before it); positions below 1 are never scored (nothing predicts token 0) */
  int shared_prefix;   /* 0, or k > 0: ids[0..k) equal the previous sequence's, which shares nothing
                          itself; those positions are computed once (a pair's prompt) */
} pc_model_seq;

/* The host-side layout of a packed batch: each sequence's own rows (positions shared_prefix..n-1),
 * their token ids and positions, and the M scored rows: the row whose output predicts each scored
 * token, and that token. Checks the sequences (ids inside the vocabulary, lengths within learned
 * positions, shared prefixes that match). */
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

typedef struct {
  int trainable;              /* 0: frozen (see above); 1: writable weights with gradients */
  const char *merge_adapter;  /* frozen: NULL, or a PEFT LoRA directory merged into the weights */
  // trainable only:
  int lora_r;                 /* 0: full fine-tune (every weight trainable) */
  double lora_alpha;
  const char *lora_targets;   /* comma-separated module names; NULL = the family's default */
  const char *init_adapter;   /* NULL, or a PEFT adapter directory to start LoRA from */
  uint64_t seed;              /* LoRA A's initialization */
  int recompute;              /* keep only each layer's input in a forward with keep = 1; the backward
                                 recomputes the layer (the same numbers, less memory) */
} pc_model_opts;

/* opts NULL: frozen, no adapter. */
int pc_model_load(const char *dir, const pc_model_opts *opts, pc_backend *be, pc_model **out, char *err,
                  size_t errlen);
void pc_model_free(pc_model *m);
const pc_config *pc_model_config(const pc_model *m);

/* Forward over nseq sequences as one packed batch: sum[s] (natural log) and count[s] per sequence;
 * tok_logps, when not NULL, receives each scored token's log-prob, sequence after sequence (sum of
 * count[] floats). keep = 1 keeps the activations for pc_model_backward (a trainable model only)
 * until the next forward. A token id outside the vocabulary, or a sequence longer than the model's
 * positions (GPT-2), is an error naming the sequence and position; so is a failed backend op. */
int pc_model_forward(pc_model *m, const pc_model_seq *seqs, int nseq, int keep, double *sum, int *count,
                     float *tok_logps, char *err, size_t errlen);
/* Backward of the last forward (made with keep = 1): dsum[s] = dLoss/dsum[s]. Adds into the
 * gradients (zero them with pc_model_zero_grad at the start of an optimizer step). */
int pc_model_backward(pc_model *m, const float *dsum, char *err, size_t errlen);
void pc_model_zero_grad(pc_model *m);

/* Allocates the activations for forwards of up to N rows and M scored rows at once (keep: with the
 * backward's; a trainable model only), so that a run whose largest batch is known allocates them once
 * (pc_model_forward grows them, with some to spare, when a batch is larger). */
int pc_model_reserve(pc_model *m, size_t N, size_t M, int keep, char *err, size_t errlen);

/* What pc_model_load(dir, o) and a forward of N rows (M scored, keep as in pc_model_forward, with
 * o->recompute) would allocate, counted without allocating or reading any weight: bytes of backend
 * memory, each buffer rounded up to 256 as cudaMalloc does. */
typedef struct {
  size_t params;        /* every parameter's fp32 copy (a frozen CPU model may use the mapping instead) */
  size_t matrix_elems;  /* elements of the 2-D parameters (those a backend may keep bf16 copies of) */
  size_t grads;         /* gradients (trainable only) */
  size_t trainable;     /* trainable elements (AdamW keeps two fp32 moments of each) */
  size_t activations;   /* the activation block of pc_model_reserve(N, M, keep), and the RoPE tables */
  size_t matmul_input;  /* elements of the widest matmul input (N x the widest of hidden, q+k+v, FF) */
} pc_model_bytes;
int pc_model_plan(const char *dir, const pc_model_opts *o, size_t N, size_t M, int keep, pc_model_bytes *out,
                  char *err, size_t errlen);

// ---- parameters (for the optimizer and the checkpoint writers)

typedef struct {
  char name[200];      /* the checkpoint's name, or the PEFT key of a LoRA matrix */
  int ndim;
  int64_t shape[2];
  size_t n;            /* elements */
  float *w;            /* backend memory (frozen: possibly the mapping itself; never write it then) */
  float *g;            /* gradient (backend memory), NULL when frozen */
  int decay;           /* 1: AdamW's weight decay applies (not biases and norm weights, as HF Trainer) */
  int lora;            /* 1: a LoRA A or B matrix */
  int w_owned;         /* (internal) w was allocated from the backend */
  float *host;         /* (internal) a host copy that w points into, freed with the model */
} pc_param;

int pc_model_nparams(const pc_model *m);
pc_param *pc_model_param(pc_model *m, int i);
/* Number of trainable elements, and (for messages) total elements. */
size_t pc_model_trainable(const pc_model *m, size_t *total);
/* The LoRA modules actually adapted (comma-separated module names), for adapter_config.json. */
const char *pc_model_lora_targets(const pc_model *m);
/* The checkpoint's own dtype (of its first floating tensor), for writing a full fine-tune back. */
pc_dtype pc_model_dtype(const pc_model *m);

// ---- writers

/* Adapter: DIR/adapter_config.json + adapter_model.safetensors (F32, PEFT keys). */
int pc_model_save_adapter(pc_model *m, const char *dir, const char *base_model, char *err, size_t errlen);
/* Full model: DIR/model.safetensors in dtype (tied embeddings written once) + config.json; tokenizer
 * files are copied by the caller. merged: LoRA merged into the base weights. */
int pc_model_save(pc_model *m, const char *dir, pc_dtype dtype, int merged, char *err, size_t errlen);
/* Loads the values of the parameters that the safetensors file at path names (a checkpoint of this
 * run, for --resume); *loaded counts them. */
int pc_model_load_params(pc_model *m, const char *path, int *loaded, char *err, size_t errlen);

#endif

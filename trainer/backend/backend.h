/* trainer/backend/backend.h: the compute backend interface (ggml-backend style): a small table of function
 * pointers behind a handle, so the model code never knows whether the CPU or CUDA runs it.
 *
 * The backend/ folder: backend.h (this interface), backend.c (the registry: backends by name),
 * backend_cpu.c (OpenBLAS + OpenMP, always built), backend_cuda.cu (kernels + cuBLAS, built where nvcc
 * is found) or backend_cuda_none.c (its stand-in otherwise).
 *
 * Memory: every float/int pointer passed to an op is backend memory, obtained from alloc() (or a
 * weight pointer returned by weight()). For the CPU backend that is ordinary host memory; for CUDA it
 * is device memory. Host-side metadata (sequence offsets) is passed as a pc_batch, which a device
 * backend copies itself.
 *
 * Layout: activations are packed, without padding: N rows = the sum of the lengths of the batch's
 * sequences, row r belongs to sequence s when seq_start[s] <= r < seq_start[s+1]. Token-wise ops
 * (matmul, norms, activations) see only (N, C); attention and RoPE use the sequence layout.
 *
 * Shared prefixes: a sequence may start with the first prefix_len[s] positions of sequence s-1 (a
 * rejected answer after the chosen one, both behind the same prompt). Those positions are not
 * repeated in its rows: its rows hold positions prefix_len[s]..end, and its queries read the keys and
 * values of the shared positions from the rows of sequence s-1. Exact (the prefix's hidden states do
 * not depend on what follows), and the prompt is computed once per pair instead of twice.
 *
 * Weights: a pc_weight is a matrix for y = x W^T + b (nn.Linear, W is (OC, C)) or for y = x W + b
 * (GPT-2's Conv1D, W is (C, OC)); keeping both layouts lets F32 checkpoints be used in place from the
 * mapping.
 *
 * Failure: a device backend runs its compute ops asynchronously, so they return nothing; a failure
 * (a CUDA or cuBLAS error, a kernel that could not launch) is kept by the backend, later ops are
 * skipped, and the next op that returns a status (upload, download, sumsq: the ones that synchronise
 * with the host) returns -1. error() then gives the first failure's message, which names the op that
 * failed ("matmul: cublasGemmEx: ..."). A download that fails leaves its destination undefined:
 * callers check the status and never use the numbers. alloc returns NULL on exhaustion.
 *
 * Capabilities: not every backend has every op (a backend being written may lack some).
 * Callers ask supports(op) (or pc_backend_can_train) instead of testing the table for NULL.
 *
 * Ownership: a backend returned by pc_backend_new is the caller's: free it with ops->destroy. Memory
 * from alloc() is the caller's: free it with ops->free. weight() says through *owned whether it made
 * a copy (the caller's, ops->free) or returned host itself (borrowed from the caller, who keeps it
 * alive). error() returns a string the backend owns, valid until destroy.
 *
 * Not thread-safe: one thread drives a backend (the backend parallelises inside its ops). */
#ifndef PC_BACKEND_H
#define PC_BACKEND_H
#include <stddef.h>
#include <stdint.h>

typedef enum { PC_W_OUT_IN = 0, PC_W_IN_OUT = 1 } pc_wlayout;

typedef struct {
  const float *w;      /* (OC, C) for PC_W_OUT_IN, (C, OC) for PC_W_IN_OUT */
  const float *b;      /* (OC) or NULL */
  pc_wlayout layout;
} pc_weight;

typedef struct {
  int nseq;
  const int *seq_start;  /* host, nseq + 1 offsets into the N rows */
  const int32_t *pos;    /* backend memory, (N): position of each row within its sequence */
  const int *prefix_len; /* host, (nseq) or NULL: positions shared with sequence s-1 (0 for s = 0, and
                            sequence s-1 itself shares nothing when prefix_len[s] > 0) */
} pc_batch;

typedef struct pc_backend pc_backend;

/* What mem_info() says: the device's memory, and what the backend itself will take besides the
 * buffers its callers alloc() (so that a caller can plan a run before allocating anything). */
typedef struct {
  size_t free_bytes, total_bytes; /* the device's memory now (the CPU backend: MemAvailable, MemTotal) */
  size_t workspace_bytes;         /* the backend's own workspaces at their largest (the CUDA backend's
                                     fused log-prob chunk and its statistics); 0 when none */
  double weight_extra;            /* bytes per element that the backend adds to every weight matrix it
                                     multiplies (the CUDA backend's bf16 twins: 2; fp32 mode and CPU: 0) */
  double input_extra;             /* bytes per element of the widest matmul input that it adds (bf16
                                     copies of the activations: 4 in bf16 mode; else 0) */
  int host_memory;                /* 1: alloc() gives ordinary host memory (the CPU backend, and the CUDA
                                     backend under its CPU emulation), which a host-side communicator
                                     (mpi, tcp) can move; 0: device memory, moved by NCCL */
} pc_mem_info;

/* The ops a backend may or may not have (supports()). */
typedef enum {
  PC_OP_EMBEDDING, PC_OP_MATMUL, PC_OP_LAYERNORM, PC_OP_RMSNORM, PC_OP_ROPE, PC_OP_ATTENTION, PC_OP_GELU,
  PC_OP_SWIGLU, PC_OP_LOGPROB, PC_OP_GATHER_ROWS, PC_OP_COPY, PC_OP_ZERO, PC_OP_SCALE,
  PC_OP_EMBEDDING_BACKWARD, PC_OP_MATMUL_BACKWARD, PC_OP_LAYERNORM_BACKWARD, PC_OP_RMSNORM_BACKWARD,
  PC_OP_ROPE_BACKWARD, PC_OP_ATTENTION_BACKWARD, PC_OP_GELU_BACKWARD, PC_OP_SWIGLU_BACKWARD,
  PC_OP_LOGPROB_BACKWARD, PC_OP_SCATTER_ROWS, PC_OP_SUMSQ, PC_OP_ADAMW,
  PC_OP_COUNT
} pc_op;

typedef struct {
  const char *name;
  void (*destroy)(pc_backend *be);
  /* 1 when the backend implements op (its pointer in this table is then set) */
  int (*supports)(pc_backend *be, pc_op op);
  /* The first failure this backend met ("op: what happened"), or NULL; owned by the backend. */
  const char *(*error)(pc_backend *be);
  // ---- memory
  void *(*alloc)(pc_backend *be, size_t bytes);
  void (*free)(pc_backend *be, void *p);
  /* host to backend and back: 0, or -1 when this or an earlier op failed (see error()) */
  int (*upload)(pc_backend *be, void *dst, const void *src, size_t bytes);
  int (*download)(pc_backend *be, void *dst, const void *src, size_t bytes);
  /* A backend copy of n host floats for a weight; the CPU backend may return host itself (borrowed,
   * owned=0). Free with free() only when *owned. */
  const float *(*weight)(pc_backend *be, const float *host, size_t n, int *owned);
  // ---- forward ops
  /* out (N, C) = wte[ids] (+ wpe[pos] when wpe != NULL) */
  void (*embedding)(pc_backend *be, float *out, const int32_t *ids, const float *wte, const float *wpe,
                    const pc_batch *bt, int N, int C);
  /* out (N, OC) = (accumulate ? out : 0) + inp (N, C) · W + b.  accumulate fuses the residual add. */
  void (*matmul)(pc_backend *be, float *out, const float *inp, const pc_weight *w, int N, int C, int OC,
                 int accumulate);
  /* out (N, C) = LayerNorm(inp) * w + b over the last dim; mean and rstd (N) kept when not NULL
   * (for the backward pass) */
  void (*layernorm)(pc_backend *be, float *out, const float *inp, const float *w, const float *b,
                    float eps, int N, int C, float *mean, float *rstd);
  /* out (rows, C) = inp * rsqrt(mean(inp^2) + eps) * w, rows with row stride `stride` (in and out);
   * used over (N, C) and, for Qwen3's q/k norms, over each head (N*H rows of HD). */
  void (*rmsnorm)(pc_backend *be, float *out, const float *inp, const float *w, float eps, int rows, int C,
                  int stride, float *rstd /* (rows) or NULL */);
  /* In place on x (N, H, HD) with row stride `stride` floats between tokens: the rotate-half RoPE of
   * Hugging Face's Llama with cos/sin tables (max_pos, HD/2) indexed by bt->pos. */
  void (*rope)(pc_backend *be, float *x, const float *cos_t, const float *sin_t, const pc_batch *bt, int N,
               int H, int HD, int stride);
  /* Causal self-attention per sequence with grouped-query heads (query head h reads kv head
   * h / (NH/NKV)), scale 1/sqrt(HD); when window > 0 key j is visible from query i only if i-j < window
   * (i, j positions; shared-prefix positions read from sequence s-1's rows, see above).
   * q rows (N, NH, HD) with stride q_stride; k, v rows (N, NKV, HD) with stride kv_stride;
   * out (N, NH*HD) contiguous; lse (N, NH), when not NULL, receives each row's log-sum-exp of the
   * scaled scores (the backward pass recomputes the probabilities from it instead of storing them). */
  void (*attention)(pc_backend *be, float *out, const float *q, const float *k, const float *v, int q_stride,
                    int kv_stride, const pc_batch *bt, int N, int NH, int NKV, int HD, int window, float *lse);
  /* x (n) = gelu(x) in place: tanh approximation (gelu_new) or erf */
  void (*gelu)(pc_backend *be, float *x, size_t n, int tanh_approx);
  /* out (n) = silu(gate) * up */
  void (*swiglu)(pc_backend *be, float *out, const float *gate, const float *up, size_t n);
  /* The fused, chunked LM head + log-softmax + gather: for each of the M rows of h (M, C),
   * out[m] = log softmax(h[m] · head^T)[targets[m]], head (V, C); the (M, V) logits are never stored
   * whole (chunks of rows and of the vocabulary, an online log-sum-exp accumulated in double).
   * lse (M), when not NULL, receives each row's log-sum-exp (for the backward pass). */
  void (*logprob)(pc_backend *be, float *out, const float *h, const pc_weight *head, const int32_t *targets,
                  int M, int C, int V, float *lse);
  /* out (M, C) = inp[rows[m]] : gathers the rows whose next token is scored */
  void (*gather_rows)(pc_backend *be, float *out, const float *inp, const int32_t *rows, int M, int C);

  // ---- training: memory helpers
  void (*copy)(pc_backend *be, void *dst, const void *src, size_t bytes);  /* backend to backend */
  void (*zero)(pc_backend *be, void *p, size_t bytes);
  void (*scale)(pc_backend *be, float *x, size_t n, float s);              /* x *= s */

  // ---- training: backward ops, the gradients of the forward ops above (llm.c's layer_backward).
  // Marked (+=): accumulated into (gradients of weights sum over micro-batches; the residual stream
  // sums its branches); (=): overwritten. A NULL gradient pointer skips that gradient (a frozen
  // weight, or an input nobody needs).
  /* dwte[ids[r]] (+=) dout[r]; dwpe[pos[r]] (+=) dout[r] */
  void (*embedding_backward)(pc_backend *be, float *dwte, float *dwpe, const float *dout, const int32_t *ids,
                             const pc_batch *bt, int N, int C);
  /* For out = inp · W + b: dinp (N, C) (= or += with accumulate), dw (+=) in W's layout, db (OC) (+=) */
  void (*matmul_backward)(pc_backend *be, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                          const pc_weight *w, int N, int C, int OC, int accumulate);
  /* dinp (= or +=), dw (+=), db (+=), from the mean and rstd the forward kept */
  void (*layernorm_backward)(pc_backend *be, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                             const float *w, const float *mean, const float *rstd, int N, int C, int accumulate);
  /* rows with row stride `stride` as in rmsnorm; dinp may alias dout (not with accumulate) */
  void (*rmsnorm_backward)(pc_backend *be, float *dinp, float *dw, const float *dout, const float *inp,
                           const float *w, const float *rstd, int rows, int C, int stride, int accumulate);
  /* In place on dx: the transpose of rope's rotation */
  void (*rope_backward)(pc_backend *be, float *dx, const float *cos_t, const float *sin_t, const pc_batch *bt, int N,
                        int H, int HD, int stride);
  /* dq (=), dk (=), dv (=) with q's and k/v's strides, from out and the lse the forward kept (scores
   * and probabilities recomputed per tile, flash-attention style) */
  void (*attention_backward)(pc_backend *be, float *dq, float *dk, float *dv, const float *dout, const float *q,
                             const float *k, const float *v, const float *out, const float *lse, int q_stride,
                             int kv_stride, const pc_batch *bt, int N, int NH, int NKV, int HD, int window);
  /* dinp (n) (=) = dout * gelu'(inp); dinp may alias dout */
  void (*gelu_backward)(pc_backend *be, float *dinp, const float *inp, const float *dout, size_t n, int tanh_approx);
  /* out = silu(gate) * up: dgate (=), dup (=); either may alias dout */
  void (*swiglu_backward)(pc_backend *be, float *dgate, float *dup, const float *gate, const float *up,
                          const float *dout, size_t n);
  /* The fused log-prob's backward, chunked like the forward: with p = softmax(h · head^T),
   * dh (M, C) (=) = dlp * (head[t] - p · head), dhead (V, C) (+=) = sum_m dlp_m (1[t] - p_m) h_m, in the
 * head's layout ((C, V) for PC_W_IN_OUT: the CUDA backend; the CPU backend reads (V, C) only). The
 * bias, if any, is in p and gets no gradient. */
  void (*logprob_backward)(pc_backend *be, float *dh, float *dhead, const float *h, const pc_weight *head,
                           const int32_t *targets, const float *lse, const float *dlp, int M, int C, int V);
  /* dinp[rows[m]] (+=) dout[m]; rows may repeat */
  void (*scatter_rows)(pc_backend *be, float *dinp, const float *dout, const int32_t *rows, int M, int C);

  // ---- training: optimizer
  /* *out = the sum of squares of x (n), in double: 0, or -1 when this or an earlier op failed */
  int (*sumsq)(pc_backend *be, const float *x, size_t n, double *out);
  /* torch.optim.AdamW on one tensor: p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
   * p -= step_size * m / (sqrt(v) / bc2_sqrt + eps), step_size = lr / (1 - b1^t), bc2_sqrt =
   * sqrt(1 - b2^t) */
  void (*adamw)(pc_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                float b1, float b2, float eps, float step_size, float bc2_sqrt);

  // ---- every backend has these three (no supports() entry): planning, weights that change, identity
  /* The device's memory and the backend's own needs: 0, or -1 when the device cannot say. */
  int (*mem_info)(pc_backend *be, pc_mem_info *out);
  /* The n floats at w, a weight that matmul and logprob multiply, were written (loaded, uploaded, or
   * stepped by the optimizer): a backend that multiplies through copies of its own (the CUDA backend's
   * bf16 twins) refreshes them before an op next reads w. Call it after writing a weight from the host
   * (upload), which also tells the backend that w is a weight; writes by the backend's own ops (adamw)
   * keep its copies in step without a call. The CPU backend has nothing to do. */
  void (*weight_updated)(pc_backend *be, const float *w, size_t n);
  /* The device as a JSON object (name, and for CUDA the driver, runtime and cuBLAS versions, whether it
   * is the CPU emulation), for run.json: a string the backend owns, valid until destroy. */
  const char *(*device_json)(pc_backend *be);
} pc_backend_ops;

struct pc_backend {
  const pc_backend_ops *ops;
  int threads;
};

/* The CPU backend (OpenBLAS sgemm + OpenMP). threads <= 0: all cores. NULL on failure. */
pc_backend *pc_backend_cpu_new(int threads);

// ---- the registry (backend.c)

/* A backend by name: "cpu", "cuda", or "auto" (cuda when a GPU is usable, else cpu). threads: CPU
 * threads (<= 0: all cores). NULL with err set when the name is unknown or the backend cannot start
 * (not built, no device). The caller owns the result: ops->destroy. */
pc_backend *pc_backend_new(const char *name, int threads, char *err, size_t errlen);
/* The names pc_backend_new knows, comma-separated (for messages). */
const char *pc_backend_names(void);
/* 1 when the backend has every op training needs (the forward and backward ops and the optimizer's). */
int pc_backend_can_train(pc_backend *be);

#endif

/* trainer/backend/backend_cuda.cu: the CUDA backend: the forward ops of backend.h as kernels, matmuls and the
 * LM head through cuBLAS (bf16 operands, fp32 accumulation), a fused flash-attention kernel and the
 * chunked log-softmax of the fused log-prob. The CPU backend (backend_cpu.c) is the reference: every
 * op here computes the same function, and tests/gpu/test_cuda_ops.c checks that it does.
 *
 * Precision. Two modes, chosen when the backend is made (pc_backend_cuda_new's fp32 argument, or the
 * environment variable PREFCAP_CUDA_FP32=1 through pc_backend_new):
 *   bf16 (default): the matmuls and the LM head multiply bf16 operands (weights converted once,
 *     activations converted per call) with fp32 accumulation and fp32 outputs; everything else
 *     (norms, RoPE, attention, softmax statistics, the residual stream) is fp32.
 *   fp32: every matmul is cuBLAS's pedantic fp32 (no TF32), for parity with the CPU within 1e-5.
 *
 * Weights and their bf16 twins. backend.h hands weights to ops as `const float *`, and the same weight
 * is read as floats by some ops (the tied wte by the embedding) and multiplied by others (by the LM
 * head). So weight() keeps the simple contract: it returns an fp32 device copy (owned=1), which every
 * op can read, and registers it in a small table. The first matmul or logprob that multiplies a
 * registered weight in bf16 mode makes its bf16 twin (a conversion kernel, once) and keeps it in that
 * table, keyed by the fp32 pointer; free() of the weight frees the twin. Only matrices ever get twins,
 * so the cost is 6 bytes per matrix parameter (4 for the fp32 copy, 2 for the twin): a 7B model needs
 * about 42 GB. A matrix alloc'd by the training code (a trainable weight) joins the table when the
 * trainer first calls weight_updated() on it (after uploading it); a later weight_updated() (an upload
 * on resume) marks its twin stale, remade before the next matmul reads it. adamw on (part of) a weight
 * with a twin updates the twin with it, so a trained weight stays in step without a call. Any other
 * matrix is multiplied in fp32.
 *
 * Errors. Every CUDA and cuBLAS call is checked and every launch is followed by cudaGetLastError()
 * (and, with PREFCAP_CUDA_SYNC=1, a device synchronisation, so that an asynchronous fault is named at
 * the op that caused it). Compute ops return nothing (backend.h): the first failure is kept
 * (ops->error(), pc_backend_cuda_error()), naming the table op that was running; later ops are skipped
 * and upload()/download() return -1 (download() also fills its destination with NaN bytes).
 *
 * Streams. Everything runs on the legacy default stream, in order; upload() and download() are
 * synchronous cudaMemcpy, so host buffers may be reused as soon as they return. One thread drives a
 * backend (backend.h).
 *
 * Attention. A flash-attention kernel (one block per 64 queries of one head, 64-key tiles through
 * shared memory, an online softmax in registers; the T x T scores never exist) in fp32 on the CUDA
 * cores, for head sizes up to 256; larger heads, or PREFCAP_CUDA_ATTN=rows, use a simple kernel (one
 * warp per query row) that is also the fallback to compare with when the tiled one is in doubt.
 * A tensor-core (bf16 mma) version is the next step for speed.
 *
 * Training ops. The backward kernels of the token-wise ops, scatter_rows, sumsq and a fused AdamW are
 * in their own section near the end (deterministic: no atomics, see there), and so are the attention
 * backward (flash-attention-2 style: probabilities recomputed from the forward's lse, no atomics) and
 * the chunked log-prob backward. An op not written stays NULL in the table and supports() says no, so
 * pc_backend_can_train is false and
 * `prefcap-dpo train --device cuda` says so before it starts. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/backend_cuda.h"
#include "backend/cuda_emu/cuda_emu.h"  // PC_LAUNCH; with g++, the CPU emulation (make cuda-emu)

/* The fused log-prob works on LP_ROWS rows x LP_VOCAB logits at a time (64 MB of fp32 logits): large
 * enough that the GEMM runs at full rate, small enough to stay far from (M x V). */
#define LP_ROWS 1024
#define LP_VOCAB 16384
/* Flash attention: queries and keys per tile; AT_LD is the padded leading dimension of the shared
 * tiles stored transposed (a multiple of 4 floats for 16-byte loads, off the 32-bank stride). */
#define AT_BQ 64
#define AT_BK 64
#define AT_LD 68
#define AT_THREADS 256

typedef struct {
  const float *p;      /* fp32 device copy, as weight() returned it */
  size_t n;
  __nv_bfloat16 *bf;   /* its bf16 twin, made on first use by a bf16 matmul (NULL until then) */
  int stale;           /* weight_updated() since the twin was made: remade before its next use */
} weight_entry;

typedef struct { int q0, nq, p0, plen, pbase, base; } att_tile;  /* 64 query rows of one sequence */
/* The attention backward's key tiles: up to 64 key rows of one sequence (rows k0.., positions kp0..),
 * and the (at most two) ranges of queries that read them: [0] the sequence's own queries, [1] those of
 * the next sequence when it shares this one's prefix. Range i: positions q_p0[i] .. q_p0[i]+q_np[i]-1
 * in rows q_row[i].., seeing only key positions below lim[i] (q_np[i] = 0: no such range). */
typedef struct { int k0, nk, kp0, q_row[2], q_p0[2], q_np[2], lim[2]; } att_ktile;

typedef struct {
  pc_backend base;
  int fp32;
  int sync_each;        /* PREFCAP_CUDA_SYNC=1: synchronise after every launch */
  int attn_rows;        /* PREFCAP_CUDA_ATTN=rows: always the one-warp-per-row attention */
  int failed;
  char err[512];
  const char *op;      /* the table op running now (for error messages) */
  char device_json[768]; /* what device_json() returns: made once, at construction */
  cublasHandle_t blas;
  size_t smem_optin;    /* the device's largest dynamic shared memory per block */
  // ---- registered weights (linear search: a few hundred entries, looked up once per matmul)
  weight_entry *w;
  int nw, capw;
  // ---- workspaces, grown on demand
  __nv_bfloat16 *act16; size_t act16_cap;   /* bf16 copy of a matmul's input */
  float *lp_ws; size_t lp_ws_cap;           /* a chunk of logits */
  float *lp_stats; size_t lp_stats_cap;     /* running max, sum, target logit per row (3 x LP_ROWS) */
  __nv_bfloat16 *lp_g16; size_t lp_g16_cap; /* the log-prob backward's chunk of G in bf16 (bf16 mode) */
  // ---- attention tiles of the last batch layout (the same for every layer of a forward pass)
  att_tile *tiles_host, *tiles_dev;
  int ntiles, tiles_cap;
  int *lay_start, *lay_plen, lay_nseq, lay_cap, lay_has_plen;
  // ---- training ops' workspaces (the backward and optimizer section), grown on demand
  __nv_bfloat16 *act16b; size_t act16b_cap; /* a second bf16 activation (matmul_backward's inp for dW) */
  double *sumsq_part; size_t sumsq_part_cap; /* sumsq's per-block partial sums */
  double *colsum_part; size_t colsum_part_cap; /* column sums' per-chunk partial sums */
  // ---- the attention backward: key tiles of the same layout, and D = rowsum(dout * out) per (row, head)
  att_ktile *ktiles_host, *ktiles_dev;
  int nktiles, ktiles_cap;
  float *att_D; size_t att_D_cap;
} cuda_backend;

static cuda_backend *CB(pc_backend *be) { return (cuda_backend *)be; }

// ---- error checking -----------------------------------------------------------------------------

static void fail(cuda_backend *cb, const char *file, int line, const char *what, const char *msg) {
  if (cb->failed) return;  // keep the first: later ones are usually its consequences
  cb->failed = 1;
  // the table's op that was running (make_ops's NAMED), then where and what
  snprintf(cb->err, sizeof cb->err, "%s: %s:%d: %s: %s", cb->op ? cb->op : "cuda", file, line, what, msg);
}

static int check_cuda(cuda_backend *cb, cudaError_t e, const char *what, const char *file, int line) {
  if (e == cudaSuccess) return 0;
  fail(cb, file, line, what, cudaGetErrorString(e));
  return -1;
}

static const char *blas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}

static int check_blas(cuda_backend *cb, cublasStatus_t s, const char *what, const char *file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return 0;
  fail(cb, file, line, what, blas_status_name(s));
  return -1;
}

#define CUDA_CHECK(cb, call) check_cuda((cb), (call), #call, __FILE__, __LINE__)
#define BLAS_CHECK(cb, call) check_blas((cb), (call), #call, __FILE__, __LINE__)
/* after every launch (PC_LAUNCH): the launch's own error, and with PREFCAP_CUDA_SYNC=1 the kernel's */
#define LAUNCH_CHECK(cb, name) launch_check((cb), (name), __FILE__, __LINE__)

static void launch_check(cuda_backend *cb, const char *name, const char *file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && cb->sync_each) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) fail(cb, file, line, name, cudaGetErrorString(e));
}

/* Blocks for a grid-stride loop over n elements, 256 threads each. */
static unsigned grid_for(size_t n) {
  size_t b = (n + 255) / 256;
  if (b < 1) b = 1;
  return b > 65536 ? 65536u : (unsigned)b;
}

// ---- device helpers -----------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
/* Over a block of up to 1024 threads (a multiple of 32); every thread gets the result. */
__device__ float block_sum(float v, float *sh) {
  int lane = threadIdx.x % 32, w = threadIdx.x / 32, nw = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // sh may still be read by a previous reduction
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : 0.0f;
  return warp_sum(v);
}
__device__ float block_max(float v, float *sh) {
  int lane = threadIdx.x % 32, w = threadIdx.x / 32, nw = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : -INFINITY;
  return warp_max(v);
}

// ---- elementwise and norm kernels ---------------------------------------------------------------

__global__ void embedding_kernel(float *out, const int32_t *ids, const float *wte, const float *wpe,
                                 const int32_t *pos, int N, int C) {
  size_t n = (size_t)N * C;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    size_t r = i / C, c = i % C;
    float v = wte[(size_t)ids[r] * C + c];
    if (wpe) v += wpe[(size_t)pos[r] * C + c];
    out[i] = v;
  }
}

/* One warp per row; the row is read twice (mean, then variance about it: no cancellation) and once
 * more to write, from L1/L2. */
__global__ void layernorm_kernel(float *out, const float *inp, const float *w, const float *b, float eps, int N,
                                 int C, float *mean_out, float *rstd_out) {
  int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
  if (row >= N) return;  // whole warps leave together
  const float *x = inp + (size_t)row * C;
  float s = 0;
  for (int i = lane; i < C; i += 32) s += x[i];
  float m = warp_sum(s) / C;
  float v = 0;
  for (int i = lane; i < C; i += 32) {
    float d = x[i] - m;
    v += d * d;
  }
  float rs = 1.0f / sqrtf(warp_sum(v) / C + eps);
  if (lane == 0) {
    if (mean_out) mean_out[row] = m;
    if (rstd_out) rstd_out[row] = rs;
  }
  float *o = out + (size_t)row * C;
  for (int i = lane; i < C; i += 32) o[i] = (x[i] - m) * rs * w[i] + b[i];
}

__global__ void rmsnorm_kernel(float *out, const float *inp, const float *w, float eps, int rows, int C, int stride,
                               float *rstd_out) {
  int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float *x = inp + (size_t)row * stride;
  float s = 0;
  for (int i = lane; i < C; i += 32) s += x[i] * x[i];
  float rs = 1.0f / sqrtf(warp_sum(s) / C + eps);
  if (lane == 0 && rstd_out) rstd_out[row] = rs;
  float *o = out + (size_t)row * stride;  // may be inp (q/k norms in place): each lane reads before it writes
  for (int i = lane; i < C; i += 32) o[i] = x[i] * rs * w[i];
}

/* One thread per rotated pair (i, i + HD/2) of one head of one row. sgn = -1 rotates by the negated angle:
 * the transpose of the rotation, which is rope_backward (sin(-a) = -sin(a); the negation is exact). */
__global__ void rope_kernel(float *x, const float *cos_t, const float *sin_t, const int32_t *pos, int N, int H,
                            int HD, int stride, float sgn) {
  int half = HD / 2;
  size_t n = (size_t)N * H * half;
  for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
    size_t r = t / ((size_t)H * half);
    int rem = (int)(t % ((size_t)H * half)), h = rem / half, i = rem % half;
    size_t p = (size_t)pos[r] * half + i;
    float c = cos_t[p], s = sgn * sin_t[p];
    float *v = x + r * stride + (size_t)h * HD;
    float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c - x2 * s;
    v[i + half] = x2 * c + x1 * s;
  }
}

__global__ void gelu_kernel(float *x, size_t n, int tanh_approx) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float v = x[i];
    // the CPU's form of gelu_new: 0.5 v (1 + tanh(u)) == v * sigmoid(2u)
    x[i] = tanh_approx ? v / (1.0f + expf(-2.0f * k * (v + 0.044715f * v * v * v)))
                       : 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
  }
}

__global__ void swiglu_kernel(float *out, const float *gate, const float *up, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void gather_rows_kernel(float *out, const float *inp, const int32_t *rows, int M, int C) {
  size_t n = (size_t)M * C;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = inp[(size_t)rows[i / C] * C + i % C];
}

__global__ void scale_kernel(float *x, size_t n, float s) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] *= s;
}

/* out (N, OC) = b, or += b: the bias goes in first and the GEMM adds into it (beta 1), as on the CPU */
__global__ void bias_kernel(float *out, const float *b, int N, int OC, int accumulate) {
  size_t n = (size_t)N * OC;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = accumulate ? out[i] + b[i % OC] : b[i % OC];
}

__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

// ---- launchers: elementwise and norms -----------------------------------------------------------

static void cuda_embedding(pc_backend *be, float *out, const int32_t *ids, const float *wte, const float *wpe,
                           const pc_batch *bt, int N, int C) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0) return;
  PC_LAUNCH(embedding_kernel, grid_for((size_t)N * C), 256, 0)(out, ids, wte, wpe, bt->pos, N, C);
  LAUNCH_CHECK(cb, "embedding_kernel");
}

static void cuda_layernorm(pc_backend *be, float *out, const float *inp, const float *w, const float *b, float eps,
                           int N, int C, float *mean, float *rstd) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0) return;
  PC_LAUNCH(layernorm_kernel, (N + 7) / 8, 256, 0)(out, inp, w, b, eps, N, C, mean, rstd);
  LAUNCH_CHECK(cb, "layernorm_kernel");
}

static void cuda_rmsnorm(pc_backend *be, float *out, const float *inp, const float *w, float eps, int rows, int C,
                         int stride, float *rstd) {
  cuda_backend *cb = CB(be);
  if (cb->failed || rows <= 0) return;
  PC_LAUNCH(rmsnorm_kernel, (rows + 7) / 8, 256, 0)(out, inp, w, eps, rows, C, stride, rstd);
  LAUNCH_CHECK(cb, "rmsnorm_kernel");
}

static void cuda_rope(pc_backend *be, float *x, const float *cos_t, const float *sin_t, const pc_batch *bt, int N,
                      int H, int HD, int stride) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0 || HD < 2) return;
  PC_LAUNCH(rope_kernel, grid_for((size_t)N * H * (HD / 2)), 256, 0)(x, cos_t, sin_t, bt->pos, N, H, HD, stride,
                                                                            1.0f);
  LAUNCH_CHECK(cb, "rope_kernel");
}

static void cuda_gelu(pc_backend *be, float *x, size_t n, int tanh_approx) {
  cuda_backend *cb = CB(be);
  if (cb->failed || !n) return;
  PC_LAUNCH(gelu_kernel, grid_for(n), 256, 0)(x, n, tanh_approx);
  LAUNCH_CHECK(cb, "gelu_kernel");
}

static void cuda_swiglu(pc_backend *be, float *out, const float *gate, const float *up, size_t n) {
  cuda_backend *cb = CB(be);
  if (cb->failed || !n) return;
  PC_LAUNCH(swiglu_kernel, grid_for(n), 256, 0)(out, gate, up, n);
  LAUNCH_CHECK(cb, "swiglu_kernel");
}

static void cuda_gather_rows(pc_backend *be, float *out, const float *inp, const int32_t *rows, int M, int C) {
  cuda_backend *cb = CB(be);
  if (cb->failed || M <= 0) return;
  PC_LAUNCH(gather_rows_kernel, grid_for((size_t)M * C), 256, 0)(out, inp, rows, M, C);
  LAUNCH_CHECK(cb, "gather_rows_kernel");
}

static void cuda_scale(pc_backend *be, float *x, size_t n, float s) {
  cuda_backend *cb = CB(be);
  if (cb->failed || !n) return;
  PC_LAUNCH(scale_kernel, grid_for(n), 256, 0)(x, n, s);
  LAUNCH_CHECK(cb, "scale_kernel");
}

// ---- memory -------------------------------------------------------------------------------------

static void *cuda_alloc(pc_backend *be, size_t bytes) {
  void *p = NULL;
  if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess) {
    cudaGetLastError();  // exhaustion is reported by the NULL (backend.h), not kept as a failure
    return NULL;
  }
  return p;
}

static int find_weight(cuda_backend *cb, const void *p) {
  for (int i = 0; i < cb->nw; i++)
    if (cb->w[i].p == p) return i;
  return -1;
}

static void cuda_free(pc_backend *be, void *p) {
  cuda_backend *cb = CB(be);
  if (!p) return;
  int i = find_weight(cb, p);
  if (i >= 0) {
    if (cb->w[i].bf) CUDA_CHECK(cb, cudaFree(cb->w[i].bf));
    cb->w[i] = cb->w[--cb->nw];
  }
  CUDA_CHECK(cb, cudaFree(p));
}

/* upload and download synchronise with the device: their status covers every op before them. */
static int cuda_upload(pc_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_backend *cb = CB(be);
  if (!cb->failed && bytes) CUDA_CHECK(cb, cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return cb->failed ? -1 : 0;
}

static int cuda_download(pc_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_backend *cb = CB(be);
  if (!cb->failed && bytes) CUDA_CHECK(cb, cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  if (cb->failed && bytes) memset(dst, 0xff, bytes);  // NaN floats, for a caller that ignores the status
  return cb->failed ? -1 : 0;
}

static void cuda_copy(pc_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_backend *cb = CB(be);
  if (cb->failed || !bytes) return;
  CUDA_CHECK(cb, cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

static void cuda_zero(pc_backend *be, void *p, size_t bytes) {
  cuda_backend *cb = CB(be);
  if (cb->failed || !bytes) return;
  CUDA_CHECK(cb, cudaMemset(p, 0, bytes));
}

/* The fp32 device copy of a weight, registered so that bf16 matmuls can find (or make) its twin. */
/* Room for one more entry in the weight table: 0, or -1 when the host is out of memory. */
static int weight_room(cuda_backend *cb) {
  if (cb->nw < cb->capw) return 0;
  int nc = cb->capw ? 2 * cb->capw : 256;
  weight_entry *nwp = (weight_entry *)realloc(cb->w, sizeof *nwp * (size_t)nc);
  if (!nwp) return -1;
  cb->w = nwp;
  cb->capw = nc;
  return 0;
}

static const float *cuda_weight(pc_backend *be, const float *host, size_t n, int *owned) {
  cuda_backend *cb = CB(be);
  *owned = 1;
  if (weight_room(cb)) return NULL;
  float *d = (float *)cuda_alloc(be, n * sizeof(float));
  if (!d) return NULL;
  if (n && cudaMemcpy(d, host, n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(d);
    return NULL;
  }
  weight_entry we = {d, n, NULL, 0};
  cb->w[cb->nw++] = we;
  return d;
}

/* A weight was written. One from weight() or seen here before: its twin (if any) is remade before its
 * next use. One alloc'd by the training code: registered now, so that bf16 matmuls find (and make) its
 * twin; free() then frees the twin with it. Registration that fails for want of host memory leaves
 * the weight multiplied in fp32 (slower, not wrong). */
static void cuda_weight_updated(pc_backend *be, const float *w, size_t n) {
  cuda_backend *cb = CB(be);
  int i = find_weight(cb, w);
  if (i >= 0) {
    cb->w[i].stale = 1;
    return;
  }
  if (weight_room(cb)) return;
  weight_entry we = {w, n, NULL, 0};
  cb->w[cb->nw++] = we;
}

static const char *cuda_device_json(pc_backend *be) { return CB(be)->device_json; }

/* The registered weight that holds the n floats at w, or NULL */
static weight_entry *weight_containing(cuda_backend *cb, const float *w, size_t n) {
  for (int i = 0; i < cb->nw; i++)
    if (w >= cb->w[i].p && w + n <= cb->w[i].p + cb->w[i].n) return &cb->w[i];
  return NULL;
}

/* The bf16 twin of the n-element matrix at w, made on first use; NULL when w is not (inside) a
 * registered weight, or in fp32 mode: the caller then multiplies in fp32. */
static const __nv_bfloat16 *bf16_twin(cuda_backend *cb, const float *w, size_t n) {
  if (cb->fp32) return NULL;
  weight_entry *e = weight_containing(cb, w, n);
  if (!e) return NULL;
  if (e->bf && e->stale) {  // written from the host since (weight_updated): convert again, into the same twin
    PC_LAUNCH(to_bf16_kernel, grid_for(e->n), 256, 0)(e->bf, e->p, e->n);
    LAUNCH_CHECK(cb, "to_bf16_kernel");
  }
  e->stale = 0;
  if (!e->bf) {
    void *p = NULL;
    if (cudaMalloc(&p, e->n * sizeof(__nv_bfloat16)) != cudaSuccess) {
      cudaGetLastError();
      return NULL;  // no room for the twin: this matmul runs in fp32
    }
    e->bf = (__nv_bfloat16 *)p;
    PC_LAUNCH(to_bf16_kernel, grid_for(e->n), 256, 0)(e->bf, e->p, e->n);
    LAUNCH_CHECK(cb, "to_bf16_kernel");
  }
  return e->bf + (w - e->p);
}

/* Grows a workspace to `bytes` (never shrinks); -1 with the failure kept when the device is full. */
static int ws_reserve(cuda_backend *cb, void **p, size_t *cap, size_t bytes) {
  if (bytes <= *cap) return 0;
  if (*p) CUDA_CHECK(cb, cudaFree(*p));
  *p = NULL;
  *cap = 0;
  if (CUDA_CHECK(cb, cudaMalloc(p, bytes))) { *p = NULL; return -1; }
  *cap = bytes;
  return 0;
}

/* The bf16 copy of an (n) fp32 activation in the workspace *ws (grown to fit; valid until the next
 * conversion into the same workspace). */
static const __nv_bfloat16 *to_bf16_ws(cuda_backend *cb, const float *x, size_t n, __nv_bfloat16 **ws, size_t *cap) {
  if (ws_reserve(cb, (void **)ws, cap, n * sizeof(__nv_bfloat16))) return NULL;
  PC_LAUNCH(to_bf16_kernel, grid_for(n), 256, 0)(*ws, x, n);
  LAUNCH_CHECK(cb, "to_bf16_kernel");
  return cb->failed ? NULL : *ws;
}
/* ... in the act16 workspace: a matmul's input */
static const __nv_bfloat16 *act_bf16(cuda_backend *cb, const float *x, size_t n) {
  return to_bf16_ws(cb, x, n, &cb->act16, &cb->act16_cap);
}

// ---- matmul -------------------------------------------------------------------------------------

/* Column-major C (m x n, ldc) = op(A) (m x k) · op(B) (k x n) + beta C, A and B both fp32 or both bf16,
 * fp32 accumulation and output. Row-major callers pass their product transposed: row-major
 * out = inp · W is column-major out^T = W^T · inp^T. */
static void gemm_t(cuda_backend *cb, cublasOperation_t opA, cublasOperation_t opB, int m, int n, int k, const void *A,
                   int lda, const void *B, int ldb, float beta, float *C, int ldc, int bf16) {
  const float one = 1.0f;
  cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  // fp32 mode: pedantic, so cuBLAS never substitutes TF32 or reduced-precision reductions
  cublasComputeType_t ct = bf16 || !cb->fp32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
  BLAS_CHECK(cb, cublasGemmEx(cb->blas, opA, opB, m, n, k, &one, A, t, lda, B, t, ldb, &beta, C, CUDA_R_32F, ldc, ct,
                              CUBLAS_GEMM_DEFAULT));
}
/* The forward's products: B untransposed */
static void gemm(cuda_backend *cb, cublasOperation_t opA, int m, int n, int k, const void *A, int lda, const void *B,
                 int ldb, float beta, float *C, int ldc, int bf16) {
  gemm_t(cb, opA, CUBLAS_OP_N, m, n, k, A, lda, B, ldb, beta, C, ldc, bf16);
}

static void cuda_matmul(pc_backend *be, float *out, const float *inp, const pc_weight *w, int N, int C, int OC,
                        int accumulate) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0) return;
  float beta = accumulate ? 1.0f : 0.0f;
  if (w->b) {
    PC_LAUNCH(bias_kernel, grid_for((size_t)N * OC), 256, 0)(out, w->b, N, OC, accumulate);
    LAUNCH_CHECK(cb, "bias_kernel");
    beta = 1.0f;
  }
  // out^T (OC x N) = op(W) · inp^T (C x N): W (OC, C) row-major is column-major (C x OC), transposed;
  // W (C, OC) row-major is column-major (OC x C) as it is.
  cublasOperation_t op = w->layout == PC_W_OUT_IN ? CUBLAS_OP_T : CUBLAS_OP_N;
  int ldw = w->layout == PC_W_OUT_IN ? C : OC;
  const __nv_bfloat16 *w16 = bf16_twin(cb, w->w, (size_t)C * OC);
  const __nv_bfloat16 *x16 = w16 ? act_bf16(cb, inp, (size_t)N * C) : NULL;
  if (cb->failed) return;
  if (w16 && x16) gemm(cb, op, OC, N, C, w16, ldw, x16, C, beta, out, OC, 1);
  else gemm(cb, op, OC, N, C, w->w, ldw, inp, C, beta, out, OC, 0);
}

// ---- attention ----------------------------------------------------------------------------------

/* acc[i][j] += g[i] * x[d * xs] for d = tx + 16 j < HD: the rank-1 update of a thread's 4 rows x NJ
 * columns in the flash kernels (O += P V, and the backward's dQ, dK, dV sums). */
template <int NJ>
__device__ __forceinline__ void acc_rank1(float acc[4][NJ], float4 g, const float *x, int xs, int tx, int HD) {
#pragma unroll
  for (int j = 0; j < NJ; j++) {
    int d = tx + 16 * j;
    if (d < HD) {
      float xd = x[(size_t)d * xs];
      acc[0][j] += g.x * xd;
      acc[1][j] += g.y * xd;
      acc[2][j] += g.z * xd;
      acc[3][j] += g.w * xd;
    }
  }
}

/* Flash attention, fp32. Block (tile, head): 64 queries of one sequence against its visible keys in
 * tiles of 64. 256 threads as 16 x 16: thread (ty, tx) computes the scores of queries ty*4..ty*4+3
 * with keys tx*4..tx*4+3 (16 in registers, operands as float4 from the transposed shared tiles), the
 * 16 threads of a query row (one half-warp) reduce its max and sum by shuffles, and the thread keeps
 * the output columns tx, tx+16, ... of its 4 queries (NJ of them: NJ*16 >= HD) in registers.
 *
 * Keys are addressed by position: position j of sequence s is row pbase + j of sequence s-1 when j is
 * inside the shared prefix (j < plen), else row base + j - plen of its own; so the prefix and the
 * sequence's own keys are one range of positions, lo .. p1-1. A key is visible from query position i
 * when j <= i and, with a window, i - j < window. */
template <int NJ>
__global__ void __launch_bounds__(AT_THREADS) flash_attention_kernel(float *out, float *lse, const float *q,
                                                                      const float *k, const float *v, int q_stride,
                                                                      int kv_stride, const att_tile *tiles, int NH,
                                                                      int NKV, int HD, int window, float scale) {
  PC_DYNAMIC_SHARED(float4, smem4);
  float *Qs = (float *)smem4;      // [HD][AT_LD]: the queries, transposed and scaled
  float *KV = Qs + HD * AT_LD;     // [HD][AT_LD]: a key tile transposed; then [AT_BK][HD]: its values
  float *Ps = KV + HD * AT_LD;     // [AT_BK][AT_LD]: the tile's probabilities, transposed
  const att_tile t = tiles[blockIdx.x];
  const int h = blockIdx.y, kvh = h / (NH / NKV);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int p1 = t.p0 + t.nq;  // one past the tile's last query position
  const int lo = window > 0 && t.p0 - window + 1 > 0 ? t.p0 - window + 1 : 0;
  const size_t kvoff = (size_t)kvh * HD;

  for (int e = tid; e < AT_BQ * HD; e += AT_THREADS) {
    int r = e / HD, d = e % HD;
    Qs[d * AT_LD + r] = r < t.nq ? q[(size_t)(t.q0 + r) * q_stride + (size_t)h * HD + d] * scale : 0.0f;
  }
  float o[4][NJ], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; j++) o[i][j] = 0.0f;
  }

  for (int kt0 = lo; kt0 < p1; kt0 += AT_BK) {
    __syncthreads();  // the last tile's P·V is done with KV and Ps (and, the first time, Qs is written)
    for (int e = tid; e < AT_BK * HD; e += AT_THREADS) {
      int j = e / HD, d = e % HD, pj = kt0 + j;
      float val = 0.0f;
      if (pj < p1) val = k[(size_t)(pj < t.plen ? t.pbase + pj : t.base + pj - t.plen) * kv_stride + kvoff + d];
      KV[d * AT_LD + j] = val;
    }
    __syncthreads();
    // S = Q K^T for this thread's 4 x 4
    float s[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) s[i][j] = 0.0f;
    for (int d = 0; d < HD; d++) {
      float4 a = *(const float4 *)&Qs[d * AT_LD + ty * 4];
      float4 b = *(const float4 *)&KV[d * AT_LD + tx * 4];
      float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) s[i][j] += av[i] * bv[j];
    }
    // mask, then the online softmax: rescale what was accumulated to the new running maximum
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int qi = ty * 4 + i, pi = t.p0 + qi;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        int pj = kt0 + tx * 4 + j;
        bool ok = qi < t.nq && pj <= pi && (window <= 0 || pi - pj < window);
        s[i][j] = ok ? s[i][j] : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      float mn = fmaxf(m[i], mx), corr = 1.0f, ps = 0.0f;
      if (mn == -INFINITY) {  // nothing visible to this row yet
#pragma unroll
        for (int j = 0; j < 4; j++) s[i][j] = 0.0f;
      } else {
        corr = expf(m[i] - mn);  // 0 the first time (m = -inf)
#pragma unroll
        for (int j = 0; j < 4; j++) {
          s[i][j] = expf(s[i][j] - mn);  // masked: exp(-inf) = 0
          ps += s[i][j];
        }
      }
      for (int off = 8; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
      l[i] = l[i] * corr + ps;
      m[i] = mn;
#pragma unroll
      for (int j = 0; j < NJ; j++) o[i][j] *= corr;
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
      *(float4 *)&Ps[(tx * 4 + j) * AT_LD + ty * 4] = make_float4(s[0][j], s[1][j], s[2][j], s[3][j]);
    __syncthreads();  // every thread is done reading the keys; P is complete
    for (int e = tid; e < AT_BK * HD; e += AT_THREADS) {
      int j = e / HD, d = e % HD, pj = kt0 + j;
      float val = 0.0f;
      if (pj < p1) val = v[(size_t)(pj < t.plen ? t.pbase + pj : t.base + pj - t.plen) * kv_stride + kvoff + d];
      KV[j * HD + d] = val;
    }
    __syncthreads();
    // O += P V
    int nk = p1 - kt0 < AT_BK ? p1 - kt0 : AT_BK;
    for (int kk = 0; kk < nk; kk++) {
      acc_rank1<NJ>(o, *(const float4 *)&Ps[kk * AT_LD + ty * 4], KV + (size_t)kk * HD, 1, tx, HD);
    }
  }
  const int OD = NH * HD;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int qi = ty * 4 + i;
    if (qi >= t.nq) continue;
    size_t row = (size_t)(t.q0 + qi);
    float inv = 1.0f / l[i];  // l >= 1: the row's own key is always visible and is its max or below it
#pragma unroll
    for (int j = 0; j < NJ; j++) {
      int d = tx + 16 * j;
      if (d < HD) out[row * OD + (size_t)h * HD + d] = o[i][j] * inv;
    }
    if (lse && tx == 0) lse[row * NH + h] = m[i] + logf(l[i]);
  }
}

/* The simple attention: one warp per query row, keys one at a time with an online softmax, the row's
 * scaled query and its output accumulator in shared memory (lane d owns elements d, d+32, ...). Any
 * head size; slow. */
__global__ void attention_rows_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                                      int q_stride, int kv_stride, const att_tile *tiles, int NH, int NKV, int HD,
                                      int window, float scale) {
  PC_DYNAMIC_SHARED(float4, smem4);
  const att_tile t = tiles[blockIdx.x];
  const int h = blockIdx.y, kvh = h / (NH / NKV), warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float *qv = (float *)smem4 + (size_t)warp * 2 * HD, *ov = qv + HD;
  const size_t kvoff = (size_t)kvh * HD;
  for (int r = warp; r < t.nq; r += blockDim.x / 32) {
    int pi = t.p0 + r;
    size_t row = (size_t)(t.q0 + r);
    for (int d = lane; d < HD; d += 32) {
      qv[d] = q[row * q_stride + (size_t)h * HD + d] * scale;
      ov[d] = 0.0f;
    }
    float mx = -INFINITY, l = 0.0f;
    int jlo = window > 0 && pi - window + 1 > 0 ? pi - window + 1 : 0;
    for (int pj = jlo; pj <= pi; pj++) {
      size_t kr = (size_t)(pj < t.plen ? t.pbase + pj : t.base + pj - t.plen) * kv_stride + kvoff;
      float s = 0.0f;
      for (int d = lane; d < HD; d += 32) s += qv[d] * k[kr + d];
      s = warp_sum(s);
      float mn = fmaxf(mx, s), corr = expf(mx - mn), p = expf(s - mn);
      l = l * corr + p;
      mx = mn;
      for (int d = lane; d < HD; d += 32) ov[d] = ov[d] * corr + p * v[kr + d];
    }
    for (int d = lane; d < HD; d += 32) out[row * NH * HD + (size_t)h * HD + d] = ov[d] / l;
    if (lse && lane == 0) lse[row * NH + h] = mx + logf(l);
  }
}

static int attention_ktiles(cuda_backend *cb, const pc_batch *bt);  // the backward's, same layout

/* Room for n tile descriptors of `size` bytes in a host array and its device twin (*cap of them),
 * grown with a margin; -1 with the failure kept. */
static int tiles_reserve(cuda_backend *cb, void **host, void **dev, int *cap, int n, size_t size) {
  if (n <= *cap) return 0;
  int nc = n + n / 4 + 16;
  void *th = realloc(*host, size * (size_t)nc);
  if (!th) { fail(cb, __FILE__, __LINE__, "attention", "out of host memory"); return -1; }
  *host = th;
  if (*dev) CUDA_CHECK(cb, cudaFree(*dev));
  *dev = NULL;
  *cap = 0;
  if (CUDA_CHECK(cb, cudaMalloc(dev, size * (size_t)nc))) { *dev = NULL; return -1; }
  *cap = nc;
  return 0;
}

/* The tiles of 64 query rows (and the backward's key tiles) for this batch's layout, on the device. Every layer of a forward pass
 * uses the same layout, so they are rebuilt (and uploaded) only when the layout changes. */
static int attention_tiles(cuda_backend *cb, const pc_batch *bt) {
  int ns = bt->nseq, same = ns == cb->lay_nseq && (bt->prefix_len != NULL) == cb->lay_has_plen && cb->tiles_dev;
  for (int s = 0; same && s <= ns; s++) same = bt->seq_start[s] == cb->lay_start[s];
  for (int s = 0; same && bt->prefix_len && s < ns; s++) same = bt->prefix_len[s] == cb->lay_plen[s];
  if (same) return 0;
  if (ns + 1 > cb->lay_cap) {
    int *a = (int *)realloc(cb->lay_start, sizeof(int) * (size_t)(ns + 1));
    if (a) cb->lay_start = a;
    int *b = a ? (int *)realloc(cb->lay_plen, sizeof(int) * (size_t)(ns + 1)) : NULL;
    if (b) cb->lay_plen = b;
    if (!a || !b) { fail(cb, __FILE__, __LINE__, "attention", "out of host memory"); return -1; }
    cb->lay_cap = ns + 1;
  }
  int nt = 0;
  for (int s = 0; s < ns; s++) nt += (bt->seq_start[s + 1] - bt->seq_start[s] + AT_BQ - 1) / AT_BQ;
  if (tiles_reserve(cb, (void **)&cb->tiles_host, (void **)&cb->tiles_dev, &cb->tiles_cap, nt, sizeof(att_tile)))
    return -1;
  nt = 0;
  for (int s = 0; s < ns; s++) {
    int base = bt->seq_start[s], own = bt->seq_start[s + 1] - base;
    int plen = bt->prefix_len ? bt->prefix_len[s] : 0, pbase = plen ? bt->seq_start[s - 1] : 0;
    for (int r0 = 0; r0 < own; r0 += AT_BQ) {
      att_tile t = {base + r0, own - r0 < AT_BQ ? own - r0 : AT_BQ, plen + r0, plen, pbase, base};
      cb->tiles_host[nt++] = t;
    }
  }
  if (nt && CUDA_CHECK(cb, cudaMemcpy(cb->tiles_dev, cb->tiles_host, sizeof(att_tile) * (size_t)nt,
                                      cudaMemcpyHostToDevice)))
    return -1;
  cb->ntiles = nt;
  if (attention_ktiles(cb, bt)) return -1;
  cb->lay_nseq = ns;
  cb->lay_has_plen = bt->prefix_len != NULL;
  memcpy(cb->lay_start, bt->seq_start, sizeof(int) * (size_t)(ns + 1));
  if (bt->prefix_len) memcpy(cb->lay_plen, bt->prefix_len, sizeof(int) * (size_t)ns);
  return 0;
}

template <int NJ>
static void launch_flash(cuda_backend *cb, float *out, const float *q, const float *k, const float *v, int q_stride,
                         int kv_stride, int NH, int NKV, int HD, int window, float *lse, float scale) {
  size_t smem = sizeof(float) * ((size_t)2 * HD * AT_LD + (size_t)AT_BK * AT_LD);
  if (smem > 48 * 1024 &&
      CUDA_CHECK(cb, cudaFuncSetAttribute(flash_attention_kernel<NJ>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)smem)))
    return;
  dim3 grid((unsigned)cb->ntiles, (unsigned)NH);
  PC_LAUNCH(flash_attention_kernel<NJ>, grid, AT_THREADS, smem)(out, lse, q, k, v, q_stride, kv_stride,
                                                                cb->tiles_dev, NH, NKV, HD, window, scale);
  LAUNCH_CHECK(cb, "flash_attention_kernel");
}

static void cuda_attention(pc_backend *be, float *out, const float *q, const float *k, const float *v, int q_stride,
                           int kv_stride, const pc_batch *bt, int N, int NH, int NKV, int HD, int window, float *lse) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0 || attention_tiles(cb, bt) != 0 || cb->ntiles == 0) return;
  const float scale = 1.0f / sqrtf((float)HD);
  size_t flash_smem = sizeof(float) * ((size_t)2 * HD * AT_LD + (size_t)AT_BK * AT_LD);
  if (!cb->attn_rows && HD <= 256 && flash_smem <= cb->smem_optin) {
    if (HD <= 32) launch_flash<2>(cb, out, q, k, v, q_stride, kv_stride, NH, NKV, HD, window, lse, scale);
    else if (HD <= 64) launch_flash<4>(cb, out, q, k, v, q_stride, kv_stride, NH, NKV, HD, window, lse, scale);
    else if (HD <= 128) launch_flash<8>(cb, out, q, k, v, q_stride, kv_stride, NH, NKV, HD, window, lse, scale);
    else launch_flash<16>(cb, out, q, k, v, q_stride, kv_stride, NH, NKV, HD, window, lse, scale);
    return;
  }
  size_t smem = sizeof(float) * 2 * (size_t)HD * 8;  // 8 warps, query and accumulator each
  if (smem > 48 * 1024 &&
      CUDA_CHECK(cb, cudaFuncSetAttribute(attention_rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)smem)))
    return;
  dim3 grid((unsigned)cb->ntiles, (unsigned)NH);
  PC_LAUNCH(attention_rows_kernel, grid, 256, smem)(out, lse, q, k, v, q_stride, kv_stride, cb->tiles_dev, NH,
                                                    NKV, HD, window, scale);
  LAUNCH_CHECK(cb, "attention_rows_kernel");
}

// ---- fused LM head + log-softmax + gather -------------------------------------------------------

__global__ void lp_init_kernel(float *rmax, float *rsum, float *rtgt, int mr) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < mr) {
    rmax[i] = -INFINITY;
    rsum[i] = 0.0f;
    rtgt[i] = __int_as_float(0x7fc00000);  // NaN until the chunk holding the target is seen
  }
}

/* One block per row of a (mr x vc) chunk of logits (vocabulary v0 .. v0+vc-1): the chunk's max and
 * sum of exp (fp32, tree-reduced), merged into the row's running max and sum (the online log-sum-exp),
 * and the target's logit when it falls in this chunk. */
__global__ void lp_chunk_kernel(const float *L, int vc, int v0, const float *bias, const int32_t *targets,
                                float *rmax, float *rsum, float *rtgt) {
  __shared__ float sh[32];
  const int i = blockIdx.x;
  const float *x = L + (size_t)i * vc;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < vc; j += blockDim.x) mx = fmaxf(mx, x[j] + (bias ? bias[v0 + j] : 0.0f));
  mx = block_max(mx, sh);
  float s = 0.0f;
  for (int j = threadIdx.x; j < vc; j += blockDim.x) s += expf(x[j] + (bias ? bias[v0 + j] : 0.0f) - mx);
  s = block_sum(s, sh);
  if (threadIdx.x == 0) {
    int tg = targets[i];
    if (tg >= v0 && tg < v0 + vc) rtgt[i] = x[tg - v0] + (bias ? bias[tg] : 0.0f);
    float om = rmax[i], nm = fmaxf(om, mx);
    rsum[i] = rsum[i] * expf(om - nm) + s * expf(mx - nm);
    rmax[i] = nm;
  }
}

__global__ void lp_finish_kernel(float *out, float *lse, const float *rmax, const float *rsum, const float *rtgt,
                                 int mr) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < mr) {
    float ls = logf(rsum[i]);
    out[i] = rtgt[i] - rmax[i] - ls;
    if (lse) lse[i] = rmax[i] + ls;
  }
}

static void cuda_logprob(pc_backend *be, float *out, const float *h, const pc_weight *head, const int32_t *targets,
                         int M, int C, int V, float *lse) {
  cuda_backend *cb = CB(be);
  if (cb->failed || M <= 0) return;
  const __nv_bfloat16 *w16 = bf16_twin(cb, head->w, (size_t)V * C);
  const __nv_bfloat16 *h16 = w16 ? act_bf16(cb, h, (size_t)M * C) : NULL;
  int bf = w16 && h16;
  int RC = M < LP_ROWS ? M : LP_ROWS, VC = V < LP_VOCAB ? V : LP_VOCAB;
  if (ws_reserve(cb, (void **)&cb->lp_ws, &cb->lp_ws_cap, sizeof(float) * (size_t)RC * VC) ||
      ws_reserve(cb, (void **)&cb->lp_stats, &cb->lp_stats_cap, sizeof(float) * 3 * LP_ROWS))
    return;
  float *rmax = cb->lp_stats, *rsum = rmax + LP_ROWS, *rtgt = rsum + LP_ROWS;
  for (int r0 = 0; r0 < M; r0 += LP_ROWS) {
    int mr = M - r0 < LP_ROWS ? M - r0 : LP_ROWS;
    PC_LAUNCH(lp_init_kernel, (mr + 255) / 256, 256, 0)(rmax, rsum, rtgt, mr);
    LAUNCH_CHECK(cb, "lp_init_kernel");
    for (int v0 = 0; v0 < V; v0 += LP_VOCAB) {
      int vc = V - v0 < LP_VOCAB ? V - v0 : LP_VOCAB;
      // logits (mr x vc) row-major = column-major (vc x mr) = head[v0..v0+vc) (vc x C) · h^T (C x mr)
      cublasOperation_t op = head->layout == PC_W_OUT_IN ? CUBLAS_OP_T : CUBLAS_OP_N;
      int ldw = head->layout == PC_W_OUT_IN ? C : V;
      size_t woff = head->layout == PC_W_OUT_IN ? (size_t)v0 * C : (size_t)v0;
      if (bf) gemm(cb, op, vc, mr, C, w16 + woff, ldw, h16 + (size_t)r0 * C, C, 0.0f, cb->lp_ws, vc, 1);
      else gemm(cb, op, vc, mr, C, head->w + woff, ldw, h + (size_t)r0 * C, C, 0.0f, cb->lp_ws, vc, 0);
      PC_LAUNCH(lp_chunk_kernel, mr, 256, 0)(cb->lp_ws, vc, v0, head->b, targets + r0, rmax, rsum, rtgt);
      LAUNCH_CHECK(cb, "lp_chunk_kernel");
      if (cb->failed) return;
    }
    PC_LAUNCH(lp_finish_kernel, (mr + 255) / 256, 256, 0)(out + r0, lse ? lse + r0 : NULL, rmax, rsum, rtgt, mr);
    LAUNCH_CHECK(cb, "lp_finish_kernel");
  }
}

// ==== training ops: backward kernels and the optimizer ==========================================
// The gradients of the forward ops above (backend.h's training section), each the same function as
// backend_cpu.c's, which tests/gpu/test_cuda_ops.c compares them with. attention_backward and
// logprob_backward live in their own section.
//
// Determinism: no op here uses atomics. A reduction across rows (the weight gradients of the norms,
// a bias gradient, a scatter into repeated rows, the sum of squares) is added in a fixed order that
// depends only on the shapes, so two runs give the same bits. Scatters go further: each thread owns
// a column and adds the rows in order, which is the CPU's order, so they match it bit for bit.

/* dst[idx[m]] (a row of C) += src[m] for m = 0..M-1 in order. Each thread owns one column, so no two
 * threads ever touch one element and repeated rows need no atomics. Rows are taken 8 at a time: when
 * the 8 indices differ (the usual case: tokens of a batch, rows scored once) their 8 loads go out
 * together instead of one round trip each; a repeat inside the 8 falls back to one row at a time. */
#define SC_GROUP 8
__global__ void scatter_add_kernel(float *dst, const int32_t *idx, const float *src, int M, int C) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  int m = 0;
  for (; m + SC_GROUP <= M; m += SC_GROUP) {
    int r[SC_GROUP];
    float d[SC_GROUP];
    bool distinct = true;
#pragma unroll
    for (int j = 0; j < SC_GROUP; j++) {
      r[j] = idx[m + j];
      d[j] = src[(size_t)(m + j) * C + c];
    }
#pragma unroll
    for (int j = 1; j < SC_GROUP; j++) {
#pragma unroll
      for (int i = 0; i < j; i++) distinct = distinct && r[i] != r[j];
    }
    if (distinct) {
      float g[SC_GROUP];
#pragma unroll
      for (int j = 0; j < SC_GROUP; j++) g[j] = dst[(size_t)r[j] * C + c];
#pragma unroll
      for (int j = 0; j < SC_GROUP; j++) dst[(size_t)r[j] * C + c] = g[j] + d[j];
    } else {
      for (int j = 0; j < SC_GROUP; j++) dst[(size_t)r[j] * C + c] += d[j];
    }
  }
  for (; m < M; m++) dst[(size_t)idx[m] * C + c] += src[(size_t)m * C + c];
}

static void launch_scatter_add(cuda_backend *cb, float *dst, const int32_t *idx, const float *src, int M, int C) {
  if (C <= 0) return;  // no columns: no threads (an empty grid would fail the launch)
  PC_LAUNCH(scatter_add_kernel, (C + 255) / 256, 256, 0)(dst, idx, src, M, C);
  LAUNCH_CHECK(cb, "scatter_add_kernel");
}

/* What a column reduction sums over the rows: d, d * (x - mean) * rstd (LayerNorm's dw), or
 * d * x * rstd (RMSNorm's dw). */
enum { CS_SUM = 0, CS_LAYERNORM = 1, CS_RMSNORM = 2 };
/* Column sums run in two passes: chunks of rows, then the chunks' partial sums. Rows per chunk, at
 * least (so a tall matrix with few columns, such as Qwen3's per-head q/k norms, still fills the GPU),
 * and the most partial sums kept (doubles, 32 MB). */
#define CS_CHUNK_ROWS 64
#define CS_MAX_PARTS (1 << 22)

/* Pass 1: block (x, y) sums columns 32x..32x+31 over the rows of chunk y (rpc rows from y*rpc, rows of
 * stride `stride`): its 8 warps take the rows r0 + warp, r0 + warp + 8, ... (a warp reads 32
 * consecutive floats of a row), each lane in double, and the 8 warps' sums are added in warp order
 * into part[y][0][c] (and part[y][1][c]: LayerNorm's sum of d). */
__global__ void colsum_kernel(double *part, const float *d, const float *x, const float *mean, const float *rstd,
                              int rows, int C, int stride, int mode, int rpc) {
  __shared__ double sh1[8][32], sh2[8][32];
  int lane = threadIdx.x % 32, w = threadIdx.x / 32, c = blockIdx.x * 32 + lane;
  int r0 = blockIdx.y * rpc, r1 = r0 + rpc < rows ? r0 + rpc : rows;
  double a1 = 0, a2 = 0;
  if (c < C)
    for (int r = r0 + w; r < r1; r += 8) {
      size_t i = (size_t)r * stride + c;
      float di = d[i];
      if (mode == CS_SUM) {
        a1 += di;
      } else if (mode == CS_LAYERNORM) {
        a1 += (double)di * ((x[i] - mean[r]) * rstd[r]);
        a2 += di;
      } else {
        a1 += (double)di * (x[i] * rstd[r]);
      }
    }
  sh1[w][lane] = a1;
  sh2[w][lane] = a2;
  __syncthreads();
  if (w == 0 && c < C) {
    double s1 = 0, s2 = 0;
    for (int k = 0; k < 8; k++) {
      s1 += sh1[k][lane];
      s2 += sh2[k][lane];
    }
    part[((size_t)blockIdx.y * 2) * C + c] = s1;
    part[((size_t)blockIdx.y * 2 + 1) * C + c] = s2;
  }
}

/* Pass 2: one thread per column adds the chunks' sums in chunk order into out1 (and out2) */
__global__ void colsum_finish_kernel(float *out1, float *out2, const double *part, int nchunks, int C) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double s1 = 0, s2 = 0;
  for (int y = 0; y < nchunks; y++) {
    s1 += part[((size_t)y * 2) * C + c];
    s2 += part[((size_t)y * 2 + 1) * C + c];
  }
  if (out1) out1[c] += (float)s1;
  if (out2) out2[c] += (float)s2;
}

/* out1 (C) += the column sums over `rows` rows (out2 too for LayerNorm's db; either may be NULL). The
 * order of the additions depends only on the shapes: deterministic. */
static void launch_colsum(cuda_backend *cb, float *out1, float *out2, const float *d, const float *x, const float *mean,
                          const float *rstd, int rows, int C, int stride, int mode) {
  if (C <= 0) return;
  int nchunks = (rows + CS_CHUNK_ROWS - 1) / CS_CHUNK_ROWS, maxc = CS_MAX_PARTS / (2 * C);
  if (nchunks > maxc) nchunks = maxc > 1 ? maxc : 1;
  if (nchunks > 65535) nchunks = 65535;  // the grid's y limit
  int rpc = (rows + nchunks - 1) / nchunks;
  if (ws_reserve(cb, (void **)&cb->colsum_part, &cb->colsum_part_cap, sizeof(double) * 2 * (size_t)nchunks * C))
    return;
  dim3 grid((unsigned)((C + 31) / 32), (unsigned)nchunks);
  PC_LAUNCH(colsum_kernel, grid, 256, 0)(cb->colsum_part, d, x, mean, rstd, rows, C, stride, mode, rpc);
  LAUNCH_CHECK(cb, "colsum_kernel");
  PC_LAUNCH(colsum_finish_kernel, (C + 255) / 256, 256, 0)(out1, out2, cb->colsum_part, nchunks, C);
  LAUNCH_CHECK(cb, "colsum_finish_kernel");
}

/* dinp of LayerNorm, one warp per row: with n = (x - mean) rstd and dn = w d,
 * dinp = (dn - mean(dn) - n mean(dn n)) rstd. */
__global__ void layernorm_backward_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                                          const float *mean, const float *rstd, int N, int C, int accumulate) {
  int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
  if (row >= N) return;  // whole warps leave together
  const float *x = inp + (size_t)row * C, *d = dout + (size_t)row * C;
  float m = mean[row], rs = rstd[row], sd = 0, sdn = 0;
  for (int i = lane; i < C; i += 32) {
    float dn = w[i] * d[i];
    sd += dn;
    sdn += dn * ((x[i] - m) * rs);
  }
  float a = warp_sum(sd) / C, b2 = warp_sum(sdn) / C;
  float *o = dinp + (size_t)row * C;
  for (int i = lane; i < C; i += 32) {
    float v = (w[i] * d[i] - a - (x[i] - m) * rs * b2) * rs;
    o[i] = accumulate ? o[i] + v : v;
  }
}

/* dinp of RMSNorm, one warp per row of stride `stride`: with n = x rstd, dinp = rstd (w d - n mean(w d n)).
 * dinp may be dout: each lane reads d[i] before it writes o[i], and only that lane touches i. */
__global__ void rmsnorm_backward_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                                        const float *rstd, int rows, int C, int stride, int accumulate) {
  int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float *x = inp + (size_t)row * stride, *d = dout + (size_t)row * stride;
  float rs = rstd[row], sdn = 0;
  for (int i = lane; i < C; i += 32) sdn += (w[i] * d[i]) * (x[i] * rs);
  float b2 = warp_sum(sdn) / C;
  float *o = dinp + (size_t)row * stride;
  for (int i = lane; i < C; i += 32) {
    float v = rs * (w[i] * d[i] - x[i] * rs * b2);
    o[i] = accumulate ? o[i] + v : v;
  }
}

/* dinp = dout * gelu'(inp), the CPU's formulas (tanh: through s = sigmoid(2u), one expf). dinp may be
 * dout: element i is read before it is written, by one thread. */
__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n, int tanh_approx) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float x = inp[i], g;
    if (tanh_approx) {
      float u = k * (x + 0.044715f * x * x * x), sg = 1.0f / (1.0f + expf(-2.0f * u));
      g = sg + 2.0f * x * sg * (1.0f - sg) * (k * (1.0f + 3.0f * 0.044715f * x * x));
    } else {
      g = 0.5f * (1.0f + erff(x * 0.7071067811865476f)) + x * expf(-0.5f * x * x) * 0.3989422804014327f;
    }
    dinp[i] = dout[i] * g;
  }
}

/* out = silu(gate) up: dgate = d up s (1 + g (1 - s)), dup = d g s with s = sigmoid(g). Either output
 * may be dout (all three inputs are read before either is written). */
__global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *gate, const float *up, const float *dout,
                                       size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float g = gate[i], u = up[i], d = dout[i], sg = 1.0f / (1.0f + expf(-g));
    dgate[i] = d * u * sg * (1.0f + g * (1.0f - sg));
    dup[i] = d * g * sg;
  }
}

/* Partial sums of squares in double, one per block: each thread a grid-stride slice, then a tree over
 * the block's 256 threads (fixed pairs: deterministic). */
__global__ void sumsq_kernel(double *part, const float *x, size_t n) {
  __shared__ double sh[256];
  double s = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    s += (double)x[i] * x[i];
  sh[threadIdx.x] = s;
  for (int h = 128; h > 0; h >>= 1) {
    __syncthreads();
    if ((int)threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
  }
  if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

/* torch.optim.AdamW, element by element, in the CPU's order of operations (backend.h). p16, when not
 * NULL, is p's bf16 twin: it gets the updated p rounded, so bf16 matmuls see the step (the fp32 p is
 * the master copy). */
__global__ void adamw_kernel(float *p, __nv_bfloat16 *p16, const float *g, float *m, float *v, size_t n, float lr,
                             float wd, float b1, float b2, float eps, float step_size, float bc2_sqrt) {
  const float decay = 1.0f - lr * wd;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    float gi = g[i], pi = p[i] * decay;
    float mi = m[i] + (gi - m[i]) * (1.0f - b1);  // torch: exp_avg.lerp_(grad, 1 - beta1)
    float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    pi -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    p[i] = pi;
    if (p16) p16[i] = __float2bfloat16_rn(pi);
  }
}

// ---- training ops: launchers

static void cuda_embedding_backward(pc_backend *be, float *dwte, float *dwpe, const float *dout, const int32_t *ids,
                                    const pc_batch *bt, int N, int C) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0) return;
  if (dwte) launch_scatter_add(cb, dwte, ids, dout, N, C);
  if (dwpe) launch_scatter_add(cb, dwpe, bt->pos, dout, N, C);
}

static void cuda_scatter_rows(pc_backend *be, float *dinp, const float *dout, const int32_t *rows, int M, int C) {
  cuda_backend *cb = CB(be);
  if (cb->failed || M <= 0) return;
  launch_scatter_add(cb, dinp, rows, dout, M, C);
}

/* Through cuBLAS, row-major products written as column-major ones (see gemm_t):
 *   W (OC, C):  dinp^T (C x N) = W^T·dout^T      dW^T (C x OC) += inp^T·dout
 *   W (C, OC):  dinp^T (C x N) = W·dout^T         dW^T (OC x C) += dout^T·inp
 * Precision: as the forward. In bf16 mode a weight with a bf16 twin (from weight()) is multiplied in
 * bf16 (dout and, for dW, inp converted per call), fp32 accumulation; any other weight in fp32 (pedantic
 * in fp32 mode). db: column sums of dout, in double. */
static void cuda_matmul_backward(pc_backend *be, float *dinp, float *dw, float *db, const float *dout,
                                 const float *inp, const pc_weight *w, int N, int C, int OC, int accumulate) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0) return;
  const int oi = w->layout == PC_W_OUT_IN;
  const __nv_bfloat16 *w16 = (dinp || dw) ? bf16_twin(cb, w->w, (size_t)C * OC) : NULL;
  const __nv_bfloat16 *d16 = w16 ? act_bf16(cb, dout, (size_t)N * OC) : NULL;
  const __nv_bfloat16 *x16 = d16 && dw ? to_bf16_ws(cb, inp, (size_t)N * C, &cb->act16b, &cb->act16b_cap) : NULL;
  if (cb->failed) return;
  int bf = d16 != NULL;
  if (dinp) {
    const void *W = bf ? (const void *)w16 : (const void *)w->w, *D = bf ? (const void *)d16 : (const void *)dout;
    gemm_t(cb, oi ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, C, N, OC, W, oi ? C : OC, D, OC, accumulate ? 1.0f : 0.0f,
           dinp, C, bf);
  }
  if (dw) {
    bf = bf && x16;
    const void *X = bf ? (const void *)x16 : (const void *)inp, *D = bf ? (const void *)d16 : (const void *)dout;
    if (oi) gemm_t(cb, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, X, C, D, OC, 1.0f, dw, C, bf);
    else gemm_t(cb, CUBLAS_OP_N, CUBLAS_OP_T, OC, C, N, D, OC, X, C, 1.0f, dw, OC, bf);
  }
  if (db) launch_colsum(cb, db, NULL, dout, NULL, NULL, NULL, N, OC, OC, CS_SUM);
}

static void cuda_layernorm_backward(pc_backend *be, float *dinp, float *dw, float *db, const float *dout,
                                    const float *inp, const float *w, const float *mean, const float *rstd, int N,
                                    int C, int accumulate) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0) return;
  if (dw || db) launch_colsum(cb, dw, db, dout, inp, mean, rstd, N, C, C, CS_LAYERNORM);
  if (!dinp) return;
  PC_LAUNCH(layernorm_backward_kernel, (N + 7) / 8, 256, 0)(dinp, dout, inp, w, mean, rstd, N, C, accumulate);
  LAUNCH_CHECK(cb, "layernorm_backward_kernel");
}

static void cuda_rmsnorm_backward(pc_backend *be, float *dinp, float *dw, const float *dout, const float *inp,
                                  const float *w, const float *rstd, int rows, int C, int stride, int accumulate) {
  cuda_backend *cb = CB(be);
  if (cb->failed || rows <= 0) return;
  // dw first: dinp may be dout, which the row kernel overwrites
  if (dw) launch_colsum(cb, dw, NULL, dout, inp, NULL, rstd, rows, C, stride, CS_RMSNORM);
  if (!dinp) return;
  PC_LAUNCH(rmsnorm_backward_kernel, (rows + 7) / 8, 256, 0)(dinp, dout, inp, w, rstd, rows, C, stride, accumulate);
  LAUNCH_CHECK(cb, "rmsnorm_backward_kernel");
}

static void cuda_rope_backward(pc_backend *be, float *dx, const float *cos_t, const float *sin_t, const pc_batch *bt,
                               int N, int H, int HD, int stride) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0 || HD < 2) return;
  PC_LAUNCH(rope_kernel, grid_for((size_t)N * H * (HD / 2)), 256, 0)(dx, cos_t, sin_t, bt->pos, N, H, HD, stride,
                                                                     -1.0f);
  LAUNCH_CHECK(cb, "rope_kernel");
}

static void cuda_gelu_backward(pc_backend *be, float *dinp, const float *inp, const float *dout, size_t n,
                               int tanh_approx) {
  cuda_backend *cb = CB(be);
  if (cb->failed || !n) return;
  PC_LAUNCH(gelu_backward_kernel, grid_for(n), 256, 0)(dinp, inp, dout, n, tanh_approx);
  LAUNCH_CHECK(cb, "gelu_backward_kernel");
}

static void cuda_swiglu_backward(pc_backend *be, float *dgate, float *dup, const float *gate, const float *up,
                                 const float *dout, size_t n) {
  cuda_backend *cb = CB(be);
  if (cb->failed || !n) return;
  PC_LAUNCH(swiglu_backward_kernel, grid_for(n), 256, 0)(dgate, dup, gate, up, dout, n);
  LAUNCH_CHECK(cb, "swiglu_backward_kernel");
}

/* At most this many partial sums (a grid of 256-thread blocks): plenty of blocks for a GPU, and a
 * read-back of 8 KB. */
#define SUMSQ_BLOCKS 1024

/* Synchronises (the partial sums are read back and added on the host, in block order). */
static int cuda_sumsq(pc_backend *be, const float *x, size_t n, double *out) {
  cuda_backend *cb = CB(be);
  *out = 0;
  if (cb->failed) return -1;
  if (!n) return 0;
  unsigned nb = grid_for(n) < SUMSQ_BLOCKS ? grid_for(n) : SUMSQ_BLOCKS;
  double part[SUMSQ_BLOCKS];
  if (ws_reserve(cb, (void **)&cb->sumsq_part, &cb->sumsq_part_cap, sizeof(double) * SUMSQ_BLOCKS)) return -1;
  PC_LAUNCH(sumsq_kernel, nb, 256, 0)(cb->sumsq_part, x, n);
  LAUNCH_CHECK(cb, "sumsq_kernel");
  if (cb->failed ||
      CUDA_CHECK(cb, cudaMemcpy(part, cb->sumsq_part, sizeof(double) * nb, cudaMemcpyDeviceToHost)))
    return -1;
  double s = 0;
  for (unsigned i = 0; i < nb; i++) s += part[i];
  *out = s;
  return 0;
}

static void cuda_adamw(pc_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                       float b1, float b2, float eps, float step_size, float bc2_sqrt) {
  cuda_backend *cb = CB(be);
  if (cb->failed || !n) return;
  // a weight from weight() that a bf16 matmul has multiplied has a twin, which must follow the step
  weight_entry *e = weight_containing(cb, p, n);
  __nv_bfloat16 *p16 = e && e->bf ? e->bf + (p - e->p) : NULL;
  PC_LAUNCH(adamw_kernel, grid_for(n), 256, 0)(p, p16, g, m, v, n, lr, wd, b1, b2, eps, step_size, bc2_sqrt);
  LAUNCH_CHECK(cb, "adamw_kernel");
}
// ==== end of the training ops (backward kernels and the optimizer) ==============================

/* The device's free and total memory (cudaMemGetInfo: under the emulation, its PREFCAP_CUDA_EMU_MEM
 * limit), and what this backend allocates of its own: the fused log-prob's logit chunk and row
 * statistics, the partial sums of sumsq and of the column sums, the attention backward's row sums, and
 * in bf16 mode 2 bytes per weight element (its twin) and 4 per element of a matmul's input (its bf16
 * copies). A kernel that allocates a workspace of its own must be counted here (docs/cuda.md). */
static int cuda_mem_info(pc_backend *be, pc_mem_info *out) {
  cuda_backend *cb = CB(be);
  memset(out, 0, sizeof *out);
#ifndef __CUDACC__
  out->host_memory = 1;  // the emulation's "device" memory is the process's own
#endif
  out->workspace_bytes = sizeof(float) * ((size_t)LP_ROWS * LP_VOCAB + 3 * (size_t)LP_ROWS)  // logprob
                         + (cb->fp32 ? 0 : sizeof(__nv_bfloat16) * (size_t)LP_ROWS * LP_VOCAB)  // its G in bf16
                         + sizeof(double) * (SUMSQ_BLOCKS + CS_MAX_PARTS)  // sumsq, the column sums
                         + ((size_t)1 << 20);  // attention tile tables and 256-byte rounding: a MiB is ample
  out->weight_extra = cb->fp32 ? 0.0 : (double)sizeof(__nv_bfloat16);
  // per element of the widest matmul input (N x at least NH*HD): act16 and matmul_backward's act16b in
  // bf16 mode, and the attention backward's D (NH floats per row: half a byte per element, HD >= 8)
  out->input_extra = (cb->fp32 ? 0.0 : 2.0 * sizeof(__nv_bfloat16)) + 0.5;
  size_t fr = 0, tot = 0;
  if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  out->free_bytes = fr;
  out->total_bytes = tot;
  return 0;
}

// ==== training: the attention backward (flash-attention-2 style) ================================
//
// Three launches, no atomics, every gradient element written by exactly one thread in a fixed order
// of additions (so a run is bit-reproducible):
//   1. attention_bwd_D_kernel: D (N, NH) = rowsum(dout * out), one warp per (row, head);
//   2. a dq kernel, one block per (64-query tile, query head), walking the keys the tile sees exactly
//      as the forward does: S = scale Q K^T recomputed, P = exp(S - lse), dP = dO V^T,
//      dS = P (dP - D), dQ = scale dS K, kept in registers and written once (=);
//   3. a dk/dv kernel, one block per (64-key tile, kv head), walking every query that sees those keys:
//      for each query head of the kv head's group (GQA: their contributions sum here), the sequence's
//      own queries and, when the next sequence shares this one's prefix, its queries too (so a shared
//      prefix's dk/dv land in the rows that hold it); dV += P^T dO, dK += dS^T (scale Q), written once.
// P and dS are computed twice (once per kernel): the price of no atomics, and of no (T x T) buffer.

/* Key tiles for this layout (attention_tiles calls this when the layout changes): every sequence's own
 * rows in tiles of AT_BK, each with the query ranges that read it. Sequence s's rows are read by its
 * own queries and, when prefix_len[s+1] > 0, by sequence s+1's queries for positions < prefix_len[s+1]
 * (backend.h: a sequence that lends its prefix borrows none, so its rows hold positions 0..). */
static int attention_ktiles(cuda_backend *cb, const pc_batch *bt) {
  int ns = bt->nseq, nt = 0;
  for (int s = 0; s < ns; s++) nt += (bt->seq_start[s + 1] - bt->seq_start[s] + AT_BK - 1) / AT_BK;
  if (tiles_reserve(cb, (void **)&cb->ktiles_host, (void **)&cb->ktiles_dev, &cb->ktiles_cap, nt, sizeof(att_ktile)))
    return -1;
  nt = 0;
  for (int s = 0; s < ns; s++) {
    int base = bt->seq_start[s], own = bt->seq_start[s + 1] - base;
    int plen = bt->prefix_len ? bt->prefix_len[s] : 0;
    int nplen = bt->prefix_len && s + 1 < ns ? bt->prefix_len[s + 1] : 0;
    for (int r0 = 0; r0 < own; r0 += AT_BK) {
      att_ktile t;
      memset(&t, 0, sizeof t);
      t.k0 = base + r0;
      t.nk = own - r0 < AT_BK ? own - r0 : AT_BK;
      t.kp0 = plen + r0;
      t.q_row[0] = base, t.q_p0[0] = plen, t.q_np[0] = own, t.lim[0] = plen + own;
      if (nplen > t.kp0) {
        int nb = bt->seq_start[s + 2] - bt->seq_start[s + 1];
        t.q_row[1] = bt->seq_start[s + 1], t.q_p0[1] = nplen, t.q_np[1] = nb, t.lim[1] = nplen;
      }
      cb->ktiles_host[nt++] = t;
    }
  }
  if (nt && CUDA_CHECK(cb, cudaMemcpy(cb->ktiles_dev, cb->ktiles_host, sizeof(att_ktile) * (size_t)nt,
                                      cudaMemcpyHostToDevice)))
    return -1;
  cb->nktiles = nt;
  return 0;
}

/* The query positions of range i of key tile t that see at least one of its keys: [*qlo, *qhi). */
__device__ __forceinline__ void ktile_queries(const att_ktile &t, int i, int window, int *qlo, int *qhi) {
  int ke = t.kp0 + t.nk < t.lim[i] ? t.kp0 + t.nk : t.lim[i];  // one past the last key position it may see
  *qlo = t.q_p0[i] > t.kp0 ? t.q_p0[i] : t.kp0;
  *qhi = t.q_p0[i] + t.q_np[i];
  if (window > 0 && ke - 1 + window < *qhi) *qhi = ke - 1 + window;
  if (t.q_np[i] == 0 || ke <= t.kp0) *qhi = *qlo;  // an empty range
}

/* D (N, NH) = rowsum(dout * out) per head: one warp per (row, head). */
__global__ void attention_bwd_D_kernel(float *D, const float *dout, const float *out, int N, int NH, int HD) {
  size_t w = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (w >= (size_t)N * NH) return;  // whole warps leave together
  const float *a = dout + w * HD, *b = out + w * HD;  // (N, NH, HD) contiguous: row-head w starts at w*HD
  float s = 0.0f;
  for (int d = lane; d < HD; d += 32) s += a[d] * b[d];
  s = warp_sum(s);
  if (lane == 0) D[w] = s;
}

/* The backward's 4 x 4 register tiles, two at once: s[i][j] = sum_d A[d][ra+i] B[d][rb+j] and
 * dp[i][j] = sum_d C[d][ra+i] E[d][rb+j], over shared tiles stored transposed ([HD][AT_LD]), with
 * float4 loads (ra, rb multiples of 4). */
__device__ __forceinline__ void tile_dots2(float s[4][4], float dp[4][4], const float *A, const float *B,
                                           const float *C, const float *E, int ra, int rb, int HD) {
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) s[i][j] = dp[i][j] = 0.0f;
  for (int d = 0; d < HD; d++) {
    float4 a = *(const float4 *)&A[d * AT_LD + ra], b = *(const float4 *)&B[d * AT_LD + rb];
    float4 c = *(const float4 *)&C[d * AT_LD + ra], e = *(const float4 *)&E[d * AT_LD + rb];
    float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
    float cv[4] = {c.x, c.y, c.z, c.w}, ev[4] = {e.x, e.y, e.z, e.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        s[i][j] += av[i] * bv[j];
        dp[i][j] += cv[i] * ev[j];
      }
  }
}

/* dq, tiled: block (query tile, head), 256 threads as 16 x 16 as in flash_attention_kernel: thread
 * (ty, tx) recomputes the scores and dP of queries ty*4.. with keys tx*4.., and owns dq's columns tx,
 * tx+16, ... (NJ of them) of its 4 queries. Shared: Q (scaled) and dO of the tile, transposed; a key
 * tile and its values, transposed; dS, transposed (key-major), for dQ += dS K. */
template <int NJ>
__global__ void __launch_bounds__(AT_THREADS) attention_dq_kernel(float *dq, const float *dout, const float *q,
                                                                  const float *k, const float *v, const float *lse,
                                                                  const float *D, int q_stride, int kv_stride,
                                                                  const att_tile *tiles, int NH, int NKV, int HD,
                                                                  int window, float scale) {
  PC_DYNAMIC_SHARED(float4, smem4);
  float *Qs = (float *)smem4;    // [HD][AT_LD]
  float *dOs = Qs + HD * AT_LD;  // [HD][AT_LD]
  float *Ks = dOs + HD * AT_LD;  // [HD][AT_LD]
  float *Vs = Ks + HD * AT_LD;   // [HD][AT_LD]
  float *dSs = Vs + HD * AT_LD;  // [AT_BK][AT_LD]
  const att_tile t = tiles[blockIdx.x];
  const int h = blockIdx.y, kvh = h / (NH / NKV), OD = NH * HD;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int p1 = t.p0 + t.nq;
  const int lo = window > 0 && t.p0 - window + 1 > 0 ? t.p0 - window + 1 : 0;
  const size_t kvoff = (size_t)kvh * HD;

  for (int e = tid; e < AT_BQ * HD; e += AT_THREADS) {
    int r = e / HD, d = e % HD;
    size_t row = (size_t)(t.q0 + r);
    Qs[d * AT_LD + r] = r < t.nq ? q[row * q_stride + (size_t)h * HD + d] * scale : 0.0f;
    dOs[d * AT_LD + r] = r < t.nq ? dout[row * OD + (size_t)h * HD + d] : 0.0f;
  }
  float acc[4][NJ], L[4], Dr[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int qi = ty * 4 + i;
    L[i] = qi < t.nq ? lse[(size_t)(t.q0 + qi) * NH + h] : 0.0f;
    Dr[i] = qi < t.nq ? D[(size_t)(t.q0 + qi) * NH + h] : 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; j++) acc[i][j] = 0.0f;
  }

  for (int kt0 = lo; kt0 < p1; kt0 += AT_BK) {
    __syncthreads();  // the last tile's dS K is done with Ks and dSs (the first time: Qs, dOs written)
    for (int e = tid; e < AT_BK * HD; e += AT_THREADS) {
      int j = e / HD, d = e % HD, pj = kt0 + j;
      float kk = 0.0f, vv = 0.0f;
      if (pj < p1) {
        size_t kr = (size_t)(pj < t.plen ? t.pbase + pj : t.base + pj - t.plen) * kv_stride + kvoff + d;
        kk = k[kr];
        vv = v[kr];
      }
      Ks[d * AT_LD + j] = kk;
      Vs[d * AT_LD + j] = vv;
    }
    __syncthreads();
    float s[4][4], dp[4][4];
    tile_dots2(s, dp, Qs, Ks, dOs, Vs, ty * 4, tx * 4, HD);
    // P from the forward's lse (masked: 0), then dS = P (dP - D); dS replaces s
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int qi = ty * 4 + i, pi = t.p0 + qi;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        int pj = kt0 + tx * 4 + j;
        bool ok = qi < t.nq && pj <= pi && (window <= 0 || pi - pj < window);
        float p = ok ? expf(s[i][j] - L[i]) : 0.0f;
        s[i][j] = p * (dp[i][j] - Dr[i]);
      }
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
      *(float4 *)&dSs[(tx * 4 + j) * AT_LD + ty * 4] = make_float4(s[0][j], s[1][j], s[2][j], s[3][j]);
    __syncthreads();  // dS is complete
    int nk = p1 - kt0 < AT_BK ? p1 - kt0 : AT_BK;
    for (int kk = 0; kk < nk; kk++) {
      acc_rank1<NJ>(acc, *(const float4 *)&dSs[kk * AT_LD + ty * 4], Ks + kk, AT_LD, tx, HD);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int qi = ty * 4 + i;
    if (qi >= t.nq) continue;
    size_t row = (size_t)(t.q0 + qi);
#pragma unroll
    for (int j = 0; j < NJ; j++) {
      int d = tx + 16 * j;
      if (d < HD) dq[row * q_stride + (size_t)h * HD + d] = acc[i][j] * scale;
    }
  }
}

/* dk and dv, tiled: block (key tile, kv head), 256 threads as 16 x 16: thread (ty, tx) recomputes the
 * (transposed) scores and dP of keys ty*4.. with queries tx*4.., and owns dk's and dv's columns tx,
 * tx+16, ... of its 4 keys. Shared: the key tile and its values, transposed (loaded once); a query
 * tile (scaled) and its dO, transposed, with their lse and D; P and dS, query-major. */
template <int NJ>
__global__ void __launch_bounds__(AT_THREADS) attention_dkv_kernel(float *dk, float *dv, const float *dout,
                                                                   const float *q, const float *k, const float *v,
                                                                   const float *lse, const float *D, int q_stride,
                                                                   int kv_stride, const att_ktile *tiles, int NH,
                                                                   int NKV, int HD, int window, float scale) {
  PC_DYNAMIC_SHARED(float4, smem4);
  float *Ks = (float *)smem4;     // [HD][AT_LD]
  float *Vs = Ks + HD * AT_LD;    // [HD][AT_LD]
  float *Qs = Vs + HD * AT_LD;    // [HD][AT_LD]
  float *dOs = Qs + HD * AT_LD;   // [HD][AT_LD]
  float *Ps = dOs + HD * AT_LD;   // [AT_BQ][AT_LD]
  float *dSs = Ps + AT_BQ * AT_LD;  // [AT_BQ][AT_LD]
  float *Ls = dSs + AT_BQ * AT_LD;  // [AT_BQ]
  float *Ds = Ls + AT_BQ;           // [AT_BQ]
  const att_ktile t = tiles[blockIdx.x];
  const int kvh = blockIdx.y, group = NH / NKV, OD = NH * HD;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const size_t kvoff = (size_t)kvh * HD;

  for (int e = tid; e < AT_BK * HD; e += AT_THREADS) {
    int j = e / HD, d = e % HD;
    size_t kr = (size_t)(t.k0 + j) * kv_stride + kvoff + d;
    Ks[d * AT_LD + j] = j < t.nk ? k[kr] : 0.0f;
    Vs[d * AT_LD + j] = j < t.nk ? v[kr] : 0.0f;
  }
  float gk[4][NJ], gv[4][NJ];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < NJ; j++) gk[i][j] = gv[i][j] = 0.0f;

  for (int h = kvh * group; h < (kvh + 1) * group; h++)
    for (int src = 0; src < 2; src++) {
      int qlo, qhi;
      ktile_queries(t, src, window, &qlo, &qhi);
      const int lim = t.lim[src], qbase = t.q_row[src] - t.q_p0[src];  // row of query position p: qbase + p
      for (int qt0 = qlo; qt0 < qhi; qt0 += AT_BQ) {
        const int nq = qhi - qt0 < AT_BQ ? qhi - qt0 : AT_BQ;
        __syncthreads();  // the last query tile's dV, dK sums are done with Qs, dOs, Ps, dSs
        for (int e = tid; e < AT_BQ * HD; e += AT_THREADS) {
          int r = e / HD, d = e % HD;
          size_t row = (size_t)(qbase + qt0 + r);
          Qs[d * AT_LD + r] = r < nq ? q[row * q_stride + (size_t)h * HD + d] * scale : 0.0f;
          dOs[d * AT_LD + r] = r < nq ? dout[row * OD + (size_t)h * HD + d] : 0.0f;
        }
        for (int r = tid; r < AT_BQ; r += AT_THREADS) {
          size_t row = (size_t)(qbase + qt0 + r);
          Ls[r] = r < nq ? lse[row * NH + h] : 0.0f;
          Ds[r] = r < nq ? D[row * NH + h] : 0.0f;
        }
        __syncthreads();
        float s[4][4], dp[4][4];  // [key i][query j]
        tile_dots2(s, dp, Ks, Qs, Vs, dOs, ty * 4, tx * 4, HD);
#pragma unroll
        for (int j = 0; j < 4; j++) {
          int qj = tx * 4 + j, pi = qt0 + qj;
          float pa[4], ga[4];
#pragma unroll
          for (int i = 0; i < 4; i++) {
            int ki = ty * 4 + i, pj = t.kp0 + ki;
            bool ok = qj < nq && ki < t.nk && pj < lim && pj <= pi && (window <= 0 || pi - pj < window);
            pa[i] = ok ? expf(s[i][j] - Ls[qj]) : 0.0f;
            ga[i] = pa[i] * (dp[i][j] - Ds[qj]);
          }
          *(float4 *)&Ps[qj * AT_LD + ty * 4] = make_float4(pa[0], pa[1], pa[2], pa[3]);
          *(float4 *)&dSs[qj * AT_LD + ty * 4] = make_float4(ga[0], ga[1], ga[2], ga[3]);
        }
        __syncthreads();  // P and dS are complete
        for (int qq = 0; qq < nq; qq++) {
          acc_rank1<NJ>(gv, *(const float4 *)&Ps[qq * AT_LD + ty * 4], dOs + qq, AT_LD, tx, HD);
          acc_rank1<NJ>(gk, *(const float4 *)&dSs[qq * AT_LD + ty * 4], Qs + qq, AT_LD, tx, HD);  // Qs: scale q
        }
      }
    }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int ki = ty * 4 + i;
    if (ki >= t.nk) continue;
    size_t kr = (size_t)(t.k0 + ki) * kv_stride + kvoff;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
      int d = tx + 16 * j;
      if (d >= HD) continue;
      if (dk) dk[kr + d] = gk[i][j];
      if (dv) dv[kr + d] = gv[i][j];
    }
  }
}

/* dq for any head size: one warp per query row, its keys one at a time (as attention_rows_kernel);
 * per warp in shared memory the row's scaled query, its dO and the dq accumulator (lane d owns
 * elements d, d+32, ...: no barrier needed). */
__global__ void attention_dq_rows_kernel(float *dq, const float *dout, const float *q, const float *k,
                                         const float *v, const float *lse, const float *D, int q_stride,
                                         int kv_stride, const att_tile *tiles, int NH, int NKV, int HD, int window,
                                         float scale) {
  PC_DYNAMIC_SHARED(float4, smem4);
  const att_tile t = tiles[blockIdx.x];
  const int h = blockIdx.y, kvh = h / (NH / NKV), warp = threadIdx.x / 32, lane = threadIdx.x % 32, OD = NH * HD;
  float *qv = (float *)smem4 + (size_t)warp * 3 * HD, *ov = qv + HD, *acc = ov + HD;
  const size_t kvoff = (size_t)kvh * HD;
  for (int r = warp; r < t.nq; r += blockDim.x / 32) {
    int pi = t.p0 + r;
    size_t row = (size_t)(t.q0 + r);
    for (int d = lane; d < HD; d += 32) {
      qv[d] = q[row * q_stride + (size_t)h * HD + d] * scale;
      ov[d] = dout[row * OD + (size_t)h * HD + d];
      acc[d] = 0.0f;
    }
    float L = lse[row * NH + h], Dr = D[row * NH + h];
    int jlo = window > 0 && pi - window + 1 > 0 ? pi - window + 1 : 0;
    for (int pj = jlo; pj <= pi; pj++) {
      size_t kr = (size_t)(pj < t.plen ? t.pbase + pj : t.base + pj - t.plen) * kv_stride + kvoff;
      float s = 0.0f, dp = 0.0f;
      for (int d = lane; d < HD; d += 32) {
        s += qv[d] * k[kr + d];
        dp += ov[d] * v[kr + d];
      }
      s = warp_sum(s);
      dp = warp_sum(dp);
      float ds = expf(s - L) * (dp - Dr);
      for (int d = lane; d < HD; d += 32) acc[d] += ds * k[kr + d];
    }
    for (int d = lane; d < HD; d += 32) dq[row * q_stride + (size_t)h * HD + d] = acc[d] * scale;
  }
}

/* dk and dv for any head size: one warp per key row, every query that sees it one at a time; per warp
 * in shared memory the row's key and value and the two accumulators. */
__global__ void attention_dkv_rows_kernel(float *dk, float *dv, const float *dout, const float *q, const float *k,
                                          const float *v, const float *lse, const float *D, int q_stride,
                                          int kv_stride, const att_ktile *tiles, int NH, int NKV, int HD, int window,
                                          float scale) {
  PC_DYNAMIC_SHARED(float4, smem4);
  const att_ktile t = tiles[blockIdx.x];
  const int kvh = blockIdx.y, group = NH / NKV, warp = threadIdx.x / 32, lane = threadIdx.x % 32, OD = NH * HD;
  float *kv = (float *)smem4 + (size_t)warp * 4 * HD, *vv = kv + HD, *gk = vv + HD, *gv = gk + HD;
  const size_t kvoff = (size_t)kvh * HD;
  for (int r = warp; r < t.nk; r += blockDim.x / 32) {
    int pj = t.kp0 + r;
    size_t kr = (size_t)(t.k0 + r) * kv_stride + kvoff;
    for (int d = lane; d < HD; d += 32) {
      kv[d] = k[kr + d];
      vv[d] = v[kr + d];
      gk[d] = gv[d] = 0.0f;
    }
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
      for (int src = 0; src < 2; src++) {
        if (t.q_np[src] == 0 || pj >= t.lim[src]) continue;
        int qlo = t.q_p0[src] > pj ? t.q_p0[src] : pj, qhi = t.q_p0[src] + t.q_np[src];
        if (window > 0 && pj + window < qhi) qhi = pj + window;
        for (int pi = qlo; pi < qhi; pi++) {
          size_t row = (size_t)(t.q_row[src] + pi - t.q_p0[src]);
          const float *qr = q + row * q_stride + (size_t)h * HD, *orow = dout + row * OD + (size_t)h * HD;
          float s = 0.0f, dp = 0.0f;
          for (int d = lane; d < HD; d += 32) {
            s += qr[d] * scale * kv[d];
            dp += orow[d] * vv[d];
          }
          s = warp_sum(s);
          dp = warp_sum(dp);
          float p = expf(s - lse[row * NH + h]), ds = p * (dp - D[row * NH + h]);
          for (int d = lane; d < HD; d += 32) {
            gv[d] += p * orow[d];
            gk[d] += ds * (qr[d] * scale);
          }
        }
      }
    for (int d = lane; d < HD; d += 32) {
      if (dk) dk[kr + d] = gk[d];
      if (dv) dv[kr + d] = gv[d];
    }
  }
}

/* Dynamic shared memory of the tiled kernels (floats): dq's Q, dO, K, V and dS; dk/dv's K, V, Q, dO,
 * P, dS, lse and D. Both fit an H100's 227 KB up to HD = 128. */
static size_t att_dq_smem(int HD) { return sizeof(float) * ((size_t)4 * HD * AT_LD + (size_t)AT_BK * AT_LD); }
static size_t att_dkv_smem(int HD) {
  return sizeof(float) * ((size_t)4 * HD * AT_LD + (size_t)2 * AT_BQ * AT_LD + 2 * AT_BQ);
}

template <int NJ>
static void launch_attention_bwd(cuda_backend *cb, float *dq, float *dk, float *dv, const float *dout,
                                 const float *q, const float *k, const float *v, const float *lse, int q_stride,
                                 int kv_stride, int NH, int NKV, int HD, int window, float scale) {
  size_t sq = att_dq_smem(HD), skv = att_dkv_smem(HD);
  if (dq) {
    if (sq > 48 * 1024 &&
        CUDA_CHECK(cb, cudaFuncSetAttribute(attention_dq_kernel<NJ>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)sq)))
      return;
    PC_LAUNCH(attention_dq_kernel<NJ>, dim3((unsigned)cb->ntiles, (unsigned)NH), AT_THREADS, sq)(
        dq, dout, q, k, v, lse, cb->att_D, q_stride, kv_stride, cb->tiles_dev, NH, NKV, HD, window, scale);
    LAUNCH_CHECK(cb, "attention_dq_kernel");
  }
  if (dk || dv) {
    if (skv > 48 * 1024 &&
        CUDA_CHECK(cb, cudaFuncSetAttribute(attention_dkv_kernel<NJ>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)skv)))
      return;
    PC_LAUNCH(attention_dkv_kernel<NJ>, dim3((unsigned)cb->nktiles, (unsigned)NKV), AT_THREADS, skv)(
        dk, dv, dout, q, k, v, lse, cb->att_D, q_stride, kv_stride, cb->ktiles_dev, NH, NKV, HD, window, scale);
    LAUNCH_CHECK(cb, "attention_dkv_kernel");
  }
}

static void cuda_attention_backward(pc_backend *be, float *dq, float *dk, float *dv, const float *dout,
                                    const float *q, const float *k, const float *v, const float *out,
                                    const float *lse, int q_stride, int kv_stride, const pc_batch *bt, int N, int NH,
                                    int NKV, int HD, int window) {
  cuda_backend *cb = CB(be);
  if (cb->failed || N <= 0 || (!dq && !dk && !dv) || attention_tiles(cb, bt) != 0 || cb->ntiles == 0) return;
  if (ws_reserve(cb, (void **)&cb->att_D, &cb->att_D_cap, sizeof(float) * (size_t)N * NH)) return;
  PC_LAUNCH(attention_bwd_D_kernel, (unsigned)(((size_t)N * NH + 7) / 8), 256, 0)(cb->att_D, dout, out, N, NH, HD);
  LAUNCH_CHECK(cb, "attention_bwd_D_kernel");
  const float scale = 1.0f / sqrtf((float)HD);
  size_t smax = att_dkv_smem(HD) > att_dq_smem(HD) ? att_dkv_smem(HD) : att_dq_smem(HD);
  if (!cb->attn_rows && HD <= 128 && smax <= cb->smem_optin) {
    if (HD <= 32) launch_attention_bwd<2>(cb, dq, dk, dv, dout, q, k, v, lse, q_stride, kv_stride, NH, NKV, HD, window, scale);
    else if (HD <= 64) launch_attention_bwd<4>(cb, dq, dk, dv, dout, q, k, v, lse, q_stride, kv_stride, NH, NKV, HD, window, scale);
    else launch_attention_bwd<8>(cb, dq, dk, dv, dout, q, k, v, lse, q_stride, kv_stride, NH, NKV, HD, window, scale);
    return;
  }
  size_t sq = sizeof(float) * 3 * (size_t)HD * 8, skv = sizeof(float) * 4 * (size_t)HD * 8;  // 8 warps each
  if (dq) {
    if (sq > 48 * 1024 && CUDA_CHECK(cb, cudaFuncSetAttribute(attention_dq_rows_kernel,
                                                              cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sq)))
      return;
    PC_LAUNCH(attention_dq_rows_kernel, dim3((unsigned)cb->ntiles, (unsigned)NH), 256, sq)(
        dq, dout, q, k, v, lse, cb->att_D, q_stride, kv_stride, cb->tiles_dev, NH, NKV, HD, window, scale);
    LAUNCH_CHECK(cb, "attention_dq_rows_kernel");
  }
  if (dk || dv) {
    if (skv > 48 * 1024 && CUDA_CHECK(cb, cudaFuncSetAttribute(attention_dkv_rows_kernel,
                                                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)skv)))
      return;
    PC_LAUNCH(attention_dkv_rows_kernel, dim3((unsigned)cb->nktiles, (unsigned)NKV), 256, skv)(
        dk, dv, dout, q, k, v, lse, cb->att_D, q_stride, kv_stride, cb->ktiles_dev, NH, NKV, HD, window, scale);
    LAUNCH_CHECK(cb, "attention_dkv_rows_kernel");
  }
}

// ==== training: the fused log-prob backward =======================================================
//
// Chunked like cuda_logprob, so the (M x V) logits never exist: per chunk of LP_ROWS rows and LP_VOCAB
// words, the logits are recomputed by the same GEMM as the forward (same operands, so in bf16 mode the
// same bf16 products the forward's lse came from), turned in place into G = dlp (onehot - p) with
// p = exp(logit + b - lse), and then
//   dh rows (mr x C)     = sum over vocabulary chunks of G (mr x vc) · head rows (vc x C)   (beta 0, then 1)
//   dhead rows (vc x C) += G^T (vc x mr) · h (mr x C)
// both cuBLAS GEMMs with fp32 accumulation. Memory: the forward's chunk of logits (LP_ROWS x LP_VOCAB
// floats) and, in bf16 mode, its bf16 copy. The bias is added to the logits as in the forward; it gets
// no gradient (backend.h has none for it: the CPU backend's reference does the same). Each dhead row
// is written by its chunk's GEMMs only, one row chunk after the other: deterministic, no atomics.

/* In place over one (mr x vc) chunk of logits (words v0..), one block per row i:
 * G[i][j] = dlp[i] (1[v0+j == target[i]] - exp(logit + b - lse[i])); with g16, also its bf16 copy. */
__global__ void lp_grad_kernel(float *G, __nv_bfloat16 *g16, int vc, int v0, const float *bias,
                               const int32_t *targets, const float *lse, const float *dlp) {
  const int i = blockIdx.x;
  float *x = G + (size_t)i * vc;
  const float l = lse[i], d = dlp[i];
  const int tj = targets[i] - v0;  // the target's column, when it is in this chunk
  for (int j = threadIdx.x; j < vc; j += blockDim.x) {
    float g = -d * expf(x[j] + (bias ? bias[v0 + j] : 0.0f) - l);
    if (j == tj) g += d;
    x[j] = g;
    if (g16) g16[(size_t)i * vc + j] = __float2bfloat16_rn(g);
  }
}

static void cuda_logprob_backward(pc_backend *be, float *dh, float *dhead, const float *h, const pc_weight *head,
                                  const int32_t *targets, const float *lse, const float *dlp, int M, int C, int V) {
  cuda_backend *cb = CB(be);
  if (cb->failed || M <= 0 || (!dh && !dhead)) return;
  const __nv_bfloat16 *w16 = bf16_twin(cb, head->w, (size_t)V * C);
  const __nv_bfloat16 *h16 = w16 ? act_bf16(cb, h, (size_t)M * C) : NULL;  // act16: valid through this call
  int bf = w16 && h16;
  int RC = M < LP_ROWS ? M : LP_ROWS, VC = V < LP_VOCAB ? V : LP_VOCAB;
  if (ws_reserve(cb, (void **)&cb->lp_ws, &cb->lp_ws_cap, sizeof(float) * (size_t)RC * VC) ||
      (bf && ws_reserve(cb, (void **)&cb->lp_g16, &cb->lp_g16_cap, sizeof(__nv_bfloat16) * (size_t)RC * VC)))
    return;
  const int outin = head->layout == PC_W_OUT_IN, ldw = outin ? C : V;
  for (int r0 = 0; r0 < M; r0 += LP_ROWS) {
    int mr = M - r0 < LP_ROWS ? M - r0 : LP_ROWS;
    for (int v0 = 0; v0 < V; v0 += LP_VOCAB) {
      int vc = V - v0 < LP_VOCAB ? V - v0 : LP_VOCAB;
      // the forward's logits (mr x vc) row-major = column-major (vc x mr): see cuda_logprob
      size_t woff = outin ? (size_t)v0 * C : (size_t)v0;
      const void *W = bf ? (const void *)(w16 + woff) : (const void *)(head->w + woff);
      const void *H = bf ? (const void *)(h16 + (size_t)r0 * C) : (const void *)(h + (size_t)r0 * C);
      gemm(cb, outin ? CUBLAS_OP_T : CUBLAS_OP_N, vc, mr, C, W, ldw, H, C, 0.0f, cb->lp_ws, vc, bf);
      PC_LAUNCH(lp_grad_kernel, mr, 256, 0)(cb->lp_ws, bf ? cb->lp_g16 : NULL, vc, v0, head->b, targets + r0,
                                           lse + r0, dlp + r0);
      LAUNCH_CHECK(cb, "lp_grad_kernel");
      const void *G = bf ? (const void *)cb->lp_g16 : (const void *)cb->lp_ws;  // column-major (vc x mr)
      // dh^T (C x mr) (+)= Wc^T (C x vc) · G (vc x mr), Wc the chunk's head rows (vc x C) row-major: for
      // (V, C) that is column-major (C x vc) as it is; for (C, V), column-major (vc x C), transposed
      if (dh)
        gemm(cb, outin ? CUBLAS_OP_N : CUBLAS_OP_T, C, mr, vc, W, ldw, G, vc, v0 ? 1.0f : 0.0f, dh + (size_t)r0 * C,
             C, bf);
      // dhead, in the head's layout: (V, C): its chunk column-major (C x vc) += h^T (C x mr) · G^T (mr x vc);
      // (C, V): its chunk column-major (vc x C) += G (vc x mr) · h (mr x C)
      if (dhead && outin)
        gemm_t(cb, CUBLAS_OP_N, CUBLAS_OP_T, C, vc, mr, H, C, G, vc, 1.0f, dhead + (size_t)v0 * C, C, bf);
      else if (dhead)
        gemm_t(cb, CUBLAS_OP_N, CUBLAS_OP_T, vc, C, mr, G, vc, H, C, 1.0f, dhead + v0, V, bf);
      if (cb->failed) return;
    }
  }
}

// ---- construction -------------------------------------------------------------------------------

static void cuda_destroy(pc_backend *be) {
  cuda_backend *cb = CB(be);
  if (!cb) return;
  for (int i = 0; i < cb->nw; i++) {  // weights the caller did not free
    if (cb->w[i].bf) cudaFree(cb->w[i].bf);
    cudaFree((void *)cb->w[i].p);
  }
  if (cb->act16) cudaFree(cb->act16);
  if (cb->lp_ws) cudaFree(cb->lp_ws);
  if (cb->lp_stats) cudaFree(cb->lp_stats);
  if (cb->lp_g16) cudaFree(cb->lp_g16);
  if (cb->tiles_dev) cudaFree(cb->tiles_dev);
  if (cb->act16b) cudaFree(cb->act16b);
  if (cb->sumsq_part) cudaFree(cb->sumsq_part);
  if (cb->colsum_part) cudaFree(cb->colsum_part);
  if (cb->ktiles_dev) cudaFree(cb->ktiles_dev);
  if (cb->att_D) cudaFree(cb->att_D);
  if (cb->blas) cublasDestroy(cb->blas);
  free(cb->w);
  free(cb->tiles_host);
  free(cb->ktiles_host);
  free(cb->lay_start);
  free(cb->lay_plen);
  free(cb);
}

/* The ops this backend has: exactly those whose table entry make_ops sets. */
static int cuda_supports(pc_backend *be, pc_op op) {
  switch (op) {
    case PC_OP_EMBEDDING: case PC_OP_MATMUL: case PC_OP_LAYERNORM: case PC_OP_RMSNORM: case PC_OP_ROPE:
    case PC_OP_ATTENTION: case PC_OP_GELU: case PC_OP_SWIGLU: case PC_OP_LOGPROB: case PC_OP_GATHER_ROWS:
    case PC_OP_COPY: case PC_OP_ZERO: case PC_OP_SCALE:
    case PC_OP_ATTENTION_BACKWARD: case PC_OP_LOGPROB_BACKWARD:
      return 1;
    // training ops (backward kernels and the optimizer)
    case PC_OP_EMBEDDING_BACKWARD: case PC_OP_MATMUL_BACKWARD: case PC_OP_LAYERNORM_BACKWARD:
    case PC_OP_RMSNORM_BACKWARD: case PC_OP_ROPE_BACKWARD: case PC_OP_GELU_BACKWARD: case PC_OP_SWIGLU_BACKWARD:
    case PC_OP_SCATTER_ROWS: case PC_OP_SUMSQ: case PC_OP_ADAMW:
      return 1;
    default: return 0;
  }
}

static const char *cuda_error(pc_backend *be) { return CB(be)->failed ? CB(be)->err : NULL; }

/* Each table entry records its op's name before running it, so that a failure names the op. */
#define NAMED(fn, name) [](pc_backend *be, auto... a) { CB(be)->op = name; return fn(be, a...); }

static pc_backend_ops make_ops(void) {
  pc_backend_ops o;
  memset(&o, 0, sizeof o);  // an op not written for CUDA yet stays NULL (supports() says so)
  o.name = "cuda";
  o.destroy = cuda_destroy;
  o.supports = cuda_supports;
  o.error = cuda_error;
  o.alloc = NAMED(cuda_alloc, "alloc");
  o.free = NAMED(cuda_free, "free");
  o.upload = NAMED(cuda_upload, "upload");
  o.download = NAMED(cuda_download, "download");
  o.weight = NAMED(cuda_weight, "weight");
  o.embedding = NAMED(cuda_embedding, "embedding");
  o.matmul = NAMED(cuda_matmul, "matmul");
  o.layernorm = NAMED(cuda_layernorm, "layernorm");
  o.rmsnorm = NAMED(cuda_rmsnorm, "rmsnorm");
  o.rope = NAMED(cuda_rope, "rope");
  o.attention = NAMED(cuda_attention, "attention");
  o.gelu = NAMED(cuda_gelu, "gelu");
  o.swiglu = NAMED(cuda_swiglu, "swiglu");
  o.logprob = NAMED(cuda_logprob, "logprob");
  o.gather_rows = NAMED(cuda_gather_rows, "gather_rows");
  o.copy = NAMED(cuda_copy, "copy");
  o.zero = NAMED(cuda_zero, "zero");
  o.scale = NAMED(cuda_scale, "scale");
  // training ops (backward kernels and the optimizer)
  o.embedding_backward = NAMED(cuda_embedding_backward, "embedding_backward");
  o.matmul_backward = NAMED(cuda_matmul_backward, "matmul_backward");
  o.layernorm_backward = NAMED(cuda_layernorm_backward, "layernorm_backward");
  o.rmsnorm_backward = NAMED(cuda_rmsnorm_backward, "rmsnorm_backward");
  o.rope_backward = NAMED(cuda_rope_backward, "rope_backward");
  o.gelu_backward = NAMED(cuda_gelu_backward, "gelu_backward");
  o.swiglu_backward = NAMED(cuda_swiglu_backward, "swiglu_backward");
  o.scatter_rows = NAMED(cuda_scatter_rows, "scatter_rows");
  o.sumsq = NAMED(cuda_sumsq, "sumsq");
  o.adamw = NAMED(cuda_adamw, "adamw");
  o.mem_info = NAMED(cuda_mem_info, "mem_info");
  o.weight_updated = NAMED(cuda_weight_updated, "weight_updated");
  o.device_json = cuda_device_json;
  o.attention_backward = NAMED(cuda_attention_backward, "attention_backward");
  o.logprob_backward = NAMED(cuda_logprob_backward, "logprob_backward");
  return o;
}
#undef NAMED

static int env_is(const char *name, const char *val) {
  const char *s = getenv(name);
  return s && !strcmp(s, val);
}

/* run.json's "device": what the device is and the versions of the driver, the runtime and cuBLAS that
 * ran it (major.minor[.patch] as NVIDIA numbers them: 12040 is 12.4). The emulation says so. */
static void describe_device(cuda_backend *cb, const cudaDeviceProp *prop) {
  int drv = 0, rt = 0, blas = 0;
  if (cudaDriverGetVersion(&drv) != cudaSuccess) cudaGetLastError();
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) cudaGetLastError();
  if (cublasGetVersion(cb->blas, &blas) != CUBLAS_STATUS_SUCCESS) blas = 0;
#ifdef __CUDACC__
  const char *emulated = "false";
#else
  const char *emulated = "true";  // cuda_emu: the kernels ran on the CPU (make cuda-emu)
#endif
  char name[256];
  size_t k = 0;
  for (const char *c = prop->name; *c && k + 2 < sizeof name; c++)  // JSON-safe: no quotes or backslashes
    if (*c != '"' && *c != '\\' && (unsigned char)*c >= 0x20) name[k++] = *c;
  name[k] = 0;
  snprintf(cb->device_json, sizeof cb->device_json,
           "{\"name\": \"%s\", \"backend\": \"cuda\", \"emulated\": %s, \"compute_capability\": \"%d.%d\", "
           "\"memory_bytes\": %zu, \"precision\": \"%s\", \"driver\": \"%d.%d\", \"cuda_runtime\": \"%d.%d\", "
           "\"cublas\": \"%d.%d.%d\"}",
           name, emulated, prop->major, prop->minor, (size_t)prop->totalGlobalMem, cb->fp32 ? "fp32" : "bf16",
           drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10, blas / 10000, blas % 10000 / 100, blas % 100);
}

extern "C" pc_backend *pc_backend_cuda_new(int fp32, char *err, size_t errlen) {
  static const pc_backend_ops OPS = make_ops();
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    snprintf(err, errlen, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    cudaGetLastError();
    return NULL;
  }
  int dev = 0;
  cudaDeviceProp prop;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    snprintf(err, errlen, "CUDA device: %s", cudaGetErrorString(cudaGetLastError()));
    return NULL;
  }
  if (prop.major < 8) {
    snprintf(err, errlen, "CUDA device %s has compute capability %d.%d; the CUDA backend needs 8.0 or newer",
             prop.name, prop.major, prop.minor);
    return NULL;
  }
  cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
  if (!cb) { snprintf(err, errlen, "cuda backend: out of memory"); return NULL; }
  cb->base.ops = &OPS;
  cb->base.threads = 1;
  cb->fp32 = fp32 < 0 ? env_is("PREFCAP_CUDA_FP32", "1") : fp32 != 0;
  cb->sync_each = env_is("PREFCAP_CUDA_SYNC", "1");
  cb->attn_rows = env_is("PREFCAP_CUDA_ATTN", "rows");
  cb->smem_optin = (size_t)prop.sharedMemPerBlockOptin;
  cublasStatus_t s = cublasCreate(&cb->blas);
  if (s != CUBLAS_STATUS_SUCCESS) {
    snprintf(err, errlen, "cublasCreate: %s", blas_status_name(s));
    cb->blas = NULL;
    cuda_destroy(&cb->base);
    return NULL;
  }
  describe_device(cb, &prop);
  // fp32 mode: no TF32 anywhere (the gemm calls also ask for pedantic compute)
  s = cublasSetMathMode(cb->blas, cb->fp32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH);
  if (s != CUBLAS_STATUS_SUCCESS) {
    snprintf(err, errlen, "cublasSetMathMode: %s", blas_status_name(s));
    cuda_destroy(&cb->base);
    return NULL;
  }
  return &cb->base;
}

extern "C" const char *pc_backend_cuda_error(pc_backend *be) {
  if (!be || strcmp(be->ops->name, "cuda") != 0) return NULL;
  return CB(be)->failed ? CB(be)->err : NULL;
}

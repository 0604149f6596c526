/* trainer/backend/backend_cpu.c: the CPU backend: OpenBLAS sgemm for every matmul (including the chunked LM
 * head and the attention tiles), OpenMP threads for everything.
 *
 * One thread pool: OpenBLAS runs single-threaded and each op splits its work across the OpenMP
 * threads (matmuls by output columns, attention by (sequence, head, query tile), the LM head by
 * vocabulary range). Two pools (OpenBLAS's and OpenMP's) on the same cores spin against each other
 * between ops; measured on 2 cores that cost a quarter of the time.
 *
 * This is the reference the CUDA backend will be checked against, so everything is plain float32
 * with the reductions that decide accuracy (norm statistics, softmax sums, the vocabulary
 * log-sum-exp) accumulated in double. Scratch buffers live in the backend and only grow, so scoring
 * allocates nothing per token. */
#include "backend/backend.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Row and vocabulary chunk of the fused log-prob: RC x VC floats of logits at a time (8 MB), large
 * enough that sgemm runs at full speed, small enough to stay far from (B x T x V). */
#define LP_ROWS 128
#define LP_VOCAB 4096
/* Query rows per attention tile: scores (ATT_TILE x keys) per thread, computed by sgemm. */
#define ATT_TILE 64

typedef struct {
  pc_backend base;
  float *scratch;           /* training ops' scratch, grown on demand (no page faults per call) */
  size_t scratch_cap;
  float *lp_buf;            /* per thread, LP_ROWS x LP_VOCAB */
  float *att_buf;           /* per thread, att_cap floats */
  size_t att_cap;
  int nthreads;
} cpu_backend;

static cpu_backend *CPU(pc_backend *be) { return (cpu_backend *)be; }

// ---- memory -------------------------------------------------------------------------------------

static void *cpu_alloc(pc_backend *be, size_t bytes) {
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
  return p;
}
static void cpu_free(pc_backend *be, void *p) { free(p); }
/* Host memory: a copy cannot fail. */
static int cpu_transfer(pc_backend *be, void *dst, const void *src, size_t bytes) {
  memcpy(dst, src, bytes);
  return 0;
}
/* Every op of the table is implemented, and none can fail. */
static int cpu_supports(pc_backend *be, pc_op op) { return op >= 0 && op < PC_OP_COUNT; }
static const char *cpu_error(pc_backend *be) { return NULL; }
static void cpu_copy(pc_backend *be, void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static const float *cpu_weight(pc_backend *be, const float *host, size_t n, int *owned) {
  *owned = 0;  // host memory is already CPU memory: use it in place
  return host;
}

/* The machine's memory from /proc/meminfo; the backend's own: the log-prob chunks, one per thread
 * (the attention and training scratch grow with the batch and are small beside the activations). */
static int cpu_mem_info(pc_backend *be, pc_mem_info *out) {
  memset(out, 0, sizeof *out);
  out->host_memory = 1;
  out->workspace_bytes = sizeof(float) * LP_ROWS * LP_VOCAB * (size_t)CPU(be)->nthreads;
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return -1;
  char line[256];
  unsigned long long kb;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) out->total_bytes = (size_t)kb * 1024;
    else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) out->free_bytes = (size_t)kb * 1024;
  }
  fclose(f);
  return out->total_bytes ? 0 : -1;
}
/* The CPU multiplies the weights themselves: nothing derived to refresh. */
static void cpu_weight_updated(pc_backend *be, const float *w, size_t n) {}
static const char *cpu_device_json(pc_backend *be) { return "{\"name\": \"cpu\"}"; }

static void cpu_destroy(pc_backend *be) {
  if (!be) return;
  free(CPU(be)->lp_buf);
  free(CPU(be)->att_buf);
  free(CPU(be)->scratch);
  free(be);
}

// ---- elementwise and norms ----------------------------------------------------------------------

static void cpu_embedding(pc_backend *be, float *out, const int32_t *ids, const float *wte, const float *wpe,
                          const pc_batch *bt, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    const float *e = wte + (size_t)ids[r] * C;
    float *o = out + (size_t)r * C;
    if (wpe) {
      const float *p = wpe + (size_t)bt->pos[r] * C;
      for (int i = 0; i < C; i++) o[i] = e[i] + p[i];
    } else {
      memcpy(o, e, sizeof(float) * (size_t)C);
    }
  }
}

static void cpu_layernorm(pc_backend *be, float *out, const float *inp, const float *w, const float *b, float eps,
                          int N, int C, float *mean_out, float *rstd_out) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    const float *x = inp + (size_t)r * C;
    float *o = out + (size_t)r * C;
    double s = 0;
    for (int i = 0; i < C; i++) s += x[i];
    double mean = s / C, v = 0;
    for (int i = 0; i < C; i++) v += (x[i] - mean) * (x[i] - mean);
    float rstd = (float)(1.0 / sqrt(v / C + eps)), m = (float)mean;
    if (mean_out) mean_out[r] = m;
    if (rstd_out) rstd_out[r] = rstd;
    for (int i = 0; i < C; i++) o[i] = (x[i] - m) * rstd * w[i] + b[i];
  }
}

static void cpu_rmsnorm(pc_backend *be, float *out, const float *inp, const float *w, float eps, int rows, int C,
                        int stride, float *rstd_out) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    const float *x = inp + (size_t)r * stride;
    float *o = out + (size_t)r * stride;
    double s = 0;
    for (int i = 0; i < C; i++) s += (double)x[i] * x[i];
    float rs = (float)(1.0 / sqrt(s / C + eps));
    if (rstd_out) rstd_out[r] = rs;
    for (int i = 0; i < C; i++) o[i] = x[i] * rs * w[i];
  }
}

static void cpu_gelu(pc_backend *be, float *x, size_t n, int tanh_approx) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  if (tanh_approx) {
    // 0.5 x (1 + tanh(u)) == x * sigmoid(2u): the same function, one expf instead of tanhf (whose
    // expm1f took a tenth of the forward pass)
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
      float v = x[i];
      x[i] = v / (1.0f + expf(-2.0f * k * (v + 0.044715f * v * v * v)));
    }
  } else {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
  }
}

static void cpu_swiglu(pc_backend *be, float *out, const float *gate, const float *up, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

static void cpu_gather_rows(pc_backend *be, float *out, const float *inp, const int32_t *rows, int M, int C) {
#pragma omp parallel for schedule(static)
  for (int m = 0; m < M; m++) memcpy(out + (size_t)m * C, inp + (size_t)rows[m] * C, sizeof(float) * (size_t)C);
}

// ---- matmul -------------------------------------------------------------------------------------

/* C (M, N) = A (M, K) · op(B) + beta C, the N columns split across the threads (each slice its own
 * single-threaded sgemm); small products run on one thread. transB: B is (N, K), else (K, N). */
static void par_sgemm(cpu_backend *cb, int transB, int M, int N, int K, const float *A, int lda, const float *B,
                      int ldb, float beta, float *C, int ldc) {
  int nt = cb->nthreads;
  if (nt > 1 && (double)M * N * K < 2e6) nt = 1;
  int per = (N + nt - 1) / nt;
  per = (per + 15) / 16 * 16;  // keep slices a multiple of the kernel's column block
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int t = 0; t < nt; t++) {
    int n0 = t * per, n1 = n0 + per < N ? n0 + per : N;
    if (n1 <= n0) continue;
    if (transB)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n1 - n0, K, 1.0f, A, lda, B + (size_t)n0 * ldb, ldb,
                  beta, C + n0, ldc);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, n1 - n0, K, 1.0f, A, lda, B + n0, ldb, beta, C + n0,
                  ldc);
  }
}

static void cpu_matmul(pc_backend *be, float *out, const float *inp, const pc_weight *w, int N, int C, int OC,
                       int accumulate) {
  if (N <= 0) return;
  float beta = 0.0f;
  if (w->b) {  // seed out with the bias (added to it when accumulating), then let sgemm add into it
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
      float *o = out + (size_t)r * OC;
      if (accumulate) for (int i = 0; i < OC; i++) o[i] += w->b[i];
      else memcpy(o, w->b, sizeof(float) * (size_t)OC);
    }
    beta = 1.0f;
  } else if (accumulate) {
    beta = 1.0f;
  }
  if (w->layout == PC_W_OUT_IN) par_sgemm(CPU(be), 1, N, OC, C, inp, C, w->w, C, beta, out, OC);
  else par_sgemm(CPU(be), 0, N, OC, C, inp, C, w->w, OC, beta, out, OC);
}

// ---- rope and attention -------------------------------------------------------------------------

static void cpu_rope(pc_backend *be, float *x, const float *cos_t, const float *sin_t, const pc_batch *bt, int N,
                     int H, int HD, int stride) {
  int half = HD / 2;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    const float *c = cos_t + (size_t)bt->pos[r] * half, *s = sin_t + (size_t)bt->pos[r] * half;
    for (int h = 0; h < H; h++) {
      float *v = x + (size_t)r * stride + (size_t)h * HD;
      for (int i = 0; i < half; i++) {
        float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c[i] - x2 * s[i];
        v[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

static void cpu_attention(pc_backend *be, float *out, const float *q, const float *k, const float *v, int q_stride,
                          int kv_stride, const pc_batch *bt, int N, int NH, int NKV, int HD, int window,
                          float *lse) {
  cpu_backend *cb = CPU(be);
  int maxT = 0, ntiles = 0;
  for (int s = 0; s < bt->nseq; s++) {
    int own = bt->seq_start[s + 1] - bt->seq_start[s], plen = bt->prefix_len ? bt->prefix_len[s] : 0;
    if (own + plen > maxT) maxT = own + plen;
    ntiles += (own + ATT_TILE - 1) / ATT_TILE;
  }
  size_t need = (size_t)ATT_TILE * (size_t)maxT;
  if (need > cb->att_cap) {
    free(cb->att_buf);
    cb->att_buf = malloc(sizeof(float) * need * (size_t)cb->nthreads);
    cb->att_cap = cb->att_buf ? need : 0;
    if (!cb->att_buf) return;  // cannot happen in practice; out stays as it was
  }
  const float scale = 1.0f / sqrtf((float)HD);
  const int group = NH / NKV;
  // Work items: (query tile, head), a tile being up to ATT_TILE of a sequence's own rows. For a tile
  // of positions [p0, p1) the visible keys are positions [lo, p1): those below plen in sequence s-1's
  // rows (segment a), the rest in its own rows (segment b). S = Q K^T per segment (sgemm), a masked
  // softmax per row (sum in double), O = P V per segment (sgemm) straight into out.
#pragma omp parallel num_threads(cb->nthreads)
  {
    float *S = cb->att_buf + cb->att_cap * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (long item = 0; item < (long)ntiles * NH; item++) {
      int tile = (int)(item / NH), h = (int)(item % NH);
      int s = 0, r0 = 0;
      for (int left = tile;; s++) {
        int nt = (bt->seq_start[s + 1] - bt->seq_start[s] + ATT_TILE - 1) / ATT_TILE;
        if (left < nt) { r0 = left * ATT_TILE; break; }
        left -= nt;
      }
      int base = bt->seq_start[s], own = bt->seq_start[s + 1] - base;
      int plen = bt->prefix_len ? bt->prefix_len[s] : 0, pbase = plen ? bt->seq_start[s - 1] : 0;
      int r1 = r0 + ATT_TILE < own ? r0 + ATT_TILE : own, ti = r1 - r0;
      int p0 = plen + r0, p1 = plen + r1;  // positions of the tile's queries
      int lo = window > 0 && p0 - window + 1 > 0 ? p0 - window + 1 : 0, nk = p1 - lo;
      int na = plen > lo ? plen - lo : 0;  // keys from the shared prefix: positions lo..lo+na-1
      int bstart = lo > plen ? lo : plen;  // own keys: positions bstart..p1-1
      size_t kvh = (size_t)(h / group) * HD;
      const float *qt = q + (size_t)(base + r0) * q_stride + (size_t)h * HD;
      if (na > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ti, na, HD, scale, qt, q_stride,
                    k + (size_t)(pbase + lo) * kv_stride + kvh, kv_stride, 0.0f, S, nk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ti, nk - na, HD, scale, qt, q_stride,
                  k + (size_t)(base + bstart - plen) * kv_stride + kvh, kv_stride, 0.0f, S + na, nk);
      for (int r = 0; r < ti; r++) {
        int i = p0 + r;
        int jlo = window > 0 && i - window + 1 > lo ? i - window + 1 : lo;  // visible keys: jlo..i
        float *sr = S + (size_t)r * nk;
        float mx = -INFINITY;
        for (int j = jlo; j <= i; j++) mx = sr[j - lo] > mx ? sr[j - lo] : mx;
        double sum = 0;
        for (int j = jlo; j <= i; j++) {
          float e = expf(sr[j - lo] - mx);
          sr[j - lo] = e;
          sum += e;
        }
        float inv = (float)(1.0 / sum);
        if (lse) lse[(size_t)(base + r0 + r) * NH + h] = (float)((double)mx + log(sum));
        for (int j = lo; j < p1; j++) sr[j - lo] = (j >= jlo && j <= i) ? sr[j - lo] * inv : 0.0f;
      }
      float *ot = out + (size_t)(base + r0) * NH * HD + (size_t)h * HD;
      if (na > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ti, HD, na, 1.0f, S, nk,
                    v + (size_t)(pbase + lo) * kv_stride + kvh, kv_stride, 0.0f, ot, NH * HD);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ti, HD, nk - na, 1.0f, S + na, nk,
                  v + (size_t)(base + bstart - plen) * kv_stride + kvh, kv_stride, na > 0 ? 1.0f : 0.0f, ot, NH * HD);
    }
  }
}

// ---- fused LM head + log-softmax + gather -------------------------------------------------------

static void cpu_logprob(pc_backend *be, float *out, const float *h, const pc_weight *head, const int32_t *targets,
                        int M, int C, int V, float *lse) {
  cpu_backend *cb = CPU(be);
  int nt = cb->nthreads;
  // Per thread and row: running max, sum of exp(logit - max) in double, target logit (NAN when the
  // target is outside the thread's vocabulary range). Merged across threads after each row chunk.
  float *pmax = malloc(sizeof(float) * (size_t)nt * LP_ROWS), *ptgt = malloc(sizeof(float) * (size_t)nt * LP_ROWS);
  double *psum = malloc(sizeof(double) * (size_t)nt * LP_ROWS);
  if (!pmax || !ptgt || !psum) { free(pmax); free(ptgt); free(psum); return; }
  int per = (V + nt - 1) / nt;
  for (int r0 = 0; r0 < M; r0 += LP_ROWS) {
    int mr = M - r0 < LP_ROWS ? M - r0 : LP_ROWS;
#pragma omp parallel num_threads(nt)
    {
      int t = omp_get_thread_num();
      float *lg = cb->lp_buf + (size_t)t * LP_ROWS * LP_VOCAB, *rmax = pmax + (size_t)t * LP_ROWS,
            *rtgt = ptgt + (size_t)t * LP_ROWS;
      double *rsum = psum + (size_t)t * LP_ROWS;
      for (int i = 0; i < mr; i++) { rmax[i] = -INFINITY; rsum[i] = 0; rtgt[i] = NAN; }
      int va = t * per, vb = va + per < V ? va + per : V;
      for (int v0 = va; v0 < vb; v0 += LP_VOCAB) {
        int vc = vb - v0 < LP_VOCAB ? vb - v0 : LP_VOCAB;
        if (head->layout == PC_W_OUT_IN)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mr, vc, C, 1.0f, h + (size_t)r0 * C, C,
                      head->w + (size_t)v0 * C, C, 0.0f, lg, vc);
        else
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mr, vc, C, 1.0f, h + (size_t)r0 * C, C,
                      head->w + v0, V, 0.0f, lg, vc);
        for (int i = 0; i < mr; i++) {
          float *x = lg + (size_t)i * vc;
          if (head->b) for (int j = 0; j < vc; j++) x[j] += head->b[v0 + j];
          float cm = -INFINITY;
          for (int j = 0; j < vc; j++) cm = x[j] > cm ? x[j] : cm;
          // Online log-sum-exp: rescale the running sum to the new maximum, then add this chunk.
          float nm = cm > rmax[i] ? cm : rmax[i];
          double s = 0;
          int j = 0;
          for (; j + 256 <= vc; j += 256) {  // float partial sums of 256 terms, summed in double
            float cs = 0;
            for (int u = 0; u < 256; u++) cs += expf(x[j + u] - nm);
            s += cs;
          }
          for (; j < vc; j++) s += expf(x[j] - nm);
          rsum[i] = rsum[i] * exp((double)rmax[i] - nm) + s;
          rmax[i] = nm;
          int tg = targets[r0 + i];
          if (tg >= v0 && tg < v0 + vc) rtgt[i] = x[tg - v0];
        }
      }
    }
    for (int i = 0; i < mr; i++) {
      float m = -INFINITY, tg = NAN;
      for (int t = 0; t < nt; t++) {
        m = pmax[t * LP_ROWS + i] > m ? pmax[t * LP_ROWS + i] : m;
        if (!isnan(ptgt[t * LP_ROWS + i])) tg = ptgt[t * LP_ROWS + i];
      }
      double s = 0;
      for (int t = 0; t < nt; t++)
        if (psum[t * LP_ROWS + i] > 0) s += psum[t * LP_ROWS + i] * exp((double)pmax[t * LP_ROWS + i] - m);
      out[r0 + i] = (float)((double)tg - m - log(s));
      if (lse) lse[r0 + i] = (float)((double)m + log(s));
    }
  }
  free(pmax);
  free(ptgt);
  free(psum);
}

// ---- training: memory helpers -------------------------------------------------------------------

/* The backend's scratch of at least n floats (kept between calls), or NULL. */
static float *scratch(cpu_backend *cb, size_t n) {
  if (n > cb->scratch_cap) {
    free(cb->scratch);
    cb->scratch = malloc(sizeof(float) * n);
    cb->scratch_cap = cb->scratch ? n : 0;
  }
  return cb->scratch;
}

static void cpu_zero(pc_backend *be, void *p, size_t bytes) { memset(p, 0, bytes); }

static void cpu_scale(pc_backend *be, float *x, size_t n, float s) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) x[i] *= s;
}

// ---- training: backward ops ---------------------------------------------------------------------
//
// Determinism: every reduction across rows is split into fixed per-thread blocks (static schedules)
// and the partial sums are added in thread order, so a run with the same thread count gives the same
// bits (run.json records the count; --from-manifest and --resume rely on it).

/* C (M, N) = alpha op(A) op(B) + beta C, the N output columns split across the threads as in
 * par_sgemm. transA: A is (K, M), else (M, K); transB: B is (N, K), else (K, N). */
static void par_gemm(cpu_backend *cb, int transA, int transB, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  int nt = cb->nthreads;
  if (nt > 1 && (double)M * N * K < 2e6) nt = 1;
  int per = (N + nt - 1) / nt;
  per = (per + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int t = 0; t < nt; t++) {
    int n0 = t * per, n1 = n0 + per < N ? n0 + per : N;
    if (n1 <= n0) continue;
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, n1 - n0, K,
                alpha, A, lda, transB ? B + (size_t)n0 * ldb : B + n0, ldb, beta, C + n0, ldc);
  }
}

/* The per-thread column block [c0, c1) of C columns, for ops that split columns to avoid races. */
static void col_block(int C, int nt, int t, int *c0, int *c1) {
  int per = (C + nt - 1) / nt;
  *c0 = t * per < C ? t * per : C;
  *c1 = *c0 + per < C ? *c0 + per : C;
}

static void cpu_embedding_backward(pc_backend *be, float *dwte, float *dwpe, const float *dout, const int32_t *ids,
                                   const pc_batch *bt, int N, int C) {
  int nt = CPU(be)->nthreads;
#pragma omp parallel num_threads(nt)
  {
    int c0, c1;
    col_block(C, nt, omp_get_thread_num(), &c0, &c1);
    for (int r = 0; r < N; r++) {
      const float *d = dout + (size_t)r * C;
      if (dwte) {
        float *g = dwte + (size_t)ids[r] * C;
        for (int i = c0; i < c1; i++) g[i] += d[i];
      }
      if (dwpe) {
        float *g = dwpe + (size_t)bt->pos[r] * C;
        for (int i = c0; i < c1; i++) g[i] += d[i];
      }
    }
  }
}

static void cpu_scatter_rows(pc_backend *be, float *dinp, const float *dout, const int32_t *rows, int M, int C) {
  int nt = CPU(be)->nthreads;
#pragma omp parallel num_threads(nt)
  {
    int c0, c1;
    col_block(C, nt, omp_get_thread_num(), &c0, &c1);
    for (int m = 0; m < M; m++) {
      float *o = dinp + (size_t)rows[m] * C;
      const float *d = dout + (size_t)m * C;
      for (int i = c0; i < c1; i++) o[i] += d[i];
    }
  }
}

static void cpu_matmul_backward(pc_backend *be, float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const pc_weight *w, int N, int C, int OC, int accumulate) {
  if (N <= 0) return;
  cpu_backend *cb = CPU(be);
  if (w->layout == PC_W_OUT_IN) {  // out = inp W^T, W (OC, C)
    if (dinp) par_gemm(cb, 0, 0, N, C, OC, 1.0f, dout, OC, w->w, C, accumulate ? 1.0f : 0.0f, dinp, C);
    if (dw) par_gemm(cb, 1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);  // dW += dout^T inp
  } else {                         // out = inp W, W (C, OC)
    if (dinp) par_gemm(cb, 0, 1, N, C, OC, 1.0f, dout, OC, w->w, OC, accumulate ? 1.0f : 0.0f, dinp, C);
    if (dw) par_gemm(cb, 1, 0, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dw, OC);  // dW += inp^T dout
  }
  if (db) {  // column sums: each thread a block of columns, rows in order (contiguous reads)
    int nt = cb->nthreads;
#pragma omp parallel num_threads(nt)
    {
      int c0, c1;
      col_block(OC, nt, omp_get_thread_num(), &c0, &c1);
      double *acc = calloc((size_t)(c1 > c0 ? c1 - c0 : 1), sizeof(double));
      if (acc) {
        for (int r = 0; r < N; r++) {
          const float *d = dout + (size_t)r * OC;
          for (int j = c0; j < c1; j++) acc[j - c0] += d[j];
        }
        for (int j = c0; j < c1; j++) db[j] += (float)acc[j - c0];
        free(acc);
      }
    }
  }
}

/* Per-thread partial sums for the weight gradients of the norms: nt x C doubles (two sets), reduced
 * in thread order. */
static double *norm_partials(int nt, int C) { return calloc((size_t)nt * 2 * (size_t)C, sizeof(double)); }

static void reduce_partials(const double *part, int nt, int C, int which, float *dst) {
  if (!dst) return;
  for (int i = 0; i < C; i++) {
    double acc = 0;
    for (int t = 0; t < nt; t++) acc += part[((size_t)t * 2 + (size_t)which) * C + i];
    dst[i] += (float)acc;
  }
}

static void cpu_layernorm_backward(pc_backend *be, float *dinp, float *dw, float *db, const float *dout,
                                   const float *inp, const float *w, const float *mean, const float *rstd, int N,
                                   int C, int accumulate) {
  int nt = CPU(be)->nthreads;
  double *part = norm_partials(nt, C);
  if (!part) return;
#pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num();
    double *pw = part + (size_t)t * 2 * C, *pb = pw + C;
#pragma omp for schedule(static)
    for (int r = 0; r < N; r++) {
      const float *x = inp + (size_t)r * C, *d = dout + (size_t)r * C;
      float m = mean[r], rs = rstd[r];
      double sd = 0, sdn = 0;  // mean(dnorm), mean(dnorm * norm)
      for (int i = 0; i < C; i++) {
        float n = (x[i] - m) * rs, dn = w[i] * d[i];
        sd += dn;
        sdn += (double)dn * n;
        pw[i] += (double)d[i] * n;
        pb[i] += d[i];
      }
      float a = (float)(sd / C), b2 = (float)(sdn / C);
      if (dinp) {
        float *o = dinp + (size_t)r * C;
        for (int i = 0; i < C; i++) {
          float v = (w[i] * d[i] - a - (x[i] - m) * rs * b2) * rs;
          o[i] = accumulate ? o[i] + v : v;
        }
      }
    }
  }
  reduce_partials(part, nt, C, 0, dw);
  reduce_partials(part, nt, C, 1, db);
  free(part);
}

static void cpu_rmsnorm_backward(pc_backend *be, float *dinp, float *dw, const float *dout, const float *inp,
                                 const float *w, const float *rstd, int rows, int C, int stride, int accumulate) {
  int nt = CPU(be)->nthreads;
  double *part = norm_partials(nt, C);
  if (!part) return;
#pragma omp parallel num_threads(nt)
  {
    double *pw = part + (size_t)omp_get_thread_num() * 2 * C;
#pragma omp for schedule(static)
    for (int r = 0; r < rows; r++) {
      const float *x = inp + (size_t)r * stride, *d = dout + (size_t)r * stride;
      float rs = rstd[r];
      double sdn = 0;  // sum(dnorm * norm)
      for (int i = 0; i < C; i++) sdn += (double)(w[i] * d[i]) * (x[i] * rs);
      float b2 = (float)(sdn / C);
      float *o = dinp ? dinp + (size_t)r * stride : NULL;
      for (int i = 0; i < C; i++) {
        float di = d[i], n = x[i] * rs;  // read d[i] before o[i] (they may alias)
        pw[i] += (double)di * n;
        if (o) {
          float v = rs * (w[i] * di - n * b2);
          o[i] = accumulate ? o[i] + v : v;
        }
      }
    }
  }
  reduce_partials(part, nt, C, 0, dw);
  free(part);
}

static void cpu_rope_backward(pc_backend *be, float *dx, const float *cos_t, const float *sin_t, const pc_batch *bt,
                              int N, int H, int HD, int stride) {
  int half = HD / 2;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    const float *c = cos_t + (size_t)bt->pos[r] * half, *s = sin_t + (size_t)bt->pos[r] * half;
    for (int h = 0; h < H; h++) {
      float *v = dx + (size_t)r * stride + (size_t)h * HD;
      for (int i = 0; i < half; i++) {
        float d1 = v[i], d2 = v[i + half];
        v[i] = d1 * c[i] + d2 * s[i];
        v[i + half] = d2 * c[i] - d1 * s[i];
      }
    }
  }
}

static void cpu_gelu_backward(pc_backend *be, float *dinp, const float *inp, const float *dout, size_t n,
                              int tanh_approx) {
  const float k = 0.7978845608028654f;
  if (tanh_approx) {
    // with s = sigmoid(2u): 0.5 (1 + tanh u) = s and 0.5 (1 - tanh^2 u) = 2 s (1 - s): one expf, no
    // tanhf (whose expm1f was 5% of a GPT-2 training step)
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
      float x = inp[i], u = k * (x + 0.044715f * x * x * x), sg = 1.0f / (1.0f + expf(-2.0f * u));
      float dudx = k * (1.0f + 3.0f * 0.044715f * x * x);
      dinp[i] = dout[i] * (sg + 2.0f * x * sg * (1.0f - sg) * dudx);
    }
  } else {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
      float x = inp[i];
      float cdf = 0.5f * (1.0f + erff(x * 0.7071067811865476f)), pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
      dinp[i] = dout[i] * (cdf + x * pdf);
    }
  }
}

static void cpu_swiglu_backward(pc_backend *be, float *dgate, float *dup, const float *gate, const float *up,
                                const float *dout, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float g = gate[i], u = up[i], d = dout[i], sg = 1.0f / (1.0f + expf(-g));
    dgate[i] = d * u * sg * (1.0f + g * (1.0f - sg));
    dup[i] = d * g * sg;
  }
}

/* Flash-attention-style backward: per (pair group, kv head), every query tile of every query head of
 * that kv head recomputes its scores, then P = exp(S - lse), dP = dO V^T, dS = P (dP - rowsum(dO O)),
 * dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO. A group is a sequence, or a sequence and the next
 * one that reads its prefix: all writes to a kv head's rows of a group happen inside one work item,
 * so there are no races and the order of additions is fixed. */
static void cpu_attention_backward(pc_backend *be, float *dq, float *dk, float *dv, const float *dout, const float *q,
                                   const float *k, const float *v, const float *out, const float *lse, int q_stride,
                                   int kv_stride, const pc_batch *bt, int N, int NH, int NKV, int HD, int window) {
  cpu_backend *cb = CPU(be);
  int maxT = 0, ngroups = 0;
  int *gstart = malloc(sizeof(int) * (size_t)(bt->nseq + 1));
  if (!gstart) return;
  for (int s = 0; s < bt->nseq; s++) {
    int own = bt->seq_start[s + 1] - bt->seq_start[s], plen = bt->prefix_len ? bt->prefix_len[s] : 0;
    if (own + plen > maxT) maxT = own + plen;
    if (plen == 0) gstart[ngroups++] = s;  // a sequence that shares a prefix joins the group before it
  }
  gstart[ngroups] = bt->nseq;
  size_t per = (size_t)ATT_TILE * (size_t)(maxT > 0 ? maxT : 1);
  float *scr = scratch(cb, per * 2 * (size_t)cb->nthreads);
  if (!scr) { free(gstart); return; }
  const float scale = 1.0f / sqrtf((float)HD);
  const int group = NH / NKV, OD = NH * HD;
#pragma omp parallel num_threads(cb->nthreads)
  {
    float *S = scr + per * 2 * (size_t)omp_get_thread_num(), *dP = S + per;
#pragma omp for schedule(dynamic, 1)
    for (long item = 0; item < (long)ngroups * NKV; item++) {
      int g = (int)(item / NKV), kh = (int)(item % NKV);
      size_t kvh = (size_t)kh * HD;
      for (int s = gstart[g]; s < gstart[g + 1]; s++)  // zero this kv head's dk, dv rows of the group
        for (int r = bt->seq_start[s]; r < bt->seq_start[s + 1]; r++) {
          memset(dk + (size_t)r * kv_stride + kvh, 0, sizeof(float) * (size_t)HD);
          memset(dv + (size_t)r * kv_stride + kvh, 0, sizeof(float) * (size_t)HD);
        }
      for (int s = gstart[g]; s < gstart[g + 1]; s++) {
        int base = bt->seq_start[s], own = bt->seq_start[s + 1] - base;
        int plen = bt->prefix_len ? bt->prefix_len[s] : 0, pbase = plen ? bt->seq_start[s - 1] : 0;
        for (int h = kh * group; h < (kh + 1) * group; h++)
          for (int r0 = 0; r0 < own; r0 += ATT_TILE) {
            int r1 = r0 + ATT_TILE < own ? r0 + ATT_TILE : own, ti = r1 - r0;
            int p0 = plen + r0, p1 = plen + r1;
            int lo = window > 0 && p0 - window + 1 > 0 ? p0 - window + 1 : 0, nk = p1 - lo;
            int na = plen > lo ? plen - lo : 0, bstart = lo > plen ? lo : plen;
            const float *qt = q + (size_t)(base + r0) * q_stride + (size_t)h * HD;
            const float *dot = dout + (size_t)(base + r0) * OD + (size_t)h * HD;
            const float *ot = out + (size_t)(base + r0) * OD + (size_t)h * HD;
            size_t ka = (size_t)(pbase + lo) * kv_stride + kvh, kb = (size_t)(base + bstart - plen) * kv_stride + kvh;
            // S = scale Q K^T and dP = dO V^T, per key segment
            if (na > 0) {
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ti, na, HD, scale, qt, q_stride, k + ka, kv_stride,
                          0.0f, S, nk);
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ti, na, HD, 1.0f, dot, OD, v + ka, kv_stride, 0.0f,
                          dP, nk);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ti, nk - na, HD, scale, qt, q_stride, k + kb,
                        kv_stride, 0.0f, S + na, nk);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ti, nk - na, HD, 1.0f, dot, OD, v + kb, kv_stride,
                        0.0f, dP + na, nk);
            for (int r = 0; r < ti; r++) {
              int i = p0 + r;
              int jlo = window > 0 && i - window + 1 > lo ? i - window + 1 : lo;
              float l = lse[(size_t)(base + r0 + r) * NH + h];
              double D = 0;
              for (int d = 0; d < HD; d++) D += (double)dot[(size_t)r * OD + d] * ot[(size_t)r * OD + d];
              float *sr = S + (size_t)r * nk, *dr = dP + (size_t)r * nk;
              for (int j = lo; j < p1; j++) {
                float p = (j >= jlo && j <= i) ? expf(sr[j - lo] - l) : 0.0f;
                sr[j - lo] = p;                              // S now holds P
                dr[j - lo] = p * (dr[j - lo] - (float)D);    // dP now holds dS
              }
            }
            // dQ = scale dS K (overwrites); dK += scale dS^T Q; dV += P^T dO
            float *dqt = dq + (size_t)(base + r0) * q_stride + (size_t)h * HD;
            if (na > 0) {
              cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ti, HD, na, scale, dP, nk, k + ka, kv_stride, 0.0f,
                          dqt, q_stride);
              cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, na, HD, ti, scale, dP, nk, qt, q_stride, 1.0f,
                          dk + ka, kv_stride);
              cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, na, HD, ti, 1.0f, S, nk, dot, OD, 1.0f, dv + ka,
                          kv_stride);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ti, HD, nk - na, scale, dP + na, nk, k + kb,
                        kv_stride, na > 0 ? 1.0f : 0.0f, dqt, q_stride);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk - na, HD, ti, scale, dP + na, nk, qt, q_stride,
                        1.0f, dk + kb, kv_stride);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk - na, HD, ti, 1.0f, S + na, nk, dot, OD, 1.0f,
                        dv + kb, kv_stride);
          }
      }
    }
  }
  free(gstart);
}

/* Chunked like cpu_logprob: each thread owns a vocabulary range (so its dhead rows are its own) and
 * keeps its own partial dh for the row chunk; the partials are added in thread order. */
static void cpu_logprob_backward(pc_backend *be, float *dh, float *dhead, const float *h, const pc_weight *head,
                                 const int32_t *targets, const float *lse, const float *dlp, int M, int C, int V) {
  cpu_backend *cb = CPU(be);
  int nt = cb->nthreads;
  float *pdh = scratch(cb, (size_t)nt * LP_ROWS * (size_t)C);
  if (!pdh) return;
  int per = (V + nt - 1) / nt;
  for (int r0 = 0; r0 < M; r0 += LP_ROWS) {
    int mr = M - r0 < LP_ROWS ? M - r0 : LP_ROWS;
#pragma omp parallel num_threads(nt)
    {
      int t = omp_get_thread_num();
      float *G = cb->lp_buf + (size_t)t * LP_ROWS * LP_VOCAB, *mydh = pdh + (size_t)t * LP_ROWS * C;
      memset(mydh, 0, sizeof(float) * (size_t)mr * C);
      int va = t * per, vb = va + per < V ? va + per : V;
      for (int v0 = va; v0 < vb; v0 += LP_VOCAB) {
        int vc = vb - v0 < LP_VOCAB ? vb - v0 : LP_VOCAB;
        const float *W = head->w + (size_t)v0 * C;  // (vc, C) rows of the (V, C) head
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mr, vc, C, 1.0f, h + (size_t)r0 * C, C, W, C, 0.0f, G,
                    vc);
        for (int i = 0; i < mr; i++) {  // G = dlp (onehot - softmax)
          float *g = G + (size_t)i * vc, l = lse[r0 + i], d = dlp[r0 + i];
          if (head->b) for (int j = 0; j < vc; j++) g[j] += head->b[v0 + j];
          for (int j = 0; j < vc; j++) g[j] = -d * expf(g[j] - l);
          int tg = targets[r0 + i];
          if (tg >= v0 && tg < v0 + vc) g[tg - v0] += d;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mr, C, vc, 1.0f, G, vc, W, C, 1.0f, mydh, C);
        if (dhead)
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, vc, C, mr, 1.0f, G, vc, h + (size_t)r0 * C, C, 1.0f,
                      dhead + (size_t)v0 * C, C);
      }
    }
    for (int i = 0; i < mr; i++) {
      float *o = dh + (size_t)(r0 + i) * C;
      for (int c = 0; c < C; c++) {
        float acc = 0;
        for (int t = 0; t < nt; t++) acc += pdh[((size_t)t * LP_ROWS + i) * C + c];
        o[c] = acc;
      }
    }
  }
}

// ---- training: optimizer ------------------------------------------------------------------------

static int cpu_sumsq(pc_backend *be, const float *x, size_t n, double *out) {
  int nt = CPU(be)->nthreads;
  double part[256] = {0};
  if (nt > 256) nt = 256;
#pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num();
    size_t per = (n + (size_t)nt - 1) / (size_t)nt, a = (size_t)t * per, b = a + per < n ? a + per : n;
    double acc = 0;
    for (size_t i = a; i < b; i++) acc += (double)x[i] * x[i];
    part[t] = acc;
  }
  double s = 0;
  for (int t = 0; t < nt; t++) s += part[t];
  *out = s;
  return 0;
}

static void cpu_adamw(pc_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                      float b1, float b2, float eps, float step_size, float bc2_sqrt) {
  float decay = 1.0f - lr * wd;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float gi = g[i];
    p[i] *= decay;
    m[i] += (gi - m[i]) * (1.0f - b1);  // torch: exp_avg.lerp_(grad, 1 - beta1)
    v[i] = v[i] * b2 + (1.0f - b2) * gi * gi;
    p[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
  }
}

// ---- construction -------------------------------------------------------------------------------

static const pc_backend_ops CPU_OPS = {
  .name = "cpu",
  .destroy = cpu_destroy,
  .supports = cpu_supports,
  .error = cpu_error,
  .alloc = cpu_alloc,
  .free = cpu_free,
  .upload = cpu_transfer,
  .download = cpu_transfer,
  .weight = cpu_weight,
  .embedding = cpu_embedding,
  .matmul = cpu_matmul,
  .layernorm = cpu_layernorm,
  .rmsnorm = cpu_rmsnorm,
  .rope = cpu_rope,
  .attention = cpu_attention,
  .gelu = cpu_gelu,
  .swiglu = cpu_swiglu,
  .logprob = cpu_logprob,
  .gather_rows = cpu_gather_rows,
  .copy = cpu_copy,
  .zero = cpu_zero,
  .scale = cpu_scale,
  .embedding_backward = cpu_embedding_backward,
  .matmul_backward = cpu_matmul_backward,
  .layernorm_backward = cpu_layernorm_backward,
  .rmsnorm_backward = cpu_rmsnorm_backward,
  .rope_backward = cpu_rope_backward,
  .attention_backward = cpu_attention_backward,
  .gelu_backward = cpu_gelu_backward,
  .swiglu_backward = cpu_swiglu_backward,
  .logprob_backward = cpu_logprob_backward,
  .scatter_rows = cpu_scatter_rows,
  .sumsq = cpu_sumsq,
  .adamw = cpu_adamw,
  .mem_info = cpu_mem_info,
  .weight_updated = cpu_weight_updated,
  .device_json = cpu_device_json,
};

pc_backend *pc_backend_cpu_new(int threads) {
  cpu_backend *cb = calloc(1, sizeof *cb);
  if (!cb) return NULL;
  cb->base.ops = &CPU_OPS;
  if (threads <= 0) threads = omp_get_num_procs();
  cb->nthreads = threads;
  cb->base.threads = threads;
  omp_set_num_threads(threads);
  openblas_set_num_threads(1);  // one pool: see the top of this file
  cb->lp_buf = malloc(sizeof(float) * LP_ROWS * LP_VOCAB * (size_t)threads);
  if (!cb->lp_buf) { free(cb); return NULL; }
  return &cb->base;
}

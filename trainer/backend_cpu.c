/* trainer/backend_cpu.c: the CPU backend: OpenBLAS sgemm for every matmul (including the chunked LM
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
#include "backend.h"

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
static void cpu_copy(pc_backend *be, void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static const float *cpu_weight(pc_backend *be, const float *host, size_t n, int *owned) {
  *owned = 0;  // host memory is already CPU memory: use it in place
  return host;
}

static void cpu_destroy(pc_backend *be) {
  if (!be) return;
  free(CPU(be)->lp_buf);
  free(CPU(be)->att_buf);
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
                          int N, int C) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < N; r++) {
    const float *x = inp + (size_t)r * C;
    float *o = out + (size_t)r * C;
    double s = 0;
    for (int i = 0; i < C; i++) s += x[i];
    double mean = s / C, v = 0;
    for (int i = 0; i < C; i++) v += (x[i] - mean) * (x[i] - mean);
    float rstd = (float)(1.0 / sqrt(v / C + eps)), m = (float)mean;
    for (int i = 0; i < C; i++) o[i] = (x[i] - m) * rstd * w[i] + b[i];
  }
}

static void cpu_rmsnorm(pc_backend *be, float *out, const float *inp, const float *w, float eps, int rows, int C,
                        int stride) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    const float *x = inp + (size_t)r * stride;
    float *o = out + (size_t)r * stride;
    double s = 0;
    for (int i = 0; i < C; i++) s += (double)x[i] * x[i];
    float rs = (float)(1.0 / sqrt(s / C + eps));
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
                          int kv_stride, const pc_batch *bt, int N, int NH, int NKV, int HD, int window) {
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
                        int M, int C, int V) {
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
    }
  }
  free(pmax);
  free(ptgt);
  free(psum);
}

// ---- construction -------------------------------------------------------------------------------

static const pc_backend_ops CPU_OPS = {
  .name = "cpu",
  .destroy = cpu_destroy,
  .alloc = cpu_alloc,
  .free = cpu_free,
  .upload = cpu_copy,
  .download = cpu_copy,
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

pc_backend *pc_backend_new(const char *name, int threads, char *err, size_t errlen) {
  if (!name || !strcmp(name, "cpu") || !strcmp(name, "auto")) {
    pc_backend *be = pc_backend_cpu_new(threads);
    if (!be) snprintf(err, errlen, "cpu backend: out of memory");
    return be;
  }
  if (!strcmp(name, "cuda")) snprintf(err, errlen, "device 'cuda': the CUDA backend is not built yet");
  else snprintf(err, errlen, "unknown device '%s' (known: cpu)", name);
  return NULL;
}

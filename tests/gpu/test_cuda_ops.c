/* tests/gpu/test_cuda_ops.c: every op of the CUDA backend against the CPU backend (the reference), on
 * random inputs of awkward sizes: rows not a multiple of any tile, odd head counts, grouped-query
 * ratios 1, 2 and 7, head sizes from 8 to 300 (300 takes the simple attention kernels), packed
 * sequences with shared prefixes, sliding windows, strided q/k/v, vocabularies that span several
 * chunks of the fused log-prob, and more rows than one of its row chunks. The training ops (backward
 * kernels, scatter_rows, sumsq, AdamW) with accumulate on and off, NULL gradients, gradients that
 * alias their inputs where backend.h allows it, strided rows and repeated indices. The attention
 * backward runs in fp32 mode only (attention is fp32 in both modes).
 *
 *   test_cuda_ops           both modes: fp32 (PREFCAP_CUDA_FP32's mode) then bf16
 *   test_cuda_ops --bench   times the large ops on the GPU in bf16 (--bench --fp32: in fp32)
 *
 * Tolerance, per element: |cuda - cpu| <= tol * (|cpu| + rms(cpu)), the rms taken over the whole
 * output (so that an element that happens to be near zero is held to the scale of its tensor, not to
 * its own). fp32 mode: tol 1e-5. Both sides are fp32 and differ only in the order of additions
 * (~1e-7 relative through sums of a few hundred terms), so 1e-5 leaves two orders of headroom, while
 * a wrong index, mask or head moves values by 1e-1 or more. bf16 mode: tol 1e-2. The matmul operands
 * are rounded to bf16 (relative 2^-9 each), which moves a dot product by about 1.6e-3 of its tensor's
 * rms (~6e-3 at the worst of a few hundred thousand elements); everything else stays fp32
 * (matmul_backward's products: 2e-2, see MM_BWD_TOL). sumsq, a double: 1e-12 relative. Outputs are
 * poisoned with NaN before each op (every element must be written), and a NaN never passes.
 *
 * Without a GPU (cudaGetDeviceCount fails or finds none) it prints one SKIP line and exits 0: that is
 * what CI, which has no GPU, sees. */
#include "backend/backend.h"
#include "backend/backend_cuda.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pc_backend *CPU, *GPU;
static const char *MODE;  /* "fp32" or "bf16" */
static double TOL;
static int failures;

// ---- random numbers and the pair of buffers -------------------------------------------------------

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {  // xorshift64*
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}
static float frand(void) { return (float)next_u32() / 4294967296.0f * 2.0f - 1.0f; }  // [-1, 1)
static int irand(int n) { return (int)(next_u32() % (uint32_t)n); }

/* One tensor on both backends: c in CPU memory, g in GPU memory, n floats (or ints). */
typedef struct { void *c, *g; size_t n; } pair;

static void die(const char *what) {
  printf("FAIL cuda_%s_%s: %s\n", MODE, "setup", what);
  exit(1);
}

static pair pair_new(size_t n, const void *host) {
  pair p = {CPU->ops->alloc(CPU, n * 4 + 4), GPU->ops->alloc(GPU, n * 4 + 4), n};
  if (!p.c || !p.g) die("out of memory");
  if (host) {
    CPU->ops->upload(CPU, p.c, host, n * 4);
    GPU->ops->upload(GPU, p.g, host, n * 4);
  }
  return p;
}

static pair pair_rand(size_t n, float scale) {
  float *h = malloc(n * 4 + 4);
  if (!h) die("out of memory");
  for (size_t i = 0; i < n; i++) h[i] = frand() * scale;
  pair p = pair_new(n, h);
  free(h);
  return p;
}

static pair pair_ints(size_t n, const int32_t *v) { return pair_new(n, v); }

/* NaN everywhere, so that an element the op does not write fails the comparison */
static void poison(pair p) {
  unsigned char *h = malloc(p.n * 4 + 4);
  if (!h) die("out of memory");
  memset(h, 0xff, p.n * 4);
  CPU->ops->upload(CPU, p.c, h, p.n * 4);
  GPU->ops->upload(GPU, p.g, h, p.n * 4);
  free(h);
}

static void pair_free(pair p) {
  CPU->ops->free(CPU, p.c);
  GPU->ops->free(GPU, p.g);
}

/* A weight: through weight() on both (the GPU keeps it registered, so bf16 mode multiplies its bf16
 * twin), or, with registered = 0, plain alloc'd memory (the GPU multiplies it in fp32). */
typedef struct { const float *c, *g; int gowned; float *host; size_t n; } wpair;

static wpair weight_new(size_t n, float scale, int registered) {
  wpair w = {NULL, NULL, 0, malloc(n * 4 + 4), n};
  if (!w.host) die("out of memory");
  for (size_t i = 0; i < n; i++) w.host[i] = frand() * scale;
  int owned = 0;
  w.c = CPU->ops->weight(CPU, w.host, n, &owned);  // the CPU borrows host
  if (registered) {
    w.g = GPU->ops->weight(GPU, w.host, n, &w.gowned);
  } else {
    float *g = GPU->ops->alloc(GPU, n * 4 + 4);
    if (g) GPU->ops->upload(GPU, g, w.host, n * 4);
    w.g = g;
    w.gowned = 1;
  }
  if (!w.g) die("out of GPU memory for a weight");
  return w;
}

static void weight_free(wpair w) {
  if (w.gowned) GPU->ops->free(GPU, (void *)w.g);
  free(w.host);
}

// ---- comparison ---------------------------------------------------------------------------------

/* cuda g against cpu c, n floats each (host copies), within tol of |c| + rms(c) per element */
static void compare_tol(const char *name, const float *c, const float *g, size_t n, double tol) {
  const char *gerr = pc_backend_cuda_error(GPU);
  double ss = 0;
  for (size_t i = 0; i < n; i++) ss += (double)c[i] * c[i];
  double rms = n ? sqrt(ss / (double)n) : 0, worst = 0;
  size_t bad = 0, first = 0, nan = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(g[i]) || isnan(c[i])) {
      if (!nan++ && !bad) first = i;
      bad++;
      continue;
    }
    double e = fabs((double)g[i] - c[i]) / (fabs(c[i]) + rms + 1e-30);
    if (e > worst) worst = e;
    if (e > tol && !bad++) first = i;
  }
  if (gerr) {
    printf("FAIL cuda_%s_%s: the backend failed: %s\n", name, MODE, gerr);
    failures++;
  } else if (bad) {
    printf("FAIL cuda_%s_%s: %zu of %zu elements off (%zu NaN); first at %zu: cuda %.9g, cpu %.9g (rms %.3g, "
           "worst relative %.3g, tol %.0e)\n", name, MODE, bad, n, nan, first, g[first], c[first], rms, worst, tol);
    failures++;
  } else {
    printf("PASS cuda_%s_%s (worst %.2e of tol %.0e over %zu)\n", name, MODE, worst, tol, n);
  }
  fflush(stdout);
}

static void compare(const char *name, const float *c, const float *g, size_t n) { compare_tol(name, c, g, n, TOL); }

static void check_tol(const char *name, pair p, double tol) {
  float *c = malloc(p.n * 4 + 4), *g = malloc(p.n * 4 + 4);
  if (!c || !g) die("out of memory");
  CPU->ops->download(CPU, c, p.c, p.n * 4);
  GPU->ops->download(GPU, g, p.g, p.n * 4);
  compare_tol(name, c, g, p.n, tol);
  free(c);
  free(g);
}

static void check(const char *name, pair p) { check_tol(name, p, TOL); }

/* p holds rows of `stride` floats of which columns off .. off+width-1 are the op's output: those are
 * compared (the rms taken over them alone), and every other element must be equal on both sides, bit
 * for bit (the op must leave them as they were). */
static void check_slice(const char *name, pair p, size_t rows, size_t stride, size_t off, size_t width) {
  float *c = malloc(p.n * 4 + 4), *g = malloc(p.n * 4 + 4);
  if (!c || !g) die("out of memory");
  CPU->ops->download(CPU, c, p.c, p.n * 4);
  GPU->ops->download(GPU, g, p.g, p.n * 4);
  size_t outside = 0, k = 0;
  for (size_t i = 0; i < rows * stride && i < p.n; i++) {
    size_t col = i % stride;
    if (col >= off && col < off + width) {  // packed to the front, in order (k <= i)
      c[k] = c[i];
      g[k++] = g[i];
    } else if (memcmp(&c[i], &g[i], 4)) {
      outside++;
    }
  }
  if (outside) {
    printf("FAIL cuda_%s_%s: %zu elements outside the output columns were changed\n", name, MODE, outside);
    failures++;
  } else {
    compare(name, c, g, k);
  }
  free(c);
  free(g);
}

// ---- the ops --------------------------------------------------------------------------------------

/* A batch layout for both backends: sequence s has len[s] positions and shares plen[s] of them with
 * sequence s-1 (its rows hold positions plen..len-1). */
typedef struct {
  pc_batch c, g;
  int *start, *plen;
  pair pos;
  int N, maxT;
} layout;

static layout layout_new(int nseq, const int *len, const int *plen) {
  layout L;
  memset(&L, 0, sizeof L);
  L.start = malloc(sizeof(int) * (size_t)(nseq + 1));
  L.plen = malloc(sizeof(int) * (size_t)(nseq + 1));
  if (!L.start || !L.plen) die("out of memory");
  int N = 0, shares = 0;
  for (int s = 0; s < nseq; s++) {
    L.start[s] = N;
    L.plen[s] = plen ? plen[s] : 0;
    shares |= L.plen[s] > 0;
    N += len[s] - L.plen[s];
    if (len[s] > L.maxT) L.maxT = len[s];
  }
  L.start[nseq] = N;
  L.N = N;
  int32_t *pos = malloc(sizeof(int32_t) * (size_t)(N + 1));
  if (!pos) die("out of memory");
  for (int s = 0; s < nseq; s++)
    for (int r = L.start[s]; r < L.start[s + 1]; r++) pos[r] = L.plen[s] + (r - L.start[s]);
  L.pos = pair_ints((size_t)N, pos);
  free(pos);
  L.c = (pc_batch){nseq, L.start, L.pos.c, shares ? L.plen : NULL};
  L.g = (pc_batch){nseq, L.start, L.pos.g, shares ? L.plen : NULL};
  return L;
}

static void layout_free(layout *L) {
  pair_free(L->pos);
  free(L->start);
  free(L->plen);
}

static void test_embedding(void) {
  int V = 101, C = 45, maxpos = 300;
  int len[] = {37, 90, 1}, plen[] = {0, 20, 0};
  layout L = layout_new(3, len, plen);
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)L.N);
  if (!ids) die("out of memory");
  for (int i = 0; i < L.N; i++) ids[i] = irand(V);
  pair id = pair_ints((size_t)L.N, ids);
  wpair wte = weight_new((size_t)V * C, 1, 1), wpe = weight_new((size_t)maxpos * C, 1, 1);
  pair out = pair_new((size_t)L.N * C, NULL);
  for (int with_wpe = 0; with_wpe < 2; with_wpe++) {
    poison(out);
    CPU->ops->embedding(CPU, out.c, id.c, wte.c, with_wpe ? wpe.c : NULL, &L.c, L.N, C);
    GPU->ops->embedding(GPU, out.g, id.g, wte.g, with_wpe ? wpe.g : NULL, &L.g, L.N, C);
    check(with_wpe ? "embedding_wpe" : "embedding", out);
  }
  pair_free(out);
  pair_free(id);
  weight_free(wte);
  weight_free(wpe);
  layout_free(&L);
  free(ids);
}

static void test_matmul_case(const char *name, int N, int C, int OC, pc_wlayout lay, int bias, int accumulate,
                             int registered) {
  pair inp = pair_rand((size_t)N * C, 1), out = accumulate ? pair_rand((size_t)N * OC, 1) : pair_new((size_t)N * OC, NULL);
  if (!accumulate) poison(out);
  wpair w = weight_new((size_t)C * OC, 1.0f / sqrtf((float)C), registered), b = weight_new((size_t)OC, 0.5f, 1);
  pc_weight wc = {w.c, bias ? b.c : NULL, lay}, wg = {w.g, bias ? b.g : NULL, lay};
  CPU->ops->matmul(CPU, out.c, inp.c, &wc, N, C, OC, accumulate);
  GPU->ops->matmul(GPU, out.g, inp.g, &wg, N, C, OC, accumulate);
  check(name, out);
  pair_free(inp);
  pair_free(out);
  weight_free(w);
  weight_free(b);
}

static void test_matmul(void) {
  test_matmul_case("matmul_out_in", 37, 45, 77, PC_W_OUT_IN, 0, 0, 1);
  test_matmul_case("matmul_out_in_bias", 37, 45, 77, PC_W_OUT_IN, 1, 0, 1);
  test_matmul_case("matmul_out_in_bias_accumulate", 37, 45, 77, PC_W_OUT_IN, 1, 1, 1);
  test_matmul_case("matmul_in_out", 37, 45, 77, PC_W_IN_OUT, 0, 0, 1);
  test_matmul_case("matmul_in_out_bias_accumulate", 37, 45, 77, PC_W_IN_OUT, 1, 1, 1);
  test_matmul_case("matmul_in_out_accumulate", 1, 45, 77, PC_W_IN_OUT, 0, 1, 1);
  test_matmul_case("matmul_unregistered_weight", 37, 45, 77, PC_W_OUT_IN, 1, 1, 0);
  test_matmul_case("matmul_large", 301, 512, 1003, PC_W_OUT_IN, 1, 0, 1);
  test_matmul_case("matmul_large_in_out", 301, 512, 1003, PC_W_IN_OUT, 0, 1, 1);
}

static void test_norms(void) {
  int N = 37, C = 67;
  pair inp = pair_rand((size_t)N * C, 3), out = pair_new((size_t)N * C, NULL);
  pair mean = pair_new((size_t)N, NULL), rstd = pair_new((size_t)N, NULL);
  wpair w = weight_new((size_t)C, 1, 1), b = weight_new((size_t)C, 1, 1);
  // offset the rows so that the mean matters
  float *h = malloc(sizeof(float) * (size_t)N * C);
  if (!h) die("out of memory");
  for (int i = 0; i < N * C; i++) h[i] = frand() * 3 + 2.5f;
  CPU->ops->upload(CPU, inp.c, h, (size_t)N * C * 4);
  GPU->ops->upload(GPU, inp.g, h, (size_t)N * C * 4);
  free(h);
  poison(out);
  poison(mean);
  poison(rstd);
  CPU->ops->layernorm(CPU, out.c, inp.c, w.c, b.c, 1e-5f, N, C, mean.c, rstd.c);
  GPU->ops->layernorm(GPU, out.g, inp.g, w.g, b.g, 1e-5f, N, C, mean.g, rstd.g);
  check("layernorm", out);
  check("layernorm_mean", mean);
  check("layernorm_rstd", rstd);
  poison(out);
  CPU->ops->layernorm(CPU, out.c, inp.c, w.c, b.c, 1e-5f, N, C, NULL, NULL);
  GPU->ops->layernorm(GPU, out.g, inp.g, w.g, b.g, 1e-5f, N, C, NULL, NULL);
  check("layernorm_no_stats", out);
  poison(out);
  poison(rstd);
  CPU->ops->rmsnorm(CPU, out.c, inp.c, w.c, 1e-6f, N, C, C, rstd.c);
  GPU->ops->rmsnorm(GPU, out.g, inp.g, w.g, 1e-6f, N, C, C, rstd.g);
  check("rmsnorm", out);
  check("rmsnorm_rstd", rstd);
  // strided: rows of 20 inside rows of 67 (what is outside the 20 stays as it was, on both sides)
  pair st = pair_rand((size_t)N * C, 2);
  CPU->ops->rmsnorm(CPU, st.c, st.c, w.c, 1e-6f, N, 20, C, NULL);
  GPU->ops->rmsnorm(GPU, st.g, st.g, w.g, 1e-6f, N, 20, C, NULL);
  check("rmsnorm_strided_in_place", st);
  pair_free(st);
  // Qwen3's q/k norms: each head of HD=12 of 5 heads, in place
  int H = 5, HD = 12;
  pair qk = pair_rand((size_t)N * H * HD, 2);
  wpair wn = weight_new((size_t)HD, 1, 1);
  CPU->ops->rmsnorm(CPU, qk.c, qk.c, wn.c, 1e-6f, N * H, HD, HD, NULL);
  GPU->ops->rmsnorm(GPU, qk.g, qk.g, wn.g, 1e-6f, N * H, HD, HD, NULL);
  check("rmsnorm_heads_in_place", qk);
  pair_free(qk);
  weight_free(wn);
  pair_free(inp);
  pair_free(out);
  pair_free(mean);
  pair_free(rstd);
  weight_free(w);
  weight_free(b);
}

static void test_rope(void) {
  int len[] = {37, 90, 5}, plen[] = {0, 30, 0};
  layout L = layout_new(3, len, plen);
  int H = 3, HD = 10, half = HD / 2, stride = H * HD + 7, maxpos = L.maxT + 3;
  float *c = malloc(sizeof(float) * (size_t)maxpos * half), *s = malloc(sizeof(float) * (size_t)maxpos * half);
  if (!c || !s) die("out of memory");
  for (int p = 0; p < maxpos; p++)
    for (int i = 0; i < half; i++) {
      double a = p * pow(10000.0, -2.0 * i / HD);
      c[p * half + i] = (float)cos(a);
      s[p * half + i] = (float)sin(a);
    }
  pair ct = pair_new((size_t)maxpos * half, c), stab = pair_new((size_t)maxpos * half, s);
  pair x = pair_rand((size_t)L.N * stride, 2);
  CPU->ops->rope(CPU, x.c, ct.c, stab.c, &L.c, L.N, H, HD, stride);
  GPU->ops->rope(GPU, x.g, ct.g, stab.g, &L.g, L.N, H, HD, stride);
  check("rope_strided", x);
  pair_free(x);
  pair_free(ct);
  pair_free(stab);
  free(c);
  free(s);
  layout_free(&L);
}

/* q, k, v packed in one buffer as GPT-2's c_attn output is (rows of (NH + 2 NKV) HD + extra floats),
 * so the strides are exercised; the output and the lse are compared. */
static void test_attention_case(const char *name, int nseq, const int *len, const int *plen, int NH, int NKV, int HD,
                                int window, int with_lse) {
  layout L = layout_new(nseq, len, plen);
  int stride = (NH + 2 * NKV) * HD + 3;
  pair qkv = pair_rand((size_t)L.N * stride, 1.5f), out = pair_new((size_t)L.N * NH * HD, NULL);
  pair lse = pair_new((size_t)L.N * NH, NULL);
  poison(out);
  poison(lse);
  float *qc = qkv.c, *qg = qkv.g;
  CPU->ops->attention(CPU, out.c, qc, qc + NH * HD, qc + (NH + NKV) * HD, stride, stride, &L.c, L.N, NH, NKV, HD,
                      window, with_lse ? lse.c : NULL);
  GPU->ops->attention(GPU, out.g, qg, qg + NH * HD, qg + (NH + NKV) * HD, stride, stride, &L.g, L.N, NH, NKV, HD,
                      window, with_lse ? lse.g : NULL);
  char nm[128];
  snprintf(nm, sizeof nm, "attention_%s", name);
  check(nm, out);
  if (with_lse) {
    snprintf(nm, sizeof nm, "attention_%s_lse", name);
    check(nm, lse);
  }
  pair_free(qkv);
  pair_free(out);
  pair_free(lse);
  layout_free(&L);
}

static void test_attention(void) {
  // five sequences: a prefix shared by 2 (25 positions of 37) and by 5 (64 of 200: a whole tile)
  int len[] = {37, 130, 1, 200, 70}, plen[] = {0, 25, 0, 0, 64};
  test_attention_case("gqa1_hd8", 5, len, plen, 4, 4, 8, 0, 1);
  test_attention_case("gqa1_hd8_no_lse", 5, len, plen, 4, 4, 8, 0, 0);
  test_attention_case("gqa2_hd64_window7", 5, len, plen, 6, 3, 64, 7, 1);
  test_attention_case("gqa7_hd80_window50", 5, len, plen, 7, 1, 80, 50, 1);
  test_attention_case("gqa3_hd10_window64", 5, len, plen, 3, 1, 10, 64, 1);
  int len2[] = {300, 290}, plen2[] = {0, 150};
  test_attention_case("gqa1_hd128_long_prefix", 2, len2, plen2, 3, 3, 128, 0, 1);
  test_attention_case("gqa2_hd256", 2, len2, plen2, 2, 1, 256, 0, 1);
  test_attention_case("gqa1_hd300_rows_kernel", 2, len2, plen2, 2, 2, 300, 100, 1);
  int len3[] = {1, 2, 3, 65}, plen3[] = {0, 1, 0, 3};
  test_attention_case("gqa2_tiny_seqs", 4, len3, plen3, 2, 1, 16, 0, 1);
  int len4[] = {129};
  test_attention_case("gqa1_no_prefix_layout", 1, len4, NULL, 5, 5, 32, 0, 1);
}

/* The attention backward against the CPU's, from the same inputs: the CPU forward's out and lse (so the
 * backward alone is compared), q, k, v packed in one buffer (strides), dq, dk and dv each written into
 * a buffer of the same packed shape filled with zeros (an element the op should write and does not,
 * or one it should leave and does not, differs from the CPU's). with_dq = 0 passes dq = NULL.
 * fp32 tol 1e-5 as for the forward ops; the worst seen in the emulation is 3.7e-6: dq and dk are sums
 * of up to a few hundred products, some ten times their tensor's rms, through dS = P (dP - D), which
 * cancels, so the two summation orders differ by a few 1e-7 of the largest terms. A wrong mask, head
 * or prefix row moves whole rows by 1e-1 or more (see docs/cuda.md for the planted bugs). */
static void test_attention_backward_case(const char *name, int nseq, const int *len, const int *plen, int NH, int NKV,
                                         int HD, int window, int with_dq) {
  layout L = layout_new(nseq, len, plen);
  int stride = (NH + 2 * NKV) * HD + 3;
  size_t nqkv = (size_t)L.N * stride, no = (size_t)L.N * NH * HD;
  pair qkv = pair_rand(nqkv, 1.5f), dout = pair_rand(no, 1), out = pair_new(no, NULL), lse = pair_new((size_t)L.N * NH, NULL);
  float *qc = qkv.c, *qg = qkv.g;
  CPU->ops->attention(CPU, out.c, qc, qc + NH * HD, qc + (NH + NKV) * HD, stride, stride, &L.c, L.N, NH, NKV, HD,
                      window, lse.c);
  float *h = malloc(no * 4 + 4);
  if (!h) die("out of memory");
  CPU->ops->download(CPU, h, out.c, no * 4);
  GPU->ops->upload(GPU, out.g, h, no * 4);
  CPU->ops->download(CPU, h, lse.c, (size_t)L.N * NH * 4);
  GPU->ops->upload(GPU, lse.g, h, (size_t)L.N * NH * 4);
  free(h);
  pair g[3];
  float *zero = calloc(nqkv + 1, 4);
  if (!zero) die("out of memory");
  for (int i = 0; i < 3; i++) g[i] = pair_new(nqkv, zero);
  free(zero);
  size_t off_k = (size_t)NH * HD, off_v = (size_t)(NH + NKV) * HD;
  CPU->ops->attention_backward(CPU, g[0].c, (float *)g[1].c + off_k, (float *)g[2].c + off_v, dout.c, qc,
                               qc + off_k, qc + off_v, out.c, lse.c, stride, stride, &L.c, L.N, NH, NKV, HD, window);
  GPU->ops->attention_backward(GPU, with_dq ? g[0].g : NULL, (float *)g[1].g + off_k, (float *)g[2].g + off_v, dout.g,
                               qg, qg + off_k, qg + off_v, out.g, lse.g, stride, stride, &L.g, L.N, NH, NKV, HD, window);
  const char *what[3] = {"dq", "dk", "dv"};
  size_t off[3] = {0, off_k, off_v}, width[3] = {(size_t)NH * HD, (size_t)NKV * HD, (size_t)NKV * HD};
  for (int i = with_dq ? 0 : 1; i < 3; i++) {
    char nm[160];
    snprintf(nm, sizeof nm, "attention_backward_%s_%s", name, what[i]);
    check_slice(nm, g[i], (size_t)L.N, (size_t)stride, off[i], width[i]);
  }
  for (int i = 0; i < 3; i++) pair_free(g[i]);
  pair_free(qkv);
  pair_free(dout);
  pair_free(out);
  pair_free(lse);
  layout_free(&L);
}

static void test_attention_backward(void) {
  // three sequences, the second reading 25 positions of the first's 37; lengths off the 64-row tiles
  int len[] = {37, 70, 20}, plen[] = {0, 25, 0};
  test_attention_backward_case("3seq_prefix_gqa2_hd40", 3, len, plen, 4, 2, 40, 0, 1);
  test_attention_backward_case("3seq_prefix_gqa4_hd64_window7", 3, len, plen, 4, 1, 64, 7, 1);
  // a prefix longer than a tile: the first sequence's second key tile is read by the second
  // sequence's queries for 6 of its 16 positions only
  int len2[] = {80, 100}, plen2[] = {0, 70};
  test_attention_backward_case("long_prefix_gqa4_hd64_window50", 2, len2, plen2, 4, 1, 64, 50, 1);
  test_attention_backward_case("long_prefix_gqa2_hd40_no_dq", 2, len2, plen2, 4, 2, 40, 0, 0);
  int len3[] = {77};
  test_attention_backward_case("1seq_gqa2_hd40", 1, len3, NULL, 4, 2, 40, 0, 1);
  int len4[] = {1, 2, 3, 66}, plen4[] = {0, 1, 0, 3};
  test_attention_backward_case("tiny_seqs_gqa1_hd16", 4, len4, plen4, 2, 2, 16, 0, 1);
  int len5[] = {40, 30}, plen5[] = {0, 12};
  test_attention_backward_case("gqa2_hd128", 2, len5, plen5, 2, 1, 128, 0, 1);
  test_attention_backward_case("gqa2_hd300_rows_kernels_window9", 2, len5, plen5, 2, 1, 300, 9, 1);
}

static void test_activations(void) {
  size_t n = 100003;
  pair x = pair_rand(n, 4);
  CPU->ops->gelu(CPU, x.c, n, 1);
  GPU->ops->gelu(GPU, x.g, n, 1);
  check("gelu_tanh", x);
  pair_free(x);
  x = pair_rand(n, 4);
  CPU->ops->gelu(CPU, x.c, n, 0);
  GPU->ops->gelu(GPU, x.g, n, 0);
  check("gelu_erf", x);
  pair_free(x);
  pair gate = pair_rand(n, 4), up = pair_rand(n, 2), out = pair_new(n, NULL);
  poison(out);
  CPU->ops->swiglu(CPU, out.c, gate.c, up.c, n);
  GPU->ops->swiglu(GPU, out.g, gate.g, up.g, n);
  check("swiglu", out);
  CPU->ops->swiglu(CPU, gate.c, gate.c, up.c, n);  // in place, as the model calls it
  GPU->ops->swiglu(GPU, gate.g, gate.g, up.g, n);
  check("swiglu_in_place", gate);
  pair_free(gate);
  pair_free(up);
  pair_free(out);
}

static void test_gather_and_memory(void) {
  int N = 91, C = 45, M = 50;
  int32_t rows[50];
  for (int i = 0; i < M; i++) rows[i] = irand(N);
  pair inp = pair_rand((size_t)N * C, 1), r = pair_ints((size_t)M, rows), out = pair_new((size_t)M * C, NULL);
  poison(out);
  CPU->ops->gather_rows(CPU, out.c, inp.c, r.c, M, C);
  GPU->ops->gather_rows(GPU, out.g, inp.g, r.g, M, C);
  check("gather_rows", out);
  pair cp = pair_new((size_t)N * C, NULL);
  poison(cp);
  CPU->ops->copy(CPU, cp.c, inp.c, (size_t)N * C * 4);
  GPU->ops->copy(GPU, cp.g, inp.g, (size_t)N * C * 4);
  CPU->ops->scale(CPU, cp.c, (size_t)N * C, -0.37f);
  GPU->ops->scale(GPU, cp.g, (size_t)N * C, -0.37f);
  check("copy_scale", cp);
  CPU->ops->zero(CPU, cp.c, (size_t)N * C * 2);  // half of it
  GPU->ops->zero(GPU, cp.g, (size_t)N * C * 2);
  check("zero", cp);
  pair_free(cp);
  pair_free(inp);
  pair_free(r);
  pair_free(out);
}

static void test_logprob_case(const char *name, int M, int C, int V, pc_wlayout lay, int bias, int registered) {
  int32_t *tg = malloc(sizeof(int32_t) * (size_t)M);
  if (!tg) die("out of memory");
  for (int i = 0; i < M; i++) tg[i] = i % 7 == 0 ? V - 1 : irand(V);  // the last id too: the last chunk's edge
  pair h = pair_rand((size_t)M * C, 1), t = pair_ints((size_t)M, tg);
  pair out = pair_new((size_t)M, NULL), lse = pair_new((size_t)M, NULL);
  wpair w = weight_new((size_t)V * C, 2.0f / sqrtf((float)C), registered), b = weight_new((size_t)V, 1, 1);
  pc_weight wc = {w.c, bias ? b.c : NULL, lay}, wg = {w.g, bias ? b.g : NULL, lay};
  poison(out);
  poison(lse);
  CPU->ops->logprob(CPU, out.c, h.c, &wc, t.c, M, C, V, lse.c);
  GPU->ops->logprob(GPU, out.g, h.g, &wg, t.g, M, C, V, lse.g);
  char nm[128];
  snprintf(nm, sizeof nm, "logprob_%s", name);
  check(nm, out);
  snprintf(nm, sizeof nm, "logprob_%s_lse", name);
  check(nm, lse);
  poison(out);
  CPU->ops->logprob(CPU, out.c, h.c, &wc, t.c, M, C, V, NULL);
  GPU->ops->logprob(GPU, out.g, h.g, &wg, t.g, M, C, V, NULL);
  snprintf(nm, sizeof nm, "logprob_%s_no_lse", name);
  check(nm, out);
  pair_free(h);
  pair_free(t);
  pair_free(out);
  pair_free(lse);
  weight_free(w);
  weight_free(b);
  free(tg);
}

static void test_logprob(void) {
  test_logprob_case("out_in_bias_4_vocab_chunks", 37, 45, 50001, PC_W_OUT_IN, 1, 1);
  test_logprob_case("in_out", 37, 45, 50001, PC_W_IN_OUT, 0, 1);
  test_logprob_case("2_row_chunks", 1100, 16, 20000, PC_W_OUT_IN, 0, 1);
  test_logprob_case("unregistered_head", 5, 33, 1000, PC_W_OUT_IN, 0, 0);
  test_logprob_case("one_row_small_vocab", 1, 8, 3, PC_W_OUT_IN, 1, 1);
}

/* The log-prob backward against the CPU's: each side's own forward lse (as training runs it), dlp of
 * both signs, dh (=) poisoned, dhead (+=) starting from the same random values. transposed: the GPU
 * gets the head as (C, V) (PC_W_IN_OUT) and the CPU as (V, C) (the CPU's backward reads (V, C) only):
 * dh must agree, and the GPU's dhead, in its head's (C, V) layout, transposed, must equal the CPU's.
 * with_dhead = 0 passes dhead = NULL. dhead is compared in two parts, each with its own rms: the rows
 * of words that are some row's target (terms of size ~1) and the others (terms of size p ~ 1/V).
 * Tolerances: fp32 1e-5, as for the forward (measured: up to 5.2e-6, in dhead's other rows, sums of
 * terms of both signs that cancel to about their own size). bf16: dh 1e-2, as for the forward (dh is dominated by the
 * target's row of the head); dhead 1e-1. The GEMMs' operands, G and h included, are rounded to bf16
 * (as the forward rounds its, and as PyTorch's bf16 autocast does), and p comes from bf16 logits (as
 * the forward's lse did): each term dlp_m (1[t] - p) h_m of dhead moves by a few 1e-3 of itself, and
 * dhead's entries are sums of such terms of both signs that cancel (most of all for a word that is the
 * target of many rows, as V-1 is here, and a frequent token is), so their errors reach a few 1e-2 of
 * the part's rms (measured: target rows 8.7e-3, other rows 2.7e-2). A wrong chunk offset, bias or
 * layout moves dhead by O(1) (a bias left out: 1e6 of its 1.5e6 elements off); fp32 mode holds the same
 * code to 1e-5. */
static void test_logprob_backward_case(const char *name, int M, int C, int V, int bias, int registered, int transposed,
                                       int with_dhead) {
  int32_t *tg = malloc(sizeof(int32_t) * (size_t)M);
  float *d = malloc(sizeof(float) * (size_t)M);
  if (!tg || !d) die("out of memory");
  for (int i = 0; i < M; i++) {
    tg[i] = i % 7 == 0 ? V - 1 : irand(V);  // the last id too: the last chunk's edge
    d[i] = i % 5 == 0 ? 0.0f : frand() * 2;  // some rows are not scored (dlp 0)
  }
  pair h = pair_rand((size_t)M * C, 1), t = pair_ints((size_t)M, tg), dlp = pair_new((size_t)M, d);
  pair lse = pair_new((size_t)M, NULL), lp = pair_new((size_t)M, NULL);
  wpair w = weight_new((size_t)V * C, 2.0f / sqrtf((float)C), registered), b = weight_new((size_t)V, 1, 1);
  const float *wg = w.g;
  float *wt = NULL;
  if (transposed) {  // the GPU's copy of the head as (C, V)
    float *ht = malloc(sizeof(float) * (size_t)V * C);
    if (!ht) die("out of memory");
    for (int v = 0; v < V; v++)
      for (int c = 0; c < C; c++) ht[(size_t)c * V + v] = w.host[(size_t)v * C + c];
    int owned;
    wt = (float *)GPU->ops->weight(GPU, ht, (size_t)V * C, &owned);
    if (!wt) die("out of GPU memory for a weight");
    wg = wt;
    free(ht);
  }
  pc_weight wc = {w.c, bias ? b.c : NULL, PC_W_OUT_IN}, wgp = {wg, bias ? b.g : NULL, transposed ? PC_W_IN_OUT : PC_W_OUT_IN};
  CPU->ops->logprob(CPU, lp.c, h.c, &wc, t.c, M, C, V, lse.c);
  GPU->ops->logprob(GPU, lp.g, h.g, &wgp, t.g, M, C, V, lse.g);
  pair dh = pair_new((size_t)M * C, NULL), dhead = pair_rand((size_t)V * C, 1e-4f);  // small: += shows
  poison(dh);
  if (transposed) {  // the GPU's dhead starts as the CPU's, transposed
    float *x = malloc(sizeof(float) * (size_t)V * C), *y = malloc(sizeof(float) * (size_t)V * C);
    if (!x || !y) die("out of memory");
    CPU->ops->download(CPU, x, dhead.c, (size_t)V * C * 4);
    for (int v = 0; v < V; v++)
      for (int c = 0; c < C; c++) y[(size_t)c * V + v] = x[(size_t)v * C + c];
    GPU->ops->upload(GPU, dhead.g, y, (size_t)V * C * 4);
    free(x);
    free(y);
  }
  CPU->ops->logprob_backward(CPU, dh.c, with_dhead ? dhead.c : NULL, h.c, &wc, t.c, lse.c, dlp.c, M, C, V);
  GPU->ops->logprob_backward(GPU, dh.g, with_dhead ? dhead.g : NULL, h.g, &wgp, t.g, lse.g, dlp.g, M, C, V);
  char nm[160];
  snprintf(nm, sizeof nm, "logprob_backward_%s_dh", name);
  check(nm, dh);
  if (with_dhead) {  // the rows of target words, then the others, each as its own tensor (its own rms)
    size_t n = (size_t)V * C;
    float *c = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    float *pc = malloc(sizeof(float) * n), *pg = malloc(sizeof(float) * n);
    char *is_tg = calloc((size_t)V, 1);
    if (!c || !g || !pc || !pg || !is_tg) die("out of memory");
    CPU->ops->download(CPU, c, dhead.c, n * 4);
    GPU->ops->download(GPU, g, dhead.g, n * 4);
    for (int i = 0; i < M; i++) is_tg[tg[i]] = 1;
    double tol = TOL;
    for (int part = 1; part >= 0; part--) {
      size_t k = 0;
      for (int v = 0; v < V; v++)
        if (is_tg[v] == part)
          for (int j = 0; j < C; j++, k++) {
            pc[k] = c[(size_t)v * C + j];
            pg[k] = transposed ? g[(size_t)j * V + v] : g[(size_t)v * C + j];  // the GPU's (C, V), transposed
          }
      snprintf(nm, sizeof nm, "logprob_backward_%s_dhead_%s", name, part ? "target_rows" : "other_rows");
      TOL = tol > 1e-5 ? 1e-1 : tol;  // bf16's dhead (above)
      compare(nm, pc, pg, k);
      TOL = tol;
    }
    free(c);
    free(g);
    free(pc);
    free(pg);
    free(is_tg);
  }
  if (wt) GPU->ops->free(GPU, wt);
  pair_free(h);
  pair_free(t);
  pair_free(dlp);
  pair_free(lse);
  pair_free(lp);
  pair_free(dh);
  pair_free(dhead);
  weight_free(w);
  weight_free(b);
  free(tg);
  free(d);
}

static void test_logprob_backward(void) {
  test_logprob_backward_case("bias_3_vocab_chunks", 37, 45, 33000, 1, 1, 0, 1);
  test_logprob_backward_case("2_row_chunks", 1100, 16, 3000, 0, 1, 0, 1);
  test_logprob_backward_case("in_out_head", 37, 45, 20000, 1, 1, 1, 1);
  test_logprob_backward_case("unregistered_head", 5, 33, 1000, 0, 0, 0, 1);
  test_logprob_backward_case("no_dhead", 5, 33, 1000, 1, 1, 0, 0);
}

/* supports(op) must say exactly which table entries are set: the trainer asks supports() (through
 * pc_backend_can_train) before it calls an op: a yes for a NULL entry would let train start and then
 * call NULL, and a no for a set one would hide the op. The training ops of the backward section must be there. */
static void test_table(void) {
  const pc_backend_ops *o = GPU->ops;
  const int set[PC_OP_COUNT] = {
    [PC_OP_EMBEDDING] = o->embedding != NULL, [PC_OP_MATMUL] = o->matmul != NULL,
    [PC_OP_LAYERNORM] = o->layernorm != NULL, [PC_OP_RMSNORM] = o->rmsnorm != NULL, [PC_OP_ROPE] = o->rope != NULL,
    [PC_OP_ATTENTION] = o->attention != NULL, [PC_OP_GELU] = o->gelu != NULL, [PC_OP_SWIGLU] = o->swiglu != NULL,
    [PC_OP_LOGPROB] = o->logprob != NULL, [PC_OP_GATHER_ROWS] = o->gather_rows != NULL, [PC_OP_COPY] = o->copy != NULL,
    [PC_OP_ZERO] = o->zero != NULL, [PC_OP_SCALE] = o->scale != NULL,
    [PC_OP_EMBEDDING_BACKWARD] = o->embedding_backward != NULL, [PC_OP_MATMUL_BACKWARD] = o->matmul_backward != NULL,
    [PC_OP_LAYERNORM_BACKWARD] = o->layernorm_backward != NULL,
    [PC_OP_RMSNORM_BACKWARD] = o->rmsnorm_backward != NULL, [PC_OP_ROPE_BACKWARD] = o->rope_backward != NULL,
    [PC_OP_ATTENTION_BACKWARD] = o->attention_backward != NULL, [PC_OP_GELU_BACKWARD] = o->gelu_backward != NULL,
    [PC_OP_SWIGLU_BACKWARD] = o->swiglu_backward != NULL, [PC_OP_LOGPROB_BACKWARD] = o->logprob_backward != NULL,
    [PC_OP_SCATTER_ROWS] = o->scatter_rows != NULL, [PC_OP_SUMSQ] = o->sumsq != NULL, [PC_OP_ADAMW] = o->adamw != NULL,
  };
  const pc_op need[] = {PC_OP_EMBEDDING_BACKWARD, PC_OP_MATMUL_BACKWARD, PC_OP_LAYERNORM_BACKWARD,
                        PC_OP_RMSNORM_BACKWARD, PC_OP_ROPE_BACKWARD, PC_OP_GELU_BACKWARD, PC_OP_SWIGLU_BACKWARD,
                        PC_OP_SCATTER_ROWS, PC_OP_SUMSQ, PC_OP_ADAMW, PC_OP_ATTENTION_BACKWARD,
                        PC_OP_LOGPROB_BACKWARD};
  int ok = !strcmp(o->name, "cuda");
  for (int op = 0; op < PC_OP_COUNT; op++) {
    if (o->supports(GPU, (pc_op)op) != set[op]) {
      printf("  op %d: supports() says %d, the table entry is %s\n", op, o->supports(GPU, (pc_op)op),
             set[op] ? "set" : "NULL");
      ok = 0;
    }
  }
  for (size_t i = 0; i < sizeof need / sizeof *need; i++) ok &= set[need[i]];
  printf("%s cuda_table_matches_supports_%s\n", ok ? "PASS" : "FAIL", MODE);
  if (!ok) failures++;
}

// ---- the training ops: backward kernels and the optimizer ----------------------------------------
// Gradients that the op adds into (+=) start random, the same on both sides, so that adding is
// checked as well as the sum; gradients it overwrites (=) start as NaN. An input that the backward
// pass reads from the forward (mean, rstd) is the CPU's, copied to the GPU, so both start from the
// same bits.

/* The CPU side's contents, copied to the GPU side. */
static void pair_sync(pair p) {
  float *h = malloc(p.n * 4 + 4);
  if (!h) die("out of memory");
  CPU->ops->download(CPU, h, p.c, p.n * 4);
  GPU->ops->upload(GPU, p.g, h, p.n * 4);
  free(h);
}

/* A pair both sides' op writes with = : NaN (fill 0), or += : random (fill 1) */
static pair grad_new(size_t n, int accumulated) {
  if (accumulated) return pair_rand(n, 1);
  pair p = pair_new(n, NULL);
  poison(p);
  return p;
}

static void test_activation_backward(void) {
  size_t n = 30011;  // not a multiple of a block
  pair x = pair_rand(n, 4), d = pair_rand(n, 1), out = pair_new(n, NULL);
  for (int t = 1; t >= 0; t--) {
    poison(out);
    CPU->ops->gelu_backward(CPU, out.c, x.c, d.c, n, t);
    GPU->ops->gelu_backward(GPU, out.g, x.g, d.g, n, t);
    check(t ? "gelu_backward_tanh" : "gelu_backward_erf", out);
  }
  pair dd = pair_rand(n, 1);  // dinp = dout, as the model calls it
  CPU->ops->gelu_backward(CPU, dd.c, x.c, dd.c, n, 1);
  GPU->ops->gelu_backward(GPU, dd.g, x.g, dd.g, n, 1);
  check("gelu_backward_in_place", dd);
  pair_free(dd);
  pair up = pair_rand(n, 2), dup = pair_new(n, NULL);
  poison(out);
  poison(dup);
  CPU->ops->swiglu_backward(CPU, out.c, dup.c, x.c, up.c, d.c, n);
  GPU->ops->swiglu_backward(GPU, out.g, dup.g, x.g, up.g, d.g, n);
  check("swiglu_backward_dgate", out);
  check("swiglu_backward_dup", dup);
  for (int which = 0; which < 2; which++) {  // dgate = dout, then dup = dout
    pair da = pair_rand(n, 1);
    poison(out);
    CPU->ops->swiglu_backward(CPU, which ? out.c : da.c, which ? da.c : out.c, x.c, up.c, da.c, n);
    GPU->ops->swiglu_backward(GPU, which ? out.g : da.g, which ? da.g : out.g, x.g, up.g, da.g, n);
    check(which ? "swiglu_backward_dup_aliases_dout" : "swiglu_backward_dgate_aliases_dout", da);
    check(which ? "swiglu_backward_dgate_beside_alias" : "swiglu_backward_dup_beside_alias", out);
    pair_free(da);
  }
  pair_free(up);
  pair_free(dup);
  pair_free(x);
  pair_free(d);
  pair_free(out);
}

static void test_scatter_backward(void) {
  // embedding: 11 ids, so they repeat, also inside one group of 8 rows; rows 0..15 are two groups of
  // 8 distinct ids (the kernel's other path)
  int V = 11, C = 45, maxpos = 120;
  int len[] = {37, 90, 1}, plen[] = {0, 20, 0};
  layout L = layout_new(3, len, plen);
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)L.N);
  if (!ids) die("out of memory");
  for (int i = 0; i < L.N; i++) ids[i] = i < 16 ? i % V : irand(V);
  pair id = pair_ints((size_t)L.N, ids), dout = pair_rand((size_t)L.N * C, 1);
  pair dwte = pair_rand((size_t)V * C, 1), dwpe = pair_rand((size_t)maxpos * C, 1);
  for (int k = 0; k < 3; k++) {  // both, wte only, wpe only (the other NULL)
    CPU->ops->embedding_backward(CPU, k == 2 ? NULL : dwte.c, k == 1 ? NULL : dwpe.c, dout.c, id.c, &L.c, L.N, C);
    GPU->ops->embedding_backward(GPU, k == 2 ? NULL : dwte.g, k == 1 ? NULL : dwpe.g, dout.g, id.g, &L.g, L.N, C);
    check(k == 0 ? "embedding_backward_wte" : k == 1 ? "embedding_backward_wte_only" : "embedding_backward_wte_kept",
          dwte);
    check(k == 0 ? "embedding_backward_wpe" : k == 1 ? "embedding_backward_wpe_kept" : "embedding_backward_wpe_only",
          dwpe);
  }
  pair_free(id);
  pair_free(dout);
  pair_free(dwte);
  pair_free(dwpe);
  layout_free(&L);
  free(ids);
  // scatter_rows: 300 columns (two blocks of threads), rows repeated (0 and 1, and at random), rows
  // 8..15 distinct
  int N = 91, M = 50;
  C = 300;
  int32_t rows[50];
  for (int i = 0; i < M; i++) rows[i] = i >= 8 && i < 16 ? 3 * i : irand(N);
  rows[1] = rows[0];
  pair r = pair_ints((size_t)M, rows), d = pair_rand((size_t)M * C, 1), dinp = pair_rand((size_t)N * C, 1);
  CPU->ops->scatter_rows(CPU, dinp.c, d.c, r.c, M, C);
  GPU->ops->scatter_rows(GPU, dinp.g, d.g, r.g, M, C);
  check("scatter_rows", dinp);
  pair_free(r);
  pair_free(d);
  pair_free(dinp);
}

static void test_rope_backward(void) {
  int len[] = {37, 90, 5}, plen[] = {0, 30, 0};
  layout L = layout_new(3, len, plen);
  int H = 3, HD = 10, half = HD / 2, stride = H * HD + 7, maxpos = L.maxT + 3;
  pair ct = pair_rand((size_t)maxpos * half, 1), st = pair_rand((size_t)maxpos * half, 1);  // any table will do
  pair dx = pair_rand((size_t)L.N * stride, 2);
  CPU->ops->rope_backward(CPU, dx.c, ct.c, st.c, &L.c, L.N, H, HD, stride);
  GPU->ops->rope_backward(GPU, dx.g, ct.g, st.g, &L.g, L.N, H, HD, stride);
  check("rope_backward_strided", dx);
  pair_free(dx);
  pair_free(ct);
  pair_free(st);
  layout_free(&L);
}

/* sumsq against the CPU's in double: both add the same doubles in different orders, 1e-12 relative
 * (double rounding through 3e5 terms is ~1e-13; a missing element moves it by ~1e-5). */
static void sumsq_case(const char *name, size_t n) {
  pair x = pair_rand(n, 3);
  double c = -1, g = -1;
  int rc = CPU->ops->sumsq(CPU, x.c, n, &c), rg = GPU->ops->sumsq(GPU, x.g, n, &g);
  double e = fabs(g - c) / (c > 0 ? c : 1);
  int ok = rc == 0 && rg == 0 && e <= 1e-12;
  printf("%s cuda_sumsq_%s_%s (cuda %.17g, cpu %.17g, relative %.2e of 1e-12, status %d)\n", ok ? "PASS" : "FAIL", name,
         MODE, g, c, e, rg);
  if (!ok) failures++;
  pair_free(x);
}

static void test_optimizer(void) {
  sumsq_case("empty", 0);
  sumsq_case("one", 1);
  sumsq_case("odd", 30011);
  sumsq_case("more_than_the_grid", 300007);  // more than 1024 blocks of 256: the grid-stride loop
  // two AdamW steps (t = 1, 2), as the trainer computes the scalars; v starts >= 0
  size_t n = 30011;
  float *h = malloc(sizeof(float) * n);
  if (!h) die("out of memory");
  for (size_t i = 0; i < n; i++) h[i] = fabsf(frand()) * 0.01f;
  pair p = pair_rand(n, 1), g = pair_rand(n, 1), m = pair_rand(n, 0.1f), v = pair_new(n, h);
  free(h);
  const float lr = 1e-2f, wd = 0.1f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  for (int t = 1; t <= 2; t++) {
    float step = (float)(lr / (1.0 - pow(b1, t))), bc2 = (float)sqrt(1.0 - pow(b2, t));
    CPU->ops->adamw(CPU, p.c, g.c, m.c, v.c, n, lr, wd, b1, b2, eps, step, bc2);
    GPU->ops->adamw(GPU, p.g, g.g, m.g, v.g, n, lr, wd, b1, b2, eps, step, bc2);
  }
  check("adamw_p", p);
  check("adamw_m", m);
  check("adamw_v", v);
  pair_free(p);
  pair_free(g);
  pair_free(m);
  pair_free(v);
  // a weight from weight() trained in place (full fine-tuning): in bf16 mode the matmul multiplies
  // its bf16 twin, which must follow the step
  int N = 37, C = 45, OC = 77;
  n = (size_t)C * OC;
  wpair w = weight_new(n, 1.0f / sqrtf((float)C), 1);
  pair inp = pair_rand((size_t)N * C, 1), out = pair_new((size_t)N * OC, NULL), gw = pair_rand(n, 1);
  pair mw = pair_rand(n, 0), vw = pair_rand(n, 0);  // zeros
  pc_weight wc = {w.c, NULL, PC_W_OUT_IN}, wg = {w.g, NULL, PC_W_OUT_IN};
  GPU->ops->matmul(GPU, out.g, inp.g, &wg, N, C, OC, 0);  // makes the twin
  CPU->ops->adamw(CPU, (float *)w.c, gw.c, mw.c, vw.c, n, lr, wd, b1, b2, eps, lr / (1 - b1), sqrtf(1 - b2));
  GPU->ops->adamw(GPU, (float *)w.g, gw.g, mw.g, vw.g, n, lr, wd, b1, b2, eps, lr / (1 - b1), sqrtf(1 - b2));
  poison(out);
  CPU->ops->matmul(CPU, out.c, inp.c, &wc, N, C, OC, 0);
  GPU->ops->matmul(GPU, out.g, inp.g, &wg, N, C, OC, 0);
  check("adamw_then_matmul_sees_the_step", out);
  weight_free(w);
  pair_free(inp);
  pair_free(out);
  pair_free(gw);
  pair_free(mw);
  pair_free(vw);
}

/* LayerNorm's backward with the mean and rstd of the CPU's forward; gradients as `want` says
 * (1 dinp, 2 dw, 4 db; the others NULL) */
static void layernorm_backward_case(const char *name, int N, int C, int accumulate, int want) {
  char nm[128];
  float *h = malloc(sizeof(float) * (size_t)N * C);
  if (!h) die("out of memory");
  for (int i = 0; i < N * C; i++) h[i] = frand() * 3 + 2.5f;  // rows off zero, so that the mean matters
  pair inp = pair_new((size_t)N * C, h), tmp = pair_new((size_t)N * C, NULL);
  free(h);
  pair mean = pair_new((size_t)N, NULL), rstd = pair_new((size_t)N, NULL);
  wpair w = weight_new((size_t)C, 1, 1), b = weight_new((size_t)C, 1, 1);
  CPU->ops->layernorm(CPU, tmp.c, inp.c, w.c, b.c, 1e-5f, N, C, mean.c, rstd.c);
  pair_sync(mean);
  pair_sync(rstd);
  pair dout = pair_rand((size_t)N * C, 1), dinp = grad_new((size_t)N * C, accumulate);
  pair dw = pair_rand((size_t)C, 1), db = pair_rand((size_t)C, 1);
  CPU->ops->layernorm_backward(CPU, want & 1 ? dinp.c : NULL, want & 2 ? dw.c : NULL, want & 4 ? db.c : NULL, dout.c,
                               inp.c, w.c, mean.c, rstd.c, N, C, accumulate);
  GPU->ops->layernorm_backward(GPU, want & 1 ? dinp.g : NULL, want & 2 ? dw.g : NULL, want & 4 ? db.g : NULL, dout.g,
                               inp.g, w.g, mean.g, rstd.g, N, C, accumulate);
  if (want & 1) { snprintf(nm, sizeof nm, "layernorm_backward_%s_dinp", name); check(nm, dinp); }
  if (want & 2) { snprintf(nm, sizeof nm, "layernorm_backward_%s_dw", name); check(nm, dw); }
  if (want & 4) { snprintf(nm, sizeof nm, "layernorm_backward_%s_db", name); check(nm, db); }
  pair_free(inp);
  pair_free(tmp);
  pair_free(mean);
  pair_free(rstd);
  pair_free(dout);
  pair_free(dinp);
  pair_free(dw);
  pair_free(db);
  weight_free(w);
  weight_free(b);
}

/* RMSNorm's backward over `rows` rows of C in rows of `stride` floats, with the rstd of the CPU's
 * forward; alias: dinp is dout. Where stride > C, dinp starts random (not NaN) so that what lies
 * between the rows compares equal when the op leaves it alone. */
static void rmsnorm_backward_case(const char *name, int rows, int C, int stride, int accumulate, int alias, int want) {
  char nm[128];
  size_t n = (size_t)rows * stride;
  pair inp = pair_rand(n, 2), tmp = pair_new(n, NULL), rstd = pair_new((size_t)rows, NULL);
  wpair w = weight_new((size_t)C, 1, 1);
  CPU->ops->rmsnorm(CPU, tmp.c, inp.c, w.c, 1e-6f, rows, C, stride, rstd.c);
  pair_sync(rstd);
  pair dout = pair_rand(n, 1), dinp = alias ? dout : grad_new(n, accumulate || stride > C);
  pair dw = pair_rand((size_t)C, 1);
  CPU->ops->rmsnorm_backward(CPU, want & 1 ? dinp.c : NULL, want & 2 ? dw.c : NULL, dout.c, inp.c, w.c, rstd.c, rows, C,
                             stride, accumulate);
  GPU->ops->rmsnorm_backward(GPU, want & 1 ? dinp.g : NULL, want & 2 ? dw.g : NULL, dout.g, inp.g, w.g, rstd.g, rows, C,
                             stride, accumulate);
  if (want & 1) { snprintf(nm, sizeof nm, "rmsnorm_backward_%s_dinp", name); check(nm, dinp); }
  if (want & 2) { snprintf(nm, sizeof nm, "rmsnorm_backward_%s_dw", name); check(nm, dw); }
  pair_free(inp);
  pair_free(tmp);
  pair_free(rstd);
  pair_free(dout);
  if (!alias) pair_free(dinp);
  pair_free(dw);
  weight_free(w);
}

static void test_norm_backward(void) {
  layernorm_backward_case("all", 37, 67, 0, 7);
  layernorm_backward_case("accumulate", 37, 67, 1, 7);
  layernorm_backward_case("weights_only", 37, 67, 0, 6);
  layernorm_backward_case("dinp_only", 5, 1000, 0, 1);
  rmsnorm_backward_case("all", 37, 67, 67, 0, 0, 3);
  rmsnorm_backward_case("accumulate", 37, 67, 67, 1, 0, 3);
  rmsnorm_backward_case("in_place", 37, 67, 67, 0, 1, 3);
  rmsnorm_backward_case("strided", 37, 20, 67, 0, 0, 3);
  rmsnorm_backward_case("strided_accumulate_dinp_only", 37, 20, 67, 1, 0, 1);
  rmsnorm_backward_case("heads_in_place", 37 * 5, 12, 12, 0, 1, 3);  // Qwen3's q/k norms: 5 heads of 12
  rmsnorm_backward_case("dw_only_long_rows", 5, 1000, 1000, 0, 0, 2);
}

/* bf16 mode, matmul_backward's products: 2e-2. Their error is the forward's (both operands rounded to
 * bf16, about 1.6e-3 of the tensor's rms per element, a sum of that many rounded products), but the
 * largest case has 5e5 elements and its worst sits at 9.8e-3 (about 6 standard deviations), too near
 * 1e-2 for a GPU's other summation order. A wrong operand, transpose or leading dimension is off by
 * O(1). fp32 mode keeps 1e-5. */
#define MM_BWD_TOL (TOL > 1e-3 ? 2e-2 : TOL)

/* matmul_backward: `want` as above (1 dinp, 2 dw, 4 db). registered: W from weight() (bf16 mode
 * multiplies its bf16 twin) or alloc'd (fp32 in both modes). */
static void matmul_backward_case(const char *name, int N, int C, int OC, pc_wlayout lay, int registered,
                                 int accumulate, int want) {
  char nm[128];
  pair inp = pair_rand((size_t)N * C, 1), dout = pair_rand((size_t)N * OC, 1);
  wpair w = weight_new((size_t)C * OC, 1.0f / sqrtf((float)C), registered);
  pair dinp = grad_new((size_t)N * C, accumulate), dw = pair_rand((size_t)C * OC, 1), db = pair_rand((size_t)OC, 1);
  pc_weight wc = {w.c, NULL, lay}, wg = {w.g, NULL, lay};
  CPU->ops->matmul_backward(CPU, want & 1 ? dinp.c : NULL, want & 2 ? dw.c : NULL, want & 4 ? db.c : NULL, dout.c,
                            inp.c, &wc, N, C, OC, accumulate);
  GPU->ops->matmul_backward(GPU, want & 1 ? dinp.g : NULL, want & 2 ? dw.g : NULL, want & 4 ? db.g : NULL, dout.g,
                            inp.g, &wg, N, C, OC, accumulate);
  if (want & 1) { snprintf(nm, sizeof nm, "matmul_backward_%s_dinp", name); check_tol(nm, dinp, MM_BWD_TOL); }
  if (want & 2) { snprintf(nm, sizeof nm, "matmul_backward_%s_dw", name); check_tol(nm, dw, MM_BWD_TOL); }
  if (want & 4) { snprintf(nm, sizeof nm, "matmul_backward_%s_db", name); check(nm, db); }
  pair_free(inp);
  pair_free(dout);
  pair_free(dinp);
  pair_free(dw);
  pair_free(db);
  weight_free(w);
}

static void test_matmul_backward(void) {
  matmul_backward_case("out_in", 37, 45, 77, PC_W_OUT_IN, 1, 0, 7);
  matmul_backward_case("out_in_accumulate", 37, 45, 77, PC_W_OUT_IN, 1, 1, 7);
  matmul_backward_case("in_out", 37, 45, 77, PC_W_IN_OUT, 1, 0, 7);
  matmul_backward_case("in_out_accumulate", 37, 45, 77, PC_W_IN_OUT, 1, 1, 7);
  matmul_backward_case("frozen_weight_dinp_only", 37, 45, 77, PC_W_OUT_IN, 1, 1, 1);  // LoRA's base weights
  matmul_backward_case("in_out_frozen_weight_dinp_only", 37, 45, 77, PC_W_IN_OUT, 1, 0, 1);
  matmul_backward_case("weights_only", 37, 45, 77, PC_W_IN_OUT, 1, 0, 6);  // the first layer: no dinp
  matmul_backward_case("unregistered_weight", 37, 45, 77, PC_W_OUT_IN, 0, 1, 7);
  matmul_backward_case("in_out_unregistered_weight", 37, 45, 77, PC_W_IN_OUT, 0, 0, 7);
  matmul_backward_case("one_row", 1, 45, 77, PC_W_IN_OUT, 1, 1, 7);
  matmul_backward_case("lora_rank_8", 37, 45, 8, PC_W_OUT_IN, 0, 1, 3);  // x A^T: OC = the rank
  matmul_backward_case("large", 301, 512, 1003, PC_W_OUT_IN, 1, 0, 7);
  matmul_backward_case("large_in_out", 301, 512, 1003, PC_W_IN_OUT, 1, 1, 7);
}

/* A failure stops the later ops and makes sumsq (which synchronises) return -1, naming the failed op.
 * Provoked with a host pointer handed to a kernel, which the emulation refuses at the launch; a GPU
 * might fault instead (which no later test survives), so elsewhere this is a SKIP. */
static void test_failure(void) {
  struct cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || strncmp(prop.name, "cuda-emu", 8) != 0) {
    printf("SKIP cuda_sumsq_after_failure: provoked only on the CPU emulation\n");
    return;
  }
  char err[512];
  pc_backend *be = pc_backend_cuda_new(1, err, sizeof err);
  if (!be) { printf("FAIL cuda_sumsq_after_failure: %s\n", err); failures++; return; }
  float host[4] = {1, 2, 3, 4}, *dev = be->ops->alloc(be, sizeof host);
  double s = 0;
  int ok = dev && be->ops->upload(be, dev, host, sizeof host) == 0 && be->ops->sumsq(be, dev, 4, &s) == 0 && s == 30;
  be->ops->gelu_backward(be, dev, host, dev, 4, 1);  // inp on the host: refused
  const char *e = be->ops->error(be);
  ok = ok && be->ops->sumsq(be, dev, 4, &s) == -1 && e && strstr(e, "gelu_backward") == e;
  printf("%s cuda_sumsq_after_failure (error: %s)\n", ok ? "PASS" : "FAIL", e ? e : "none");
  if (!ok) failures++;
  be->ops->free(be, dev);
  be->ops->destroy(be);
}

// ---- benchmark ------------------------------------------------------------------------------------

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Median of `reps` timings of fn, each ended by a download of one float (which waits for the device). */
typedef void (*bench_fn)(void *);
static double time_op(bench_fn fn, void *arg, void *sync_ptr, int reps) {
  float dummy;
  double t[64];
  if (reps > 64) reps = 64;
  for (int i = 0; i < 3; i++) fn(arg);  // warm-up: module load, twins, workspaces
  GPU->ops->download(GPU, &dummy, sync_ptr, 4);
  for (int i = 0; i < reps; i++) {
    double t0 = now_s();
    fn(arg);
    GPU->ops->download(GPU, &dummy, sync_ptr, 4);
    t[i] = now_s() - t0;
  }
  for (int i = 1; i < reps; i++)  // insertion sort
    for (int j = i; j > 0 && t[j] < t[j - 1]; j--) { double x = t[j]; t[j] = t[j - 1]; t[j - 1] = x; }
  return t[reps / 2];
}

typedef struct {
  float *out, *inp, *lse;
  pc_weight w;
  int N, C, OC;
  pc_batch *bt;
  int NH, NKV, HD;
  int32_t *tg;
  float *dout, *grad, *grad2;  /* the backward ops': dout or dlp, and the gradients */
} bench_arg;
static void b_matmul(void *p) { bench_arg *a = p; GPU->ops->matmul(GPU, a->out, a->inp, &a->w, a->N, a->C, a->OC, 0); }
static void b_attention(void *p) {
  bench_arg *a = p;
  int st = (a->NH + 2 * a->NKV) * a->HD;
  GPU->ops->attention(GPU, a->out, a->inp, a->inp + a->NH * a->HD, a->inp + (a->NH + a->NKV) * a->HD, st, st, a->bt,
                      a->N, a->NH, a->NKV, a->HD, 0, a->lse);
}
static void b_attention_backward(void *p) {
  bench_arg *a = p;
  int st = (a->NH + 2 * a->NKV) * a->HD;
  size_t ok = (size_t)a->NH * a->HD, ov = (size_t)(a->NH + a->NKV) * a->HD;
  GPU->ops->attention_backward(GPU, a->grad, a->grad + ok, a->grad + ov, a->dout, a->inp, a->inp + ok, a->inp + ov,
                               a->out, a->lse, st, st, a->bt, a->N, a->NH, a->NKV, a->HD, 0);
}
static void b_logprob_backward(void *p) {
  bench_arg *a = p;
  GPU->ops->logprob_backward(GPU, a->grad, a->grad2, a->inp, &a->w, a->tg, a->lse, a->dout, a->N, a->C, a->OC);
}
static void b_logprob(void *p) { bench_arg *a = p; GPU->ops->logprob(GPU, a->out, a->inp, &a->w, a->tg, a->N, a->C, a->OC, NULL); }
static void b_rmsnorm(void *p) { bench_arg *a = p; GPU->ops->rmsnorm(GPU, a->out, a->inp, a->w.w, 1e-6f, a->N, a->C, a->C, NULL); }
/* the training ops: out is the gradient written (dinp), lse the one added into (dW, dw, dwte) */
static void b_matmul_backward(void *p) {
  bench_arg *a = p;
  GPU->ops->matmul_backward(GPU, a->out, a->lse, NULL, a->inp, a->out, &a->w, a->N, a->C, a->OC, 0);
}
static void b_rmsnorm_backward(void *p) {
  bench_arg *a = p;
  GPU->ops->rmsnorm_backward(GPU, a->out, a->lse, a->out, a->inp, a->w.w, a->inp, a->N, a->C, a->C, 0);
}
static void b_embedding_backward(void *p) {
  bench_arg *a = p;
  GPU->ops->embedding_backward(GPU, a->lse, NULL, a->inp, a->tg, NULL, a->N, a->C);
}

static float *gpu_rand(size_t n, float scale) {
  float *h = malloc(n * 4), *g = GPU->ops->alloc(GPU, n * 4);
  if (!h || !g) die("out of memory for the benchmark");
  for (size_t i = 0; i < n; i++) h[i] = frand() * scale;
  GPU->ops->upload(GPU, g, h, n * 4);
  free(h);
  return g;
}

static int bench(void) {
  printf("benchmark, cuda backend, %s (median of 20; times include one 4-byte download)\n", MODE);
  printf("%-44s %10s %12s\n", "op", "ms", "rate");
  // matmul 8192 x 4096 -> 4096 (a 7B layer's projection on 8192 tokens)
  {
    int N = 8192, C = 4096, OC = 4096;
    float *hw = malloc(sizeof(float) * (size_t)C * OC);
    if (!hw) die("out of memory");
    for (size_t i = 0; i < (size_t)C * OC; i++) hw[i] = frand() * 0.02f;
    int owned;
    bench_arg a = {.out = gpu_rand((size_t)N * OC, 0), .inp = gpu_rand((size_t)N * C, 1),
                   .w = {GPU->ops->weight(GPU, hw, (size_t)C * OC, &owned), NULL, PC_W_OUT_IN}, .N = N, .C = C, .OC = OC};
    double t = time_op(b_matmul, &a, a.out, 20);
    printf("%-44s %10.3f %9.1f TFLOP/s\n", "matmul 8192x4096 . 4096x4096", t * 1e3, 2.0 * N * C * OC / t / 1e12);
    GPU->ops->free(GPU, a.out);
    GPU->ops->free(GPU, a.inp);
    GPU->ops->free(GPU, (void *)a.w.w);
    free(hw);
  }
  // attention: 4 sequences of 2048, 32 query heads, 8 kv heads, HD 128 (Llama-3-8B's shape)
  {
    int nseq = 4, T = 2048, NH = 32, NKV = 8, HD = 128, len[4] = {T, T, T, T};
    layout L = layout_new(nseq, len, NULL);
    bench_arg a = {.out = gpu_rand((size_t)L.N * NH * HD, 0), .inp = gpu_rand((size_t)L.N * (NH + 2 * NKV) * HD, 1),
                   .lse = gpu_rand((size_t)L.N * NH, 0), .N = L.N, .bt = &L.g, .NH = NH, .NKV = NKV, .HD = HD};
    double t = time_op(b_attention, &a, a.out, 20);
    double flops = 4.0 * nseq * ((double)T * (T + 1) / 2) * HD * NH;  // QK^T and PV over the causal half
    printf("%-44s %10.3f %9.1f TFLOP/s\n", "attention 4x2048, 32/8 heads, HD 128, causal", t * 1e3, flops / t / 1e12);
    // its backward from the forward's out and lse: S and dP in both kernels, dQ, dK, dV: 7 products
    a.dout = gpu_rand((size_t)L.N * NH * HD, 1);
    a.grad = gpu_rand((size_t)L.N * (NH + 2 * NKV) * HD, 0);
    t = time_op(b_attention_backward, &a, a.grad, 10);
    printf("%-44s %10.3f %9.1f TFLOP/s\n", "attention backward, the same shape", t * 1e3, 3.5 * flops / t / 1e12);
    GPU->ops->free(GPU, a.dout);
    GPU->ops->free(GPU, a.grad);
    GPU->ops->free(GPU, a.out);
    GPU->ops->free(GPU, a.inp);
    GPU->ops->free(GPU, a.lse);
    layout_free(&L);
  }
  // fused log-prob: 8192 rows, C 4096, V 128256 (Llama 3's vocabulary)
  {
    int M = 8192, C = 4096, V = 128256;
    float *hw = malloc(sizeof(float) * (size_t)V * C);
    int32_t *tg = malloc(sizeof(int32_t) * (size_t)M);
    if (!hw || !tg) die("out of memory");
    for (size_t i = 0; i < (size_t)V * C; i++) hw[i] = frand() * 0.02f;
    for (int i = 0; i < M; i++) tg[i] = irand(V);
    int owned;
    int32_t *tgd = GPU->ops->alloc(GPU, sizeof(int32_t) * (size_t)M);
    if (!tgd) die("out of memory");
    GPU->ops->upload(GPU, tgd, tg, sizeof(int32_t) * (size_t)M);
    bench_arg a = {.out = gpu_rand((size_t)M, 0), .inp = gpu_rand((size_t)M * C, 1),
                   .w = {GPU->ops->weight(GPU, hw, (size_t)V * C, &owned), NULL, PC_W_OUT_IN}, .N = M, .C = C, .OC = V,
                   .tg = tgd};
    double t = time_op(b_logprob, &a, a.out, 10);
    printf("%-44s %10.3f %9.1f TFLOP/s\n", "logprob 8192 rows, C 4096, V 128256", t * 1e3, 2.0 * M * C * V / t / 1e12);
    // its backward (logits recomputed, dh, dhead: three GEMMs of the forward's size)
    a.lse = gpu_rand((size_t)M, 0);
    GPU->ops->logprob(GPU, a.out, a.inp, &a.w, a.tg, M, C, V, a.lse);
    a.dout = gpu_rand((size_t)M, 1);
    a.grad = gpu_rand((size_t)M * C, 0);
    a.grad2 = gpu_rand((size_t)V * C, 0);
    t = time_op(b_logprob_backward, &a, a.grad, 5);
    printf("%-44s %10.3f %9.1f TFLOP/s\n", "logprob backward, the same shape", t * 1e3, 6.0 * M * C * V / t / 1e12);
    GPU->ops->free(GPU, a.lse);
    GPU->ops->free(GPU, a.dout);
    GPU->ops->free(GPU, a.grad);
    GPU->ops->free(GPU, a.grad2);
    GPU->ops->free(GPU, a.out);
    GPU->ops->free(GPU, a.inp);
    GPU->ops->free(GPU, tgd);
    GPU->ops->free(GPU, (void *)a.w.w);
    free(hw);
    free(tg);
  }
  // rmsnorm: 16384 x 4096, memory-bound (read once, write once)
  {
    int N = 16384, C = 4096;
    bench_arg a = {.out = gpu_rand((size_t)N * C, 0), .inp = gpu_rand((size_t)N * C, 1),
                   .w = {gpu_rand((size_t)C, 1), NULL, PC_W_OUT_IN}, .N = N, .C = C};
    double t = time_op(b_rmsnorm, &a, a.out, 20);
    printf("%-44s %10.3f %9.1f GB/s\n", "rmsnorm 16384x4096", t * 1e3, 2.0 * N * C * 4 / t / 1e9);
    GPU->ops->free(GPU, a.out);
    GPU->ops->free(GPU, a.inp);
    GPU->ops->free(GPU, (void *)a.w.w);
  }
  // matmul_backward: dinp and dW of the matmul above (8192 tokens, 4096 -> 4096), W from weight()
  {
    int N = 8192, C = 4096, OC = 4096;
    float *hw = malloc(sizeof(float) * (size_t)C * OC);
    if (!hw) die("out of memory");
    for (size_t i = 0; i < (size_t)C * OC; i++) hw[i] = frand() * 0.02f;
    int owned;
    // inp doubles as dout (N x 4096 both) and out as dinp; lse is dW
    bench_arg a = {.out = gpu_rand((size_t)N * C, 1), .inp = gpu_rand((size_t)N * OC, 1),
                   .lse = gpu_rand((size_t)C * OC, 0),
                   .w = {GPU->ops->weight(GPU, hw, (size_t)C * OC, &owned), NULL, PC_W_OUT_IN}, .N = N, .C = C, .OC = OC};
    double t = time_op(b_matmul_backward, &a, a.out, 20);
    printf("%-44s %10.3f %9.1f TFLOP/s\n", "matmul_backward dinp+dW, 8192x4096x4096", t * 1e3,
           4.0 * N * C * OC / t / 1e12);
    GPU->ops->free(GPU, a.out);
    GPU->ops->free(GPU, a.inp);
    GPU->ops->free(GPU, a.lse);
    GPU->ops->free(GPU, (void *)a.w.w);
    free(hw);
  }
  // rmsnorm_backward per head (Qwen3's q/k norms: 8192 tokens x 32 heads of 128), dinp over dout,
  // dw: the column sums of a tall, narrow matrix
  {
    int N = 8192 * 32, C = 128;
    bench_arg a = {.out = gpu_rand((size_t)N * C, 1), .inp = gpu_rand((size_t)N * C, 1), .lse = gpu_rand((size_t)C, 0),
                   .w = {gpu_rand((size_t)C, 1), NULL, PC_W_OUT_IN}, .N = N, .C = C};
    double t = time_op(b_rmsnorm_backward, &a, a.out, 20);
    printf("%-44s %10.3f %9.1f GB/s\n", "rmsnorm_backward 262144 rows of 128", t * 1e3, 4.0 * N * C * 4 / t / 1e9);
    GPU->ops->free(GPU, a.out);
    GPU->ops->free(GPU, a.inp);
    GPU->ops->free(GPU, a.lse);
    GPU->ops->free(GPU, (void *)a.w.w);
  }
  // embedding_backward: 8192 tokens of C 4096 into a 128256-row dwte (the scatter, a thread per column)
  {
    int N = 8192, C = 4096, V = 128256;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N), *idd = GPU->ops->alloc(GPU, sizeof(int32_t) * (size_t)N);
    if (!ids || !idd) die("out of memory");
    for (int i = 0; i < N; i++) ids[i] = irand(V);
    GPU->ops->upload(GPU, idd, ids, sizeof(int32_t) * (size_t)N);
    bench_arg a = {.inp = gpu_rand((size_t)N * C, 1), .lse = gpu_rand((size_t)V * C, 0), .N = N, .C = C, .tg = idd};
    double t = time_op(b_embedding_backward, &a, a.lse, 20);
    printf("%-44s %10.3f %9.1f GB/s\n", "embedding_backward 8192x4096, V 128256", t * 1e3, 3.0 * N * C * 4 / t / 1e9);
    GPU->ops->free(GPU, a.inp);
    GPU->ops->free(GPU, a.lse);
    GPU->ops->free(GPU, idd);
    free(ids);
  }
  const char *e = pc_backend_cuda_error(GPU);
  if (e) { printf("FAIL cuda_bench_%s: %s\n", MODE, e); return 1; }
  return 0;
}

// ---- main -----------------------------------------------------------------------------------------

int main(int argc, char **argv) {
  int do_bench = 0, bench_fp32 = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--bench")) do_bench = 1;
    else if (!strcmp(argv[i], "--fp32")) bench_fp32 = 1;
    else { fprintf(stderr, "usage: %s [--bench [--fp32]]\n", argv[0]); return 2; }
  }
  int ndev = 0;
  cudaError_t e = cudaGetDeviceCount(&ndev);
  if (e != cudaSuccess || ndev == 0) {
    printf("SKIP cuda_ops: no GPU (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none");
    return 0;
  }
  char err[512];
  if (!(CPU = pc_backend_cpu_new(0))) { printf("FAIL cuda_ops: no CPU backend\n"); return 1; }
  if (do_bench) {
    MODE = bench_fp32 ? "fp32" : "bf16";
    if (!(GPU = pc_backend_cuda_new(bench_fp32, err, sizeof err))) { printf("FAIL cuda_bench: %s\n", err); return 1; }
    int rc = bench();
    GPU->ops->destroy(GPU);
    CPU->ops->destroy(CPU);
    return rc;
  }
  for (int fp32 = 1; fp32 >= 0; fp32--) {
    MODE = fp32 ? "fp32" : "bf16";
    TOL = fp32 ? 1e-5 : 1e-2;
    if (!(GPU = pc_backend_cuda_new(fp32, err, sizeof err))) {
      printf("FAIL cuda_backend_new_%s: %s\n", MODE, err);
      failures++;
      continue;
    }
    test_table();
    test_embedding();
    test_matmul();
    test_norms();
    test_rope();
    test_attention();
    if (fp32) test_attention_backward();  // fp32 in both modes (no matmul operand is rounded): once
    test_activations();
    test_gather_and_memory();
    test_logprob();
    test_activation_backward();
    test_scatter_backward();
    test_rope_backward();
    test_optimizer();
    test_norm_backward();
    test_matmul_backward();
    test_logprob_backward();
    GPU->ops->destroy(GPU);
  }
  test_failure();
  CPU->ops->destroy(CPU);
  return failures ? 1 : 0;
}

/* tests/gpu/test_cuda_emu.cu: the CPU emulation of CUDA (trainer/backend/cuda_emu/) against what CUDA
 * specifies, independently of the backend: the lane semantics of every shuffle and vote (values
 * computed here by the CUDA programming guide's rules, not by the emulator), barriers and shared
 * memory, atomics, bf16 rounding, cublasGemmEx in every transposition with padded leading dimensions
 * against a plain triple loop, the failures the emulator must report (a host pointer handed to a
 * kernel, a shuffle whose lanes returned, a deadlock, too much shared memory, too many threads), and
 * the race checker (a planted cross-warp race must give different results in the two orders).
 *
 * Built only by `make cuda-emu` (g++ -x c++ with cuda_emu.h), run by tests/gpu/emu.sh. Written as
 * CUDA, so it would mean the same under nvcc, except the emulator-only checks (marked). */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_emu/cuda_emu.h"

static int failures;

static void report(const char *name, int ok, const char *detail) {
  printf("%s cuda_emu_%s%s%s\n", ok ? "PASS" : "FAIL", name, ok ? "" : ": ", ok ? "" : detail);
  fflush(stdout);
  failures += !ok;
}

template <class T> static T *dev(size_t n) {
  void *p = NULL;
  if (cudaMalloc(&p, n * sizeof(T) + 16) != cudaSuccess) {
    printf("FAIL cuda_emu_setup: cudaMalloc\n");
    exit(1);
  }
  memset(p, 0, n * sizeof(T) + 16);
  return (T *)p;
}

// ---- shuffles and votes ---------------------------------------------------------------------------

/* 96 threads (3 warps); row k of out holds shuffle k's result for every thread */
__global__ void shuffle_kernel(int *out, int n) {
  int t = threadIdx.x, lane = t % 32;
  int v = 1000 * (t / 32) + lane;  // warp w, lane l: 1000 w + l
  out[0 * n + t] = __shfl_xor_sync(0xffffffffu, v, 5);
  out[1 * n + t] = __shfl_down_sync(0xffffffffu, v, 3);
  out[2 * n + t] = __shfl_up_sync(0xffffffffu, v, 2);
  out[3 * n + t] = __shfl_sync(0xffffffffu, v, 7);
  out[4 * n + t] = __shfl_xor_sync(0xffffffffu, v, 1, 8);    // within groups of 8
  out[5 * n + t] = __shfl_down_sync(0xffffffffu, v, 5, 16);  // within halves
  out[6 * n + t] = __shfl_sync(0xffffffffu, v, 3, 4);        // lane 3 of each group of 4
  out[7 * n + t] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
  out[8 * n + t] = __any_sync(0xffffffffu, t == 40);
  out[9 * n + t] = __all_sync(0xffffffffu, lane < 31);
  float f = __shfl_xor_sync(0xffffffffu, 0.5f * (float)v, 16);  // floats move bit-exactly
  out[10 * n + t] = (int)(f * 2.0f);
  if (lane < 16) out[11 * n + t] = __shfl_xor_sync(0x0000ffffu, v, 4);  // a half-warp mask
  else out[11 * n + t] = -1;
}

static void test_shuffles() {
  const int n = 96, K = 12;
  int *d = dev<int>((size_t)n * K), h[n * K];
  PC_LAUNCH(shuffle_kernel, 1, n, 0)(d, n);
  cudaError_t e = cudaGetLastError();
  cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
  int bad = 0;
  char msg[200] = "";
  for (int t = 0; t < n; t++) {
    int w = t / 32, l = t % 32, base = 1000 * w;
    unsigned ballot = 0;
    for (int j = 0; j < 32; j += 3) ballot |= 1u << j;
    int want[K] = {
        base + (l ^ 5),
        l + 3 < 32 ? base + l + 3 : base + l,
        l >= 2 ? base + l - 2 : base + l,
        base + 7,
        base + (l ^ 1),
        l % 16 + 5 < 16 ? base + l + 5 : base + l,
        base + (l & ~3) + 3,
        (int)ballot,
        w == 1,  // thread 40 is in warp 1
        0,       // lane 31 of every warp says no
        base + (l ^ 16),
        l < 16 ? base + (l ^ 4) : -1,
    };
    for (int k = 0; k < K; k++)
      if (h[k * n + t] != want[k] && !bad++)
        snprintf(msg, sizeof msg, "shuffle %d, thread %d: got %d, want %d", k, t, h[k * n + t], want[k]);
  }
  if (e != cudaSuccess) snprintf(msg, sizeof msg, "launch failed: %s", cudaGetErrorString(e));
  report("shuffles_and_votes", !bad && e == cudaSuccess, msg);
  cudaFree(d);
}

// ---- barriers, shared memory, atomics -------------------------------------------------------------

/* Each block reverses its slice through dynamic shared memory and sums it through a static array; all
 * blocks count themselves and their largest thread id with atomics. */
__global__ void block_kernel(const float *in, float *rev, float *sums, int *count, int *maxid) {
  PC_DYNAMIC_SHARED(float, buf);
  __shared__ float part[8];
  int t = threadIdx.x, n = blockDim.x, g = blockIdx.x * n + t;
  buf[t] = in[g];
  __syncthreads();
  rev[g] = buf[n - 1 - t];
  float v = in[g];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (t % 32 == 0) part[t / 32] = v;
  __syncthreads();
  if (t == 0) {
    float s = 0;
    for (int w = 0; w < n / 32; w++) s += part[w];
    sums[blockIdx.x] = s;
  }
  atomicAdd(count, 1);
  atomicMax(maxid, g);
}

static void test_blocks() {
  const int B = 13, T = 128, N = B * T;
  float *in = dev<float>(N), *rev = dev<float>(N), *sums = dev<float>(B);
  int *count = dev<int>(1), *maxid = dev<int>(1);
  float h[N], hr[N], hs[B];
  for (int i = 0; i < N; i++) h[i] = (float)(i % 97);  // small integers: every sum is exact
  cudaMemcpy(in, h, sizeof h, cudaMemcpyHostToDevice);
  PC_LAUNCH(block_kernel, B, T, T * sizeof(float))(in, rev, sums, count, maxid);
  cudaError_t e = cudaGetLastError();
  int hc = 0, hm = 0;
  cudaMemcpy(hr, rev, sizeof hr, cudaMemcpyDeviceToHost);
  cudaMemcpy(hs, sums, sizeof hs, cudaMemcpyDeviceToHost);
  cudaMemcpy(&hc, count, 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(&hm, maxid, 4, cudaMemcpyDeviceToHost);
  int bad = 0;
  for (int b = 0; b < B; b++) {
    float s = 0;
    for (int t = 0; t < T; t++) {
      s += h[b * T + t];
      bad += hr[b * T + t] != h[b * T + T - 1 - t];
    }
    bad += hs[b] != s;
  }
  char msg[160];
  snprintf(msg, sizeof msg, "%d wrong elements or sums, count %d (want %d), max id %d (want %d), launch: %s", bad, hc, N,
           hm, N - 1, cudaGetErrorString(e));
  report("barriers_shared_atomics", !bad && hc == N && hm == N - 1 && e == cudaSuccess, msg);
  cudaFree(in);
  cudaFree(rev);
  cudaFree(sums);
  cudaFree(count);
  cudaFree(maxid);
}

// ---- bf16: cuda_bf16.h's host conversion against round-to-nearest-even done by hand ---------------

static void test_bf16() {
  const float xs[] = {1.0f, 1.00390625f /* a tie: 1 + 2^-8, rounds to even (1) */, 1.01171875f /* tie, rounds up */,
                      -3.14159265f, 65504.0f, 1e-40f, 3.4e38f, 0.0f, -0.0f};
  int bad = 0;
  char msg[160] = "";
  for (float x : xs) {
    unsigned u;
    memcpy(&u, &x, 4);
    unsigned r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;  // RNE on the upper 16 bits
    __nv_bfloat16 b = __float2bfloat16_rn(x);
    unsigned short got;
    memcpy(&got, &b, 2);
    if (got != (unsigned short)r && !bad++) snprintf(msg, sizeof msg, "%g: got 0x%04x, want 0x%04x", x, got, r);
    float back = __bfloat162float(b), want;
    unsigned wb = r << 16;
    memcpy(&want, &wb, 4);
    if (back != want && !(back != back) && !bad++) snprintf(msg, sizeof msg, "%g widens to %g, want %g", x, back, want);
  }
  report("bf16_round_to_nearest_even", !bad, msg);
}

// ---- cuBLAS -----------------------------------------------------------------------------------------

static float bfr(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

static void test_gemm() {
  cublasHandle_t h;
  cublasCreate(&h);
  const int m = 7, n = 5, k = 9, pad = 3;
  int bad = 0;
  char msg[200] = "";
  for (int bf = 0; bf < 2; bf++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
        int lda = ar + pad, ldb = br + pad, ldc = m + pad;
        float A[(k + pad) * (m + pad)], B[(k + pad) * (n + pad)], C[(m + pad) * n], want[(m + pad) * n];
        for (int i = 0; i < lda * ac; i++) A[i] = (float)((i * 37) % 23 - 11) / 7.0f;
        for (int i = 0; i < ldb * bc; i++) B[i] = (float)((i * 53) % 19 - 9) / 5.0f;
        for (int i = 0; i < ldc * n; i++) C[i] = want[i] = (float)(i % 5);
        const float alpha = 1.5f, beta = 0.5f;
        for (int i = 0; i < m; i++)
          for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
              float a = ta ? A[i * lda + p] : A[p * lda + i], b = tb ? B[p * ldb + j] : B[j * ldb + p];
              s += (double)(bf ? bfr(a) : a) * (bf ? bfr(b) : b);
            }
            want[j * ldc + i] = (float)(alpha * s + beta * want[j * ldc + i]);
          }
        void *dA, *dB;
        float *dC = dev<float>((size_t)ldc * n);
        size_t es = bf ? 2 : 4;
        cudaMalloc(&dA, es * lda * ac);
        cudaMalloc(&dB, es * ldb * bc);
        if (bf) {
          __nv_bfloat16 a16[(k + pad) * (m + pad)], b16[(k + pad) * (n + pad)];
          for (int i = 0; i < lda * ac; i++) a16[i] = __float2bfloat16_rn(A[i]);
          for (int i = 0; i < ldb * bc; i++) b16[i] = __float2bfloat16_rn(B[i]);
          cudaMemcpy(dA, a16, es * lda * ac, cudaMemcpyHostToDevice);
          cudaMemcpy(dB, b16, es * ldb * bc, cudaMemcpyHostToDevice);
        } else {
          cudaMemcpy(dA, A, es * lda * ac, cudaMemcpyHostToDevice);
          cudaMemcpy(dB, B, es * ldb * bc, cudaMemcpyHostToDevice);
        }
        cudaMemcpy(dC, C, sizeof(float) * ldc * n, cudaMemcpyHostToDevice);
        cudaDataType t = bf ? CUDA_R_16BF : CUDA_R_32F;
        cublasStatus_t s = cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                        &alpha, dA, t, lda, dB, t, ldb, &beta, dC, CUDA_R_32F, ldc,
                                        CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT);
        cudaMemcpy(C, dC, sizeof(float) * ldc * n, cudaMemcpyDeviceToHost);
        for (int j = 0; j < n; j++)
          for (int i = 0; i < ldc; i++) {
            // rows past m (the padding of C) must be untouched
            float w = want[j * ldc + i];
            if ((s != CUBLAS_STATUS_SUCCESS || fabsf(C[j * ldc + i] - w) > 1e-5f * (1 + fabsf(w))) && !bad++)
              snprintf(msg, sizeof msg, "%s op(A)=%c op(B)=%c: C[%d,%d] = %g, want %g (status %d)", bf ? "bf16" : "fp32",
                       ta ? 'T' : 'N', tb ? 'T' : 'N', i, j, C[j * ldc + i], w, (int)s);
          }
        // a leading dimension smaller than the operand's rows is refused, as cuBLAS refuses it
        s = cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, dA, t, ar - 1, dB, t, ldb,
                         &beta, dC, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_INVALID_VALUE && !bad++)
          snprintf(msg, sizeof msg, "lda %d < %d rows accepted (status %d)", ar - 1, ar, (int)s);
        cudaFree(dA);
        cudaFree(dB);
        cudaFree(dC);
      }
  cublasDestroy(h);
  report("cublas_gemm_transposes_and_strides", !bad, msg);
}

// ---- what the emulator must refuse (emulator-only: a GPU would crash, hang or be undefined) -------------

__global__ void copy_kernel(float *out, const float *in) { out[threadIdx.x] = in[threadIdx.x]; }

__global__ void early_return_kernel(int *out) {
  if (threadIdx.x % 32 == 0) return;  // lane 0 leaves, then the others shuffle with the full mask
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

__global__ void deadlock_kernel(int *out) {
  if (threadIdx.x == 0) __syncwarp();  // alone: lanes 1..31 never come
  out[threadIdx.x] = 1;
}

__global__ void smem_kernel(float *out) {
  PC_DYNAMIC_SHARED(float, s);
  s[threadIdx.x] = 1.0f;
  out[threadIdx.x] = s[threadIdx.x];
}

/* the last error must mention needle, or needle2 when given */
static void expect_failure(const char *name, const char *needle, const char *needle2 = NULL) {
  cudaError_t e = cudaGetLastError();
  const char *m = cudaGetErrorString(e);
  char msg[600];
  snprintf(msg, sizeof msg, "%s (wanted a failure mentioning \"%s\")", e == cudaSuccess ? "no error" : m, needle);
  report(name, e != cudaSuccess && (strstr(m, needle) || (needle2 && strstr(m, needle2))), msg);
}

static void test_refusals() {
  float *d = dev<float>(64), host[64];
  int *di = dev<int>(64);
  PC_LAUNCH(copy_kernel, 1, 32, 0)(d, host);
  expect_failure("host_pointer_argument", "argument 1 is not device memory");
  PC_LAUNCH(early_return_kernel, 1, 64, 0)(di);
  // in thread order lane 0 has returned when lane 1 shuffles; in reverse order lanes 31..1 wait for it
  expect_failure("shuffle_after_lanes_returned", "have returned", "never reach");
  PC_LAUNCH(deadlock_kernel, 1, 32, 0)(di);
  expect_failure("deadlock", "deadlock");
  PC_LAUNCH(smem_kernel, 1, 32, 49 * 1024)(d);
  expect_failure("shared_memory_over_48k_without_attribute", "dynamic shared memory");
  cudaError_t e = cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 49 * 1024);
  PC_LAUNCH(smem_kernel, 1, 32, 49 * 1024)(d);
  e = e != cudaSuccess ? e : cudaGetLastError();
  report("shared_memory_with_attribute", e == cudaSuccess, cudaGetErrorString(e));
  PC_LAUNCH(copy_kernel, 1, 2048, 0)(d, d);
  expect_failure("too_many_threads", "invalid configuration");
  e = cudaMemcpy(d, host, 65 * sizeof(float) + 64, cudaMemcpyHostToDevice);  // past the end of d
  cudaGetLastError();
  report("memcpy_past_the_end", e != cudaSuccess, "a copy past the end of a device block was accepted");
  cudaFree(d);
  cudaFree(di);
}

// ---- the race checker -----------------------------------------------------------------------------------

/* A planted race: warp 1 writes flag[0] in the same phase as warp 0 reads it (no __syncthreads
 * between them). The result depends on which warp runs first, so the two orders must disagree. */
__global__ void racy_kernel(int *out) {
  __shared__ int flag;
  if (threadIdx.x == 0) flag = 0;
  __syncthreads();
  if (threadIdx.x == 32) flag = 1;
  if (threadIdx.x == 0) out[0] = flag;
}

static void test_race_checker() {
  int *d = dev<int>(1), fwd = -1, rev = -1;
  const char *old = getenv("PREFCAP_CUDA_EMU_ORDER");
  char *saved = old ? strdup(old) : NULL;
  setenv("PREFCAP_CUDA_EMU_ORDER", "forward", 1);
  PC_LAUNCH(racy_kernel, 1, 64, 0)(d);
  cudaMemcpy(&fwd, d, 4, cudaMemcpyDeviceToHost);
  setenv("PREFCAP_CUDA_EMU_ORDER", "reverse", 1);
  PC_LAUNCH(racy_kernel, 1, 64, 0)(d);
  cudaMemcpy(&rev, d, 4, cudaMemcpyDeviceToHost);
  if (saved) setenv("PREFCAP_CUDA_EMU_ORDER", saved, 1);
  else unsetenv("PREFCAP_CUDA_EMU_ORDER");
  free(saved);
  char msg[120];
  snprintf(msg, sizeof msg, "forward order read %d, reverse read %d: the orders must disagree on a race", fwd, rev);
  report("race_checker_orders_disagree", fwd == 0 && rev == 1, msg);
  cudaFree(d);
}

int main() {
  test_shuffles();
  test_blocks();
  test_bf16();
  test_gemm();
  test_refusals();
  test_race_checker();
  return failures ? 1 : 0;
}

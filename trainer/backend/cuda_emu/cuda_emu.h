/* trainer/backend/cuda_emu/cuda_emu.h: a CPU execution mode for the CUDA kernels, so that the same .cu
 * sources run (and are tested) where no GPU is. Included by every .cu file after the CUDA headers.
 *
 * Under nvcc this header only defines the two macros that kernels and launch sites use:
 *   PC_LAUNCH(kernel, grid, block, smem)(args...)   kernel<<<grid, block, smem>>>(args...)
 *   PC_DYNAMIC_SHARED(T, name);                     extern __shared__ T name[];
 * Compiled as C++ by g++ (`make cuda-emu`: g++ -x c++ backend_cuda.cu, no __CUDACC__), it turns the
 * kernels into ordinary functions and PC_LAUNCH into a call of the emulator (cuda_emu.cpp), which runs
 * each block's threads as cooperative fibers on one CPU thread, block after block; between two
 * __syncthreads the warps run one after the other, each as far as it can go:
 *   - blockIdx, threadIdx, blockDim, gridDim are the running fiber's;
 *   - __syncthreads() is a barrier of the block's live threads; a fiber runs until it reaches a barrier
 *     (or returns), then the next one runs;
 *   - warp shuffles and votes (__shfl_sync, _up, _down, _xor, __ballot_sync, __any_sync, __all_sync,
 *     __syncwarp) are barriers of the lanes in the mask: every lane writes its value, and only once all
 *     have arrived does any read (a lane that returned early, or a divergent shuffle, is reported as a
 *     launch failure, where a GPU would be undefined);
 *   - static __shared__ arrays are function-level statics (one block runs at a time), dynamic shared
 *     memory (PC_DYNAMIC_SHARED) is a heap block of exactly the launch's size, filled with NaN bytes at
 *     every block start so that reading what no thread wrote shows; AddressSanitizer sees past its end;
 *   - atomicAdd/atomicMax/atomicMin/atomicExch/atomicCAS, __expf, __logf, rsqrtf, __fdividef,
 *     __int_as_float and friends (the __ intrinsics as their exact libm counterparts: the emulation is
 *     at least as accurate as the GPU, never less);
 *   - bf16 through cuda_bf16.h's own host paths (__float2bfloat16_rn and so on, round to nearest even);
 *   - launch checks a GPU makes: block size, grid limits, dynamic shared memory over 48 KB without
 *     cudaFuncSetAttribute, or over the device's opt-in limit; and one a GPU cannot make cheaply: every
 *     pointer argument of a kernel must be NULL or point into memory from cudaMalloc (a host pointer
 *     handed to a kernel fails the launch with the argument's number);
 *   - the runtime (cudaMalloc, cudaMemcpy, ..., streams and events as no-ops) and the cuBLAS calls the
 *     backend makes (cublasGemmEx: fp32 or bf16 operands, fp32 output, any transposes and leading
 *     dimensions, checked as cuBLAS checks them) served by OpenBLAS.
 * PREFCAP_CUDA_EMU_ORDER=reverse runs the warps (and the lanes in each) in reverse order: a kernel whose
 * result changes with the order has a shared-memory race (a missing __syncthreads, a warp reading what
 * another writes in the same phase); the tests run both orders.
 *
 * The emulator's state is global: one host thread launches at a time (backend.h's rule: one thread
 * drives a backend), and blocks run one after the other, never at once.
 *
 * Not covered, and not pretended: tensor-core instructions (mma, wgmma), TMA, inline PTX, cooperative
 * groups, clusters, textures, memory-model subtleties (everything is sequentially consistent here),
 * and performance. A kernel that needs one of them keeps a plain path that the emulation runs and the
 * GPU tests compare against. */
#ifndef PC_CUDA_EMU_H
#define PC_CUDA_EMU_H

#ifdef __CUDACC__
// ---- the real GPU build ---------------------------------------------------------------------------
#define PC_LAUNCH(kernel, grid, block, smem) kernel<<<(grid), (block), (smem)>>>
#define PC_DYNAMIC_SHARED(type, name) extern __shared__ type name[]

#else
// ---- the CPU emulation ----------------------------------------------------------------------------
#include <cuda_runtime.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace cuda_emu {

/* The running fiber's coordinates (set by the scheduler before it resumes a fiber). */
struct thread_state {
  uint3 tid;
  unsigned lane, warp;  // threadIdx linearised, / 32 and % 32
  unsigned shfl_seq;    // shuffles this thread has done: picks the exchange buffer's half
};
extern thread_state *cur;
extern uint3 cur_block;
extern dim3 cur_block_dim, cur_grid_dim;

void syncthreads();
void syncwarp(unsigned mask);
/* All lanes of `mask` deposit v (8 bytes), wait for each other, and get what lane src deposited
 * (src < 0: their own value). One exchange per call, correct for any order of the lanes. */
uint64_t warp_exchange(unsigned mask, uint64_t v, int (*src_of)(int lane, int arg, int width), int arg, int width);
unsigned warp_ballot(unsigned mask, int pred);
void *dynamic_shared();
[[noreturn]] void trap(const char *what);

/* The launch: validates the configuration and the pointer arguments, then runs body() for each thread
 * of each block. body is a type-erased call of the kernel with the launch's arguments. */
struct body_fn {
  void (*call)(void *ctx);
  void *ctx;
};
cudaError_t launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem, body_fn body);
/* 0 when p is NULL or inside a live cudaMalloc block */
int is_device_pointer(const void *p);
cudaError_t fail_launch(const char *name, cudaError_t e, const char *fmt, ...);

template <class T> int check_arg(const char *name, int i, const T &a) {
  if constexpr (std::is_pointer<T>::value) {
    if (!is_device_pointer((const void *)a)) {
      fail_launch(name, cudaErrorInvalidValue, "argument %d is not device memory (%p)", i, (const void *)a);
      return -1;
    }
  }
  (void)name;
  (void)i;
  (void)a;
  return 0;
}

template <class F> struct launcher {
  F *kernel;
  const char *name;
  dim3 grid, block;
  size_t smem;
  template <class... A> void operator()(A... args) const {
    int i = 0, bad = 0;
    ((bad |= check_arg(name, i++, args)), ...);
    if (bad) return;
    auto call = [&]() { kernel(args...); };  // each thread gets its own copy of the parameters
    body_fn b = {[](void *c) { (*(decltype(call) *)c)(); }, &call};
    launch(name, (const void *)kernel, grid, block, smem, b);
  }
};
template <class F> launcher<F> make_launcher(F *k, const char *name, dim3 g, dim3 b, size_t s) {
  return launcher<F>{k, name, g, b, s};
}

inline int src_xor(int lane, int m, int w) { return (lane & ~(w - 1)) + (((lane % w) ^ m) & (w - 1)); }
inline int src_idx(int lane, int s, int w) { return (lane & ~(w - 1)) + (s & (w - 1)); }
inline int src_down(int lane, int d, int w) { return lane % w + d < w ? lane + d : -1; }
inline int src_up(int lane, int d, int w) { return lane % w - d >= 0 ? lane - d : -1; }

template <class T> T shfl(unsigned mask, T v, int (*f)(int, int, int), int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffle moves up to 8 bytes");
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(mask, bits, f, arg, width);
  T r;
  memcpy(&r, &bits, sizeof(T));
  return r;
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::cur->tid)
#define blockIdx (::cuda_emu::cur_block)
#define blockDim (::cuda_emu::cur_block_dim)
#define gridDim (::cuda_emu::cur_grid_dim)

/* cuda_runtime.h has this overload only for nvcc */
template <class T> static inline cudaError_t cudaFuncSetAttribute(T *entry, enum cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute((const void *)entry, attr, value);
}

#define PC_LAUNCH(kernel, grid, block, smem) ::cuda_emu::make_launcher(kernel, #kernel, (grid), (block), (smem))
#define PC_DYNAMIC_SHARED(type, name) type *name = (type *)::cuda_emu::dynamic_shared()

static inline void __syncthreads(void) { ::cuda_emu::syncthreads(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cuda_emu::syncwarp(mask); }
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}
[[noreturn]] static inline void __trap(void) { ::cuda_emu::trap("__trap()"); }

template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::cuda_emu::shfl(mask, v, ::cuda_emu::src_idx, src, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
  return ::cuda_emu::shfl(mask, v, ::cuda_emu::src_xor, m, width);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return ::cuda_emu::shfl(mask, v, ::cuda_emu::src_down, (int)d, width);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return ::cuda_emu::shfl(mask, v, ::cuda_emu::src_up, (int)d, width);
}
static inline unsigned __ballot_sync(unsigned mask, int pred) { return ::cuda_emu::warp_ballot(mask, pred); }
static inline int __any_sync(unsigned mask, int pred) { return (::cuda_emu::warp_ballot(mask, pred) & mask) != 0; }
static inline int __all_sync(unsigned mask, int pred) {
  return (::cuda_emu::warp_ballot(mask, pred) & mask) == (mask & ::cuda_emu::warp_ballot(mask, 1));
}
static inline unsigned __activemask(void) { return ::cuda_emu::warp_ballot(0xffffffffu, 1); }

// Atomics: fibers of one block never run at once, but the builtins keep them right if blocks ever do.
template <class T> static inline T atomicAdd(T *p, T v) {
  if constexpr (std::is_integral<T>::value) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
  } else {
    T old = *p, upd;
    do upd = old + v;
    while (!__atomic_compare_exchange(p, &old, &upd, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
  }
}
template <class T> static inline T atomicMax(T *p, T v) {
  T old = *p;
  while (old < v && !__atomic_compare_exchange(p, &old, &v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
template <class T> static inline T atomicMin(T *p, T v) {
  T old = *p;
  while (v < old && !__atomic_compare_exchange(p, &old, &v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
template <class T> static inline T atomicExch(T *p, T v) {
  T old;
  __atomic_exchange(p, &v, &old, __ATOMIC_SEQ_CST);
  return old;
}
template <class T> static inline T atomicCAS(T *p, T cmp, T v) {
  __atomic_compare_exchange(p, &cmp, &v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}

// Intrinsics: the exact libm functions (a GPU's fast versions are less accurate, never more).
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
// (glibc declares __expf and co. itself, as its own names for expf: macros, not redefinitions)
static inline float emu_expf(float x) { return expf(x); }
static inline float emu_logf(float x) { return logf(x); }
static inline float emu_powf(float x, float y) { return powf(x, y); }
static inline float emu_sinf(float x) { return sinf(x); }
static inline float emu_cosf(float x) { return cosf(x); }
static inline float emu_tanhf(float x) { return tanhf(x); }
#define __expf emu_expf
#define __logf emu_logf
#define __powf emu_powf
#define __sinf emu_sinf
#define __cosf emu_cosf
#define __tanhf emu_tanhf
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float emu_rsqrtf(float x) { return 1.0f / sqrtf(x); }
#define rsqrtf emu_rsqrtf
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __ffs(int x) { return __builtin_ffs(x); }

#endif  // __CUDACC__
#endif

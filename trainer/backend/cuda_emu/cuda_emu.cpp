/* trainer/backend/cuda_emu/cuda_emu.cpp: the CPU emulation's engine (cuda_emu.h says what it covers):
 * the fiber scheduler that runs a launch's blocks, the CUDA runtime calls the backend and the tests make,
 * and cublasGemmEx served by OpenBLAS. Linked instead of libcudart and libcublas into build-emu/.
 *
 * Fibers. One fiber per thread of the running block, on stacks kept from launch to launch (mmap'd, a
 * guard page below each). The switch is a few instructions of assembly on x86-64 (swapcontext makes a
 * system call per switch, and a block of 256 threads switches at every barrier and shuffle), with
 * AddressSanitizer told of every stack change; elsewhere it is ucontext. A fiber runs alone to its next
 * barrier (a __syncthreads, a shuffle, a vote); between two __syncthreads the scheduler runs the warps
 * one after the other, each until all its lanes wait at the __syncthreads or have returned (the lanes
 * taking turns at its shuffles), in warp order or (PREFCAP_CUDA_EMU_ORDER=reverse) the reverse. */
#include "backend/cuda_emu/cuda_emu.h"

#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

namespace cuda_emu {

thread_state *cur;
uint3 cur_block;
dim3 cur_block_dim, cur_grid_dim;

// ---- errors -------------------------------------------------------------------------------------

static cudaError_t last_error = cudaSuccess;
static char last_detail[512];  // what cudaGetErrorString says for last_detail_code
static cudaError_t last_detail_code = cudaSuccess;

cudaError_t fail_launch(const char *name, cudaError_t e, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(last_detail, sizeof last_detail, "%s (cuda-emu: %s: %s)", e == cudaErrorLaunchFailure ?
           "unspecified launch failure" : e == cudaErrorInvalidConfiguration ? "invalid configuration argument" :
           "invalid argument", name, msg);
  last_detail_code = e;
  if (last_error == cudaSuccess) last_error = e;
  return e;
}

// ---- device memory: a table of live blocks, so that kernels' pointer arguments can be checked --------

static std::map<uintptr_t, size_t> allocations;  // start -> bytes

int is_device_pointer(const void *p) {
  if (!p) return 1;
  uintptr_t a = (uintptr_t)p;
  auto it = allocations.upper_bound(a);
  if (it == allocations.begin()) return 0;
  --it;
  return a >= it->first && a <= it->first + it->second;  // one past the end is a valid pointer too
}

// ---- fibers -------------------------------------------------------------------------------------

#if defined(__x86_64__)
/* emu_switch(&save, to): push the callee-saved registers, save the stack pointer, load `to`'s, pop its
 * registers and return into it. A new fiber's stack is made to look like one that switched away. The
 * floating-point control words (MXCSR, x87) are not switched: no kernel changes rounding modes, and
 * loading them costs more than the rest of the switch. */
extern "C" void emu_switch(void **save, void *to);
asm(".text\n"
    ".globl emu_switch\n"
    ".type emu_switch,@function\n"
    "emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".size emu_switch,.-emu_switch\n"
    ".section .note.GNU-stack,\"\",@progbits\n"
    ".text\n");
#define EMU_ASM 1
#endif

enum { F_READY, F_WAIT, F_DONE };

struct barrier {
  unsigned count, gen;
};

struct fiber {
  thread_state ts;
  int state;
  barrier *wait;
  unsigned wait_gen;
  char *stack;  // lowest usable byte (above the guard page)
#ifdef EMU_ASM
  void *sp;
#else
  ucontext_t uc;
#endif
};

#ifdef EMU_ASAN
static const size_t STACK = 1u << 20;  // ASan's redzones and fake frames need room
#else
static const size_t STACK = 256u << 10;
#endif
static const size_t PAGE = 4096;

struct warp_state {
  barrier bar;
  unsigned live;           // lanes of this warp that exist and have not returned
  unsigned arrived;        // lanes waiting in the current exchange (a bit each)
  unsigned mask[2];        // the mask the exchange of each half was called with
  uint64_t slot[2][32];    // two halves: an exchange writes one while the previous one's is still read
};

static struct {
  std::vector<fiber> f;
  std::vector<warp_state> w;
  barrier block_bar;
  unsigned live;
  int reverse;
  int killed;
  char *dyn;
  size_t dyn_bytes;
  body_fn body;
  int from_sched;  // the last switch into a fiber came from the scheduler
  const char *name;  // the running kernel's
  fiber *running;
#ifdef EMU_ASM
  void *sched_sp;
#else
  ucontext_t sched_uc;
#endif
#ifdef EMU_ASAN
  void *sched_fake;
  const void *sched_bottom;
  size_t sched_size;
#endif
} S;

static void to_scheduler(int finished);

/* In a fiber that has just been switched to: tell ASan the switch is over, and keep the scheduler's
 * stack bounds (to switch back to it) when it was the scheduler that switched. */
static void resumed(void *fake) {
#ifdef EMU_ASAN
  const void *bottom;
  size_t size;
  __sanitizer_finish_switch_fiber(fake, &bottom, &size);
  if (S.from_sched) {
    S.sched_bottom = bottom;
    S.sched_size = size;
  }
#endif
  (void)fake;
}

static void fiber_main() {
  resumed(NULL);
  for (;;) {  // a fiber's stack is reused: it loops back here for the next thread it runs
    S.body.call(S.body.ctx);
    to_scheduler(1);
  }
}

#ifndef EMU_ASM
static void fiber_entry_uc(void) { fiber_main(); }
#endif

static void switch_to(fiber *f) {
  S.running = f;
  S.from_sched = 1;
  cur = &f->ts;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(&S.sched_fake, f->stack, STACK);
#endif
#ifdef EMU_ASM
  emu_switch(&S.sched_sp, f->sp);
#else
  swapcontext(&S.sched_uc, &f->uc);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(S.sched_fake, NULL, NULL);
#endif
}

static void to_scheduler(int finished) {
  fiber *f = S.running;
  void *fake = NULL;
#ifdef EMU_ASAN
  // a finished thread's frames are dead: ASan may drop its fake stack (the fiber is re-made before reuse)
  __sanitizer_start_switch_fiber(finished ? NULL : &fake, S.sched_bottom, S.sched_size);
#endif
#ifdef EMU_ASM
  emu_switch(&f->sp, S.sched_sp);
#else
  swapcontext(&f->uc, &S.sched_uc);
#endif
  resumed(fake);
  (void)finished;
}

/* Straight from the running fiber to another of its warp, without the scheduler in between: at a
 * shuffle, each lane hands over to the next one (half the switches). */
static void hand_to(fiber *to) {
  fiber *from = S.running;
  S.running = to;
  S.from_sched = 0;
  cur = &to->ts;
  void *fake = NULL;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(&fake, to->stack, STACK);
#endif
#ifdef EMU_ASM
  emu_switch(&from->sp, to->sp);
#else
  swapcontext(&from->uc, &to->uc);
#endif
  resumed(fake);
}

/* A fresh start for fiber f: its stack set up to enter fiber_main. */
static void fiber_reset(fiber *f) {
#ifdef EMU_ASM
  uintptr_t top = ((uintptr_t)f->stack + STACK) & ~(uintptr_t)15;
  void **sp = (void **)top;
  *--sp = NULL;                    // fiber_main's return address: never used
  *--sp = (void *)fiber_main;      // where emu_switch's ret goes
  for (int i = 0; i < 6; i++) *--sp = NULL;  // rbp rbx r12 r13 r14 r15
  f->sp = sp;
#else
  getcontext(&f->uc);
  f->uc.uc_stack.ss_sp = f->stack;
  f->uc.uc_stack.ss_size = STACK;
  f->uc.uc_link = NULL;
  makecontext(&f->uc, fiber_entry_uc, 0);
#endif
}

static int ensure_fibers(unsigned n) {
  while (S.f.size() < n) {
    char *m = (char *)mmap(NULL, STACK + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                           -1, 0);
    if (m == MAP_FAILED) return -1;
    mprotect(m, PAGE, PROT_NONE);  // a stack overflow faults instead of writing over the next stack
    fiber f;
    memset(&f, 0, sizeof f);
    f.stack = m + PAGE;
    S.f.push_back(f);
  }
  return 0;
}

/* Waits at b until `need` threads have arrived. At a warp barrier the last lane to arrive goes on
 * without waiting; at the block's barrier it yields too, so that the next phase starts again with the
 * first warp in the scheduler's order (run_block). */
static void barrier_wait(barrier *b, unsigned need, int yield_last) {
  unsigned g = b->gen;
  if (++b->count >= need) {
    b->count = 0;
    b->gen++;
    if (!yield_last) return;
  }
  fiber *f = S.running;
  f->state = F_WAIT;
  f->wait = b;
  f->wait_gen = g;
  if (b != &S.block_bar) {
    // the next lane of this warp (in the scheduler's order) that can run: a fresh one, or one whose
    // warp barrier has opened; lanes at __syncthreads are the scheduler's to resume
    unsigned nt = cur_block_dim.x * cur_block_dim.y * cur_block_dim.z, w0 = f->ts.warp * 32;
    unsigned n = nt - w0 < 32 ? nt - w0 : 32, pos = S.reverse ? n - 1 - f->ts.lane : f->ts.lane;
    for (unsigned k = pos + 1; k < n; k++) {
      fiber *o = &S.f[w0 + (S.reverse ? n - 1 - k : k)];
      if (o->state == F_READY || (o->state == F_WAIT && o->wait != &S.block_bar && o->wait->gen != o->wait_gen)) {
        o->state = F_READY;
        hand_to(o);
        return;
      }
    }
  }
  to_scheduler(0);
}

void trap(const char *what) {
  fiber *f = S.running;
  fail_launch(S.name, cudaErrorLaunchFailure, "%s in thread (%u,%u,%u) of block (%u,%u,%u)", what, f->ts.tid.x,
              f->ts.tid.y, f->ts.tid.z, cur_block.x, cur_block.y, cur_block.z);
  S.killed = 1;
  for (;;) to_scheduler(0);  // never resumed
}

void syncthreads() { barrier_wait(&S.block_bar, S.live, 1); }

static unsigned warp_lanes(unsigned warp) {  // the lanes that exist in this warp (the last may be partial)
  unsigned n = cur_block_dim.x * cur_block_dim.y * cur_block_dim.z - warp * 32;
  return n >= 32 ? 0xffffffffu : (1u << n) - 1;
}

static warp_state *warp_enter(unsigned mask, const char *what) {
  thread_state *t = cur;
  warp_state *w = &S.w[t->warp];
  char msg[160];
  if (!(mask >> t->lane & 1)) {
    snprintf(msg, sizeof msg, "%s with mask 0x%08x from lane %u, which is not in it", what, mask, t->lane);
    trap(msg);
  }
  if (mask & ~warp_lanes(t->warp)) {
    snprintf(msg, sizeof msg, "%s with mask 0x%08x in warp %u, which has lanes 0x%08x", what, mask, t->warp,
             warp_lanes(t->warp));
    trap(msg);
  }
  if (mask & ~w->live) {
    snprintf(msg, sizeof msg, "%s with mask 0x%08x in warp %u, whose lanes 0x%08x have returned", what, mask, t->warp,
             mask & ~w->live);
    trap(msg);
  }
  return w;
}

void syncwarp(unsigned mask) {
  warp_state *w = warp_enter(mask, "__syncwarp");
  barrier_wait(&w->bar, (unsigned)__builtin_popcount(mask), 0);
}

uint64_t warp_exchange(unsigned mask, uint64_t v, int (*src_of)(int, int, int), int arg, int width) {
  warp_state *w = warp_enter(mask, "a warp shuffle");
  thread_state *t = cur;
  if (width <= 0 || width > 32 || (width & (width - 1))) trap("a shuffle's width is not a power of 2 up to 32");
  unsigned half = t->shfl_seq++ & 1;
  // every lane of a shuffle must pass the same mask (a divergent exchange is undefined on a GPU)
  if (w->bar.count == 0) w->mask[half] = mask;
  else if (w->mask[half] != mask) {
    char msg[160];
    snprintf(msg, sizeof msg, "lanes of warp %u shuffle with different masks (0x%08x, 0x%08x)", t->warp,
             w->mask[half], mask);
    trap(msg);
  }
  w->slot[half][t->lane] = v;
  barrier_wait(&w->bar, (unsigned)__builtin_popcount(mask), 0);
  if (!src_of) return v;
  int s = src_of((int)t->lane, arg, width);
  if (s < 0) return v;
  if (s > 31 || !(mask >> s & 1)) {
    char msg[160];
    snprintf(msg, sizeof msg, "lane %u of warp %u reads lane %d, outside the mask 0x%08x", t->lane, t->warp, s, mask);
    trap(msg);
  }
  return w->slot[half][s];
}

unsigned warp_ballot(unsigned mask, int pred) {
  warp_state *w = warp_enter(mask, "a warp vote");
  unsigned half = cur->shfl_seq & 1;
  warp_exchange(mask, pred ? 1 : 0, NULL, 0, 32);
  unsigned r = 0;
  for (int l = 0; l < 32; l++)
    if ((mask >> l & 1) && w->slot[half][l]) r |= 1u << l;
  return r;
}

void *dynamic_shared() { return S.dyn; }

// ---- launches -----------------------------------------------------------------------------------

static std::map<const void *, int> max_dyn_smem;  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
static const int SMEM_DEFAULT = 48 * 1024, SMEM_OPTIN = 227 * 1024;

static int env_reverse() {
  const char *s = getenv("PREFCAP_CUDA_EMU_ORDER");
  return s && !strcmp(s, "reverse");
}

/* Resumes fiber f if it can run; 1 if it did. */
static int step(fiber *f) {
  if (f->state == F_DONE) return 0;
  if (f->state == F_WAIT) {
    if (f->wait->gen == f->wait_gen) return 0;  // its barrier is still incomplete
    f->state = F_READY;
  }
  switch_to(f);
  if (S.killed) return 1;
  f = S.running;  // f, or a lane it handed over to
  if (f->state == F_READY) {  // it returned from the kernel
    f->state = F_DONE;
    S.live--;
    S.w[f->ts.warp].live &= ~(1u << f->ts.lane);
    // threads that returned no longer count at __syncthreads (as on a GPU since Volta)
    if (S.block_bar.count && S.block_bar.count >= S.live) {
      S.block_bar.count = 0;
      S.block_bar.gen++;
    }
  }
  return 1;
}

/* Runs the block at cur_block: every thread to completion, barrier to barrier. Between two
 * __syncthreads the warps run one after the other, each as far as it can go (its lanes taking turns
 * at its shuffles), in warp order (or reversed): the most skewed schedule a GPU allows, so that a
 * warp reading shared memory another warp writes in the same phase sees the write too early in one
 * order and too late in the other. */
static int run_block(unsigned nt) {
  S.live = nt;
  S.block_bar = barrier{0, 0};
  unsigned nw = (nt + 31) / 32;
  for (unsigned i = 0; i < nw; i++) {
    warp_state &w = S.w[i];
    w.bar = barrier{0, 0};
    w.live = warp_lanes(i);
  }
  if (S.dyn) memset(S.dyn, 0xff, S.dyn_bytes);  // NaN: shared memory no thread wrote reads as NaN
  unsigned bx = cur_block_dim.x, by = cur_block_dim.y;
  for (unsigned i = 0; i < nt; i++) {
    fiber *f = &S.f[i];
    f->ts.tid = uint3{i % bx, i / bx % by, i / (bx * by)};
    f->ts.lane = i % 32;
    f->ts.warp = i / 32;
    f->ts.shfl_seq = 0;
    f->state = F_READY;
    f->wait = NULL;
    fiber_reset(f);
  }
  while (S.live) {
    int progressed = 0;
    unsigned phase = S.block_bar.gen;
    for (unsigned k = 0; k < nw && S.block_bar.gen == phase; k++) {
      unsigned w = S.reverse ? nw - 1 - k : k, n = nt - w * 32 < 32 ? nt - w * 32 : 32;
      // this warp until all its lanes wait at __syncthreads or have returned; when the barrier opens,
      // the next phase starts again from the first warp in the order
      for (int ran = 1; ran && S.block_bar.gen == phase;) {
        ran = 0;
        for (unsigned l = 0; l < n && S.block_bar.gen == phase; l++) {
          ran |= step(&S.f[w * 32 + (S.reverse ? n - 1 - l : l)]);
          if (S.killed) return -1;
        }
        progressed |= ran;
      }
    }
    if (!progressed) {
      unsigned at_block = 0, at_warp = 0;
      for (unsigned i = 0; i < nt; i++)
        if (S.f[i].state == F_WAIT) (S.f[i].wait == &S.block_bar ? at_block : at_warp)++;
      fail_launch(S.name, cudaErrorLaunchFailure,
                  "deadlock in block (%u,%u,%u): %u threads wait at __syncthreads, %u at a warp shuffle or "
                  "__syncwarp that some lanes of their warp never reach", cur_block.x, cur_block.y, cur_block.z,
                  at_block, at_warp);
      return -1;
    }
  }
  return 0;
}

/* PREFCAP_CUDA_EMU_FAIL=KERNEL:K (tests): the K-th launch of KERNEL (1-based) fails with
 * cudaErrorLaunchFailure, as a kernel that faults on a GPU does; the backend sees it at that launch's
 * error check. Lets a test plant a device failure at a chosen step of a training run. */
static int planted_failure(const char *name) {
  static unsigned long count;
  const char *e = getenv("PREFCAP_CUDA_EMU_FAIL"), *colon = e ? strrchr(e, ':') : NULL;
  if (!colon || strncmp(e, name, (size_t)(colon - e)) != 0 || name[colon - e] != 0) return 0;
  return ++count == strtoul(colon + 1, NULL, 10);
}

cudaError_t launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem, body_fn body) {
  if (planted_failure(name))
    return fail_launch(name, cudaErrorLaunchFailure, "planted failure (PREFCAP_CUDA_EMU_FAIL=%s)",
                       getenv("PREFCAP_CUDA_EMU_FAIL"));
  unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
  if (nt == 0 || nt > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535 || grid.x > 2147483647u)
    return fail_launch(name, cudaErrorInvalidConfiguration, "grid (%u,%u,%u), block (%u,%u,%u)", grid.x, grid.y,
                       grid.z, block.x, block.y, block.z);
  auto it = max_dyn_smem.find(kernel);
  size_t limit = it != max_dyn_smem.end() ? (size_t)it->second : (size_t)SMEM_DEFAULT;
  if (smem > limit)
    return fail_launch(name, cudaErrorInvalidValue, "%zu bytes of dynamic shared memory, over the %zu allowed%s",
                       smem, limit, it == max_dyn_smem.end() ? " (no cudaFuncSetAttribute)" : "");
  if (ensure_fibers((unsigned)nt)) return fail_launch(name, cudaErrorMemoryAllocation, "no memory for fiber stacks");
  if (S.w.size() < 32) S.w.resize(32);
  S.dyn = smem ? (char *)malloc(smem) : NULL;
  S.dyn_bytes = smem;
  S.body = body;
  S.name = name;
  S.reverse = env_reverse();
  S.killed = 0;
  cur_block_dim = block;
  cur_grid_dim = grid;
  int rc = 0;
  for (unsigned z = 0; z < grid.z && !rc; z++)
    for (unsigned y = 0; y < grid.y && !rc; y++)
      for (unsigned x = 0; x < grid.x && !rc; x++) {
        cur_block = uint3{x, y, z};
        rc = run_block((unsigned)nt);
      }
  free(S.dyn);
  S.dyn = NULL;
  cur = NULL;
  return rc ? cudaErrorLaunchFailure : cudaSuccess;
}

}  // namespace cuda_emu

using namespace cuda_emu;

// ---- the CUDA runtime ---------------------------------------------------------------------------

extern "C" {

cudaError_t cudaGetLastError(void) {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

const char *cudaGetErrorString(cudaError_t e) {
  if (e == last_detail_code && last_detail[0]) return last_detail;
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    default: return "cuda-emu: unknown error";
  }
}

const char *cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

cudaError_t cudaGetDeviceCount(int *n) {
  *n = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int *d) {
  *d = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "cuda-emu (CUDA kernels run on the CPU)");
  p->major = 9;  // an H100's limits
  p->minor = 0;
  p->totalGlobalMem = (size_t)16 << 30;
  p->sharedMemPerBlock = SMEM_DEFAULT;
  p->sharedMemPerBlockOptin = SMEM_OPTIN;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->multiProcessorCount = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t *s) {
  *s = NULL;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t *e) {
  *e = NULL;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.0f;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || value > SMEM_OPTIN) {
    fail_launch("cudaFuncSetAttribute", cudaErrorInvalidValue, "%d bytes of shared memory, over the %d available",
                value, SMEM_OPTIN);
    return cudaGetLastError();
  }
  max_dyn_smem[func] = value;
  return cudaSuccess;
}

/* The device's memory: 16 GiB as cudaGetDeviceProperties says, or PREFCAP_CUDA_EMU_MEM bytes (tests:
 * a small device, so that running out of memory can be tested); cudaMalloc fails past it. */
static size_t live_bytes;
static size_t device_memory(void) {
  const char *e = getenv("PREFCAP_CUDA_EMU_MEM");
  return e && *e ? (size_t)strtoull(e, NULL, 10) : (size_t)16 << 30;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
  *total = device_memory();
  *free_bytes = live_bytes < *total ? *total - live_bytes : 0;
  return cudaSuccess;
}

/* No driver: the emulation reports 0 (the runtime and cuBLAS versions are those of the headers). */
cudaError_t cudaDriverGetVersion(int *v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
  *p = NULL;
  size_t rounded = (bytes + 255) & ~(size_t)255;
  if (rounded > device_memory() || live_bytes > device_memory() - rounded) {
    last_error = cudaErrorMemoryAllocation;
    return cudaErrorMemoryAllocation;
  }
  void *m = aligned_alloc(256, (bytes + 255) & ~(size_t)255);  // cudaMalloc's alignment
  if (!m) {
    last_error = cudaErrorMemoryAllocation;
    return cudaErrorMemoryAllocation;
  }
  allocations[(uintptr_t)m] = bytes;
  live_bytes += rounded;
  *p = m;
  return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
  if (!p) return cudaSuccess;
  auto it = allocations.find((uintptr_t)p);
  if (it == allocations.end()) {
    fail_launch("cudaFree", cudaErrorInvalidDevicePointer, "%p is not the start of a cudaMalloc block", p);
    return cudaGetLastError();
  }
  live_bytes -= (it->second + 255) & ~(size_t)255;
  allocations.erase(it);
  free(p);
  return cudaSuccess;
}

/* Device ranges must lie inside one live allocation: a copy past the end of a device buffer fails as
 * it does on a GPU (where it is cudaErrorInvalidValue), instead of writing the heap. */
static int device_range(const void *p, size_t n) {
  uintptr_t a = (uintptr_t)p;
  auto it = allocations.upper_bound(a);
  if (it == allocations.begin()) return 0;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind) {
  if (!n) return cudaSuccess;
  int dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  int sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault) {
    dd = is_device_pointer(dst);
    sd = is_device_pointer(src);
  } else if (kind == cudaMemcpyHostToHost) {
    dd = sd = 0;
  }
  if ((dd && !device_range(dst, n)) || (sd && !device_range(src, n))) {
    fail_launch("cudaMemcpy", cudaErrorInvalidValue, "%zu bytes from %p to %p: %s is not %zu bytes of device memory", n,
                src, dst, dd && !device_range(dst, n) ? "the destination" : "the source", n);
    return cudaGetLastError();
  }
  memmove(dst, src, n);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, n, kind);
}

cudaError_t cudaMemset(void *p, int v, size_t n) {
  if (!n) return cudaSuccess;
  if (!device_range(p, n)) {
    fail_launch("cudaMemset", cudaErrorInvalidValue, "%zu bytes at %p are not device memory", n, p);
    return cudaGetLastError();
  }
  memset(p, v, n);
  return cudaSuccess;
}

}  // extern "C"

// ---- cuBLAS ------------------------------------------------------------------------------------

struct cublasContext {
  cublasMath_t math;
};

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
  *h = new cublasContext{CUBLAS_DEFAULT_MATH};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetVersion_v2(cublasHandle_t h, int *v) {
  *v = CUBLAS_VERSION;  // the headers' (the emulation has no library of its own)
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t) {
  return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

/* A column-major (rows x cols, ld) operand as packed fp32 (ld = rows): bf16 widened exactly, fp32
 * copied. Only the rows x cols elements are read (a sub-matrix view never reads past its last column). */
static float *operand_f32(const void *p, cudaDataType t, int rows, int cols, int ld) {
  float *o = (float *)malloc(sizeof(float) * ((size_t)rows * cols + 1));
  if (!o) return NULL;
  for (int c = 0; c < cols; c++) {
    if (t == CUDA_R_16BF) {
      const __nv_bfloat16 *s = (const __nv_bfloat16 *)p + (size_t)c * ld;
      for (int r = 0; r < rows; r++) o[(size_t)c * rows + r] = __bfloat162float(s[r]);
    } else {
      memcpy(o + (size_t)c * rows, (const float *)p + (size_t)c * ld, sizeof(float) * (size_t)rows);
    }
  }
  return o;
}

/* C (m x n) = alpha op(A) op(B) + beta C, column-major, as cuBLAS computes it for fp32 or bf16 A and B
 * (products exact in fp32, fp32 accumulation) and fp32 C: OpenBLAS's sgemm on the widened operands.
 * Arguments are checked as cuBLAS checks them (CUBLAS_STATUS_INVALID_VALUE), so a transposition that
 * would happen to give the right numbers with a wrong leading dimension still fails here. */
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t ct, cublasGemmAlgo_t algo) {
  (void)algo;
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
  int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
  if (m < 0 || n < 0 || k < 0 || lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1) ||
      (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (Atype != Btype || (Atype != CUDA_R_32F && Atype != CUDA_R_16BF) || Ctype != CUDA_R_32F)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (ct != CUBLAS_COMPUTE_32F && ct != CUBLAS_COMPUTE_32F_PEDANTIC) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (!device_range(C, sizeof(float) * ((size_t)(n - 1) * ldc + m))) return CUBLAS_STATUS_INVALID_VALUE;
  size_t es = Atype == CUDA_R_16BF ? 2 : 4;
  if (k > 0 && (!device_range(A, es * ((size_t)(ac - 1) * lda + ar)) ||
                !device_range(B, es * ((size_t)(bc - 1) * ldb + br))))
    return CUBLAS_STATUS_INVALID_VALUE;
  float *a = operand_f32(A, Atype, ar, ac, lda), *b = operand_f32(B, Btype, br, bc, ldb);
  if (!a || !b) {
    free(a);
    free(b);
    return CUBLAS_STATUS_ALLOC_FAILED;
  }
  cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
              m, n, k, *(const float *)alpha, a, ar > 1 ? ar : 1, b, br > 1 ? br : 1, *(const float *)beta, (float *)C,
              ldc);
  free(a);
  free(b);
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"

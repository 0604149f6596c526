/* trainer/backend/backend.c: the registry of backends: each known name and its constructor, so that the
 * commands choose a backend by name and never include a backend's own header. The CUDA entry is the
 * constructor of backend_cuda.cu where nvcc was found, else of backend_cuda_none.c (which says why
 * there is no CUDA); every program that links this file links one of the two. */
#include "backend/backend.h"
#include "backend/backend_cuda.h"

#include <stdio.h>
#include <string.h>

static pc_backend *make_cpu(int threads, char *err, size_t errlen) {
  pc_backend *be = pc_backend_cpu_new(threads);
  if (!be) snprintf(err, errlen, "out of memory");
  return be;
}

static pc_backend *make_cuda(int threads, char *err, size_t errlen) {
  (void)threads;
  return pc_backend_cuda_new(-1, err, errlen);  // -1: the precision PREFCAP_CUDA_FP32 asks for
}

static const struct {
  const char *name;
  pc_backend *(*make)(int threads, char *err, size_t errlen);
} REGISTRY[] = {
  {"cpu", make_cpu},
  {"cuda", make_cuda},
};
#define NREG (sizeof REGISTRY / sizeof *REGISTRY)

const char *pc_backend_names(void) { return "cpu, cuda, auto"; }

pc_backend *pc_backend_new(const char *name, int threads, char *err, size_t errlen) {
  if (!name) name = "cpu";
  if (!strcmp(name, "auto")) {  // the first device that starts, the CPU last
    char e2[512];
    for (size_t i = NREG; i-- > 0;) {
      pc_backend *be = REGISTRY[i].make(threads, e2, sizeof e2);
      if (be) return be;
    }
    snprintf(err, errlen, "device 'auto': no backend could start (%s)", e2);
    return NULL;
  }
  for (size_t i = 0; i < NREG; i++)
    if (!strcmp(name, REGISTRY[i].name)) {
      char e2[512] = "failed";
      pc_backend *be = REGISTRY[i].make(threads, e2, sizeof e2);
      if (!be) snprintf(err, errlen, "device '%s': %s", name, e2);
      return be;
    }
  snprintf(err, errlen, "unknown device '%s' (known: %s)", name, pc_backend_names());
  return NULL;
}

int pc_backend_can_train(pc_backend *be) {
  for (int op = 0; op < PC_OP_COUNT; op++)
    if (!be->ops->supports(be, (pc_op)op)) return 0;
  return 1;
}

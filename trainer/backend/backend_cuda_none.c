/* trainer/backend/backend_cuda_none.c: stands in for trainer/backend/backend_cuda.cu where nvcc was not found (or the
 * build was made with CUDA=0), so that `--device cuda` says why instead of failing to link. */
#include "backend/backend_cuda.h"

#include <stdio.h>

pc_backend *pc_backend_cuda_new(int fp32, char *err, size_t errlen) {
  (void)fp32;
  if (err && errlen) snprintf(err, errlen, "the CUDA backend was not built (nvcc not found, or CUDA=0)");
  return NULL;
}

const char *pc_backend_cuda_error(pc_backend *be) {
  (void)be;
  return NULL;
}

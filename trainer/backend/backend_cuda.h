/* trainer/backend/backend_cuda.h: the CUDA backend's constructor and its error report. The backend itself is
 * the pc_backend_ops table of backend.h; this header only adds what the table cannot say.
 *
 * Built from trainer/backend/backend_cuda.cu when the Makefile finds nvcc, from trainer/backend/backend_cuda_none.c
 * (a constructor that always fails, naming why) otherwise. The registry (backend.c) calls it for
 * "cuda" and "auto"; programs that want the fp32 mode explicitly (the parity tests) call it directly. */
#ifndef PC_BACKEND_CUDA_H
#define PC_BACKEND_CUDA_H
#include <stddef.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA backend on the current device (CUDA_VISIBLE_DEVICES chooses). fp32 = 1: weights and
 * matmuls in float32 (cuBLAS pedantic fp32, no TF32), for checking against the CPU backend; 0: weights
 * kept in bf16 for the matmuls and the LM head (fp32 accumulation); < 0: fp32 when the environment
 * variable PREFCAP_CUDA_FP32 is set to 1, else bf16. NULL with err set when no device is present or
 * the backend was not built. It has every op, the training ones included. */
pc_backend *pc_backend_cuda_new(int fp32, char *err, size_t errlen);

/* The first CUDA or cuBLAS failure this backend met, or NULL: the same as be->ops->error(be), kept
 * for programs that hold a backend they know is CUDA (tests/gpu). */
const char *pc_backend_cuda_error(pc_backend *be);

#ifdef __cplusplus
}
#endif
#endif

/* trainer/dist/comm_nccl_none.c: stands in for comm_nccl.cu where nvcc or nccl.h was not found, and in
 * prefcap-dpo unless it is built with `make NCCL=1` (dist.mk): the NCCL communicator says it is not there. */
#include "dist/comm.h"
#include "util/err.h"

int pc_comm_nccl_available(void) { return 0; }

pc_comm *pc_comm_nccl_new(pc_comm *bootstrap, char *err, size_t errlen) {
  (void)bootstrap;
  pc_seterr(err, errlen, "this prefcap-dpo was built without NCCL (rebuild with `make NCCL=1`, which needs nvcc and "
                         "nccl.h: docs/training.md)");
  return NULL;
}

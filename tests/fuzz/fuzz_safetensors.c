/* tests/fuzz/fuzz_safetensors.c: the safetensors reader (trainer/model/safetensors.c): header length,
 * JSON header, offsets, shapes, dtypes. Every tensor of a file that opens is read in full (converted to
 * float32 where the dtype allows), so a range the checks let through outside the mapping is found. */
#include "fuzz.h"
#include "model/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file(0, data, size);
  pc_ckpt *f = NULL;   /* a one-file checkpoint: pc_st_open's checks, and its tensors listed */
  char err[512] = "";
  if (pc_ckpt_open_file(path, &f, err, sizeof err) != 0) {
    FUZZ_CHECK(f == NULL && err[0] != 0);
    return 0;
  }
  volatile unsigned char sink = 0;
  for (int i = 0; i < pc_ckpt_count(f); i++) {
    const pc_st_tensor *t = pc_ckpt_at(f, i);
    FUZZ_CHECK(t && t->name && pc_ckpt_find(f, t->name) != NULL);
    FUZZ_CHECK(t->nbytes == (size_t)t->numel * pc_dtype_size(t->dtype));
    for (size_t k = 0; k < t->nbytes; k++) sink ^= ((const unsigned char *)t->data)[k];
    if ((t->dtype == PC_DT_F32 || t->dtype == PC_DT_F16 || t->dtype == PC_DT_BF16) && t->numel <= (1 << 20)) {
      float *buf = malloc(((size_t)t->numel + 1) * sizeof *buf);
      if (!buf) abort();
      (void)pc_tensor_to_f32(t, buf, err, sizeof err);
      free(buf);
    }
  }
  (void)sink;
  pc_ckpt_close(f);
  return 0;
}

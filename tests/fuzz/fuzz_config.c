/* tests/fuzz/fuzz_config.c: config.json (trainer/model/config.c). A config that loads must describe
 * shapes the model code can divide by and allocate from: the invariants below are what model.c relies
 * on, and a value that broke one was a finding (issue 13: zero kv heads, NaN-making eps and theta). */
#include "fuzz.h"
#include "model/config.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file(0, data, size);
  pc_config c;
  char err[512] = "";
  if (pc_config_load(path, &c, err, sizeof err) != 0) {
    FUZZ_CHECK(err[0] != 0);
    return 0;
  }
  FUZZ_CHECK(c.vocab > 0 && c.hidden > 0 && c.layers > 0 && c.heads > 0 && c.kv_heads > 0 && c.head_dim > 0);
  FUZZ_CHECK(c.intermediate > 0 && c.max_pos > 0 && c.heads % c.kv_heads == 0);
  FUZZ_CHECK(isfinite(c.norm_eps) && c.norm_eps > 0);
  if (c.rms_norm) FUZZ_CHECK(isfinite(c.rope_theta) && c.rope_theta > 0 && c.head_dim % 2 == 0);
  if (c.rope_llama3)
    FUZZ_CHECK(c.rope_factor > 0 && c.rope_low_freq_factor > 0 && c.rope_high_freq_factor > c.rope_low_freq_factor &&
               isfinite(c.rope_high_freq_factor) && c.rope_original_max_pos > 0);
  return 0;
}

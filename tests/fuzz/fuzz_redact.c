/* tests/fuzz/fuzz_redact.c: capture-time redaction (sdk/redact.c) on any bytes. Beyond memory safety,
 * the documented contract: the output is NUL-terminated at out_len, and valid UTF-8 in gives valid
 * UTF-8 out (only ASCII spans are replaced). */
#include "fuzz.h"
#include "internal.h"
#include "redact.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *out = NULL;
  size_t out_len = 0;
  int rc = prefcap__redact((const char *)data, size, &out, &out_len);
  FUZZ_CHECK(rc == 0 && out != NULL);
  FUZZ_CHECK(out[out_len] == 0);
  /* NUL bytes are not valid event text (prefcap__utf8_valid refuses them), so only check NUL-free input */
  if (!memchr(data, 0, size) && prefcap__utf8_valid((const char *)data, size))
    FUZZ_CHECK(prefcap__utf8_valid(out, out_len));
  free(out);
  return 0;
}

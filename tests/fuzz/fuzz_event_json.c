/* tests/fuzz/fuzz_event_json.c: the SDK's event parser (sdk/event_json.c, then sdk/event.c's checks),
 * the door every JSON event comes in by: `prefcap ingest` lines, prefcap_log_json, and the events a
 * fleet exports for central ingest (the same JSON lines: there is no other events export format).
 * An accepted event must hash (the content hash every stored event gets); a refused one must say why. */
#include "fuzz.h"
#include "internal.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  prefcap__event *ev = NULL;
  char err[512] = "";
  /* a small text limit as well as the default, so that the length checks are reached */
  size_t max_text = size && data[0] & 1 ? 64 : (size_t)1 << 20;
  int rc = prefcap__event_from_json((const char *)data, size, max_text, &ev, err, sizeof err);
  if (rc == 0) {
    FUZZ_CHECK(ev != NULL);
    char h[65];
    prefcap__event_hash(ev, h);
    FUZZ_CHECK(strlen(h) == 64);
    free(ev);
  } else {
    FUZZ_CHECK(ev == NULL && err[0] != 0);
  }
  return 0;
}

/* tests/sdk/crashchild.c: the process test_crash kills. Logs generations "PREFIX-i" in a loop into the
 * store, and tells its parent on stdout what it was told: "A i" when the log call for i returned OK
 * (acknowledged), and in async mode "D i" after a flush made everything up to i durable, with the
 * queue depth it saw ("Q n"). Never exits by itself before its limit: it is meant to die by SIGKILL.
 * usage: crashchild DB sync|async PREFIX [LIMIT] */
#include "prefcap.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: crashchild DB sync|async PREFIX [LIMIT]\n"); return 2; }
  int async = !strcmp(argv[2], "async");
  int limit = argc > 4 ? atoi(argv[4]) : 1000000;
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, argv[1]);
  prefcap_options_set_durability(o, async ? PREFCAP_ASYNC : PREFCAP_SYNC);
  prefcap_options_set_queue_capacity(o, 256);
  prefcap_t *pc;
  int rc = prefcap_open(o, &pc);
  prefcap_options_free(o);
  if (rc) { fprintf(stderr, "crashchild: open: %s\n", prefcap_strerror(rc)); return 1; }
  setvbuf(stdout, NULL, _IONBF, 0);   /* every line reaches the pipe before the next call */
  char id[96], text[256];
  for (int i = 0; i < limit; i++) {
    snprintf(id, sizeof id, "%s-%d", argv[3], i);
    snprintf(text, sizeof text, "completion %d: some text so that pages fill and checkpoints happen", i);
    prefcap_generation_t g = {.size = sizeof g, .id = id, .prompt = "crash test", .completion = text, .user_id = "u"};
    if (prefcap_log_generation(pc, &g, NULL) == 0) printf("A %d\n", i);
    if (i % 5 == 0) {
      prefcap_feedback_t f = {.size = sizeof f, .kind = PREFCAP_FB_COPY, .id = id};
      prefcap_log_feedback(pc, &f);
    }
    if (async && i % 100 == 99) {
      prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
      prefcap_get_counters(pc, &k);
      printf("Q %llu\n", (unsigned long long)k.queued);
      if (prefcap_flush(pc, -1) == 0) printf("D %d\n", i);
    }
  }
  prefcap_close(pc, -1);
  return 0;
}

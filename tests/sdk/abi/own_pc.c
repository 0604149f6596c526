/* tests/sdk/abi/own_pc.c: an application with functions of its own under the names common/ uses
 * (pc_read_file, pc_json_quote, pc_progress_new), linked statically against libprefcap.a. It must
 * link (no duplicate definitions), its calls must reach its own functions, and the library's must
 * reach the library's: a generation logged with quotes and a newline comes out of an events export
 * (the library's JSON escaper) intact; the test reads OUT back with Python. */
#include <prefcap.h>
#include <stdio.h>
#include <string.h>

int pc_read_file(void) { return 41; }
int pc_json_quote(void) { return 1; }
int pc_progress_new(void) { return 0; }

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: own_pc STORE OUT\n"); return 2; }
  if (pc_read_file() + pc_json_quote() + pc_progress_new() != 42) { fprintf(stderr, "own_pc: not my pc_* functions\n"); return 1; }
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, argv[1]);
  prefcap_options_set_durability(o, PREFCAP_SYNC);
  prefcap_t *pc;
  int rc = prefcap_open(o, &pc);
  prefcap_options_free(o);
  if (rc) { fprintf(stderr, "own_pc: open: %s\n", prefcap_errmsg(NULL)); return 1; }
  prefcap_generation_t g = PREFCAP_GENERATION_INIT;
  g.id = "g1";
  g.prompt = "Say \"hi\"\n\tin French.";
  g.completion = "Salut";
  rc = prefcap_log_generation(pc, &g, NULL);
  if (rc) fprintf(stderr, "own_pc: log: %s\n", prefcap_errmsg(pc));
  prefcap_export_options_t *e = prefcap_export_options_new();
  prefcap_export_options_set_format(e, PREFCAP_FORMAT_EVENTS);
  prefcap_export_options_set_out(e, argv[2]);
  if (!rc && (rc = prefcap_export(pc, e, NULL))) fprintf(stderr, "own_pc: export: %s\n", prefcap_errmsg(pc));
  prefcap_export_options_free(e);
  rc |= prefcap_close(pc, -1);
  return rc ? 1 : 0;
}

/* trainer/train/options.h: the options of a training run in one table: name, type, where they go in
 * pc_train_opts, whether run.json records them (and --from-manifest / --resume read them back), and
 * their help text. The command line (cli/cmd_train.c), the manifest and --help all read this table.
 * Bad values are reported on stderr with the option's name. */
#ifndef PC_OPTIONS_H
#define PC_OPTIONS_H
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>

#include "train/trainer.h"

typedef enum { PC_OPT_STR, PC_OPT_INT, PC_OPT_DBL, PC_OPT_FLAG, PC_OPT_LL } pc_opt_type;
typedef struct {
  const char *name;
  pc_opt_type t;
  size_t off, size;
  int manifest;  /* recorded in run.json's options (and read back by --from-manifest / --resume) */
  const char *help;
} pc_train_optdef;

void pc_train_opts_defaults(pc_train_opts *o);
/* The option named name (without "--"), or NULL. */
const pc_train_optdef *pc_train_opts_find(const char *name);
/* Parses v into the option d of o: 0, or -1 (reported). */
int pc_train_opts_set(pc_train_opts *o, const pc_train_optdef *d, const char *v);
/* Fills in the defaults that depend on other options and checks the combination: 0, or -1 (reported). */
int pc_train_opts_check(pc_train_opts *o);
/* The manifest's options as JSON (run.json "options"), and back (-1, reported, naming file). */
cJSON *pc_train_opts_json(const pc_train_opts *o);
int pc_train_opts_from_json(pc_train_opts *o, const cJSON *j, const char *file);
/* One help line per option. */
void pc_train_opts_usage(FILE *f);

#endif

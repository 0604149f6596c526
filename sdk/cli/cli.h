/* sdk/cli/cli.h: what the `prefcap` command's files share: the store they open by default, opening it
 * with a clear message, and each command's entry point (argv[0] is the command's name). */
#ifndef PREFCAP_CLI_H
#define PREFCAP_CLI_H
#include "prefcap.h"

/* $PREFCAP_DB, else "prefcap.db". */
const char *prefcap__cli_default_db(void);
/* Opens db in mode with opts (NULL: defaults; not freed here); prints why on failure. 0 or 1. */
int prefcap__cli_open(const char *db, prefcap_durability_t mode, prefcap_options_t *opts, prefcap_t **pc);

int prefcap__cli_upload(int argc, char **argv);   /* sdk/cli/cli_upload.c */
int prefcap__cli_forget(int argc, char **argv);   /* sdk/cli/cli_forget.c */
int prefcap__cli_lineage(int argc, char **argv);  /* sdk/cli/cli_forget.c */
int prefcap__cli_prune(int argc, char **argv);    /* sdk/cli/cli_forget.c */
int prefcap__cli_compare(int argc, char **argv);  /* sdk/cli/cli_compare.c */
int prefcap__cli_report(int argc, char **argv);   /* sdk/cli/cli_compare.c */
#endif

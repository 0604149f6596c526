/* sdk/cli/cli.h: what the `prefcap` command's files share: the store they open by default, opening it
 * with a clear message, printing text that came from outside safely, and each command's entry point
 * (argv[0] is the command's name). The command uses libprefcap through include/prefcap.h only (as
 * curl's tool uses only libcurl): it is compiled without sdk/ on the include path, and
 * tests/sdk/test_cli_hostile.sh checks that it links to no internal symbol. */
#ifndef PREFCAP_CLI_H
#define PREFCAP_CLI_H
#include "prefcap.h"

#include <stdbool.h>
#include <stdio.h>

/* $PREFCAP_DB, else "prefcap.db". */
const char *cli_default_db(void);

/* Opens db in mode with opts (NULL: defaults; not freed here); prints why on failure (the library's
 * own reason, prefcap_errmsg(NULL)). With warnings, the library's warnings and errors are printed
 * while the handle is open (ingest). Returns 0 or 1 (the exit code). */
int cli_open(const char *db, prefcap_durability_t mode, prefcap_options_t *opts, bool warnings, prefcap_t **pc);
/* Like cli_open, for commands that read or change an existing store: a missing file is an
 * error ("no store at PATH"), never a new empty store. */
int cli_open_existing(const char *cmd, const char *db, prefcap_t **pc);
/* The last error the library logged since open (its reason for a failing write), "" if none. Copied
 * into buf. */
void cli_last_logged(char *buf, size_t len);
/* Turns the printing of the library's warnings (cli_open's warnings) on or off. */
void cli_log_warnings(bool on);

/* Text from outside (events, stored names, a server's answer, library messages quoting them) made
 * safe for a terminal or a log: control bytes (C0, DEL, C1) and invalid UTF-8 shown as \xNN escapes
 * (\n, \r and \t as such), so no escape sequence, bell or forged line reaches the reader. S() also
 * redacts the userinfo (user name and password) of any URL in it: "https://user:PASSWORD@host/"
 * becomes "https://(3 stars)@host/" ("***"). Every URL the CLI prints goes through it. The result
 * lives in a small ring of buffers: valid until eight more calls; NULL prints as "-". For the main
 * thread only. */
const char *S(const char *text);
/* "%s: %s" of a library failure: the code's name and the handle's detail, made safe. */
void cli_fail(const char *cmd, prefcap_t *pc, int code);
int cli_usage_error(const char *cmd, const char *msg);

int cli_upload(int argc, char **argv);   /* sdk/cli/cli_upload.c */
int cli_forget(int argc, char **argv);   /* sdk/cli/cli_forget.c */
int cli_lineage(int argc, char **argv);  /* sdk/cli/cli_forget.c */
int cli_prune(int argc, char **argv);    /* sdk/cli/cli_forget.c */
int cli_compare(int argc, char **argv);  /* sdk/cli/cli_compare.c */
int cli_report(int argc, char **argv);   /* sdk/cli/cli_compare.c */
#endif

/* trainer/cli/cli.h: the `prefcap-dpo` subcommands, each a main() of its own: argv[0] is the command
 * name, the options follow. They print and return the process exit status (0 ok, 1 failure, 2 usage).
 *
 * The cli/ folder: main.c (dispatch), one cmd_*.c per command. The commands only parse their
 * arguments and call the parts below them: text/ (tokenizer, data), model/ (the one model), backend/
 * (by name, through the registry), train/ (the training run), util/. docs/architecture.md has the map. */
#ifndef PC_CLI_H
#define PC_CLI_H

int pc_cmd_score(int argc, char **argv);     /* trainer/cli/cmd_score.c */
int pc_cmd_init(int argc, char **argv);      /* trainer/cli/cmd_init.c */
int pc_cmd_tokenize(int argc, char **argv);  /* trainer/cli/cmd_tokenize.c */
int pc_cmd_train(int argc, char **argv);     /* trainer/cli/cmd_train.c */
int pc_cmd_render(int argc, char **argv);    /* trainer/cli/cmd_render.c */

#endif

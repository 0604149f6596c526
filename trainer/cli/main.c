/* trainer/cli/main.c: `prefcap-dpo`, the trainer's command line: dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct { const char *name; int (*fn)(int, char **); const char *what; } CMDS[] = {
  {"train", pc_cmd_train, "DPO fine-tuning (LoRA or full) on preference pairs"},
  {"score", pc_cmd_score, "log-probs of chosen and rejected completions under a model"},
  {"init", pc_cmd_init, "write a small randomly initialised model in Hugging Face layout"},
  {"tokenize", pc_cmd_tokenize, "show the token ids the trainer sees (or decode them)"},
  {"render", pc_cmd_render, "render conversations with the model's chat template, as transformers does"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: prefcap-dpo <command> [options]   (prefcap-dpo <command> --help for its options)\n\n"
             "commands:\n");
  for (size_t i = 0; i < sizeof CMDS / sizeof *CMDS; i++) fprintf(f, "  %-10s %s\n", CMDS[i].name, CMDS[i].what);
  fprintf(f, "\n  --version  print the version\n");
}

int main(int argc, char **argv) {
  if (argc < 2) { usage(stderr); return 2; }
  const char *c = argv[1];
  if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) { usage(stdout); return 0; }
  if (!strcmp(c, "--version") || !strcmp(c, "version")) { printf("prefcap-dpo %s\n", PREFCAP_VERSION); return 0; }
  for (size_t i = 0; i < sizeof CMDS / sizeof *CMDS; i++)
    if (!strcmp(c, CMDS[i].name)) return CMDS[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "prefcap-dpo: unknown command '%s'\n", c);
  usage(stderr);
  return 2;
}

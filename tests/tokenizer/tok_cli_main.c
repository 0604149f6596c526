/* tests/tokenizer/tok_cli_main.c: stands in for the `prefcap-dpo` dispatcher so that the tokenizer
 * parity test can run `tokenize` as one process over a whole corpus: `tok_cli tokenize --model DIR ...`. */
int pc_cmd_tokenize(int argc, char **argv);

int main(int argc, char **argv) {
  return pc_cmd_tokenize(argc - 1, argv + 1);
}

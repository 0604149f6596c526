/* tests/data/render_cli_main.c: stands in for the `prefcap-dpo` dispatcher so that the template tests
 * can run `render` without linking the whole trainer: `render_cli render --model DIR ...`. */
int pc_cmd_render(int argc, char **argv);

int main(int argc, char **argv) {
  return pc_cmd_render(argc - 1, argv + 1);
}

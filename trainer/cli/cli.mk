# trainer/cli/cli.mk: `prefcap-dpo`, the trainer's command line (main.c dispatches to the cmd_*.c
# subcommands), linked from every part's objects, and the tokenizer's stand-alone runner and benchmark.
#
#   build/tests/tok_cli   `tokenize` without the rest of prefcap-dpo, for tests/tokenizer/parity.sh
#                         and bench/tokenizer_bench.sh
#   build/tests/render_cli  `render` alone, for tests/data/jinja_parity.sh

PC_CLI_OBJS := $(BUILD)/trainer/cli/main.o $(BUILD)/trainer/cli/cmd_score.o $(BUILD)/trainer/cli/cmd_init.o \
               $(BUILD)/trainer/cli/cmd_train.o $(BUILD)/trainer/cli/cmd_tokenize.o $(BUILD)/trainer/cli/cmd_render.o
-include $(PC_CLI_OBJS:.o=.d)


$(BUILD)/prefcap-dpo: $(PC_CLI_OBJS) $(TRAINER_OBJS) $(PC_UTIL_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(PC_CLI_OBJS) $(TRAINER_OBJS) -o $@ $(LDFLAGS_ALL) $(TRAINER_LIBS) -fopenmp

$(BUILD)/tests/tok_cli: tests/tokenizer/tok_cli_main.c $(BUILD)/trainer/cli/cmd_tokenize.o $(PC_TOK_OBJS) $(PC_UTIL_OBJS)
	@mkdir -p $(@D)
	$(CC) $(PC_CFLAGS) $< $(BUILD)/trainer/cli/cmd_tokenize.o $(PC_TOK_OBJS) $(PC_UTIL_OBJS) -o $@ $(LDFLAGS_ALL) $(PC_TOK_LIBS) $(PC_UTIL_LIBS)

$(BUILD)/tests/render_cli: tests/data/render_cli_main.c $(BUILD)/trainer/cli/cmd_render.o $(BUILD)/trainer/text/jinja.o $(PC_UTIL_OBJS)
	@mkdir -p $(@D)
	$(CC) $(PC_CFLAGS) $< $(BUILD)/trainer/cli/cmd_render.o $(BUILD)/trainer/text/jinja.o $(PC_UTIL_OBJS) -o $@ $(LDFLAGS_ALL) -lcjson $(PC_UTIL_LIBS)

$(BUILD)/bench/tokenizer_bench: bench/tokenizer_bench.c $(PC_TOK_OBJS)
	@mkdir -p $(@D)
	$(CC) $(PC_CFLAGS) $< $(PC_TOK_OBJS) $(PC_UTIL_OBJS) -o $@ $(LDFLAGS_ALL) $(PC_TOK_LIBS) $(PC_UTIL_LIBS)

ALL_TARGETS += $(BUILD)/prefcap-dpo
TEST_BINS   += $(BUILD)/prefcap-dpo $(BUILD)/tests/tok_cli $(BUILD)/tests/render_cli
BENCHES     += $(BUILD)/bench/tokenizer_bench $(BUILD)/tests/tok_cli
BENCH_CMDS  += bench/tokenizer_bench.sh

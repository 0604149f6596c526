# trainer/tokenizer.mk: the Hugging Face tokenizer (trainer/tokenizer.c), `prefcap-dpo tokenize`
# (trainer/cmd_tokenize.c), their tests (tests/tokenizer/) and the tokenizer benchmark (bench/).
# Encoding needs PCRE2 (the pre-tokenizer regexes) and ICU (NFC, Unicode classes).

TOK_OBJS     := $(BUILD)/trainer/tokenizer.o $(BUILD)/trainer/cmd_tokenize.o
TOK_LIBS     := -lpcre2-8 -licuuc -lcjson
TRAINER_OBJS += $(TOK_OBJS)
TRAINER_LIBS += -lpcre2-8 -licuuc

$(BUILD)/trainer/tokenizer.o: trainer/tokenizer.c trainer/tokenizer.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/trainer/cmd_tokenize.o: trainer/cmd_tokenize.c trainer/tokenizer.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# tok_cli: `tokenize` without the rest of prefcap-dpo, for the parity test and the benchmark
$(BUILD)/tests/tok_cli: tests/tokenizer/tok_cli_main.c $(TOK_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $< $(TOK_OBJS) -o $@ $(LDFLAGS_ALL) $(TOK_LIBS)

$(BUILD)/tests/test_tokenizer: tests/tokenizer/test_tokenizer.c $(TOK_OBJS) tests/test.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Itrainer -Itests $< $(TOK_OBJS) -o $@ $(LDFLAGS_ALL) $(TOK_LIBS)

$(BUILD)/bench/tokenizer_bench: bench/tokenizer_bench.c $(TOK_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Itrainer $< $(TOK_OBJS) -o $@ $(LDFLAGS_ALL) $(TOK_LIBS)

TEST_BINS  += $(BUILD)/tests/tok_cli $(BUILD)/tests/test_tokenizer
TESTS      += $(BUILD)/tests/test_tokenizer tests/tokenizer/parity.sh
BENCHES    += $(BUILD)/bench/tokenizer_bench $(BUILD)/tests/tok_cli
BENCH_CMDS += bench/tokenizer_bench.sh

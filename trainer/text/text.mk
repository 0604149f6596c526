# trainer/text/text.mk: text to token ids: the Hugging Face tokenizer (tokenizer.c; PCRE2 for the
# pre-tokenizer regexes, ICU for NFC and Unicode classes), the built-in chat formats (chat.c) and the
# preference-data reader (data.c), the Jinja interpreter for chat templates (jinja.c), with their tests:
#
#   build/tests/test_tokenizer   the tokenizer's unit tests (tests/tokenizer/parity.sh compares it with
#                                tokenizers.js through build/tests/tok_cli, built by trainer/cli/cli.mk)
#   build/tests/test_chat        chat.c against @huggingface/jinja on the real templates (needs node)
#   build/tests/test_data        data.c against TRL's steps on tokenizers.js (needs node)
#   build/tests/test_jinja       the Jinja interpreter's refusals and limits (tests/data/jinja_parity.sh
#                                compares its renderings with jinja2 and @huggingface/jinja)

PC_TOK_OBJS  := $(BUILD)/trainer/text/tokenizer.o
PC_DATA_OBJS := $(BUILD)/trainer/text/data.o $(BUILD)/trainer/text/chat.o $(BUILD)/trainer/text/jinja.o
PC_TOK_LIBS  := -lpcre2-8 -licuuc -lcjson
TRAINER_OBJS += $(PC_TOK_OBJS) $(PC_DATA_OBJS)
TRAINER_LIBS += $(PC_TOK_LIBS) -lm
-include $(PC_TOK_OBJS:.o=.d) $(PC_DATA_OBJS:.o=.d)

$(BUILD)/tests/test_tokenizer: tests/tokenizer/test_tokenizer.c $(PC_TOK_OBJS) tests/test.h
	@mkdir -p $(@D)
	$(CC) $(PC_CFLAGS) -Itests $< $(PC_TOK_OBJS) $(PC_UTIL_OBJS) -o $@ $(LDFLAGS_ALL) $(PC_TOK_LIBS) $(PC_UTIL_LIBS)

$(BUILD)/tests/test_chat: tests/data/test_chat.c $(BUILD)/trainer/text/chat.o $(BUILD)/trainer/text/jinja.o tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -Itests -o $@ $< $(BUILD)/trainer/text/chat.o $(BUILD)/trainer/text/jinja.o $(LDFLAGS_ALL) -lcjson -lm

$(BUILD)/tests/test_data: tests/data/test_data.c $(PC_DATA_OBJS) $(PC_TOK_OBJS) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -Itests -o $@ $< $(PC_DATA_OBJS) $(PC_TOK_OBJS) $(PC_UTIL_OBJS) $(LDFLAGS_ALL) $(PC_TOK_LIBS) $(PC_UTIL_LIBS) -lm

$(BUILD)/tests/test_jinja: tests/data/test_jinja.c $(BUILD)/trainer/text/jinja.o tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -Itests -o $@ $< $(BUILD)/trainer/text/jinja.o $(LDFLAGS_ALL) -lcjson -lm

TEST_BINS += $(BUILD)/tests/test_tokenizer $(BUILD)/tests/test_chat $(BUILD)/tests/test_data $(BUILD)/tests/test_jinja
TESTS     += $(BUILD)/tests/test_tokenizer tests/tokenizer/parity.sh $(BUILD)/tests/test_chat $(BUILD)/tests/test_data \
             $(BUILD)/tests/test_jinja tests/data/jinja_parity.sh

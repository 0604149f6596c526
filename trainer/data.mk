# trainer/data.mk: the preference-data reader (trainer/data.c) and the built-in chat formats
# (trainer/chat.c), and their tests in tests/data/. Included before tokenizer.mk and trainer.mk: it
# appends to TRAINER_OBJS / TRAINER_LIBS, which trainer.mk links into prefcap-dpo.
#
#   build/tests/test_chat   chat.c against @huggingface/jinja on the real templates (needs node)
#   build/tests/test_data   data.c against TRL's steps on tokenizers.js (needs node and the tokenizer)

PC_DATA_OBJS := $(BUILD)/trainer/data.o $(BUILD)/trainer/chat.o
TRAINER_OBJS += $(PC_DATA_OBJS)
TRAINER_LIBS += -lcjson -lm

$(PC_DATA_OBJS): $(BUILD)/trainer/%.o: trainer/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

-include $(PC_DATA_OBJS:.o=.d)

$(BUILD)/tests/test_chat: tests/data/test_chat.c $(BUILD)/trainer/chat.o tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itrainer -Itests -o $@ $< $(BUILD)/trainer/chat.o $(LDFLAGS_ALL) -lcjson

TEST_BINS += $(BUILD)/tests/test_chat
TESTS     += $(BUILD)/tests/test_chat

# The token-level tests need the tokenizer, which trainer/tokenizer.mk builds.
ifneq ($(wildcard trainer/tokenizer.mk),)
$(BUILD)/tests/test_data: tests/data/test_data.c $(PC_DATA_OBJS) $(BUILD)/trainer/tokenizer.o tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itrainer -Itests -o $@ $< $(PC_DATA_OBJS) $(BUILD)/trainer/tokenizer.o \
	  $(LDFLAGS_ALL) $(sort $(TRAINER_LIBS)) -lcjson -lm

TEST_BINS += $(BUILD)/tests/test_data
TESTS     += $(BUILD)/tests/test_data
endif

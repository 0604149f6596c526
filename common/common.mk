# common/common.mk: the small internal library both CLIs (prefcap, prefcap-dpo) and libprefcap link: one
# JSON string escaper (jsonstr.c), one progress display (progress.c), one read-whole-file (readfile.c).
# Built with hidden visibility: inside libprefcap.so these are not part of its ABI. Included by the top
# Makefile before sdk/sdk.mk and the trainer, which add $(COMMON_OBJS) / $(COMMON_A) to their links.

COMMON_SRCS := $(sort $(wildcard common/*.c))
COMMON_OBJS := $(COMMON_SRCS:%.c=$(BUILD)/%.o)
COMMON_A    := $(BUILD)/libpccommon.a

$(BUILD)/common/%.o: common/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fvisibility=hidden -MMD -MP -c $< -o $@

$(COMMON_A): $(COMMON_OBJS)
	rm -f $@ && ar rcs $@ $^

-include $(COMMON_OBJS:.o=.d)

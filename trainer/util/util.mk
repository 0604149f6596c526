# trainer/util/util.mk: helpers every part of the trainer uses: the error-message helper (err.h),
# splitmix64, copy, mkdir -p, parse an integer, SHA-256 through libcrypto (util.c). Read-whole-file and the
# progress display of score and train are common/readfile.c and common/progress.c, in the library both CLIs share
# (common/common.mk).

# PC_UTIL_OBJS are objects and the common library (link them before the libraries, after every object
# that uses them); PC_UTIL_LIBS the system libraries they need.
PC_UTIL_OBJS := $(BUILD)/trainer/util/util.o $(COMMON_A)
TRAINER_LIBS += $(PC_UTIL_OBJS) -lcrypto -lm
PC_UTIL_LIBS := -lcrypto -lm
-include $(BUILD)/trainer/util/util.d

# pc_sha256_file against sha256sum, and its memory of files already hashed (tests/train/test_util.c)
$(BUILD)/tests/test_util: tests/train/test_util.c $(PC_UTIL_OBJS) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itrainer -Itests -o $@ $< $(PC_UTIL_OBJS) $(LDFLAGS_ALL) $(PC_UTIL_LIBS)

TEST_BINS += $(BUILD)/tests/test_util
TESTS     += $(BUILD)/tests/test_util

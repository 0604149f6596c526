# trainer/util/util.mk: helpers every part of the trainer uses: the error-message helper (err.h),
# splitmix64, copy, mkdir -p, read a file, parse an integer, SHA-256 through libcrypto (util.c), and the
# progress display of score and train (progress.c).

PC_UTIL_OBJS := $(BUILD)/trainer/util/util.o $(BUILD)/trainer/util/progress.o
TRAINER_OBJS += $(PC_UTIL_OBJS)
TRAINER_LIBS += -lcrypto -lm
PC_UTIL_LIBS := -lcrypto -lm
-include $(PC_UTIL_OBJS:.o=.d)

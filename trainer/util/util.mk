# trainer/util/util.mk: helpers every part of the trainer uses: the error-message helper (err.h),
# splitmix64, copy and mkdir -p (util.c). The progress display of score and train is common/progress.c,
# in the library both CLIs share (common/common.mk).

PC_UTIL_OBJS := $(BUILD)/trainer/util/util.o
TRAINER_OBJS += $(PC_UTIL_OBJS) $(COMMON_A)
TRAINER_LIBS += -lm
-include $(PC_UTIL_OBJS:.o=.d)

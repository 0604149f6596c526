# trainer/util/util.mk: helpers every part of the trainer uses: the error-message helper (err.h),
# splitmix64, copy and mkdir -p (util.c), and the progress display of score and train (progress.c).

PC_UTIL_OBJS := $(BUILD)/trainer/util/util.o $(BUILD)/trainer/util/progress.o
TRAINER_OBJS += $(PC_UTIL_OBJS)
TRAINER_LIBS += -lm
-include $(PC_UTIL_OBJS:.o=.d)

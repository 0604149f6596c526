# trainer/report.mk: the progress display (trainer/progress.c, used by score and train) and the HTML
# training report (trainer/report.c), and their test. Included before trainer.mk: it appends to
# TRAINER_OBJS / TRAINER_LIBS, which trainer.mk links into prefcap-dpo.
#
#   build/tests/report_driver    calls pc_report_write and pc_progress_* for tests/train/test_report.py

PC_REPORT_OBJS := $(BUILD)/trainer/progress.o $(BUILD)/trainer/report.o
TRAINER_OBJS += $(PC_REPORT_OBJS)
TRAINER_LIBS += -lcjson -lm

$(PC_REPORT_OBJS): $(BUILD)/trainer/%.o: trainer/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

-include $(PC_REPORT_OBJS:.o=.d)

$(BUILD)/tests/report_driver: tests/train/report_driver.c $(PC_REPORT_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itrainer -o $@ $< $(PC_REPORT_OBJS) $(LDFLAGS_ALL) -lcjson -lm

TEST_BINS += $(BUILD)/tests/report_driver
TESTS     += tests/train/test_report.py

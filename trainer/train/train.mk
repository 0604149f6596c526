# trainer/train/train.mk: training beyond the model: the options (options.c), the losses (loss.c; KTO's
# in kto.c), the optimizer and schedules (optim.c), reference log-probs (reference.c) and their cache
# (refcache.c), checkpoints (checkpoint.c), the run manifest (manifest.c), the run itself (trainer.c),
# its memory plan (memplan.c) and the HTML report (report.c); and the training tests (tests/train:
# gradients, trajectories, adapters, resume against float64 PyTorch; test_kto.py: KTO, mixtures and
# signal weights; test_refcache.py: the reference cache).
#
#   build/tests/report_driver    calls pc_report_write and pc_progress_* for tests/train/test_report.py

PC_TRAIN_OBJS := $(addprefix $(BUILD)/trainer/train/,report.o reference.o refcache.o loss.o kto.o optim.o \
                   checkpoint.o manifest.o options.o memplan.o trainer.o)
TRAINER_OBJS  += $(PC_TRAIN_OBJS)
TRAINER_LIBS  += -lcjson -lz -lm
-include $(PC_TRAIN_OBJS:.o=.d)

# run.json records how the trainer was built
$(BUILD)/trainer/train/trainer.o: PC_CFLAGS += -DPC_BUILD_FLAGS='"$(OPT) $(SAN)"'

$(BUILD)/tests/report_driver: tests/train/report_driver.c $(BUILD)/trainer/train/report.o $(PC_UTIL_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -o $@ $< $(BUILD)/trainer/train/report.o $(PC_UTIL_OBJS) $(LDFLAGS_ALL) -lcjson $(PC_UTIL_LIBS)

TEST_BINS += $(BUILD)/tests/report_driver
TESTS     += tests/train/test_report.py tests/train/test_train.py tests/train/test_kto.py tests/train/test_refcache.py

# The training benchmark (bench/bench_train.py: one DPO step against PyTorch) and the sgemm yardstick
# it measures the machine with.
$(BUILD)/bench/sgemm_peak: bench/sgemm_peak.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LDFLAGS_ALL) -lopenblas

BENCHES    += $(BUILD)/bench/sgemm_peak
BENCH_CMDS += bench/bench_train.py

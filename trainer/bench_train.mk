# trainer/bench_train.mk: the training benchmark (bench/bench_train.py: one DPO step against PyTorch)
# and the sgemm yardstick it measures the machine with.

$(BUILD)/bench/sgemm_peak: bench/sgemm_peak.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LDFLAGS_ALL) -lopenblas

BENCHES    += $(BUILD)/bench/sgemm_peak
BENCH_CMDS += bench/bench_train.py

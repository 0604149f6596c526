# trainer/trainer.mk: the model side of prefcap-dpo: checkpoint loading, the CPU backend, the model,
# scoring and init, the `prefcap-dpo` CLI, their tests and the scoring benchmark.
# Other fragments (tokenizer.mk, data.mk; included before this one) append to TRAINER_OBJS/TRAINER_LIBS.

PC_MODEL_SRCS := trainer/safetensors.c trainer/config.c trainer/backend_cpu.c trainer/model.c trainer/train_model.c \
                 trainer/util.c
PC_MODEL_OBJS := $(PC_MODEL_SRCS:%.c=$(BUILD)/%.o)
PC_CLI_SRCS   := trainer/main.c trainer/cmd_score.c trainer/cmd_init.c trainer/cmd_train.c
PC_CLI_OBJS   := $(PC_CLI_SRCS:%.c=$(BUILD)/%.o)
PC_MODEL_LIBS := -lcjson -lopenblas -lm -fopenmp

$(PC_MODEL_OBJS) $(PC_CLI_OBJS): $(BUILD)/trainer/%.o: trainer/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fopenmp -MMD -MP -c $< -o $@

-include $(PC_MODEL_OBJS:.o=.d) $(PC_CLI_OBJS:.o=.d)

# run.json records how the trainer was built
$(BUILD)/trainer/cmd_train.o: CFLAGS_ALL += -DPC_BUILD_FLAGS='"$(OPT) $(SAN)"'

# ---- test driver: scores token ids directly (works before the tokenizer and data reader exist)
$(BUILD)/tests/model_logps: tests/model/logps_driver.c $(PC_MODEL_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fopenmp $< $(PC_MODEL_OBJS) -o $@ $(LDFLAGS_ALL) $(PC_MODEL_LIBS)

$(BUILD)/tests/test_safetensors: tests/model/test_safetensors.c $(BUILD)/trainer/safetensors.o tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/trainer/safetensors.o -o $@ $(LDFLAGS_ALL) -lcjson -lm

TEST_BINS += $(BUILD)/tests/model_logps $(BUILD)/tests/test_safetensors
TESTS     += $(BUILD)/tests/test_safetensors tests/model/test_model.py tests/train/test_train.py

# ---- prefcap-dpo: needs the tokenizer (trainer/tokenizer.mk) and the data reader (trainer/data.mk)
ifneq ($(wildcard trainer/tokenizer.mk),)
$(BUILD)/prefcap-dpo: $(PC_CLI_OBJS) $(PC_MODEL_OBJS) $(TRAINER_OBJS) $(BUILD)/sdk/sha256.o
	@mkdir -p $(dir $@)
	$(CC) $(PC_CLI_OBJS) $(PC_MODEL_OBJS) $(TRAINER_OBJS) $(BUILD)/sdk/sha256.o -o $@ $(LDFLAGS_ALL) $(TRAINER_LIBS) -lcjson -lopenblas -lpcre2-8 -lm -fopenmp

ALL_TARGETS += $(BUILD)/prefcap-dpo
TEST_BINS   += $(BUILD)/prefcap-dpo
endif

# ---- benchmark: scoring throughput against PyTorch on a GPT-2-small-shaped model
BENCHES    += $(BUILD)/tests/model_logps
BENCH_CMDS += bench/bench_score.py

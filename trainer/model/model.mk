# trainer/model/model.mk: checkpoints and the model: config.json (config.c), safetensors (safetensors.c),
# the tensor tables of each family (families.c) and the one model, frozen or trainable (model.c),
# with tests:
#
#   build/tests/test_safetensors   the safetensors reader and writer against the format's rules
#   build/tests/model_logps        scores token ids directly, for tests/model/test_model.py (PyTorch)
#   build/tests/test_backend_seam  the registry, and a failing backend's error reaching the caller

PC_MODEL_OBJS := $(BUILD)/trainer/model/config.o $(BUILD)/trainer/model/safetensors.o \
                 $(BUILD)/trainer/model/families.o $(BUILD)/trainer/model/model.o
TRAINER_OBJS  += $(PC_MODEL_OBJS)
TRAINER_LIBS  += -lcjson -lopenblas -lm -fopenmp
-include $(PC_MODEL_OBJS:.o=.d)

$(BUILD)/tests/model_logps: tests/model/logps_driver.c $(PC_MODEL_OBJS) $(PC_BACKEND_OBJS) $(PC_UTIL_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) $< $(PC_MODEL_OBJS) $(PC_BACKEND_OBJS) $(PC_UTIL_OBJS) -o $@ $(LDFLAGS_ALL) \
	  -lcjson $(PC_BACKEND_LIBS) $(PC_UTIL_LIBS)

$(BUILD)/tests/test_safetensors: tests/model/test_safetensors.c $(BUILD)/trainer/model/safetensors.o tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) $< $(BUILD)/trainer/model/safetensors.o $(PC_UTIL_OBJS) -o $@ $(LDFLAGS_ALL) -lcjson $(PC_UTIL_LIBS)

$(BUILD)/tests/test_backend_seam: tests/model/test_backend_seam.c $(PC_MODEL_OBJS) $(PC_BACKEND_OBJS) $(PC_UTIL_OBJS) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -Itests $< $(PC_MODEL_OBJS) $(PC_BACKEND_OBJS) $(PC_UTIL_OBJS) -o $@ $(LDFLAGS_ALL) \
	  -lcjson $(PC_BACKEND_LIBS) $(PC_UTIL_LIBS)

TEST_BINS  += $(BUILD)/tests/model_logps $(BUILD)/tests/test_safetensors $(BUILD)/tests/test_backend_seam
TESTS      += $(BUILD)/tests/test_safetensors $(BUILD)/tests/test_backend_seam tests/model/test_model.py
BENCHES    += $(BUILD)/tests/model_logps
BENCH_CMDS += bench/bench_score.py

# config.json's refusals (tests/model/test_config.c): every number checked against its meaning
$(BUILD)/tests/test_config: tests/model/test_config.c $(BUILD)/trainer/model/config.o $(PC_UTIL_OBJS) tests/test.h
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -Itests $< $(BUILD)/trainer/model/config.o $(PC_UTIL_OBJS) -o $@ $(LDFLAGS_ALL) -lcjson $(PC_UTIL_LIBS)

TEST_BINS  += $(BUILD)/tests/test_config
TESTS      += $(BUILD)/tests/test_config

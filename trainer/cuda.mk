# trainer/cuda.mk: the CUDA backend (trainer/backend_cuda.cu) where the Makefile found nvcc, else the
# stub trainer/backend_cuda_none.c (its constructor says the backend was not built); its tests in
# tests/gpu/. Included before trainer.mk: it appends to TRAINER_OBJS / TRAINER_LIBS, which trainer.mk
# links into prefcap-dpo.
#
#   make CUDA=0                 the stub even where nvcc exists
#   make CUDA_ARCH="80 90 100"  the GPU architectures to build machine code for (default: 80 90,
#                               A100 and H100/H200); the last one's PTX is embedded too, so that newer
#                               GPUs can compile it at load time
#   build/tests/test_cuda_ops   every forward op against the CPU backend (SKIP without a GPU);
#                               --bench times the large ops
#   tests/gpu/score_parity.sh   `score --device cuda` against `--device cpu` on every family
#   tests/gpu/run.sh            all of it on a GPU machine, with compute-sanitizer and benchmarks

CUDA_ARCH ?= 80 90

ifneq ($(NVCC),)
CUDA_HOME    ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_GENCODE := $(foreach a,$(CUDA_ARCH),-gencode=arch=compute_$(a),code=sm_$(a)) \
                -gencode=arch=compute_$(lastword $(CUDA_ARCH)),code=compute_$(lastword $(CUDA_ARCH))
NVCCFLAGS    ?= -O2
PC_CUDA_OBJS := $(BUILD)/trainer/backend_cuda.o
PC_CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++

# -Werror all-warnings: nvcc's own warnings and the host compiler's (the C side's -Wall -Wextra) fail the build
$(BUILD)/trainer/backend_cuda.o: trainer/backend_cuda.cu trainer/backend.h trainer/backend_cuda.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -std=c++17 $(CUDA_GENCODE) -Werror all-warnings -Xcompiler -fPIC,-Wall,-Wextra,-Wno-unused-parameter \
	  -Iinclude -Itrainer -c $< -o $@

$(BUILD)/tests/test_cuda_ops: tests/gpu/test_cuda_ops.c $(BUILD)/trainer/backend_cpu.o $(PC_CUDA_OBJS) \
                              trainer/backend.h trainer/backend_cuda.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fopenmp -Itrainer -I$(CUDA_HOME)/include $< $(BUILD)/trainer/backend_cpu.o $(PC_CUDA_OBJS) \
	  -o $@ $(LDFLAGS_ALL) $(PC_CUDA_LIBS) -lopenblas -lm -fopenmp

TEST_BINS += $(BUILD)/tests/test_cuda_ops
TESTS     += $(BUILD)/tests/test_cuda_ops tests/gpu/score_parity.sh
else
PC_CUDA_OBJS := $(BUILD)/trainer/backend_cuda_none.o
PC_CUDA_LIBS :=

$(BUILD)/trainer/backend_cuda_none.o: trainer/backend_cuda_none.c trainer/backend_cuda.h trainer/backend.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@
endif

TRAINER_OBJS += $(PC_CUDA_OBJS)
TRAINER_LIBS += $(PC_CUDA_LIBS)

# Switching between CUDA=0 and a CUDA build (or CUDA_ARCH) in one build folder must relink, though no
# object changed: a stamp holding the configuration, rewritten only when it differs, is a prerequisite.
PC_CUDA_STAMP := $(BUILD)/trainer/cuda.config
PC_CUDA_CONF  := nvcc=$(NVCC) arch=$(CUDA_ARCH)
$(shell mkdir -p $(BUILD)/trainer && { [ "$$(cat $(PC_CUDA_STAMP) 2>/dev/null)" = "$(PC_CUDA_CONF)" ] || \
        echo "$(PC_CUDA_CONF)" > $(PC_CUDA_STAMP); })
$(BUILD)/prefcap-dpo $(PC_CUDA_OBJS): $(PC_CUDA_STAMP)

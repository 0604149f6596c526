# trainer/backend/backend.mk: the compute backends behind trainer/backend/backend.h: the registry
# (backend.c), the CPU backend (backend_cpu.c, OpenBLAS + OpenMP), always built, and the CUDA backend
# (backend_cuda.cu) where the Makefile found nvcc, else the stub backend_cuda_none.c (its constructor
# says the backend was not built). PC_BACKEND_OBJS/PC_BACKEND_LIBS are all of it, for test drivers.
# Their tests are in tests/gpu/.
#
#   make CUDA=0                 the stub even where nvcc exists
#   make CUDA_ARCH="80 90 100"  the GPU architectures to build machine code for (default: 80 90,
#                               A100 and H100/H200); the last one's PTX is embedded too, so that newer
#                               GPUs can compile it at load time
#   build/tests/test_cuda_ops   every op against the CPU backend (SKIP without a GPU);
#                               --bench times the large ops
#   tests/gpu/score_parity.sh   `score --device cuda` against `--device cpu` on every family
#   tests/gpu/run.sh            all of it on a GPU machine, with compute-sanitizer and benchmarks
#
#   make cuda-emu               the CPU execution mode (trainer/backend/cuda_emu/cuda_emu.h, docs/cuda.md):
#                               the same backend_cuda.cu compiled by g++ as C++ against the CUDA headers,
#                               its kernels run as fibers on the CPU, cuBLAS served by OpenBLAS, in
#                               $(BUILD)-emu/prefcap-dpo and $(BUILD)-emu/tests/test_cuda_ops (so
#                               build-emu/ for `make`, build-asan-emu/ under `make asan`). Needs only the
#                               CUDA headers (not nvcc, not a GPU); `make test` runs the CUDA tests on it.

PC_BACKEND_CPU_OBJS := $(BUILD)/trainer/backend/backend_cpu.o
PC_BACKEND_REG_OBJS := $(BUILD)/trainer/backend/backend.o
TRAINER_OBJS += $(PC_BACKEND_REG_OBJS) $(PC_BACKEND_CPU_OBJS)
TRAINER_LIBS += -lopenblas -lm
-include $(PC_BACKEND_CPU_OBJS:.o=.d) $(PC_BACKEND_REG_OBJS:.o=.d)

CUDA_ARCH ?= 80 90

ifneq ($(NVCC),)
CUDA_HOME    ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_GENCODE := $(foreach a,$(CUDA_ARCH),-gencode=arch=compute_$(a),code=sm_$(a)) \
                -gencode=arch=compute_$(lastword $(CUDA_ARCH)),code=compute_$(lastword $(CUDA_ARCH))
NVCCFLAGS    ?= -O2
PC_CUDA_OBJS := $(BUILD)/trainer/backend/backend_cuda.o
PC_CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++

# -Werror all-warnings: nvcc's own warnings and the host compiler's (the C side's -Wall -Wextra) fail the build
$(BUILD)/trainer/backend/backend_cuda.o: trainer/backend/backend_cuda.cu trainer/backend/backend.h trainer/backend/backend_cuda.h \
                                        trainer/backend/cuda_emu/cuda_emu.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -std=c++17 $(CUDA_GENCODE) -Werror all-warnings -Xcompiler -fPIC,-Wall,-Wextra,-Wno-unused-parameter \
	  -Iinclude -Itrainer -c $< -o $@

$(BUILD)/tests/test_cuda_ops: tests/gpu/test_cuda_ops.c $(PC_BACKEND_CPU_OBJS) $(PC_CUDA_OBJS) \
                              trainer/backend/backend.h trainer/backend/backend_cuda.h
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -I$(CUDA_HOME)/include $< $(PC_BACKEND_CPU_OBJS) $(PC_CUDA_OBJS) \
	  -o $@ $(LDFLAGS_ALL) $(PC_CUDA_LIBS) -lopenblas -lm -fopenmp

TEST_BINS += $(BUILD)/tests/test_cuda_ops
TESTS     += $(BUILD)/tests/test_cuda_ops tests/gpu/score_parity.sh
else
PC_CUDA_OBJS := $(BUILD)/trainer/backend/backend_cuda_none.o
PC_CUDA_LIBS :=
-include $(PC_CUDA_OBJS:.o=.d)
endif

TRAINER_OBJS += $(PC_CUDA_OBJS)
TRAINER_LIBS += $(PC_CUDA_LIBS)
PC_BACKEND_OBJS := $(PC_BACKEND_REG_OBJS) $(PC_BACKEND_CPU_OBJS) $(PC_CUDA_OBJS)
PC_BACKEND_LIBS := $(PC_CUDA_LIBS) -lopenblas -lm -fopenmp

# Switching between CUDA=0 and a CUDA build (or CUDA_ARCH) in one build folder must relink, though no
# object changed: a stamp holding the configuration, rewritten only when it differs, is a prerequisite.
PC_CUDA_STAMP := $(BUILD)/trainer/cuda.config
PC_CUDA_CONF  := nvcc=$(NVCC) arch=$(CUDA_ARCH)
$(shell mkdir -p $(BUILD)/trainer && { [ "$$(cat $(PC_CUDA_STAMP) 2>/dev/null)" = "$(PC_CUDA_CONF)" ] || \
        echo "$(PC_CUDA_CONF)" > $(PC_CUDA_STAMP); })
$(BUILD)/prefcap-dpo $(PC_CUDA_OBJS): $(PC_CUDA_STAMP)

# ---- the CPU execution mode of the CUDA backend --------------------------------------------------
# Only the two objects differ from the GPU build: the emulated prefcap-dpo is linked from $(BUILD)'s
# other objects (after $(BUILD)/prefcap-dpo, so that they are all there and current).
PC_CUDA_INC := $(if $(NVCC),$(CUDA_HOME),/usr/local/cuda)/include
PC_EMU      := $(BUILD)-emu
ifneq ($(CUDA),0)
ifneq ($(wildcard $(PC_CUDA_INC)/cuda_bf16.h),)
ifneq ($(wildcard $(PC_CUDA_INC)/cublas_v2.h),)
PC_HAVE_EMU := 1
endif
endif
endif

ifeq ($(PC_HAVE_EMU),1)
PC_EMU_OBJS := $(PC_EMU)/trainer/backend/backend_cuda.o $(PC_EMU)/trainer/backend/cuda_emu.o
# the kernels' `#pragma unroll` is nvcc's: g++ ignores it, and must not fail on it
PC_EMU_CXXFLAGS = -std=c++17 -g $(OPT) -fPIC -pthread -Wall -Wextra -Werror -Wno-unused-parameter \
                  -Wno-unknown-pragmas $(SAN) -Iinclude -Itrainer -I$(PC_CUDA_INC) $(CXXFLAGS)
-include $(PC_EMU_OBJS:.o=.d)

$(PC_EMU)/trainer/backend/backend_cuda.o: trainer/backend/backend_cuda.cu
	@mkdir -p $(dir $@)
	$(CXX) -x c++ $(PC_EMU_CXXFLAGS) -MMD -MP -c $< -o $@

$(PC_EMU)/trainer/backend/cuda_emu.o: trainer/backend/cuda_emu/cuda_emu.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(PC_EMU_CXXFLAGS) -MMD -MP -c $< -o $@

# (the recipe reads PC_CLI_OBJS and the final TRAINER_OBJS: fragments included later add to them)
$(PC_EMU)/prefcap-dpo: $(BUILD)/prefcap-dpo $(PC_EMU_OBJS)
	$(CC) $(PC_CLI_OBJS) $(filter-out $(PC_CUDA_OBJS) $(PC_NCCL_TRAINER_OBJS),$(TRAINER_OBJS)) \
	  $(BUILD)/trainer/dist/comm_nccl_none.o $(PC_EMU_OBJS) -o $@ \
	  $(LDFLAGS_ALL) $(filter-out $(PC_CUDA_LIBS) $(PC_NCCL_TRAINER_LIBS),$(TRAINER_LIBS)) -lopenblas -lstdc++ -fopenmp

$(PC_EMU)/tests/test_cuda_ops: tests/gpu/test_cuda_ops.c $(PC_BACKEND_CPU_OBJS) $(PC_EMU_OBJS) \
                               trainer/backend/backend.h trainer/backend/backend_cuda.h
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) -I$(PC_CUDA_INC) $< $(PC_BACKEND_CPU_OBJS) $(PC_EMU_OBJS) -o $@ $(LDFLAGS_ALL) \
	  -lopenblas -lstdc++ -lm -fopenmp

# the emulator itself against CUDA's rules (shuffle lanes, barriers, bf16, cuBLAS, what it must refuse)
$(PC_EMU)/tests/test_cuda_emu: tests/gpu/test_cuda_emu.cu $(PC_EMU)/trainer/backend/cuda_emu.o
	@mkdir -p $(dir $@)
	$(CXX) -x c++ $(PC_EMU_CXXFLAGS) $< -x none $(PC_EMU)/trainer/backend/cuda_emu.o -o $@ $(LDFLAGS_ALL) -lopenblas

PC_EMU_BINS := $(PC_EMU)/prefcap-dpo $(PC_EMU)/tests/test_cuda_ops $(PC_EMU)/tests/test_cuda_emu
TEST_BINS   += $(PC_EMU_BINS)
TESTS       += "BUILD=$(BUILD) tests/gpu/emu.sh"
endif

# trainer/dist/dist.mk: data-parallel training (docs/training.md, "Data parallel"): the communicator
# (comm.h: comm.c's collectives over the mpi and tcp engines, and nccl) and ZeRO-1 (zero.c: sharded
# gradients, optimizer state and checkpoints). Included after train.mk, before cli.mk.
#
# MPI is optional: where mpicc is found its flags build comm_mpi.c with PC_HAVE_MPI (`mpirun -np N
# prefcap-dpo train`); otherwise the tcp engine (torchrun-style variables) is the only multi-process
# launch and mpirun is refused with a message. NCCL is built where nvcc and nccl.h are (comm_nccl.cu).
#
#   build/tests/test_comm      every collective on 2..N ranks (mpirun or torchrun-style), exact results,
#                              and the fault modes (--die RANK, --stall RANK)
#   tests/dist/test_dist.py    data-parallel training against one process (in `make test`)

MPICC := $(shell command -v mpicc 2>/dev/null)
ifneq ($(MPICC),)
PC_MPI_CFLAGS := -DPC_HAVE_MPI $(shell $(MPICC) --showme:compile 2>/dev/null)
PC_MPI_LIBS   := $(shell $(MPICC) --showme:link 2>/dev/null)
endif

PC_COMM_OBJS := $(addprefix $(BUILD)/trainer/dist/,comm.o comm_mpi.o comm_tcp.o)
-include $(PC_COMM_OBJS:.o=.d) $(BUILD)/trainer/dist/zero.d $(BUILD)/trainer/dist/comm_nccl_none.d
$(BUILD)/trainer/dist/comm_mpi.o: PC_CFLAGS += $(PC_MPI_CFLAGS)

# NCCL: the same nvcc as the CUDA backend; the library and header from the CUDA install. test_comm
# always links it where it is built; prefcap-dpo links it with `make NCCL=1` (data parallel with
# --device cuda moves GPU memory with it), and otherwise its stand-in, which refuses data parallel on a
# real GPU with a message: the default build then runs where libnccl is not installed, and NCCL=1 waits
# for the GPU session that proves it (docs/training.md). The CPU emulation never links NCCL: its
# "device" memory is host memory, which the mpi and tcp engines move.
PC_NCCL_INC := $(if $(NVCC),$(CUDA_HOME),/usr/local/cuda)/include
ifneq ($(NVCC),)
ifneq ($(wildcard $(PC_NCCL_INC)/nccl.h),)
PC_HAVE_NCCL := 1
$(BUILD)/trainer/dist/comm_nccl.o: trainer/dist/comm_nccl.cu trainer/dist/comm.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -std=c++17 -Werror all-warnings -Xcompiler -fPIC,-Wall,-Wextra,-Wno-unused-parameter \
	  -Iinclude -Itrainer -c $< -o $@
PC_NCCL_OBJS := $(BUILD)/trainer/dist/comm_nccl.o
PC_NCCL_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lnccl -lcudart
endif
endif
ifneq ($(PC_HAVE_NCCL),1)
PC_NCCL_OBJS := $(BUILD)/trainer/dist/comm_nccl_none.o
PC_NCCL_LIBS :=
endif

ifeq ($(NCCL)$(PC_HAVE_NCCL),11)
PC_NCCL_TRAINER_OBJS := $(PC_NCCL_OBJS)
PC_NCCL_TRAINER_LIBS := $(PC_NCCL_LIBS)
else
PC_NCCL_TRAINER_OBJS := $(BUILD)/trainer/dist/comm_nccl_none.o
PC_NCCL_TRAINER_LIBS :=
endif
TRAINER_OBJS += $(PC_COMM_OBJS) $(BUILD)/trainer/dist/zero.o $(PC_NCCL_TRAINER_OBJS)
TRAINER_LIBS += $(PC_MPI_LIBS) $(PC_NCCL_TRAINER_LIBS)
$(BUILD)-emu/prefcap-dpo: $(BUILD)/trainer/dist/comm_nccl_none.o

probe-dist:
	@if [ -n "$(MPICC)" ]; then echo "✓ mpicc found: data parallel over MPI (mpirun -np N prefcap-dpo train)"; else echo "✗ no mpicc (libopenmpi-dev): MPI not built; torchrun-style launches only"; fi
	@if [ -n "$(PC_HAVE_NCCL)" ]; then echo "✓ nccl.h found: the NCCL communicator is built (build/tests/test_comm; prefcap-dpo trains over MPI or TCP)"; else echo "✗ no nvcc or nccl.h: the NCCL communicator is not built"; fi
probe: probe-dist
.PHONY: probe-dist

$(BUILD)/tests/test_comm: tests/dist/test_comm.c $(PC_COMM_OBJS) $(PC_NCCL_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(PC_CFLAGS) $(if $(PC_HAVE_NCCL),-DPC_HAVE_NCCL -I$(PC_NCCL_INC)) $< $(PC_COMM_OBJS) $(PC_NCCL_OBJS) -o $@ \
	  $(LDFLAGS_ALL) $(PC_MPI_LIBS) $(PC_NCCL_LIBS)

TEST_BINS += $(BUILD)/tests/test_comm
TESTS     += tests/dist/test_dist.py

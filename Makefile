# prefcap: the capture SDK (libprefcap + the `prefcap` CLI) and the DPO trainer (`prefcap-dpo`).
#
#   make            build everything that can be built here (CUDA parts only where nvcc is found)
#   make test       install missing dependencies, build, run every test; closes with "N passed, N failed"
#   make demo       the main job end to end on this machine
#   make asan       the tests again under AddressSanitizer + UBSan with float-cast-overflow (build-asan/)
#   make cuda-emu   the CUDA backend's kernels compiled for the CPU (build-emu/; `make test` runs them)
#   make fuzz       each libFuzzer target of tests/fuzz/ for FUZZ_SECONDS (60; build-fuzz/, clang)
#   make bench      the benchmarks of bench/ (results go to bench/RESULTS.md by hand, with the machine)
#   make install    PREFIX=/usr/local DESTDIR= : headers, libraries, CLIs and prefcap.pc
#
# Each area adds its own rules in a fragment (sdk/sdk.mk, trainer/*/*.mk) to ALL_TARGETS and TESTS.

# The one source of the version is include/prefcap.h's PREFCAP_VERSION, read here; the -D below
# hands the same string to the trainer, which does not include that header (an identical
# redefinition where it is included).
VERSION    := $(shell sed -n 's/^\#define PREFCAP_VERSION "\(.*\)"/\1/p' include/prefcap.h)
PREFIX     ?= /usr/local
DESTDIR    ?=
BUILD      ?= build
CC         ?= cc
OPT        ?= -O2
SAN        ?=
# Hardened by default: glibc's checked string/memory calls (_FORTIFY_SOURCE=3, gcc 12 + glibc 2.36 have
# it; it needs optimization, and is left to the sanitizers in `make asan`) and stack canaries.
HARDEN     := -fstack-protector-strong $(if $(SAN)$(filter -O0,$(OPT)),,-U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3)
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE -g $(OPT) -fPIC -pthread -Wall -Wextra -Werror -Wshadow \
              -Wno-unused-parameter -Iinclude -Icommon -DPREFCAP_VERSION='"$(VERSION)"' $(HARDEN) $(SAN) $(CFLAGS)
LDFLAGS_ALL := -pthread $(SAN) $(LDFLAGS)

# ---- optional parts: probe and say what was found -------------------------------------------------
CUDA ?= 1
NVCC := $(shell command -v nvcc 2>/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; })
ifeq ($(CUDA),0)
  NVCC :=
endif
HAVE_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU && echo 1)

ALL_TARGETS :=
TESTS       :=
BENCHES     :=

.PHONY: all test test-run demo asan bench install deps clean probe cuda-emu
all: probe

probe:
	@if [ -n "$(NVCC)" ]; then echo "✓ nvcc found: $(NVCC) (CUDA backend built for $(foreach a,$(CUDA_ARCH),sm_$(a)): --device cuda)"; else echo "✗ nvcc not found (or CUDA=0): CUDA backend not built (--device cuda says so)"; fi
	@if [ -n "$(HAVE_GPU)" ]; then echo "✓ GPU found"; else echo "✗ no GPU: CUDA tests skipped on the GPU build"; fi
	@if [ -n "$(PC_HAVE_EMU)" ]; then echo "✓ CUDA headers found: the CUDA tests run on the CPU emulation ($(PC_EMU)/)"; else echo "✗ no CUDA headers (or CUDA=0): no CPU emulation of the CUDA backend"; fi

include common/common.mk
include sdk/sdk.mk
# the trainer, part by part in dependency order (docs/architecture.md draws it)
include trainer/trainer.mk
include trainer/util/util.mk
include trainer/text/text.mk
include trainer/backend/backend.mk
include trainer/model/model.mk
include trainer/train/train.mk
include trainer/dist/dist.mk
include trainer/cli/cli.mk
include tests/fuzz/fuzz.mk

all: $(ALL_TARGETS)

# the CUDA kernels on the CPU (trainer/backend/backend.mk, docs/cuda.md)
cuda-emu: $(PC_EMU_BINS)
	@[ -n "$(PC_HAVE_EMU)" ] || { echo "✗ cuda-emu needs the CUDA headers (cuda_bf16.h, cublas_v2.h) in $(PC_CUDA_INC), and CUDA != 0"; exit 1; }

deps:
	@scripts/deps.sh --npm

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory test-run

test-run: $(ALL_TARGETS) $(TEST_BINS)
	@TEST_LOGDIR=$(BUILD)/test-logs BUILD=$(BUILD) tests/run.sh $(TESTS)

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) examples/demo.sh

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all" test-run

bench: all $(BENCHES)
	@for b in $(BENCH_CMDS); do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf build build-asan build-emu build-asan-emu build-fuzz

#!/usr/bin/env bash
# tests/gpu/emu.sh: the CUDA backend's tests on the CPU emulation (make cuda-emu; docs/cuda.md), where
# no GPU is: the real kernels of trainer/backend/backend_cuda.cu, compiled by g++, run as fibers.
#   0. test_cuda_emu: the emulator itself against CUDA's rules (tests/gpu/test_cuda_emu.cu);
#   1. test_cuda_ops: every op against the CPU backend, fp32 (tol 1e-5) and bf16 (tol 1e-2; see the test
#      for the stated exceptions);
#   2. the same with each block's threads resumed in reverse order (PREFCAP_CUDA_EMU_ORDER=reverse):
#      a shared-memory race (a read that a missing __syncthreads leaves before or after another
#      thread's write) changes the result with the order, and fails one of the two runs; its
#      PASS/FAIL lines are named cuda_reverse_*;
#   3. score_parity.sh: `score --device cuda` against `--device cpu` on every family (fp32 within
#      1e-4 relative, bf16 within 2e-2), on $(BUILD)-emu/prefcap-dpo;
#   4. train_parity.py: `train --device cuda` against `--device cpu` (10-step trajectories, gradients,
#      bf16, the memory plan and refusal, a planted device failure); SKIP while the backend lacks
#      training ops.
# BUILD=build-asan (make asan) runs the AddressSanitizer + UBSan build of it all.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
EMU=$ROOT/$BUILD-emu
status=0
if [ ! -x "$EMU/tests/test_cuda_emu" ] || [ ! -x "$EMU/tests/test_cuda_ops" ] || [ ! -x "$EMU/prefcap-dpo" ]; then
  echo "FAIL cuda_emu: $EMU is not built (make cuda-emu)"
  exit 1
fi
"$EMU/tests/test_cuda_emu" || status=1
"$EMU/tests/test_cuda_ops" || status=1
PREFCAP_CUDA_EMU_ORDER=reverse "$EMU/tests/test_cuda_ops" | sed -E 's/^(PASS|FAIL|SKIP) cuda_/\1 cuda_reverse_/'
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
PYTHON=${PYTHON:-/usr/bin/python3} PREFCAP_CUDA_EMU=1 PREFCAP_DPO="$EMU/prefcap-dpo" "$ROOT/tests/gpu/score_parity.sh" || status=1
PREFCAP_CUDA_EMU=1 PREFCAP_DPO="$EMU/prefcap-dpo" "${PYTHON:-/usr/bin/python3}" "$ROOT/tests/gpu/train_parity.py" || status=1
exit $status

#!/usr/bin/env bash
# On a GPU machine: the GPU engine's tests and its long-context benchmark.
#
#   scripts/gpu_engine.sh [--tests] [--filter GTEST] [--sanitize] [--kernels SECTION] [--bench "ARGS"] [--peer "ARGS"]
#
#   --tests     every CUDA test (indexshare_cuda_tests: the kernels, the backend op table, the
#               model against transformers' fixtures and the CPU); --filter runs only those
#               matching the gtest filter GTEST
#   --kernels   bench/cuda/h200_bench --only SECTION (indexer, topk, fused, mla, stack), then
#               bench/torch_baseline.py on its records (PyTorch and the roofs, same GPU, same run)
#   --sanitize  compute-sanitizer memcheck, racecheck and synccheck over every CUDA test
#   --bench     bench/cuda/long_context_bench with ARGS (see its header)
#   --peer      bench/transformers_peer.py with ARGS (transformers' glm_moe_dsa on the same GPU)
#
# Binaries: $BUILD (default build/) when its indexshare_cuda_tests runs on this machine; else a
# fresh build there, with the Debian .deb files of $DEBS for the build dependencies (as
# scripts/h200.sh does). Logs and JSON go to $OUT (default out/gpu).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-$root/out/gpu}"
build="${BUILD:-$root/build}"
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
# The CUDA tests find their fixtures through the source path compiled into them.
if [ ! -e /work/main/tests/data/dsa_fixtures ]; then mkdir -p /work && ln -sfn "$root" /work/main; fi
for d in /usr/local/cuda/extras/CUPTI/lib64 /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

# Runtime libraries of the indexshare command (fmt, libpng) from the carried .deb files when the
# machine lacks them.
debs="${DEBS:-$root/.deps/debs}"
if ls "$debs"/libfmt9_*.deb > /dev/null 2>&1 && ! ldconfig -p | grep -q libfmt.so.9; then
  rt="${TMPDIR:-/tmp}/indexshare-rt"
  mkdir -p "$rt"
  for f in "$debs"/libfmt9_*.deb "$debs"/libpng16-16_*.deb; do dpkg -x "$f" "$rt"; done
  export LD_LIBRARY_PATH="$rt/usr/lib/x86_64-linux-gnu:$rt/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

tests="" filter="*" sanitize="" kernels="" bench="" peer=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) tests=1 ;;
    --filter) tests=1; filter="$2"; shift ;;
    --kernels) kernels="$2"; shift ;;
    --sanitize) sanitize=1 ;;
    --bench) bench="$2"; shift ;;
    --peer) peer="$2"; shift ;;
    *) echo "usage: $0 [--tests] [--filter GTEST] [--sanitize] [--kernels SECTION] [--bench ARGS] [--peer ARGS]" >&2; exit 2 ;;
  esac
  shift
done

echo "== machine ($(date -u +%Y-%m-%dT%H:%MZ))"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader || true

if ! "$build/tests/indexshare_cuda_tests" --gtest_list_tests > /dev/null 2>&1; then
  echo "== the carried binaries do not run here: building"
  "$build/tests/indexshare_cuda_tests" --gtest_list_tests 2>&1 | head -3
  BUILD="$root/build-gpu" OUT="$out" "$root/scripts/h200.sh" --build-only || exit 1
  build="$root/build-gpu"
fi

status=0
if [ -n "$tests" ]; then
  echo "== CUDA tests"
  t0=$(date +%s)
  "$build/tests/indexshare_cuda_tests" --gtest_brief=1 --gtest_filter="$filter" > "$out/cuda_tests.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|rel err|vs |overlap|diff|Failure|error|Expected|Which is|actual" \
    "$out/cuda_tests.log" | head -150
  echo "  ($(( $(date +%s) - t0 )) s)"
fi
if [ -n "$sanitize" ]; then
  echo "== compute-sanitizer (memcheck, racecheck, synccheck) over every CUDA test"
  "$root/scripts/cuda_sanitize.sh" "$build" "$out" || status=1
fi
if [ -n "$kernels" ]; then
  echo "== kernels: h200_bench --only $kernels, then PyTorch on the same GPU"
  "$build/bench/h200_bench" --only "$kernels" --out "$out/kernels.jsonl" 2>&1 | tee "$out/kernels.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  python3 "$root/bench/torch_baseline.py" --ours "$out/kernels.jsonl" --out "$out/kernels_torch.jsonl" \
    --md "$out/kernels.md" 2>&1 | tee -a "$out/kernels.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  cat "$out/kernels.md"
fi
if [ -n "$bench" ]; then
  echo "== long-context benchmark: $bench"
  # shellcheck disable=SC2086
  "$build/bench/long_context_bench" $bench --json "$out/long_context.json" 2>&1 | tee "$out/long_context.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
if [ -n "$peer" ]; then
  echo "== transformers peer: $peer"
  # shellcheck disable=SC2086
  python3 "$root/bench/transformers_peer.py" --indexshare "$build/indexshare" --out "$out" $peer 2>&1 | tee "$out/peer.log"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
fi
exit $status

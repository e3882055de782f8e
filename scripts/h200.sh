#!/usr/bin/env bash
# On the H200 machine: builds the CUDA kernels (cmake -DINDEXSHARE_CUDA=ON, no network), runs the
# CUDA tests, then the benchmarks (ours, then PyTorch on the same GPU) and prints the table.
#
#   scripts/h200.sh [--quick] [--skip-tests] [--tests-only] [--build-only] [--sanitize] [--ncu] [--only SECTION]
#
# Logs and results go to $OUT (or out/h200). Build dependencies (fmt, nlohmann-json, CLI11,
# GoogleTest, Google Benchmark, libpng) are taken from the system when present, else from
# Debian .deb files in $DEBS (default .deps/debs, fetched beforehand with `apt-get download`
# on a machine with network), unpacked with dpkg -x into a private prefix.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-$root/out/h200}"
build="${BUILD:-$root/build-h200}"
debs="${DEBS:-$root/.deps/debs}"
quick="" skip_tests="" tests_only="" build_only="" sanitize="" ncu="" only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="--quick" ;;
    --skip-tests) skip_tests=1 ;;
    --tests-only) tests_only=1 ;;
    --build-only) build_only=1 ;;
    --sanitize) sanitize=1 ;;
    --ncu) ncu=1 ;;
    --only) only="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--skip-tests] [--tests-only] [--build-only] [--sanitize] [--ncu] [--only SECTION]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1

echo "== machine ($(date -u +%Y-%m-%dT%H:%MZ))"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader || true
nvcc --version | tail -2 | head -1
cmake --version | head -1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true

echo "== dependencies"
missing=0
for h in fmt/format.h nlohmann/json.hpp CLI/CLI.hpp gtest/gtest.h benchmark/benchmark.h png.h; do
  if [ -e "/usr/include/$h" ] || [ -e "/usr/local/include/$h" ]; then echo "  system: $h"; else echo "  missing: $h"; missing=1; fi
done
prefix_args=()
if [ "$missing" = 1 ]; then
  deproot="${TMPDIR:-/tmp}/indexshare-deps"
  ls "$debs"/*.deb >/dev/null 2>&1 || { echo "missing build dependencies and no .deb files in $debs" >&2; exit 1; }
  rm -rf "$deproot" && mkdir -p "$deproot"
  for f in "$debs"/*.deb; do dpkg -x "$f" "$deproot"; done
  libdir="$deproot/usr/lib/x86_64-linux-gnu"
  # zlib1g-dev's libz.so points at Debian's exact soname; use the machine's libz.so.1.
  if [ -e /lib/x86_64-linux-gnu/libz.so.1 ]; then ln -sf /lib/x86_64-linux-gnu/libz.so.1 "$libdir/libz.so"; fi
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  prefix_args=(-DCMAKE_PREFIX_PATH="$deproot/usr;$deproot/usr/share/cmake")
  echo "  using the .deb files of $debs (unpacked in $deproot)"
fi

echo "== build"
t0=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DINDEXSHARE_CUDA=ON "${prefix_args[@]}" \
  > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
cmake --build "$build" --target indexshare_cuda_tests h200_bench long_context_bench indexshare -j "$(nproc)" \
  >> "$out/build.log" 2>&1 || { grep -E "error|Error" -A5 "$out/build.log" | head -60; exit 1; }
echo "  built in $(( $(date +%s) - t0 )) s"
[ -n "$build_only" ] && exit 0

status=0
if [ -z "$skip_tests" ]; then
  echo "== CUDA tests"
  "$build/tests/indexshare_cuda_tests" --gtest_brief=1 > "$out/tests.log" 2>&1 || status=1
  tail -25 "$out/tests.log"
fi
if [ -n "$sanitize" ]; then
  echo "== compute-sanitizer (memcheck, racecheck, synccheck) over every CUDA test"
  "$root/scripts/cuda_sanitize.sh" "$build" "$out" || status=1
fi

[ -n "$tests_only" ] && exit $status
if [ -n "$ncu" ]; then
  echo "== ncu: indexer score kernel, fp8 prefill (T 1024, L 64K) and decode (B 64, L 128K)"
  timeout 240 ncu --clock-control none -k regex:indexer_scores_kernel -c 2 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section Occupancy --section LaunchStats \
    "$build/bench/h200_bench" --only profile > "$out/ncu.log" 2>&1 || echo "  ncu failed (rc $?)"
  grep -E "indexer_scores_kernel|Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Issue Slots Busy|Executed Ipc A|Achieved Occupancy|Registers Per|Stall|Warp Cycles Per Issued" "$out/ncu.log" | head -60
fi

echo "== benchmarks (ours)"
only_args=()
[ -n "$only" ] && only_args=(--only "$only")
"$build/bench/h200_bench" --out "$build/ours.jsonl" $quick "${only_args[@]}" 2>&1 | tee "$out/ours.log"
echo "== PyTorch on the same GPU, and the table"
python3 "$root/bench/torch_baseline.py" --ours "$build/ours.jsonl" --out "$out/results.jsonl" --md "$out/table.md" \
  2>&1 | tee "$out/torch.log"
exit $status

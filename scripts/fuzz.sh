#!/usr/bin/env bash
# Builds the GGUF and safetensors reader fuzzers (clang, libFuzzer, ASan + UBSan) into build-fuzz/ and runs each
# for N seconds: scripts/fuzz.sh [SECONDS] (default 60). Seeds: fuzz/corpus/gguf/ (read only);
# new inputs go to build-fuzz/corpus/gguf/, crashes to build-fuzz/crashes/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"
cxx="${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
[ -n "$cxx" ] || { echo "fuzz: clang++ not found (apt-get install clang libclang-rt-dev)" >&2; exit 1; }
out="$root/build-fuzz"
cmake -S "$root" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DINDEXSHARE_FUZZ=ON -DINDEXSHARE_TESTS=OFF -DINDEXSHARE_BENCH=OFF -DINDEXSHARE_CUDA=OFF >/dev/null
cmake --build "$out" --target gguf_fuzz safetensors_fuzz make_gguf_seeds --parallel 2
mkdir -p "$out/corpus/safetensors" "$out/corpus/gguf" "$out/crashes" "$out/seeds"
"$out/fuzz/make_gguf_seeds" "$out/seeds" >/dev/null
if ! diff -rq "$out/seeds" "$root/fuzz/corpus/gguf" >/dev/null; then
  echo "fuzz: note: fuzz/corpus/gguf differs from make_gguf_seeds output (regenerate and commit)" >&2
fi
"$out/fuzz/gguf_fuzz" -max_total_time="$secs" -max_len=8192 -rss_limit_mb=2048 -timeout=10 \
  -dict="$root/fuzz/gguf.dict" -artifact_prefix="$out/crashes/" -print_final_stats=1 \
  "$out/corpus/gguf" "$root/fuzz/corpus/gguf"
"$out/fuzz/safetensors_fuzz" -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix="$out/crashes/" -print_final_stats=1 "$out/corpus/safetensors" "$root/fuzz/seeds/safetensors"

#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) into build-fuzz/ and runs each for N seconds:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default 60 s; every target)
#   scripts/fuzz.sh --runs N [TARGET...]      (N executions each instead of a time)
#
# Targets: gguf (the GGUF reader), safetensors (the safetensors reader), hf_config (config.json
# and the schedule it resolves), schedule (the F/S pattern / indexer_types / freq-offset parser).
# Seeds: fuzz/seeds/TARGET/ (committed, read only); new inputs go to build-fuzz/corpus/TARGET/,
# crashes to build-fuzz/crashes/. Any crash, sanitizer report or broken invariant fails the run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
limit=(-max_total_time="${1:-60}")
if [ "${1:-}" = "--runs" ]; then limit=(-runs="$2"); shift 2; elif [ $# -gt 0 ]; then shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf safetensors hf_config schedule)
cxx="${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
[ -n "$cxx" ] || { echo "fuzz: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
out="$root/build-fuzz"
cmake -S "$root" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DINDEXSHARE_FUZZ=ON -DINDEXSHARE_TESTS=OFF -DINDEXSHARE_BENCH=OFF -DINDEXSHARE_CUDA=OFF >/dev/null
cmake --build "$out" --target "${targets[@]/%/_fuzz}" make_gguf_seeds --parallel "$(nproc)"
mkdir -p "$out/crashes" "$out/seeds"
"$out/fuzz/make_gguf_seeds" "$out/seeds" >/dev/null
if ! diff -rq "$out/seeds" "$root/fuzz/seeds/gguf" >/dev/null; then
  echo "fuzz: note: fuzz/seeds/gguf differs from make_gguf_seeds output (regenerate and commit)" >&2
fi
for t in "${targets[@]}"; do
  case "$t" in
    gguf) opts=(-max_len=8192 -dict="$root/fuzz/gguf.dict") ;;
    safetensors) opts=(-max_len=4096) ;;
    hf_config) opts=(-max_len=8192 -dict="$root/fuzz/json.dict") ;;
    schedule) opts=(-max_len=2048) ;;
    *) echo "fuzz: unknown target '$t' (gguf, safetensors, hf_config, schedule)" >&2; exit 2 ;;
  esac
  mkdir -p "$out/corpus/$t"
  echo "== fuzz $t (${limit[*]})"
  rc=0
  "$out/fuzz/${t}_fuzz" "${limit[@]}" "${opts[@]}" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$out/crashes/$t-" -print_final_stats=1 "$out/corpus/$t" "$root/fuzz/seeds/$t" \
    > "$out/$t.log" 2>&1 || rc=$?
  grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec)" "$out/$t.log" || true
  if [ "$rc" != 0 ]; then
    grep -E -A12 "ERROR|what\(\)|Test unit written" "$out/$t.log" | head -40 >&2
    echo "fuzz: $t FAILED (exit $rc; log $out/$t.log; input in $out/crashes/)" >&2
    exit 1
  fi
done

#!/usr/bin/env bash
# The CPU test suite under sanitizers (clang, no recovery: the first report fails its test).
#
#   scripts/sanitize.sh [asan|tsan]...     (default: both)
#
#   asan  AddressSanitizer + UndefinedBehaviorSanitizer (and LeakSanitizer) over the CPU suite:
#         build-asan/, every target, every test labelled cpu except the few long end-to-end runs
#         of the real model named in $ASAN_SKIP (each runs the 135M model for minutes under ASan;
#         the code they drive is covered under ASan by the unit tests, on smaller inputs, and by
#         their own error-path siblings, which do run). ASAN_SKIP= (empty) runs everything.
#   tsan  ThreadSanitizer over the thread pool, the thread team and every op test that runs on
#         several threads (tests/CMakeLists.txt names them): build-tsan/, indexshare_thread_tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(asan tsan)
cxx="${SANITIZE_CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
[ -n "$cxx" ] || { echo "sanitize: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
jobs="$(nproc)"
skip="${ASAN_SKIP-^(CmdEval\.EveryModeInJsonAndBothPictures|CmdSpeculate\.(GenerateWithAHeadPrintsThePlainGreedyText|CommittedHeadDraftsWhatTheModelSays|SpeculateReportsEveryConfigurationAndChecksOutputs)|CmdSearch\.OneStepInJson|LlamaModel\.PerplexityMatchesLlamaCpp)\$}"
common=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" -DINDEXSHARE_CUDA=OFF
        -DINDEXSHARE_BENCH=OFF)
for k in "${kinds[@]}"; do
  t0=$(date +%s)
  case "$k" in
    asan)
      echo "== ASan + UBSan: the whole CPU suite"
      cmake -S "$root" -B "$root/build-asan" "${common[@]}" -DINDEXSHARE_SANITIZE=address,undefined >/dev/null
      cmake --build "$root/build-asan" --parallel "$jobs"
      ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1" \
      UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        ctest --test-dir "$root/build-asan" -L cpu ${skip:+-E "$skip"} --output-on-failure --parallel "$jobs" --timeout 900
      ;;
    tsan)
      echo "== TSan: the thread pool, the thread team and the multi-threaded op tests"
      cmake -S "$root" -B "$root/build-tsan" "${common[@]}" -DINDEXSHARE_SANITIZE=thread >/dev/null
      cmake --build "$root/build-tsan" --target indexshare_thread_tests --parallel "$jobs"
      TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
        ctest --test-dir "$root/build-tsan" -L tsan --output-on-failure --parallel "$jobs" --timeout 900
      ;;
    *) echo "sanitize: unknown kind '$k' (asan, tsan)" >&2; exit 2 ;;
  esac
  echo "== $k: clean ($(( $(date +%s) - t0 )) s)"
done

#!/usr/bin/env bash
# Every CUDA test (indexshare_cuda_tests: the kernels, the backend op table, the GPU engine)
# under compute-sanitizer's memcheck, racecheck and synccheck, one process per tool:
#
#   scripts/cuda_sanitize.sh BUILD_DIR OUT_DIR [TOOL...]     (default: memcheck racecheck synccheck)
#
# A tool fails on its first report (--error-exitcode) and on a failed test; the log of each tool
# is OUT_DIR/sanitize-TOOL.log. SANITIZE_TIMEOUT (s, default 900) bounds each tool's run.
# Called by scripts/h200.sh --sanitize and scripts/gpu_engine.sh --sanitize.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BUILD_DIR OUT_DIR [memcheck|racecheck|synccheck|initcheck]..." >&2; exit 2; }
build="$1" out="$2"; shift 2
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(memcheck racecheck synccheck)
bin="$build/tests/indexshare_cuda_tests"
[ -x "$bin" ] || { echo "cuda_sanitize: $bin not found" >&2; exit 2; }
command -v compute-sanitizer > /dev/null || { echo "cuda_sanitize: compute-sanitizer not on PATH" >&2; exit 2; }
mkdir -p "$out"
n_tests=$("$bin" --gtest_list_tests | grep -c '^  ')
status=0
for tool in "${tools[@]}"; do
  extra=()
  case "$tool" in
    # API errors are not reported: the tests provoke cudaErrorMemoryAllocation on purpose (an
    # out-of-memory request must be an Error naming it), and the engine checks the result of
    # every CUDA call itself, so an unexpected one fails a test. Memory errors and leaks are.
    memcheck) extra=(--leak-check full --report-api-errors no) ;;
    racecheck) extra=(--racecheck-report analysis) ;;
    synccheck | initcheck) ;;
    *) echo "cuda_sanitize: unknown tool '$tool'" >&2; exit 2 ;;
  esac
  t0=$(date +%s)
  timeout "${SANITIZE_TIMEOUT:-900}" compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 9 \
    "$bin" > "$out/sanitize-$tool.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  summary=$(grep -E "^========= (ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY)" "$out/sanitize-$tool.log" | tr '\n' ' ')
  if [ "$rc" = 0 ]; then
    echo "  $tool: clean over $n_tests tests ($secs s) $summary"
  else
    echo "  $tool: FAILED (rc $rc after $secs s; 124 = timed out) $summary"
    grep -E "^=========|FAILED|Failure" "$out/sanitize-$tool.log" | head -40
    status=1
  fi
done
exit $status

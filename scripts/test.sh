#!/usr/bin/env bash
# Builds IndexShare and runs every test (GPU tests skip cleanly on a machine without a GPU).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh"
ctest --test-dir "$root/build" --output-on-failure --parallel "$(nproc)" --timeout 900

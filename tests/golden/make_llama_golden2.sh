#!/usr/bin/env bash
# Regenerates tests/data/logits_golden_kv.json: llama.cpp logits in two attention set-ups, for
# the tight checks of tests/llama_model_test.cpp (tests/data/logits_golden.json, from
# make_llamacpp_golden.sh, holds llama.cpp's default set-up on short prompts):
#   f32_kv_no_fa  KV cache in f32, flash attention off: llama.cpp's all-f32 attention; compared
#                 with our f32 cache. Prompts: the four of logits_golden.json (every position
#                 of the chat prompt) and a 100+ token excerpt of the GPL-3 text.
#   f16_kv_fa     KV cache in f16, flash attention on (llama.cpp's defaults) on the long
#                 excerpt: batches of 64+ rows take the tiled kernel, f32 arithmetic on the
#                 widened f16 cache, as ours; compared with our default f16 cache.
#
# Usage: tests/golden/make_llama_golden2.sh LLAMA_CPP_BUILD_DIR [MODEL.gguf]
#   LLAMA_CPP_BUILD_DIR: a CPU build of llama.cpp (bin/libllama.so and its CMakeCache.txt);
#   nothing of llama.cpp is built here, only tests/golden/dump_logits_kv.cpp against it.
# Env: THREADS (default 2).
set -euo pipefail

[ $# -ge 1 ] || { sed -n 2,17p "$0"; exit 2; }
build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="${2:-$("$root/scripts/fetch_model.sh" | tail -n 1)}"
threads="${THREADS:-2}"
bin="$build/bin"
[ -f "$bin/libllama.so" ] || { echo "make_llama_golden2: $bin/libllama.so not found" >&2; exit 1; }
src="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")"
[ -f "$src/include/llama.h" ] || { echo "make_llama_golden2: no llama.h under '$src'" >&2; exit 1; }
commit="$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)"
gpl=/usr/share/common-licenses/GPL-3
[ -f "$gpl" ] || { echo "make_llama_golden2: $gpl not found" >&2; exit 1; }
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

g++ -std=c++17 -O2 -I"$src/include" -I"$src/ggml/include" "$root/tests/golden/dump_logits_kv.cpp" \
    -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" -o "$tmp/dump_logits_kv"

# The prompts of logits_golden.json, byte for byte, then the excerpt (the first 16 lines).
python3 - "$root/tests/data/logits_golden.json" "$tmp" <<'PY'
import json, sys
g = json.load(open(sys.argv[1], encoding="utf-8"))
for i, p in enumerate(g["prompts"]):
    open(f"{sys.argv[2]}/p{i}.txt", "wb").write(p["text"].encode("utf-8"))
PY
head -n 16 "$gpl" > "$tmp/p4.txt"

"$tmp/dump_logits_kv" "$model" f32 off "$threads" 3 "$tmp"/p{0,1,2,3,4}.txt > "$tmp/f32.json"
"$tmp/dump_logits_kv" "$model" f16 on "$threads" -1 "$tmp/p4.txt" > "$tmp/f16.json"

python3 - "$tmp" "$root/tests/data/logits_golden_kv.json" "$commit" "$(sha256sum "$model" | cut -d' ' -f1)" <<'PY'
import json, sys
tmp, out, commit, sha = sys.argv[1:]
doc = {
    "source": "tests/golden/dump_logits_kv.cpp linked against libllama (llama.cpp)",
    "llama_cpp_commit": commit,
    "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "model_sha256": sha,
    "note": "one batch per prompt from position 0, parse_special on, no BOS; 'last': the final "
            "position's logits (top 100 and stats); 'all': every position (top 20)",
    "f32_kv_no_fa": json.load(open(f"{tmp}/f32.json")),
    "f16_kv_fa": json.load(open(f"{tmp}/f16.json")),
}
with open(out, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"make_llama_golden2: wrote {out}", file=sys.stderr)
PY

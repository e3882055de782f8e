#!/usr/bin/env bash
# Regenerates the llama.cpp golden files in tests/data/ from an already-built llama.cpp:
#   tests/data/tokenizer_golden.json   token ids from llama-tokenize for ~40 strings
#   tests/data/logits_golden.json      logits summaries (tests/golden/dump_logits.cpp)
#   tests/data/perplexity_golden.json  llama-perplexity on /usr/share/common-licenses/GPL-3
#   tests/data/llamacpp_bench.txt      llama-bench on this machine (a measurement, not a target)
#
# Usage: tests/golden/make_llamacpp_golden.sh LLAMA_CPP_BUILD_DIR [MODEL.gguf]
#   LLAMA_CPP_BUILD_DIR: a CPU build of llama.cpp (its bin/ holds llama-tokenize,
#   llama-perplexity, llama-bench and libllama.so); this script builds nothing of llama.cpp.
#   MODEL defaults to the SmolLM2-135M-Instruct Q4_1 file from scripts/fetch_model.sh.
# Env: THREADS (default 2); STEPS, a subset of "tokenizer logits perplexity bench" (default all).
set -euo pipefail

[ $# -ge 1 ] || { sed -n 2,15p "$0"; exit 2; }
build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="${2:-$("$root/scripts/fetch_model.sh" | tail -n 1)}"
threads="${THREADS:-2}"
bin="$build/bin"
out="$root/tests/data"
for tool in llama-tokenize llama-perplexity llama-bench; do
  [ -x "$bin/$tool" ] || { echo "make_llamacpp_golden: $bin/$tool not found" >&2; exit 1; }
done
src="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")"
[ -f "$src/include/llama.h" ] || { echo "make_llamacpp_golden: no llama.h under '$src'" >&2; exit 1; }
commit="$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)"
model_sha="$(sha256sum "$model" | cut -d' ' -f1)"
mkdir -p "$out"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
echo "make_llamacpp_golden: llama.cpp $commit, model $model" >&2
steps=" ${STEPS:-tokenizer logits perplexity bench} "
want() { [[ "$steps" == *" $1 "* ]]; }

# ---- 1. tokenizer ----------------------------------------------------------------------
want tokenizer && python3 - "$bin/llama-tokenize" "$model" "$out/tokenizer_golden.json" "$commit" "$model_sha" "$tmp" <<'PY'
import json, os, subprocess, sys
tool, model, out_path, commit, model_sha, tmp = sys.argv[1:]
S = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
cases = [
    # (name, text, parse_special)
    ("ascii_prose", "Hello world! The quick brown fox jumps over the lazy dog.", True),
    ("capital", "The capital of France is", True),
    ("leading_space", " leading space", True),
    ("two_leading_spaces", "  two leading spaces", True),
    ("trailing_spaces", "trailing spaces   ", True),
    ("inner_spaces", "multiple   spaces    between\twords", True),
    ("newlines", "line one\nline two\n\nline four\n", True),
    ("only_newlines", "\n\n\n", True),
    ("crlf", "first line\r\nsecond line\r\n", True),
    ("tabs", "\t\ttabs\tand\ttext\t", True),
    ("python", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n", True),
    ("c_tabs", "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n", True),
    ("digits", "1234567890", True),
    ("numbers", "Pi is 3.14159, e is 2.71828; 1,000,000 items in 2024 (x10^6).", True),
    ("space_before_digits", "abc   123 4", True),
    ("contractions", "It's a dog's life, isn't it? They're sure we've done it, I'm told they'll go, he'd say.", True),
    ("contractions_upper", "IT'S DON'T WE'RE i'D", True),
    ("curly_apostrophe", "It\u2019s John\u2019s book", True),
    ("accents", "Caf\u00e9, na\u00efve, r\u00e9sum\u00e9, \u00c5ngstr\u00f6m, Stra\u00dfe, fa\u00e7ade", True),
    ("combining", "e\u0301cole nai\u0308ve", True),
    ("cjk", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u6587\u672c", True),
    ("korean", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", True),
    ("cyrillic_arabic_hebrew", "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440, \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645, \u05e9\u05dc\u05d5\u05dd", True),
    ("devanagari", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e", True),
    ("emoji", "I love \U0001f999 and \U0001f917! \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467", True),
    ("math_symbols", "x\u00b2 + y\u00b3 = z\u00bd \u2264 \u221e \u2192 \u2211 \u222b \u216b \u0663\u0664", True),
    ("unicode_spaces", "a\u00a0b\u2003c\u3000d \u200be", True),
    ("url_symbols", "URL: https://example.com/path?q=1&x=2#top @user $100 ~/dir/file.txt", True),
    ("json", "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}", True),
    ("punctuation", "Wait... what?!?! (yes) [no] {maybe} <tag/> --- ___ *** ''quoted''", True),
    ("markdown", "# Title\n\n- item 1\n- item 2\n\n```python\nprint('hi')\n```\n", True),
    ("prose", "In 1905, Albert Einstein published four papers that changed physics; "
              "the third introduced special relativity.", True),
    ("single_space", " ", True),
    ("single_newline", "\n", True),
    ("single_char", "a", True),
    ("empty", "", True),
    ("chatml_special", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", True),
    ("chatml_plain", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", False),
    ("chat_template", S + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", True),
    ("specials_adjacent", "<|endoftext|><repo_name>foo<file_sep>bar<|im_end|><|im_end|>x", True),
]
result = []
for i, (name, text, parse_special) in enumerate(cases):
    path = os.path.join(tmp, f"tok{i}.txt")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    cmd = [tool, "-m", model, "-f", path, "--ids", "--no-escape", "--log-disable"]
    if not parse_special:
        cmd.append("--no-parse-special")
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    lines = [l for l in run.stdout.splitlines() if l.startswith("[")]
    ids = json.loads(lines[-1])
    result.append({"name": name, "text": text, "parse_special": parse_special, "ids": ids})
doc = {
    "source": "llama-tokenize (llama.cpp)",
    "llama_cpp_commit": commit,
    "model": os.path.basename(model),
    "model_sha256": model_sha,
    "command": "llama-tokenize -m MODEL -f TEXT_FILE --ids --no-escape --log-disable [--no-parse-special]",
    "add_special": False,
    "note": "ids as llama.cpp tokenizes the UTF-8 text; add_bos is false for this model",
    "cases": result,
}
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"tokenizer: {len(result)} cases -> {out_path}", file=sys.stderr)
PY

# ---- 2. logits -------------------------------------------------------------------------
if want logits; then
g++ -std=c++17 -O2 -I"$src/include" -I"$src/ggml/include" "$root/tests/golden/dump_logits.cpp" \
    -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" -o "$tmp/dump_logits"
printf '%s' "The capital of France is" > "$tmp/p0.txt"
printf '%s' "Once upon a time, in a small village by the sea," > "$tmp/p1.txt"
printf 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n' > "$tmp/p2.txt"
printf '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n' > "$tmp/p3.txt"
"$tmp/dump_logits" "$model" "$tmp/logits.json" "$threads" 0 "$tmp"/p{0,1,2,3}.txt
python3 - "$tmp/logits.json" "$out/logits_golden.json" "$commit" "$model" "$model_sha" <<'PY'
import json, os, sys
src, dst, commit, model, sha = sys.argv[1:]
d = json.load(open(src, encoding="utf-8"))
doc = {"source": "tests/golden/dump_logits.cpp linked against libllama (llama.cpp)",
       "llama_cpp_commit": commit, "model": os.path.basename(model), "model_sha256": sha,
       "note": ("one batch per prompt from position 0, parse_special on, no BOS; llama.cpp's CPU "
                "backend multiplies Q4_1/Q8_0 weights with Q8_1/Q8_0-quantized activations, so "
                "expect small differences from a float activation path. 'last': final position, "
                "top 100 (id, logit) + stats; 'all' (first prompt only): every position, top 20; "
                "'greedy': 16 argmax tokens after the prompt.")}
doc.update(d)
json.dump(doc, open(dst, "w", encoding="utf-8"), ensure_ascii=False, indent=1)
print(f"logits: {len(d['prompts'])} prompts -> {dst}", file=sys.stderr)
PY
fi

# ---- 3. perplexity ---------------------------------------------------------------------
if want perplexity; then
text=/usr/share/common-licenses/GPL-3   # from Debian's base-files, on every Debian machine
chunks=8
ppl_cmd=(llama-perplexity -m MODEL -f "$text" -c 512 -b 512 --chunks "$chunks" -t "$threads")
"$bin/llama-perplexity" -m "$model" -f "$text" -c 512 -b 512 --chunks "$chunks" -t "$threads" \
    > "$tmp/ppl.out" 2> "$tmp/ppl.err"
# llama-perplexity's -f drops one trailing newline; count tokens of the same bytes.
python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); open(sys.argv[2],"wb").write(d[:-1] if d.endswith(b"\n") else d)' \
    "$text" "$tmp/ppl_input.txt"
n_tokens="$("$bin/llama-tokenize" -m "$model" -f "$tmp/ppl_input.txt" --ids --no-escape --log-disable \
    | grep '^\[' | tail -n 1 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
python3 - "$tmp/ppl.out" "$tmp/ppl.err" "$out/perplexity_golden.json" "$commit" "$model" \
    "$model_sha" "$text" "$n_tokens" "$chunks" "$threads" "${ppl_cmd[*]}" <<'PY'
import hashlib, json, math, os, re, sys
out, err, dst, commit, model, sha, text, n_tokens, chunks, threads, cmd = sys.argv[1:]
log = open(out, encoding="utf-8", errors="replace").read() + open(err, encoding="utf-8", errors="replace").read()
cum = [float(v) for _, v in re.findall(r"\[(\d+)\](\d+\.\d+),", log)]
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
assert m and len(cum) == int(chunks), "could not parse llama-perplexity output:\n" + log[-3000:]
n_ctx, scored = 512, 512 - 512 // 2 - 1
# llama-perplexity prints the running (cumulative) PPL after each chunk; per-chunk values are
# recovered from it (exact up to the 4 printed decimals).
nll = [math.log(p) * scored * (k + 1) for k, p in enumerate(cum)]
per_chunk = [math.exp((nll[k] - (nll[k - 1] if k else 0.0)) / scored) for k in range(len(nll))]
doc = {
    "source": "llama-perplexity (llama.cpp)", "llama_cpp_commit": commit,
    "model": os.path.basename(model), "model_sha256": sha,
    "command": cmd,
    "text_file": text, "text_sha256": hashlib.sha256(open(text, "rb").read()).hexdigest(),
    "text_tokens": int(n_tokens),
    "text_tokens_note": "tokens of the file minus one trailing newline (llama-perplexity's -f drops it); no BOS",
    "n_ctx": n_ctx, "n_chunks": int(chunks), "n_threads": int(threads),
    "method": ("chunk k is tokens [512k, 512k+512) run from position 0 in a fresh cache; the "
               "negative log-likelihood of tokens 257..511 of each chunk (255 per chunk, "
               "predicted from positions 256..510) is averaged over all chunks"),
    "final_ppl": float(m.group(1)), "final_ppl_stderr": float(m.group(2)),
    "cumulative_ppl": cum,
    "per_chunk_ppl_derived": [round(v, 4) for v in per_chunk],
}
json.dump(doc, open(dst, "w", encoding="utf-8"), indent=1)
open(dst, "a").write("\n")
print(f"perplexity: PPL {doc['final_ppl']} over {chunks} chunks -> {dst}", file=sys.stderr)
PY
fi

# ---- 4. llama-bench --------------------------------------------------------------------
if want bench; then
  bench="$out/llamacpp_bench.txt"
  {
    echo "# llama-bench, llama.cpp $commit (CPU build: GGML_NATIVE=OFF, AVX2/FMA/F16C)"
    echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# machine: $(lscpu | sed -n 's/^Model name: *//p'), nproc $(nproc)"
    echo "# model: $(basename "$model") sha256 $model_sha"
    echo "# load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# A measurement on a shared, noisy machine; not a target."
    echo
    echo "\$ llama-bench -m MODEL -t $threads -p 512 -n 128"
    "$bin/llama-bench" -m "$model" -t "$threads" -p 512 -n 128 2>&1
    echo
    echo "\$ llama-bench -m MODEL -t $threads -p 512 -n 128 -d 4096"
    "$bin/llama-bench" -m "$model" -t "$threads" -p 512 -n 128 -d 4096 2>&1
  } > "$bench"
  echo "bench -> $bench" >&2
fi

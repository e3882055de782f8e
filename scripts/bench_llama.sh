#!/usr/bin/env bash
# IndexShare vs llama.cpp on this machine, same GGUF, same thread count, interleaved:
#   ppP      prompt processing, P-token batch (logits of the last token only)
#   tgN      generation, N single-token steps
# each at depth 0 and at depth D (D tokens already in the KV cache: llama-bench -d D,
# `indexshare bench -d D`). Both engines use an f16 KV cache (llama.cpp's default).
#
# Usage: LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin scripts/bench_llama.sh [MODEL.gguf]
#   LLAMA_CPP_BIN   directory holding a prebuilt llama-bench (this script builds nothing)
#   MODEL           default: the SmolLM2-135M-Instruct Q4_1 file of scripts/fetch_model.sh
# Env:
#   THREADS=2  REPS=3  ROUNDS=2   threads; repetitions per test; rounds of the two engines,
#                                 alternated (the best round per engine and test is kept, so a
#                                 burst of load on a shared machine hurts both alike)
#   PROMPT=512 GEN=128 DEPTHS="0 4096"
#   INDEXSHARE=build/indexshare   the indexshare binary
#   JSON=out.json                 also write every measurement there
# Prints a table: test, llama.cpp t/s, indexshare t/s, ratio (indexshare / llama.cpp).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to a directory with a prebuilt llama-bench}"
lb="$LLAMA_CPP_BIN/llama-bench"
[ -x "$lb" ] || { echo "bench_llama: $lb not found or not executable" >&2; exit 1; }
is="${INDEXSHARE:-$root/build/indexshare}"
[ -x "$is" ] || { echo "bench_llama: $is not found (run scripts/build.sh)" >&2; exit 1; }
model="${1:-}"
if [ -z "$model" ]; then
  model="$("$root/scripts/fetch_model.sh" | tail -n 1)"
fi
[ -f "$model" ] || { echo "bench_llama: model $model not found" >&2; exit 1; }
threads="${THREADS:-2}"; reps="${REPS:-3}"; rounds="${ROUNDS:-2}"
prompt="${PROMPT:-512}"; gen="${GEN:-128}"; depths="${DEPTHS:-0 4096}"

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
echo "bench_llama: $(basename "$model"), $threads threads, $reps reps x $rounds rounds, depths $depths" >&2
for r in $(seq 1 "$rounds"); do
  for d in $depths; do
    # Alternate which engine goes first from round to round.
    order="llama indexshare"; [ $((r % 2)) -eq 0 ] && order="indexshare llama"
    for e in $order; do
      echo "bench_llama: round $r, depth $d, $e" >&2
      if [ "$e" = llama ]; then
        "$lb" -m "$model" -t "$threads" -p "$prompt" -n "$gen" -d "$d" -r "$reps" -ctk f16 -ctv f16 -o json \
          > "$tmp/llama_${r}_$d.json" 2> "$tmp/llama_${r}_$d.log" \
          || { cat "$tmp/llama_${r}_$d.log" >&2; exit 1; }
      else
        "$is" -t "$threads" bench -m "$model" -p "$prompt" -n "$gen" -d "$d" -r "$reps" --kv f16 --json \
          > "$tmp/is_${r}_$d.json"
      fi
    done
  done
done

python3 - "$tmp" "${JSON:-}" <<'PY'
import glob, json, os, sys
tmp, out = sys.argv[1], sys.argv[2]
best = {}   # (test, depth) -> {engine: t/s}
runs = []
def keep(engine, test, depth, ts):
    runs.append({"engine": engine, "test": test, "n_depth": depth, "avg_ts": ts})
    slot = best.setdefault((test, depth), {})
    slot[engine] = max(slot.get(engine, 0.0), ts)
for f in sorted(glob.glob(os.path.join(tmp, "llama_*.json"))):
    for t in json.load(open(f)):
        name = f"pp{t['n_prompt']}" if t["n_prompt"] > 0 else f"tg{t['n_gen']}"
        keep("llama.cpp", name, t["n_depth"], t["avg_ts"])
for f in sorted(glob.glob(os.path.join(tmp, "is_*.json"))):
    for t in json.load(open(f)):
        keep("indexshare", t["test"], t["n_depth"], t["avg_ts"])
print(f"| {'test':<14} | {'llama.cpp t/s':>13} | {'indexshare t/s':>14} | {'ratio':>6} |")
print(f"| {'-'*14} | {'-'*13}: | {'-'*14}: | {'-'*6}: |")
for (test, depth) in sorted(best, key=lambda k: (k[1], not k[0].startswith("pp"), k[0])):
    v = best[(test, depth)]
    a, b = v.get("llama.cpp", 0.0), v.get("indexshare", 0.0)
    label = test + (f" @ d{depth}" if depth else "")
    ratio = f"{b / a:.2f}x" if a > 0 else "n/a"
    print(f"| {label:<14} | {a:13.2f} | {b:14.2f} | {ratio:>6} |")
if out:
    json.dump({"runs": runs, "best": [{"test": t, "n_depth": d, **v} for (t, d), v in best.items()]},
              open(out, "w"), indent=1)
PY

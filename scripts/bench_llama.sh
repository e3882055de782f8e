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
#   DSA_DEPTHS="4096 7680"        depths at which indexshare also runs DSA on every layer and
#                                 IndexShare 1/4 (--freq 4 --offset 1), top-k = context / 8,
#                                 with the indexers of INDEXERS (default: the committed
#                                 SmolLM2 per-layer file); DSA_DEPTHS="" skips them
# Prints a table: test, llama.cpp t/s, indexshare t/s, ratio (indexshare / llama.cpp); then, for
# the DSA depths, each DSA mode's t/s, its ratio to llama.cpp dense and the share of its time
# spent selecting (indexer + top-k).
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
dsa_depths="${DSA_DEPTHS-4096 7680}"
indexers="${INDEXERS:-$root/data/indexers/SmolLM2-135M-Instruct.Q4_1.per-layer.safetensors}"
all_depths="$(printf '%s\n' $depths $dsa_depths | sort -n -u | tr '\n' ' ')"

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
echo "bench_llama: $(basename "$model"), $threads threads, $reps reps x $rounds rounds, depths $depths" >&2
for r in $(seq 1 "$rounds"); do
  for d in $all_depths; do
    # Alternate which engine goes first from round to round.
    order="llama indexshare"
    case " $dsa_depths " in *" $d "*) order="llama indexshare dsa shared" ;; esac
    [ $((r % 2)) -eq 0 ] && order="$(echo $order | tr ' ' '\n' | tac | tr '\n' ' ')"
    for e in $order; do
      echo "bench_llama: round $r, depth $d, $e" >&2
      if [ "$e" = llama ]; then
        "$lb" -m "$model" -t "$threads" -p "$prompt" -n "$gen" -d "$d" -r "$reps" -ctk f16 -ctv f16 -o json \
          > "$tmp/llama_${r}_$d.json" 2> "$tmp/llama_${r}_$d.log" \
          || { cat "$tmp/llama_${r}_$d.log" >&2; exit 1; }
      elif [ "$e" = indexshare ]; then
        "$is" -t "$threads" bench -m "$model" -p "$prompt" -n "$gen" -d "$d" -r "$reps" --kv f16 --json \
          > "$tmp/is_${r}_$d.json"
      else
        extra=""; [ "$e" = shared ] && extra="--freq 4 --offset 1"
        "$is" -t "$threads" bench -m "$model" -p "$prompt" -n "$gen" -d "$d" -r "$reps" --kv f16 --json \
          --dsa --indexers "$indexers" $extra > "$tmp/${e}_${r}_$d.json"
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
share = {}  # (engine, test, depth) -> selection share of the best run
for eng, name in (("dsa", "DSA every layer"), ("shared", "IndexShare 1/4")):
    for f in sorted(glob.glob(os.path.join(tmp, f"{eng}_*.json"))):
        for t in json.load(open(f)):
            key = (t["test"], t["n_depth"])
            if t["avg_ts"] > best.get(key, {}).get(name, 0.0):
                share[(name, *key)] = t.get("select_share", float("nan"))
            keep(name, t["test"], t["n_depth"], t["avg_ts"])
print(f"| {'test':<14} | {'llama.cpp t/s':>13} | {'indexshare t/s':>14} | {'ratio':>6} |")
print(f"| {'-'*14} | {'-'*13}: | {'-'*14}: | {'-'*6}: |")
for (test, depth) in sorted(best, key=lambda k: (k[1], not k[0].startswith("pp"), k[0])):
    v = best[(test, depth)]
    a, b = v.get("llama.cpp", 0.0), v.get("indexshare", 0.0)
    label = test + (f" @ d{depth}" if depth else "")
    ratio = f"{b / a:.2f}x" if a > 0 else "n/a"
    print(f"| {label:<14} | {a:13.2f} | {b:14.2f} | {ratio:>6} |")
dsa_rows = [(k, v) for k, v in best.items() if "DSA every layer" in v]
if dsa_rows:
    print()
    print(f"| {'test':<14} | {'mode':<16} | {'t/s':>9} | {'vs llama.cpp dense':>18} | {'vs indexshare dense':>19} | {'selection':>9} |")
    print(f"| {'-'*14} | {'-'*16} | {'-'*9}: | {'-'*18}: | {'-'*19}: | {'-'*9}: |")
    for (test, depth), v in sorted(dsa_rows, key=lambda kv: (kv[0][1], not kv[0][0].startswith("pp"))):
        label = test + (f" @ d{depth}" if depth else "")
        for name in ("indexshare", "DSA every layer", "IndexShare 1/4"):
            if name not in v:
                continue
            a, b, c = v.get("llama.cpp", 0.0), v[name], v.get("indexshare", 0.0)
            sh = share.get((name, test, depth))
            mode = "dense" if name == "indexshare" else name
            print(f"| {label:<14} | {mode:<16} | {b:9.2f} | {(f'{b / a:.2f}x' if a else 'n/a'):>18} | "
                  f"{(f'{b / c:.2f}x' if c else 'n/a'):>19} | {('-' if sh is None else f'{100 * sh:.1f}%'):>9} |")
if out:
    json.dump({"runs": runs, "best": [{"test": t, "n_depth": d, **v} for (t, d), v in best.items()]},
              open(out, "w"), indent=1)
PY

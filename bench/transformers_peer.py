#!/usr/bin/env python3
"""The GPU engine beside transformers' glm_moe_dsa on the same random model and the same GPU.

Builds a GLM-5-shaped model (GLM-5's attention, indexer and MLP dimensions; --layers decoder
layers with GLM-5.2's schedule rule, freq 4 / offset 3; the MoE reduced to --experts routed experts
all active plus the shared one; the vocabulary reduced to --vocab) with transformers' own random
initialisation on the GPU, saves it (f32 safetensors + config.json), then:
  1. correctness, f32 on both sides (--check-contexts, longer than index_topk so DSA selects):
     transformers in fp32 against `indexshare dsa-run --device cuda --weights-format f32
     --latent-cache f32 --indexer-cache f32`; both score the indexer in f32, so their index sets
     agree up to near-ties and the logits to f32 rounding;
  2. speed, bf16 on both sides (--contexts): transformers with the model cast to bf16 (its best
     attention implementation that runs) against the engine's default GPU path (bf16 weights,
     bf16 latent cache, FP8 indexer cache) on the same weights; one forward of T random tokens
     after a warm-up, CUDA-synchronised wall time, logits of the last --rows positions compared
     (here the index sets differ more: transformers ranks bf16 scores with many exact ties, the
     engine FP8 ones). Contexts grow until transformers runs out of memory or of --max-seconds.

Run it where torch + transformers + a GPU exist (scripts/gpu_engine.sh --peer "...").
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
import transformers


def log(*a):
    print(*a, flush=True)


def make_config(args):
    return {
        "model_type": "glm_moe_dsa", "architectures": ["GlmMoeDsaForCausalLM"],
        "vocab_size": args.vocab, "hidden_size": 6144, "intermediate_size": 12288,
        "moe_intermediate_size": 2048, "num_hidden_layers": args.layers,
        "num_attention_heads": 64, "num_key_value_heads": 64,
        "n_shared_experts": 1, "n_routed_experts": args.experts, "num_experts_per_tok": args.experts,
        "n_group": 1, "topk_group": 1, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
        "kv_lora_rank": 512, "q_lora_rank": 2048, "qk_rope_head_dim": 64, "qk_nope_head_dim": 192,
        "v_head_dim": 256, "index_n_heads": 32, "index_head_dim": 128, "index_topk": 2048,
        "first_k_dense_replace": min(3, args.layers), "hidden_act": "silu", "attention_bias": False,
        "attention_dropout": 0.0, "tie_word_embeddings": False, "initializer_range": 0.02,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 1048576, "rope_interleave": True,
        "indexer_rope_interleave": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 8000000.0},
        "index_topk_freq": 4, "index_skip_topk_offset": 3,
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": None, "use_cache": False,
        "dtype": "bfloat16",
    }


def build(args, d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(make_config(args), f, indent=2)
    config = transformers.AutoConfig.from_pretrained(d)
    torch.manual_seed(args.seed)
    impl = args.attn
    with torch.device("cuda"):
        try:
            model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=impl,
                                                                  dtype=torch.float32)
        except (ValueError, NotImplementedError) as e:
            log(f"transformers: attn_implementation={impl} refused ({e}); using eager")
            impl = "eager"
            model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=impl,
                                                                  dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        # e_score_correction_bias is a buffer left at zero by the initialisation: keep it so.
        for n, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise SystemExit(f"non-finite initial weight {n}")
    t0 = time.time()
    model.save_pretrained(d, safe_serialization=True)
    # save_pretrained rewrites config.json; make sure the DSA keys survived.
    with open(os.path.join(d, "config.json")) as f:
        saved = json.load(f)
    for k in ("index_topk_freq", "index_skip_topk_offset", "index_n_heads"):
        if k not in saved:
            raise SystemExit(f"save_pretrained dropped {k} from config.json")
    log(f"model: {args.layers} layers, {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, "
        f"saved to {d} in {time.time() - t0:.1f} s; transformers {transformers.__version__}, attention {impl}")
    return model, impl


def run_transformers(model, ids, rows):
    with torch.no_grad():
        torch.cuda.synchronize()
        t0 = time.time()
        out = model(input_ids=ids, use_cache=False, logits_to_keep=rows)
        torch.cuda.synchronize()
        return out.logits[0, -rows:].float(), time.time() - t0


def run_ours(args, d, id_lists, rows, out_dir, engine_args):
    """One dsa-run over several token lists (the model loads once); logits and times of each."""
    files = []
    for i, ids in enumerate(id_lists):
        tok = os.path.join(out_dir, f"peer_ids.{i}.txt")
        with open(tok, "w") as f:
            f.write(" ".join(str(int(x)) for x in ids[0].tolist()))
        files += ["--tokens-file", tok]
    lg = os.path.join(out_dir, "peer_logits.bin")
    cmd = [args.indexshare, "dsa-run", "--model", d, "--device", "cuda", "--logits-out", lg,
           "--logits-rows", str(rows), "--warmup", "--json", "--chunk", str(args.chunk)] + engine_args + files
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"indexshare failed: {r.stderr.strip()[-2000:]}")
    js = json.loads(r.stdout)
    out = []
    for i, ids in enumerate(id_lists):
        n = min(rows, ids.shape[1])
        path = lg if len(id_lists) == 1 else f"{lg}.{i}"
        logits = torch.from_file(path, dtype=torch.float32, size=n * args.vocab).view(n, args.vocab)
        out.append((logits, js["runs"][i]["prefill_seconds"]))
    return out, js


def compare(ours, ref):
    err = ((ours - ref).norm() / ref.norm()).item()
    top1 = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    return err, top1


def phase(args, model, d, contexts, engine_args, label, g, impl):
    """transformers at each context (until OOM / time budget), then the engine on the same ids."""
    refs, id_lists = [], []
    warm = torch.randint(0, args.vocab, (1, 256), generator=g).cuda()
    run_transformers(model, warm, 1)
    for T in contexts:
        ids = torch.randint(0, args.vocab, (1, T), generator=g)
        rows = min(args.rows, T)
        try:
            ref, t_ref = run_transformers(model, ids.cuda(), rows)
        except torch.OutOfMemoryError:
            log(f"[{label}] T {T}: transformers ran out of GPU memory")
            torch.cuda.empty_cache()
            break
        refs.append((T, ref.cpu(), t_ref))
        id_lists.append(ids)
        torch.cuda.empty_cache()
        if t_ref > args.max_seconds:
            log(f"[{label}] stopping after T {T}: transformers took over {args.max_seconds} s")
            break
    if not refs:
        return []
    ours, js = run_ours(args, d, id_lists, args.rows, args.out, engine_args)
    results = []
    for (T, ref, t_ref), (lg, t_ours) in zip(refs, ours):
        err, top1 = compare(lg, ref[-lg.shape[0]:])
        results.append({"phase": label, "context": T, "transformers_s": t_ref, "indexshare_s": t_ours,
                        "speedup": t_ref / t_ours, "logits_rel_err": err, "top1_agree": top1,
                        "rows": int(lg.shape[0]), "attention": impl, "indexshare_device": js.get("device")})
        log(f"[{label}] T {T:6d}: transformers {t_ref * 1e3:9.1f} ms, indexshare {t_ours * 1e3:8.1f} ms "
            f"({t_ref / t_ours:6.1f}x); logits rel err {err:.3g}, top-1 agree {top1:.3f}")
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--indexshare", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--check-contexts", default="1024,4096")
    ap.add_argument("--contexts", default="1024,2048,4096,8192,16384,32768")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    d = os.path.join(os.environ.get("TMPDIR", "/tmp"), "indexshare-peer-model")
    model, impl = build(args, d)
    g = torch.Generator().manual_seed(args.seed + 1)
    results = []
    if args.check_contexts:
        ctx = [int(x) for x in args.check_contexts.split(",")]
        results += phase(args, model, d, ctx, ["--weights-format", "f32", "--latent-cache", "f32",
                                               "--indexer-cache", "f32"], "f32 check", g, impl)
    # The bf16 model from the saved checkpoint (casting the module with .to() would also round
    # buffers such as the RoPE inverse frequencies to bf16, which transformers keeps in fp32).
    del model
    torch.cuda.empty_cache()
    model = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation=impl, dtype=torch.bfloat16,
                                                              device_map="cuda").eval()
    ctx = [int(x) for x in args.contexts.split(",")]
    results += phase(args, model, d, ctx, ["--weights-format", "bf16"], "bf16 speed", g, impl)
    with open(os.path.join(args.out, "peer.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "gpu": torch.cuda.get_device_name(), "layers": args.layers, "experts": args.experts,
                   "vocab": args.vocab, "results": results}, f, indent=2)
    if not results:
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds the GLM-MoE-DSA MTP (nextn layer) golden fixture with transformers.

transformers has no MTP forward for glm_moe_dsa / deepseek_v32 (it drops the nextn layer's
tensors on load), so the reference is composed here from transformers' own modules, following
the DeepSeek-V3 MTP module as vLLM and SGLang run it:

  h_i      = the target's final hidden state after its final norm (last_hidden_state)
  u_i      = eh_proj . [enorm(embed(x_{i+1})) ; hnorm(h_i)]          eh_proj [d, 2d]
  v        = the nextn decoder layer over u at positions 0 .. T-2 (transformers'
             GlmMoeDsaDecoderLayer with its own lightning indexer: a one-layer GlmMoeDsaModel
             run with inputs_embeds, whose final norm is the layer's shared_head.norm)
  logits_i = lm_head(shared_head.norm(v_i))                           -> a draft for x_{i+2}

The target is the glm_moe_dsa fixture model (tests/data/dsa_fixtures/glm_moe_dsa/model.safetensors)
under the GLM-5.2-style schedule of types_glm52 (FFFSSSF). The nextn layer is layer 7 (=
num_hidden_layers), a MoE layer with an indexer, random like the fixture's layers. Written:

  <out>/glm_moe_dsa/mtp/config.json        the target's config + num_nextn_predict_layers 1
  <out>/glm_moe_dsa/mtp/mtp.safetensors    model.layers.7.* in the real checkpoints' names
                                           (enorm, hnorm, eh_proj, shared_head.norm,
                                           shared_head.head and embed_tokens as copies of the
                                           model's, the decoder block per expert)
  <out>/glm_moe_dsa/mtp/ref.safetensors    input_ids [1, T] I64, hidden [T, d] F32 (h above),
                                           logits [T, V] (the target's), mtp_logits [T-1, V],
                                           mtp_topk [T-1, K] I32 (ascending, -1 padded)

The tests join mtp.safetensors with ../model.safetensors (a sharded checkpoint). Checks before
writing: the one-layer model's indexer ran and attended min(t + 1, K) keys per row; its logits
differ from a dense (index_topk >= T) run of the same weights.

Usage: make_mtp_fixtures.py --out DIR
"""
import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_dsa_fixtures as dsa  # noqa: E402

MTP_SEED = dsa.SEED + 100


def rand_norm(n, g):
    return 1.0 + 0.1 * torch.randn(n, generator=g)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(4)
    mt = "glm_moe_dsa"
    spec = dsa.ARCHS[mt]
    mod = importlib.import_module(f"transformers.models.{mt}.modeling_{mt}")
    arch_dir = os.path.join(a.out, mt)
    weights = os.path.join(arch_dir, "model.safetensors")
    assert os.path.exists(weights), f"{weights}: run make_dsa_fixtures.py first"
    T, L = dsa.T, dsa.LAYERS
    g = torch.Generator().manual_seed(dsa.SEED + 7)
    ids = torch.randint(0, dsa.COMMON["vocab_size"], (1, T), generator=g)  # the fixtures' input

    with tempfile.TemporaryDirectory() as work:
        cfg = dsa.make_config_dict(mt, spec, spec["schedules"]["types_glm52"])
        tdir = os.path.join(work, "target")
        os.makedirs(tdir)
        with open(os.path.join(tdir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        shutil.copy(weights, tdir)
        target = mod.GlmMoeDsaForCausalLM.from_pretrained(tdir, attn_implementation="eager",
                                                          dtype=torch.float32).eval()
        # The nextn block: layer 0 of a one-layer model (every layer F, MoE like layer 7 would be).
        one = dict(cfg)
        for k in ("indexer_types", "index_topk_freq", "index_skip_topk_offset", "mlp_layer_types"):
            one.pop(k, None)
        one.update(num_hidden_layers=1, first_k_dense_replace=0)
        block, _ = dsa.build(one, work)
        dsa.randomize(block, MTP_SEED)
        gm = torch.Generator().manual_seed(MTP_SEED + 1)
        d, V = cfg["hidden_size"], cfg["vocab_size"]
        eps = cfg["rms_norm_eps"]
        enorm, hnorm = mod.GlmMoeDsaRMSNorm(d, eps=eps), mod.GlmMoeDsaRMSNorm(d, eps=eps)
        with torch.no_grad():
            enorm.weight.copy_(rand_norm(d, gm))
            hnorm.weight.copy_(rand_norm(d, gm))
            eh_proj = torch.randn(d, 2 * d, generator=gm) / (2 * d) ** 0.5
            block.lm_head.weight.copy_(target.lm_head.weight)  # the shared head is the model's

        with torch.no_grad():
            out = target(input_ids=ids, use_cache=False, output_hidden_states=False)
            logits = out.logits[0].float()
            hidden = target.model(input_ids=ids, use_cache=False).last_hidden_state[0].float()
            e = target.model.embed_tokens(ids[0, 1:])
            u = torch.cat([enorm(e), hnorm(hidden[:-1])], dim=-1) @ eh_proj.T
            pos = torch.arange(T - 1).unsqueeze(0)
            with dsa.Capture(mod) as cap:
                cap.attach(block)
                mtp_logits = block(inputs_embeds=u.unsqueeze(0), position_ids=pos, use_cache=False).logits[0]
            assert 0 in cap.indexer_out, "the nextn layer's indexer did not run"
            allowed, _ = cap.masks[0]
            k = cfg["index_topk"]
            tab, counts = dsa.topk_table(allowed, k)
            assert counts == [min(t + 1, k) for t in range(T - 1)], counts
            dense = dict(one)
            dense["index_topk"] = T
            dblock, _ = dsa.build(dense, work, {n: p.clone() for n, p in block.state_dict().items()})
            dl = dblock(inputs_embeds=u.unsqueeze(0), position_ids=pos, use_cache=False).logits[0]
            dense_diff = (dl - mtp_logits).abs().max().item()
            assert dense_diff > 1e-2, f"sparse == dense ({dense_diff})"

        # model.layers.0.* of the block -> model.layers.7.*, per-expert layout; the MTP tensors.
        bstate = dsa.checkpoint_tensors(block.state_dict(), one)
        mtp = {}
        for n, v in bstate.items():
            if n.startswith("model.layers.0."):
                mtp[f"model.layers.{L}." + n[len("model.layers.0."):]] = v
        p = f"model.layers.{L}."
        mtp[p + "enorm.weight"] = enorm.weight.detach().clone()
        mtp[p + "hnorm.weight"] = hnorm.weight.detach().clone()
        mtp[p + "eh_proj.weight"] = eh_proj.clone()
        mtp[p + "shared_head.norm.weight"] = bstate["model.norm.weight"].clone()
        mtp[p + "shared_head.head.weight"] = target.lm_head.weight.detach().float().clone()
        mtp[p + "embed_tokens.weight"] = target.model.embed_tokens.weight.detach().float().clone()

        fdir = os.path.join(arch_dir, "mtp")
        os.makedirs(fdir, exist_ok=True)
        cfg_out = dict(cfg)
        cfg_out["num_nextn_predict_layers"] = 1
        with open(os.path.join(fdir, "config.json"), "w") as f:
            json.dump(cfg_out, f, indent=2)
        save_file({n: v.contiguous() for n, v in mtp.items()}, os.path.join(fdir, "mtp.safetensors"),
                  metadata={"format": "pt"})
        import transformers
        meta = {"transformers": transformers.__version__, "torch": torch.__version__,
                "dense_max_diff": f"{dense_diff:.6g}"}
        save_file({"input_ids": ids.clone().to(torch.int64), "hidden": hidden.contiguous(),
                   "logits": logits.contiguous(), "mtp_logits": mtp_logits.float().contiguous(),
                   "mtp_topk": tab}, os.path.join(fdir, "ref.safetensors"), metadata=meta)
        print(f"mtp fixture written to {fdir}: max|mtp logit| {mtp_logits.abs().max().item():.4g}, "
              f"sparse-vs-dense {dense_diff:.4g}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds the tiny DSA golden fixtures with transformers (run where torch + transformers exist).

For each architecture (glm_moe_dsa, deepseek_v32) one set of random fp32 weights is drawn and
written once, in the per-expert tensor layout of the real checkpoints:

  <out>/<model_type>/model.safetensors

and for each indexer-sharing schedule a fixture directory with

  <out>/<model_type>/<schedule>/config.json       the config the reference model was built from
  <out>/<model_type>/<schedule>/ref.safetensors   input_ids [1, T] I64, logits [T, V] F32,
                                                  topk.<layer> [T, K] I32 (ascending, -1 padded),
                                                  indexer_ran [L] I32, rope_inv_freq F32,
                                                  attn_scaling [L] F32

The top-k sets are the key positions each layer's attention actually attended to (read from the
attention mask that reached the eager attention function), so shared (S) layers record the
indices they reused. The script checks that:
  - the indexer ran exactly on the layers the schedule marks F;
  - every row attends to min(t + 1, index_topk) keys (sparse attention was active);
  - F layers attend to the indexer's own top-k, S layers to their F layer's;
  - logits differ from a run with index_topk >= T (sparse changes the result);
  - the written checkpoint loads back through from_pretrained to the same logits.
transformers 5.17 builds indexer modules only for F layers of glm_moe_dsa; its deepseek_v32 has
no index sharing, so only all-F DeepSeek fixtures exist (one per rope-key spelling).
A fixture that fails a check is not written. Nothing of transformers is copied into the output.

Usage: make_dsa_fixtures.py --out DIR [--src-dump DIR]
"""
import argparse
import importlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import traceback

import torch

import transformers
from safetensors.torch import save_file

T = 64          # sequence length (> index_topk so DSA is not a no-op)
LAYERS = 7
SEED = 1234

COMMON = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=16,
    num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=4,
    n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, routed_scaling_factor=2.5,
    norm_topk_prob=True, kv_lora_rank=32, q_lora_rank=48, qk_rope_head_dim=16,
    qk_nope_head_dim=16, index_n_heads=8, index_head_dim=32, index_topk=16,
    first_k_dense_replace=2, hidden_act="silu", attention_bias=False, attention_dropout=0.0,
    tie_word_embeddings=False, initializer_range=0.02, bos_token_id=0, eos_token_id=1,
    pad_token_id=None, use_cache=True,
)

ARCHS = {
    "glm_moe_dsa": dict(
        arch="GlmMoeDsaForCausalLM",
        extra=dict(v_head_dim=24, n_group=1, topk_group=1, rms_norm_eps=1e-5,
                   max_position_embeddings=4096, rope_interleave=True,
                   indexer_rope_interleave=True,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        schedules={
            "all_full": {},
            "freq2_off2": {"index_topk_freq": 2, "index_skip_topk_offset": 2},
            "pattern": {"index_topk_pattern": "FSSFFSF"},
            # GLM-5.2 style: freq 4 / offset 3 plus the explicit list it ships.
            "types_glm52": {"index_topk_freq": 4, "index_skip_topk_offset": 3,
                            "indexer_types": ["full", "full", "full", "shared", "shared",
                                              "shared", "full"]},
        },
    ),
    "deepseek_v32": dict(
        arch="DeepseekV32ForCausalLM",
        extra=dict(v_head_dim=16, n_group=4, topk_group=2, rms_norm_eps=1e-6,
                   max_position_embeddings=163840),
        schedules={
            # The real DeepSeek-V3.2 config.json spelling of YaRN (legacy keys).
            "all_full": {"rope_theta": 10000.0,
                         "rope_scaling": {"type": "yarn", "factor": 40.0,
                                          "original_max_position_embeddings": 4096,
                                          "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                                          "mscale_all_dim": 1.0}},
            # transformers' deepseek_v32 has no index sharing: every layer is F there.
            "all_full_v5keys": {},
        },
    ),
}
YARN_PARAMS = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
               "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
               "mscale": 1.0, "mscale_all_dim": 1.0}


def log(*a):
    print(*a, flush=True)


def expected_full(cfg):
    """The F/S rule of the spec, independent of transformers."""
    n = cfg["num_hidden_layers"]
    if cfg.get("indexer_types") is not None:
        return [t == "full" for t in cfg["indexer_types"]]
    if cfg.get("index_topk_pattern") is not None:
        return [c == "F" for c in cfg["index_topk_pattern"]]
    freq = max(int(cfg.get("index_topk_freq", 1)), 1)
    off = int(cfg.get("index_skip_topk_offset", 2))
    return [max(i - off + 1, 0) % freq == 0 for i in range(n)]


def make_config_dict(model_type, spec, schedule):
    cfg = dict(COMMON)
    cfg.update(spec["extra"])
    if model_type == "deepseek_v32" and "rope_scaling" not in schedule:
        cfg["rope_parameters"] = dict(YARN_PARAMS)
    cfg.update(schedule)
    cfg["model_type"] = model_type
    cfg["architectures"] = [spec["arch"]]
    cfg["dtype"] = "float32"
    cfg["transformers_version"] = transformers.__version__
    return cfg


def build(cfg_dict, workdir, state=None):
    d = tempfile.mkdtemp(dir=workdir)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2)
    config = transformers.AutoConfig.from_pretrained(d)
    try:
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=torch.float32)
    except TypeError:
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", torch_dtype=torch.float32)
    model.eval()
    if state is not None:
        # Shared (S) layers of glm_moe_dsa have no indexer module: their tensors stay unused.
        missing, unexpected = model.load_state_dict(state, strict=False)
        full = expected_full(cfg_dict)
        allowed = {k for k in state if ".self_attn.indexer." in k
                   and not full[int(k.split(".")[2])]}
        assert not missing and set(unexpected) <= allowed, (missing, unexpected)
    return model, config


def randomize(model, seed):
    """Unit-gain random weights so activations, routing and top-k are far from degenerate."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if "norm" in name and leaf == "weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))


def checkpoint_tensors(state, cfg):
    """HF module state -> real-checkpoint names (one tensor per expert projection)."""
    out = {}
    inter = cfg["moe_intermediate_size"]
    for k, v in state.items():
        v = v.detach().to(torch.float32).contiguous()
        if k.endswith("mlp.experts.gate_up_proj"):
            base = k[: -len("gate_up_proj")]
            for e in range(v.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = v[e, :inter].clone()
                out[f"{base}{e}.up_proj.weight"] = v[e, inter:].clone()
        elif k.endswith("mlp.experts.down_proj"):
            base = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = v[e].clone()
        else:
            out[k] = v
    return out


class Capture:
    """Wraps the modeling module's eager attention to read the mask each layer really used."""

    def __init__(self, mod):
        self.mod = mod
        self.orig = mod.eager_attention_forward
        self.masks = {}
        self.indexer_out = {}
        self.hooks = []

    def __enter__(self):
        cap = self

        def wrapped(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
            li = module.layer_idx
            m = attention_mask[0, 0] if attention_mask is not None else None
            if m is None:
                allowed = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool).tril()
            elif m.dtype == torch.bool:
                allowed = m.clone()
            else:
                allowed = m > -1e30
            idx = kw.get("indices")
            if idx is not None:
                sel = torch.zeros_like(allowed)
                sel.scatter_(-1, idx[0].long(), True)
                allowed &= sel
            cap.masks[li] = (allowed, float(scaling))
            return cap.orig(module, query, key, value, attention_mask, scaling, dropout, **kw)

        self.mod.eager_attention_forward = wrapped
        return self

    def attach(self, model):
        for name, m in model.named_modules():
            if type(m).__name__.endswith("Indexer"):
                def hook(module, args, output, name=name):
                    self.indexer_out[module.layer_idx] = output.detach().clone()
                self.hooks.append(m.register_forward_hook(hook))

    def __exit__(self, *exc):
        self.mod.eager_attention_forward = self.orig
        for h in self.hooks:
            h.remove()


def run(model, mod, ids):
    with Capture(mod) as cap, torch.no_grad():
        cap.attach(model)
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
    return logits, cap.masks, cap.indexer_out


def topk_table(allowed, k):
    t_len = allowed.shape[0]
    out = torch.full((t_len, k), -1, dtype=torch.int32)
    counts = []
    for t in range(t_len):
        pos = torch.nonzero(allowed[t], as_tuple=False).flatten()
        counts.append(len(pos))
        out[t, : len(pos)] = pos[:k].to(torch.int32)
    return out, counts


def make_arch(model_type, spec, out_root, workdir, summary):
    modname = f"transformers.models.{model_type}.modeling_{model_type}"
    mod = importlib.import_module(modname)
    arch_dir = os.path.join(out_root, model_type)
    os.makedirs(arch_dir, exist_ok=True)
    g = torch.Generator().manual_seed(SEED + 7)
    ids = torch.randint(0, COMMON["vocab_size"], (1, T), generator=g)

    state = None
    inv_freq_seen = None
    weights_written = False
    for sched_name, sched in spec["schedules"].items():
        tag = f"{model_type}/{sched_name}"
        try:
            cfg = make_config_dict(model_type, spec, sched)
            model, config = build(cfg, workdir, state)
            if state is None:
                randomize(model, SEED + (0 if model_type == "glm_moe_dsa" else 1))
                state = {k: v.clone() for k, v in model.state_dict().items()}
            log(f"[{tag}] config indexer_types={getattr(config, 'indexer_types', None)} "
                f"mlp_layer_types={getattr(config, 'mlp_layer_types', None)} "
                f"rope={getattr(config, 'rope_parameters', None)}")
            logits, masks, idx_out = run(model, mod, ids)
            full = expected_full(cfg)
            ran = [i in idx_out for i in range(LAYERS)]
            assert ran == full, f"indexer ran on {ran}, schedule says {full}"
            assert sorted(masks) == list(range(LAYERS)), f"attention captured for {sorted(masks)}"
            k = cfg["index_topk"]
            tensors = {"input_ids": ids.clone().to(torch.int64),
                       "logits": logits.contiguous(),
                       "indexer_ran": torch.tensor([int(r) for r in ran], dtype=torch.int32)}
            last_f = None
            for li in range(LAYERS):
                allowed, scaling = masks[li]
                tab, counts = topk_table(allowed, k)
                want = [min(t + 1, k) for t in range(T)]
                assert counts == want, f"layer {li}: attended counts {counts[:20]} != {want[:20]}"
                if full[li]:
                    sel = torch.zeros(T, T, dtype=torch.bool)
                    sel.scatter_(-1, idx_out[li][0].long(), True)
                    sel &= torch.ones(T, T, dtype=torch.bool).tril()
                    assert torch.equal(sel, allowed), f"layer {li}: mask != indexer top-k"
                    last_f = allowed
                else:
                    assert torch.equal(last_f, allowed), f"layer {li}: S layer != its F layer"
                tensors[f"topk.{li}"] = tab
            tensors["attn_scaling"] = torch.tensor([masks[i][1] for i in range(LAYERS)],
                                                   dtype=torch.float32)
            tensors["rope_inv_freq"] = model.model.rotary_emb.inv_freq.detach().float().clone()
            if inv_freq_seen is None:
                inv_freq_seen = tensors["rope_inv_freq"]
            assert torch.equal(inv_freq_seen, tensors["rope_inv_freq"]), "rope tables differ"
            # Sparse must matter: the same weights with index_topk >= T give other logits.
            dense_cfg = dict(cfg)
            dense_cfg["index_topk"] = T
            dmodel, _ = build(dense_cfg, workdir, state)
            dlogits, _, _ = run(dmodel, mod, ids)
            dense_diff = (dlogits - logits).abs().max().item()
            assert dense_diff > 1e-2, f"sparse == dense (max diff {dense_diff})"
            # The checkpoint layout must load back through transformers' own loader.
            ckpt = checkpoint_tensors(state, cfg)
            if not weights_written:
                save_file(ckpt, os.path.join(arch_dir, "model.safetensors"),
                          metadata={"format": "pt"})
                weights_written = True
            rt = tempfile.mkdtemp(dir=workdir)
            with open(os.path.join(rt, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
            shutil.copy(os.path.join(arch_dir, "model.safetensors"), rt)
            status = "OK"
            try:
                lmodel = transformers.AutoModelForCausalLM.from_pretrained(
                    rt, attn_implementation="eager", dtype=torch.float32).eval()
                rlogits, _, _ = run(lmodel, mod, ids)
                rt_diff = (rlogits - logits).abs().max().item()
                if rt_diff != 0.0:
                    status = f"RT-DIFF {rt_diff:.3g}"
            except Exception as e:
                traceback.print_exc()
                status = "RT-FAIL"
            fdir = os.path.join(arch_dir, sched_name)
            os.makedirs(fdir, exist_ok=True)
            with open(os.path.join(fdir, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
            meta = {"transformers": transformers.__version__, "torch": torch.__version__,
                    "schedule": "".join("F" if f else "S" for f in full),
                    "max_abs_logit": f"{logits.abs().max().item():.6g}",
                    "dense_max_diff": f"{dense_diff:.6g}"}
            save_file(tensors, os.path.join(fdir, "ref.safetensors"), metadata=meta)
            log(f"[{tag}] OK schedule={meta['schedule']} max|logit|={meta['max_abs_logit']} "
                f"sparse-vs-dense={meta['dense_max_diff']} scaling={tensors['attn_scaling'][0]:.6g}")
            summary.append((tag, status, meta["schedule"]))
        except Exception as e:  # keep going: report every fixture
            traceback.print_exc()
            log(f"[{tag}] FAILED: {e}")
            summary.append((tag, "FAILED", str(e)[:80]))


def dump_sources(dst):
    os.makedirs(dst, exist_ok=True)
    names = []
    for mt in ARCHS:
        for part in ("modeling", "configuration", "modular"):
            try:
                m = importlib.import_module(f"transformers.models.{mt}.{part}_{mt}")
                shutil.copy(m.__file__, os.path.join(dst, f"{part}_{mt}.py"))
                names.append(m.__file__)
            except Exception as e:
                log(f"no {part}_{mt}: {e}")
    try:
        import transformers.modeling_rope_utils as ru
        with open(os.path.join(dst, "rope_yarn.py"), "w") as f:
            f.write(inspect.getsource(ru._compute_yarn_parameters))
    except Exception as e:
        log(f"no yarn source: {e}")
    log("sources:", names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--src-dump")
    a = ap.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(4)
    log(f"transformers {transformers.__version__} torch {torch.__version__}")
    if a.src_dump:
        dump_sources(a.src_dump)
    os.makedirs(a.out, exist_ok=True)
    summary = []
    with tempfile.TemporaryDirectory() as work:
        for mt, spec in ARCHS.items():
            make_arch(mt, spec, a.out, work, summary)
    total = 0
    for root, _, files in os.walk(a.out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    log(f"\nfixtures: {total / 1e6:.2f} MB")
    for row in summary:
        log("  %-28s %-7s %s" % row)
    sys.exit(0 if all(r[1] == "OK" for r in summary) else 1)


if __name__ == "__main__":
    main()

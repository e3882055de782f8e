#!/usr/bin/env python3
"""Trains a multi-token-prediction (MTP) head for a Llama-family GGUF model (SmolLM2), the
DeepSeek-V3 recipe with one module, and optionally a lightning indexer for its attention.

The MTP module at row i reads the base model's final hidden state h_i (after its final norm, as
vLLM and SGLang pass it) and the embedding of the next token x_{i+1}:

    u_i = eh_proj([enorm(emb(x_{i+1})); hnorm(h_i)])        eh_proj: [d, 2d]
    v   = block(u)  (one Llama decoder layer, causal over the MTP rows, RoPE position i)
    logits_i = head(shared_head_norm(v_i))                  head: the base model's LM head

and is trained with cross-entropy against x_{i+2}; the base model, its embedding and its LM head
are frozen. The block starts as a copy of the base model's last layer with its two output
matrices zero (an identity), eh_proj as [0 | I] and shared_head_norm as h's typical RMS, so the
untrained head is the base model's next-token head applied to h_i.

With --indexer-heads > 0 a second phase distils the block's lightning indexer (the shape of
IndexShare's learned indexers: q = RoPE(Wq x) [H, D], k = RoPE(Wk x) [D], w = Ww x, RoPE on the
first rope_dim dims of each head, half-split pairs; scores sum_h w_h ReLU(q_h . k) / sqrt(H D)),
by KL from the block's renormalised maximum attention over heads (`distill --target max`).

Writes an IndexShare MTP file (safetensors, format "indexshare-mtp/1"; loaded by
src/io/mtp_file.cpp): matrices in F16, norms and the indexer in F32, the token ids by training frequency in I32
(vocab_by_frequency, for a reduced draft vocabulary), Q/K rows in the GGUF
(adjacent-pair RoPE) layout the engine reads, and the training record in the metadata.

Needs torch, transformers (which reads the GGUF through the `gguf` package), safetensors, numpy.
Runs on a GPU (bf16 autocast); --device cpu for a smoke test.

  python3 scripts/train_mtp.py --model M.gguf --fingerprint FNV --corpus DIR [DIR...] --out F
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def log(msg):
    print(msg, flush=True)


def gather_files(roots, exts, max_chars, seed):
    files = []
    for r in roots:
        for d, _, names in os.walk(r):
            for n in names:
                if os.path.splitext(n)[1] in exts:
                    files.append(os.path.join(d, n))
    files.sort()
    random.Random(seed).shuffle(files)
    texts, total = [], 0
    for p in files:
        try:
            with open(p, encoding="utf-8") as f:
                t = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        if len(t) < 256:
            continue
        texts.append(t)
        total += len(t)
        if total >= max_chars:
            break
    return texts, total, len(files)


def rms_norm(x, w, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rope_half(x, pos, inv_freq):
    """Rotates x [..., S, n] (n = 2 * len(inv_freq)) with half-split pairs (j, j + n/2)."""
    ang = pos[:, None].float() * inv_freq[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Block(torch.nn.Module):
    """One Llama decoder layer (HF layout: half-split RoPE; Q/K rows permuted to the GGUF layout on
    export). GQA, SwiGLU, pre-norms."""

    def __init__(self, d, ffn, heads, kv_heads, head_dim, theta, eps):
        super().__init__()
        self.h, self.hk, self.dh, self.eps = heads, kv_heads, head_dim, eps
        self.attn_norm = torch.nn.Parameter(torch.ones(d))
        self.wq = torch.nn.Linear(d, heads * head_dim, bias=False)
        self.wk = torch.nn.Linear(d, kv_heads * head_dim, bias=False)
        self.wv = torch.nn.Linear(d, kv_heads * head_dim, bias=False)
        self.wo = torch.nn.Linear(heads * head_dim, d, bias=False)
        self.ffn_norm = torch.nn.Parameter(torch.ones(d))
        self.w_gate = torch.nn.Linear(d, ffn, bias=False)
        self.w_up = torch.nn.Linear(d, ffn, bias=False)
        self.w_down = torch.nn.Linear(ffn, d, bias=False)
        self.register_buffer("inv_freq", theta ** (-torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)

    def qk(self, xn, pos):
        B, S, _ = xn.shape
        q = self.wq(xn).view(B, S, self.h, self.dh).transpose(1, 2)
        k = self.wk(xn).view(B, S, self.hk, self.dh).transpose(1, 2)
        return rope_half(q, pos, self.inv_freq), rope_half(k, pos, self.inv_freq)

    def forward(self, x, pos):
        B, S, _ = x.shape
        xn = rms_norm(x, self.attn_norm, self.eps)
        q, k = self.qk(xn, pos)
        v = self.wv(xn).view(B, S, self.hk, self.dh).transpose(1, 2)
        rep = self.h // self.hk
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(a.transpose(1, 2).reshape(B, S, self.h * self.dh))
        xn2 = rms_norm(x, self.ffn_norm, self.eps)
        return x + self.w_down(F.silu(self.w_gate(xn2)) * self.w_up(xn2)), xn


class Mtp(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d"]
        self.eps = cfg["eps"]
        self.enorm = torch.nn.Parameter(torch.ones(d))
        self.hnorm = torch.nn.Parameter(torch.ones(d))
        self.eh_proj = torch.nn.Linear(2 * d, d, bias=False)
        self.block = Block(d, cfg["ffn"], cfg["heads"], cfg["kv_heads"], cfg["head_dim"], cfg["theta"], cfg["eps"])
        self.shared_head_norm = torch.nn.Parameter(torch.ones(d))

    def forward(self, emb_next, h, pos):
        u = self.eh_proj(torch.cat([rms_norm(emb_next, self.enorm, self.eps), rms_norm(h, self.hnorm, self.eps)], -1))
        v, xn = self.block(u, pos)
        return rms_norm(v, self.shared_head_norm, self.eps), xn


class Indexer(torch.nn.Module):
    def __init__(self, d, heads, dim, rope_dim, theta):
        super().__init__()
        self.H, self.D, self.R = heads, dim, rope_dim
        self.wq = torch.nn.Linear(d, heads * dim, bias=False)
        self.wk = torch.nn.Linear(d, dim, bias=False)
        self.ww = torch.nn.Linear(d, heads, bias=False)
        for lin in (self.wq, self.wk, self.ww):
            torch.nn.init.normal_(lin.weight, std=d ** -0.5)
        self.register_buffer("inv_freq", theta ** (-torch.arange(0, rope_dim, 2).float() / rope_dim), persistent=False)

    def log_probs(self, x, pos):
        """log softmax over keys s <= t of the indexer scores, [B, S, S] (f32)."""
        B, S, _ = x.shape
        x = x.float()
        q = self.wq(x).view(B, S, self.H, self.D)
        k = self.wk(x)
        w = self.ww(x)
        q = torch.cat([rope_half(q[..., : self.R].transpose(1, 2), pos, self.inv_freq).transpose(1, 2), q[..., self.R:]], -1)
        k = torch.cat([rope_half(k[..., : self.R], pos, self.inv_freq), k[..., self.R:]], -1)
        s = torch.einsum("bthd,bsd->bths", q, k).relu()
        s = torch.einsum("bths,bth->bts", s, w) * (self.H * self.D) ** -0.5
        mask = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()
        return s.masked_fill(~mask, float("-inf")).log_softmax(-1)


def gguf_qk_layout(w, heads):
    """HF rows (half-split RoPE pairs) -> GGUF rows (adjacent pairs), as llama.cpp's converter does."""
    n, k = w.shape
    return w.reshape(heads, 2, n // heads // 2, k).transpose(1, 2).reshape(n, k)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the base model's GGUF file")
    ap.add_argument("--fingerprint", required=True, help="the GGUF's IndexShare fingerprint (fnv1a64:...:size)")
    ap.add_argument("--corpus", nargs="+", required=True, help="folders of training text (held-out text must not be here)")
    ap.add_argument("--ext", default=".py", help="comma-separated file extensions to read (default .py)")
    ap.add_argument("--max-chars", type=int, default=120_000_000)
    ap.add_argument("--seq", type=int, default=2048, help="tokens per training window")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=300.0, help="training time budget of the MTP phase")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--indexer-heads", type=int, default=4)
    ap.add_argument("--indexer-dim", type=int, default=32)
    ap.add_argument("--indexer-rope-dim", type=int, default=16)
    ap.add_argument("--indexer-seconds", type=float, default=60.0)
    ap.add_argument("--indexer-seq", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads of torch (0: its default)")
    ap.add_argument("--log-every", type=int, default=50, help="steps between progress lines")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", help="training record (loss curve) as JSON")
    a = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from safetensors.torch import save_file

    torch.manual_seed(a.seed)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    t_start = time.time()
    mdir, mfile = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(mdir, gguf_file=mfile)
    base = AutoModelForCausalLM.from_pretrained(mdir, gguf_file=mfile, dtype=torch.float32).to(dev).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    hc = base.config
    cfg = dict(d=hc.hidden_size, ffn=hc.intermediate_size, heads=hc.num_attention_heads, kv_heads=hc.num_key_value_heads,
               head_dim=hc.hidden_size // hc.num_attention_heads, theta=float(getattr(hc, "rope_theta", None) or
                                                                              hc.rope_parameters["rope_theta"]),
               eps=hc.rms_norm_eps, vocab=hc.vocab_size, layers=hc.num_hidden_layers)
    log(f"model {a.model}: {cfg} ({time.time() - t_start:.0f} s)")

    texts, chars, nfiles = gather_files(a.corpus, set(a.ext.split(",")), a.max_chars, a.seed)
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    sep = tok.eos_token_id if tok.eos_token_id is not None else 0
    stream = np.fromiter((t for doc in ids for t in doc + [sep]), dtype=np.int32)
    log(f"corpus: {len(texts)} of {nfiles} files, {chars / 1e6:.1f} M chars, {len(stream) / 1e6:.2f} M tokens "
        f"({time.time() - t_start:.0f} s)")
    W = a.seq + 2
    nwin = len(stream) // W
    wins = torch.from_numpy(stream[: nwin * W].reshape(nwin, W).astype(np.int64))
    # The last 2% of the windows measure the loss (not trained on).
    nval = max(1, nwin // 50)
    val, train = wins[-nval:], wins[:-nval]
    log(f"windows of {W}: {len(train)} train, {len(val)} validation")

    # The export writes Q/K rows back in the GGUF layout: check the conversion against the file.
    import gguf
    reader = gguf.GGUFReader(a.model)
    last = base.model.layers[-1]
    for name, mine, heads in (("attn_q", last.self_attn.q_proj.weight, cfg["heads"]),
                              ("attn_k", last.self_attn.k_proj.weight, cfg["kv_heads"])):
        t = next(t for t in reader.tensors if t.name == f"blk.{cfg['layers'] - 1}.{name}.weight")
        raw = torch.from_numpy(np.array(gguf.dequantize(t.data, t.tensor_type), dtype=np.float32)).reshape(mine.shape)
        err = (gguf_qk_layout(mine.detach().float().cpu(), heads) - raw).abs().max().item()
        assert err < 1e-5, f"{name}: the GGUF row layout does not round-trip (max error {err})"
    tied = "output.weight" not in {t.name for t in reader.tensors}
    assert not tied or torch.equal(base.lm_head.weight, base.model.embed_tokens.weight), "LM head not tied to the embedding"
    del reader
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        w = val[: a.batch].to(dev)
        lg = base(input_ids=w[:, : a.seq]).logits.float()
        base_loss = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), w[:, 1 : a.seq + 1].reshape(-1)).item()
        del lg
    log(f"base model next-token loss on the validation windows: {base_loss:.4f} (Q/K layout checked, tied head {tied})")

    mtp = Mtp(cfg).to(dev)
    with torch.no_grad():
        b = mtp.block
        b.attn_norm.copy_(last.input_layernorm.weight)
        b.ffn_norm.copy_(last.post_attention_layernorm.weight)
        for mine, theirs in ((b.wq, last.self_attn.q_proj), (b.wk, last.self_attn.k_proj), (b.wv, last.self_attn.v_proj),
                             (b.wo, last.self_attn.o_proj), (b.w_gate, last.mlp.gate_proj), (b.w_up, last.mlp.up_proj),
                             (b.w_down, last.mlp.down_proj)):
            mine.weight.copy_(theirs.weight)
        # The block starts as the identity (its two residual branches' output matrices zero) and
        # the head as the base model's next-token head on h (shared_head_norm = h's typical RMS),
        # a sane predictor to improve on.
        b.wo.weight.zero_()
        b.w_down.weight.zero_()
        d = cfg["d"]
        mtp.eh_proj.weight.zero_()
        mtp.eh_proj.weight[:, d:].copy_(torch.eye(d))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            h0 = base.model(input_ids=val[: a.batch, : a.seq].to(dev)).last_hidden_state.float()
        mtp.shared_head_norm.fill_(h0.pow(2).mean(-1).sqrt().mean().item())
    emb = base.model.embed_tokens.weight
    head = base.lm_head.weight

    def mtp_loss(win):
        win = win.to(dev)
        S = a.seq
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            h = base.model(input_ids=win[:, :S]).last_hidden_state  # h_i, i < S (after the final norm)
        pos = torch.arange(S, device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            v, _ = mtp(F.embedding(win[:, 1 : S + 1], emb), h.float(), pos)
            logits = v @ head.t()
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), win[:, 2 : S + 2].reshape(-1))

    def validate():
        mtp.eval()
        with torch.no_grad():
            losses = [mtp_loss(val[i : i + a.batch]).item() for i in range(0, min(len(val), 8 * a.batch), a.batch)]
        mtp.train()
        return float(np.mean(losses))

    opt = torch.optim.AdamW(mtp.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    curve = []
    v0 = validate()
    log(f"validation loss before training: {v0:.4f}")
    gen = torch.Generator().manual_seed(a.seed)
    t0, step, seen = time.time(), 0, 0
    warm = 50
    while step < a.max_steps:
        el = time.time() - t0
        if el >= a.seconds:
            break
        frac = el / a.seconds
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(train), (a.batch,), generator=gen)
        loss = mtp_loss(train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mtp.parameters(), 1.0)
        opt.step()
        step += 1
        seen += a.batch * a.seq
        if step % a.log_every == 0:
            rate = seen / (time.time() - t0)
            eta = max(0.0, a.seconds - (time.time() - t0))
            log(f"  step {step}: loss {loss.item():.4f}, lr {lr:.2e}, {rate:.0f} tokens/s, "
                f"{seen / 1e6:.1f} M tokens, ETA {eta:.0f} s")
            curve.append({"step": step, "tokens": seen, "loss": loss.item()})
    v1 = validate()
    log(f"MTP phase: {step} steps, {seen / 1e6:.1f} M tokens ({seen / max(1, len(train) * a.seq):.2f} epochs) in "
        f"{time.time() - t0:.0f} s; validation loss {v0:.4f} -> {v1:.4f}")

    meta_idx = {}
    indexer = None
    if a.indexer_heads > 0:
        indexer = Indexer(cfg["d"], a.indexer_heads, a.indexer_dim, a.indexer_rope_dim, cfg["theta"]).to(dev)
        iopt = torch.optim.Adam(indexer.parameters(), lr=1e-3)
        S = a.indexer_seq
        t1, istep, kl0, kl = time.time(), 0, None, None
        rep = cfg["heads"] // cfg["kv_heads"]
        while time.time() - t1 < a.indexer_seconds:
            idx = torch.randint(0, len(train), (max(1, a.batch // 2),), generator=gen)
            win = train[idx][:, : S + 2].to(dev)
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                h = base.model(input_ids=win[:, :S]).last_hidden_state
                pos = torch.arange(S, device=dev)
                _, xn = mtp(F.embedding(win[:, 1 : S + 1], emb), h.float(), pos)
                q, k = mtp.block.qk(xn, pos)
                k = k.repeat_interleave(rep, dim=1)
                att = (q.float() @ k.float().transpose(-1, -2)) * cfg["head_dim"] ** -0.5
                mask = torch.ones(S, S, dtype=torch.bool, device=dev).tril()
                p = att.masked_fill(~mask, float("-inf")).softmax(-1).amax(1)  # max over heads
                p = p / p.sum(-1, keepdim=True)
            lp = indexer.log_probs(xn.float(), pos)
            loss = -(p * lp.masked_fill(~mask, 0.0)).sum(-1).mean() + (p * p.clamp_min(1e-30).log()).sum(-1).mean()
            iopt.zero_grad(set_to_none=True)
            loss.backward()
            iopt.step()
            istep += 1
            kl = loss.item()
            kl0 = kl if kl0 is None else kl0
            if istep % a.log_every == 0:
                log(f"  indexer step {istep}: KL {kl:.4f}")
        log(f"indexer phase: {istep} steps of {S} tokens, KL {kl0:.4f} -> {kl:.4f}")
        meta_idx = {"indexer_heads": str(a.indexer_heads), "indexer_head_dim": str(a.indexer_dim),
                    "indexer_rope_dim": str(a.indexer_rope_dim), "indexer_kl_first": f"{kl0:.5f}",
                    "indexer_kl_last": f"{kl:.5f}", "indexer_steps": str(istep), "indexer_target": "max"}

    # Export in the engine's layout.
    def f16(t):
        return t.detach().float().cpu().to(torch.float16).contiguous()

    def f32(t):
        return t.detach().float().cpu().contiguous()

    b = mtp.block
    tensors = {
        "enorm": f32(mtp.enorm), "hnorm": f32(mtp.hnorm), "shared_head_norm": f32(mtp.shared_head_norm),
        "eh_proj": f16(mtp.eh_proj.weight),
        "block.attn_norm": f32(b.attn_norm), "block.ffn_norm": f32(b.ffn_norm),
        "block.wq": f16(gguf_qk_layout(b.wq.weight, cfg["heads"])),
        "block.wk": f16(gguf_qk_layout(b.wk.weight, cfg["kv_heads"])),
        "block.wv": f16(b.wv.weight), "block.wo": f16(b.wo.weight),
        "block.w_gate": f16(b.w_gate.weight), "block.w_up": f16(b.w_up.weight), "block.w_down": f16(b.w_down.weight),
    }
    # Every token id, most frequent first in the training text (ties: lower id first): the engine's
    # reduced draft vocabulary takes a prefix of it.
    counts = np.bincount(stream, minlength=cfg["vocab"])[: cfg["vocab"]]
    order = np.lexsort((np.arange(cfg["vocab"]), -counts)).astype(np.int32)
    tensors["vocab_by_frequency"] = torch.from_numpy(order)
    cover = {v: float(counts[order[:v]].sum() / counts.sum()) for v in (4096, 8192, 16384, 32768)}
    log("share of the training tokens inside the V most frequent: " +
        ", ".join(f"{v}: {c:.4f}" for v, c in cover.items()))
    if indexer is not None:
        tensors.update({"indexer.wq": f32(indexer.wq.weight), "indexer.wk": f32(indexer.wk.weight),
                        "indexer.ww": f32(indexer.ww.weight)})
    meta = {
        "format": "indexshare-mtp/1", "model_fingerprint": a.fingerprint, "model": os.path.basename(a.model),
        "d_model": str(cfg["d"]), "n_heads": str(cfg["heads"]), "n_kv_heads": str(cfg["kv_heads"]),
        "head_dim": str(cfg["head_dim"]), "ffn_dim": str(cfg["ffn"]), "rope_theta": repr(cfg["theta"]),
        "rms_eps": repr(cfg["eps"]), "hidden": "after the final norm",
        "recipe": "DeepSeek-V3 MTP (one module), CE on x[i+2]; block initialised from the last layer",
        "corpus": f"{','.join(a.corpus)} ({a.ext}; {len(texts)} files, {chars / 1e6:.1f} M chars, {len(stream) / 1e6:.2f} M tokens)",
        "steps": str(step), "tokens_seen": str(seen), "seq": str(a.seq), "batch": str(a.batch), "lr": repr(a.lr),
        "seed": str(a.seed), "base_next_token_loss": f"{base_loss:.5f}", "val_loss_first": f"{v0:.5f}", "val_loss_last": f"{v1:.5f}",
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "command": " ".join(sys.argv), **meta_idx,
        "vocab_coverage": json.dumps(cover),
    }
    save_file(tensors, a.out, metadata=meta)
    log(f"wrote {a.out} ({os.path.getsize(a.out) / 1e6:.1f} MB) in {time.time() - t_start:.0f} s total")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"metadata": meta, "curve": curve}, f, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""PyTorch training peer for `scripts/bench train`.

    /usr/bin/python3 bench/train_torch.py --arch gpt2|llama --layers 6 --d 384 --heads 6 \
        --kv-heads 2 --ff 1024 --T 256 --V 8192 --B 8 --steps 20 --warmup 3 --threads 2

Builds the reference model from tools/torch_reference.py (standard GPT-2 style init),
random token data (fixed seed), fp32 AdamW (lr 3e-4, wd 0.1, same param groups as the
engine) and times `steps` full training steps (forward, backward, clip_grad_norm_ 1.0,
optimizer step, zero_grad(set_to_none=True)) after `warmup` untimed ones.
Prints one JSON line.

--ff is n_inner for gpt2 (default 4*d) and intermediate_size for llama (default 4*d).
--kv-heads is ignored for gpt2.  The LM head is tied for gpt2 and untied for llama
unless --tie / --no-tie says otherwise.
"""

import argparse
import importlib.util
import json
import os
import statistics
import time

import numpy as np
import torch

_REF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "torch_reference.py")


def _load_reference():
    spec = importlib.util.spec_from_file_location("torch_reference", _REF)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_config(a):
    ff = a.ff or 4 * a.d
    if a.arch == "gpt2":
        return {"model_type": "gpt2", "vocab_size": a.V, "n_positions": a.T, "n_embd": a.d,
                "n_layer": a.layers, "n_head": a.heads, "n_inner": ff,
                "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
                "tie_word_embeddings": True}
    tie = False if a.tie is None else a.tie
    return {"model_type": "llama", "vocab_size": a.V, "hidden_size": a.d,
            "intermediate_size": ff, "num_hidden_layers": a.layers,
            "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads or a.heads,
            "hidden_act": "silu", "max_position_embeddings": a.T, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": tie,
            "attention_bias": False}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--ff", type=int, default=None)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--V", type=int, default=8192)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=1234)
    tie = ap.add_mutually_exclusive_group()
    tie.add_argument("--tie", dest="tie", action="store_true", default=None)
    tie.add_argument("--no-tie", dest="tie", action="store_false")
    a = ap.parse_args()
    if a.arch == "gpt2" and a.tie is False:
        ap.error("gpt2 reference has a tied LM head only")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    R = _load_reference()
    cfg = make_config(a)
    model = R.build_model(cfg, max_seq=a.T)
    R.init_params(model, a.seed, mode="standard")
    model.train()
    opt = R.make_optimizer(model, a.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)

    rng = np.random.default_rng(a.seed)
    data = torch.from_numpy(rng.integers(0, a.V, size=(a.B, a.T + 1)).astype(np.int64))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    losses, times = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        lv = loss.item()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
            losses.append(round(lv, 6))

    total = sum(times)
    out = {"peer": "pytorch", "torch": torch.__version__, "arch": a.arch,
           "layers": a.layers, "d": a.d, "heads": a.heads,
           "kv_heads": cfg.get("num_key_value_heads"), "ff": cfg.get("n_inner") or cfg.get("intermediate_size"),
           "T": a.T, "V": a.V, "B": a.B, "steps": a.steps, "warmup": a.warmup, "threads": a.threads,
           "params": sum(p.numel() for p in model.parameters()),
           "tied": cfg["tie_word_embeddings"],
           "tokens_per_s": round(a.B * a.T * len(times) / total, 2) if times else None,
           "step_ms_median": round(1000 * statistics.median(times), 3) if times else None,
           "losses": losses}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

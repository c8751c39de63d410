#!/usr/bin/python3
"""Generate the golden fixtures the C++ parity tests read.

    /usr/bin/python3 tools/gen_parity_fixtures.py [--out tests/fixtures/parity] [--check-only]

For every fixture <name> it writes tests/fixtures/parity/<name>/:
  config.json         a Hugging Face config (HF key names, sorted, indent 2)
  train.json          optimiser settings for the 10-step training check
  golden.safetensors  inputs, initial params, logits, loss, grads, step losses, final params

Everything is computed in float64 (the exact answer) and stored as F32, except the
losses, which are also stored as F64.  Generation is deterministic: seeds are fixed,
random numbers come from numpy's PCG64, and the safetensors file is written by hand
with sorted keys, so regenerating gives identical bytes.

Self-checks run every time: safetensors read-back, an independent numpy forward pass
written with explicit per-token / per-head loops for every architecture, a finite
difference check of a few gradient entries per tensor, and a loss decrease over the
training steps.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_reference as R  # noqa: E402

ROOT = os.path.dirname(HERE)
B, T, V = 2, 8, 61
N_MASKED = 3

TRAIN = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
         "grad_clip": 1.0, "steps": 10, "schedule": "constant"}

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 128}


def _llama_common(**kw):
    c = {"hidden_act": "silu", "initializer_range": 0.02, "attention_dropout": 0.0,
         "torch_dtype": "float32", "use_cache": True, "vocab_size": V,
         "bos_token_id": 1, "eos_token_id": 2}
    c.update(kw)
    return c


FIXTURES = [
    ("gpt2", 1001, {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0, "bos_token_id": V - 1, "embd_pdrop": 0.0, "eos_token_id": V - 1,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-5, "model_type": "gpt2",
        "n_embd": 24, "n_head": 3, "n_inner": None, "n_layer": 2, "n_positions": 16,
        "reorder_and_upcast_attn": False, "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
        "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": True,
        "vocab_size": V}),
    ("llama_gqa", 1002, _llama_common(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=44, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False, rope_scaling=dict(LLAMA3_SCALING),
        max_position_embeddings=1024, attention_bias=False, mlp_bias=False,
        pretraining_tp=1)),
    ("qwen2_bias", 1003, _llama_common(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
        intermediate_size=40, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, rope_scaling={"type": "linear", "factor": 2.0},
        max_position_embeddings=64, use_sliding_window=False, sliding_window=None,
        max_window_layers=2, bos_token_id=V - 2, eos_token_id=V - 1)),
    ("qwen3_qknorm", 1004, _llama_common(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        intermediate_size=48, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, rope_scaling=None, max_position_embeddings=64,
        attention_bias=False, use_sliding_window=False, sliding_window=None,
        max_window_layers=2, bos_token_id=V - 2, eos_token_id=V - 1)),
    ("mistral", 1005, _llama_common(
        architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=32,
        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4, head_dim=8,
        intermediate_size=40, rope_theta=10000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False, rope_scaling=None, max_position_embeddings=64,
        sliding_window=None, attention_bias=False)),
]


# --------------------------------------------------------------------------- safetensors

_DT = {"F32": ("<f4", 4), "F64": ("<f8", 8), "I32": ("<i4", 4)}


def write_safetensors(path, tensors, metadata):
    """tensors: name -> (dtype string, numpy array). Keys in sorted order."""
    header = {"__metadata__": dict(metadata)}
    blobs, off = [], 0
    for name in sorted(tensors):
        dt, arr = tensors[name]
        raw = np.ascontiguousarray(arr, dtype=_DT[dt][0]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-(8 + len(hj))) % 8)  # pad so the byte buffer starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path):
    """Tiny independent reader: name -> numpy array, plus metadata."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert (8 + n) % 8 == 0
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    out, end = {}, 0
    for name, h in header.items():
        a, b = h["data_offsets"]
        np_dt, sz = _DT[h["dtype"]]
        count = int(np.prod(h["shape"])) if h["shape"] else 1
        assert b - a == count * sz, name
        out[name] = np.frombuffer(body[a:b], dtype=np_dt).reshape(h["shape"])
        end = max(end, b)
    assert end == len(body), "trailing bytes"
    return out, meta


# --------------------------------------------------------------------------- independent numpy forward

def _np_layernorm(x, w, b, eps):
    mu = sum(x) / len(x)
    var = sum((xi - mu) ** 2 for xi in x) / len(x)
    return (x - mu) / math.sqrt(var + eps) * w + b


def _np_rmsnorm(x, w, eps):
    return x / math.sqrt(float(np.dot(x, x)) / len(x) + eps) * w


def _np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _np_softmax(s):
    e = np.exp(s - s.max())
    return e / e.sum()


def np_forward_gpt2(cfg, P, ids):
    """Plain-loop GPT-2 forward for one sequence: returns (T, V) logits."""
    C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    D, eps = C // H, cfg["layer_norm_epsilon"]
    t = len(ids)
    x = np.array([P["transformer.wte.weight"][ids[i]] + P["transformer.wpe.weight"][i]
                  for i in range(t)])
    for l in range(L):
        p = "transformer.h.%d." % l
        a = np.array([_np_layernorm(x[i], P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
                      for i in range(t)])
        qkv = np.array([a[i] @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]
                        for i in range(t)])
        att = np.zeros((t, C))
        for h in range(H):
            for i in range(t):
                q = qkv[i, h * D:(h + 1) * D]
                s = np.array([q @ qkv[j, C + h * D:C + (h + 1) * D] / math.sqrt(D)
                              for j in range(i + 1)])
                pr = _np_softmax(s)
                att[i, h * D:(h + 1) * D] = sum(pr[j] * qkv[j, 2 * C + h * D:2 * C + (h + 1) * D]
                                                for j in range(i + 1))
        x = x + np.array([att[i] @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"]
                          for i in range(t)])
        m = np.array([_np_layernorm(x[i], P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
                      for i in range(t)])
        hdn = _np_gelu_tanh(m @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"])
        x = x + hdn @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"]
    x = np.array([_np_layernorm(x[i], P["transformer.ln_f.weight"], P["transformer.ln_f.bias"], eps)
                  for i in range(t)])
    return x @ P["transformer.wte.weight"].T


def _np_rope_vec(v, pos, inv):
    """Rotate pairs (j, j + D/2) by angle pos*inv[j] -- written without rotate_half."""
    half = len(v) // 2
    out = np.empty_like(v)
    for j in range(half):
        c, s = math.cos(pos * inv[j]), math.sin(pos * inv[j])
        out[j] = v[j] * c - v[j + half] * s
        out[j + half] = v[j + half] * c + v[j] * s
    return out


def np_forward_llama(cfg, P, ids):
    C, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or C // NH
    eps, mt = cfg["rms_norm_eps"], cfg["model_type"]
    inv = R.rope_inv_freq(cfg, D)
    t = len(ids)
    x = np.array([P["model.embed_tokens.weight"][i] for i in ids])

    def lin(name, v):
        y = P[name + ".weight"] @ v
        return y + P[name + ".bias"] if (name + ".bias") in P else y

    for l in range(L):
        p = "model.layers.%d." % l
        a = [_np_rmsnorm(x[i], P[p + "input_layernorm.weight"], eps) for i in range(t)]
        q = [lin(p + "self_attn.q_proj", a[i]).reshape(NH, D) for i in range(t)]
        k = [lin(p + "self_attn.k_proj", a[i]).reshape(NKV, D) for i in range(t)]
        v = [lin(p + "self_attn.v_proj", a[i]).reshape(NKV, D) for i in range(t)]
        if mt == "qwen3":
            q = [np.array([_np_rmsnorm(qi[h], P[p + "self_attn.q_norm.weight"], eps)
                           for h in range(NH)]) for qi in q]
            k = [np.array([_np_rmsnorm(ki[h], P[p + "self_attn.k_norm.weight"], eps)
                           for h in range(NKV)]) for ki in k]
        q = [np.array([_np_rope_vec(q[i][h], i, inv) for h in range(NH)]) for i in range(t)]
        k = [np.array([_np_rope_vec(k[i][h], i, inv) for h in range(NKV)]) for i in range(t)]
        att = np.zeros((t, NH * D))
        for h in range(NH):
            g = h // (NH // NKV)
            for i in range(t):
                s = np.array([q[i][h] @ k[j][g] / math.sqrt(D) for j in range(i + 1)])
                pr = _np_softmax(s)
                att[i, h * D:(h + 1) * D] = sum(pr[j] * v[j][g] for j in range(i + 1))
        x = x + np.array([lin(p + "self_attn.o_proj", att[i]) for i in range(t)])
        m = [_np_rmsnorm(x[i], P[p + "post_attention_layernorm.weight"], eps) for i in range(t)]
        for i in range(t):
            gte = P[p + "mlp.gate_proj.weight"] @ m[i]
            up = P[p + "mlp.up_proj.weight"] @ m[i]
            x[i] = x[i] + P[p + "mlp.down_proj.weight"] @ (gte / (1.0 + np.exp(-gte)) * up)
    x = np.array([_np_rmsnorm(x[i], P["model.norm.weight"], eps) for i in range(t)])
    head = P["lm_head.weight"] if "lm_head.weight" in P else P["model.embed_tokens.weight"]
    return x @ head.T


def np_loss(logits, targets):
    tot, n = 0.0, 0
    for lg, tg in zip(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)):
        if tg == R.IGNORE_INDEX:
            continue
        mx = lg.max()
        tot += mx + math.log(np.exp(lg - mx).sum()) - lg[tg]
        n += 1
    return tot / n


# --------------------------------------------------------------------------- generation

def expected_names(cfg):
    """The HF names the fixture must contain, derived from the config alone."""
    if cfg["model_type"] == "gpt2":
        names = ["transformer.wte.weight", "transformer.wpe.weight",
                 "transformer.ln_f.weight", "transformer.ln_f.bias"]
        for i in range(cfg["n_layer"]):
            p = "transformer.h.%d." % i
            for s in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                names += [p + s + ".weight", p + s + ".bias"]
        return names
    mt = cfg["model_type"]
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not cfg["tie_word_embeddings"]:
        names.append("lm_head.weight")
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight",
                  p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]
        for s in ("q", "k", "v", "o"):
            names.append(p + "self_attn.%s_proj.weight" % s)
            if (mt == "qwen2" and s != "o") or cfg.get("attention_bias"):
                names.append(p + "self_attn.%s_proj.bias" % s)
        if mt == "qwen3":
            names += [p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"]
    return names


def make_data(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(B, T))
    tg = rng.integers(0, V, size=(B, T))
    masked = rng.choice(B * T, size=N_MASKED, replace=False)
    tg.reshape(-1)[masked] = R.IGNORE_INDEX
    return ids.astype(np.int64), tg.astype(np.int64), sorted(int(m) for m in masked)


def finite_diff_check(model, ids, tg, grads, seed, per_tensor=2, h=1e-6):
    rng = np.random.default_rng(seed)
    worst = 0.0
    with torch.no_grad():
        for n, p in model.named_parameters():
            flat = p.view(-1)
            for idx in rng.choice(flat.numel(), size=min(per_tensor, flat.numel()), replace=False):
                old = flat[idx].item()
                flat[idx] = old + h
                lp = model(ids, tg)[1].item()
                flat[idx] = old - h
                lm = model(ids, tg)[1].item()
                flat[idx] = old
                fd = (lp - lm) / (2 * h)
                an = grads[n].reshape(-1)[idx].item()
                worst = max(worst, abs(fd - an))
                assert abs(fd - an) < 1e-7 + 1e-5 * abs(an), (n, int(idx), fd, an)
    return worst


def generate(name, seed, cfg, out_dir):
    torch.manual_seed(0)
    model = R.build_model(cfg).double()
    R.init_params(model, seed, mode="fixture")
    names = [n for n, _ in model.named_parameters()]
    assert sorted(names) == sorted(expected_names(cfg)), (set(names) ^ set(expected_names(cfg)))
    init = {n: p.detach().clone() for n, p in model.hf_state_dict().items()}

    ids_np, tg_np, masked = make_data(seed + 7919)
    ids, tg = torch.from_numpy(ids_np), torch.from_numpy(tg_np)

    logits, loss = model(ids, tg)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    for n, g in grads.items():
        assert g.abs().max().item() > 0, "zero gradient for " + n

    # independent numpy forward (explicit loops) on the initial params
    P = {n: t.numpy() for n, t in init.items()}
    fwd = np_forward_gpt2 if cfg["model_type"] == "gpt2" else np_forward_llama
    np_logits = np.stack([fwd(cfg, P, ids_np[b]) for b in range(B)])
    d_logits = np.abs(np_logits - logits.detach().numpy()).max()
    d_loss = abs(np_loss(np_logits, tg_np) - loss.item())
    assert d_logits < 1e-12 and d_loss < 1e-12, (d_logits, d_loss)
    fd_worst = finite_diff_check(model, ids, tg, grads, seed + 17)

    # 10 AdamW steps on the same batch
    opt = R.make_optimizer(model, TRAIN["lr"], (TRAIN["beta1"], TRAIN["beta2"]), TRAIN["eps"],
                           TRAIN["weight_decay"])
    step_losses, grad_norms = [], []
    for _ in range(TRAIN["steps"]):
        opt.zero_grad(set_to_none=True)
        _, l = model(ids, tg)
        l.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN["grad_clip"])
        opt.step()
        step_losses.append(l.item())
        grad_norms.append(gn.item())
    assert step_losses[0] == loss.item()
    assert step_losses[-1] < step_losses[0], step_losses
    final = {n: p.detach().clone() for n, p in model.hf_state_dict().items()}

    f32 = lambda t: ("F32", t.detach().numpy().astype(np.float32))  # noqa: E731
    tensors = {"input_ids": ("I32", ids_np.astype(np.int32)),
               "targets": ("I32", tg_np.astype(np.int32)),
               "logits": f32(logits),
               "loss": ("F32", np.array([loss.item()], dtype=np.float32)),
               "loss_f64": ("F64", np.array([loss.item()], dtype=np.float64)),
               "step_losses": ("F32", np.array(step_losses, dtype=np.float32)),
               "step_losses_f64": ("F64", np.array(step_losses, dtype=np.float64)),
               "step_grad_norms_f64": ("F64", np.array(grad_norms, dtype=np.float64))}
    for n in names:
        tensors["param." + n] = f32(init[n])
        tensors["grad." + n] = f32(grads[n])
        tensors["final." + n] = f32(final[n])

    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    train = dict(TRAIN)
    train["optimizer"] = "torch.optim.AdamW"
    train["no_decay_params"] = R.no_decay_names(model)
    with open(os.path.join(d, "train.json"), "w") as f:
        f.write(json.dumps(train, indent=2, sort_keys=True) + "\n")
    meta = {"format": "pt", "fixture": name, "generator": "tools/gen_parity_fixtures.py",
            "computed_in": "float64", "batch": str(B), "seq_len": str(T),
            "masked_flat_positions": ",".join(map(str, masked))}
    path = os.path.join(d, "golden.safetensors")
    write_safetensors(path, tensors, meta)

    # read back and compare bit-for-bit
    back, bmeta = read_safetensors(path)
    assert bmeta == meta and set(back) == set(tensors)
    for k, (dt, arr) in tensors.items():
        assert back[k].dtype == np.dtype(_DT[dt][0]) and back[k].shape == arr.shape, k
        assert np.array_equal(back[k], arr.astype(_DT[dt][0])), k

    print("%-13s params=%d tensors=%d bytes=%d  loss=%.6f  |np-torch| logits=%.1e loss=%.1e  "
          "max|fd-grad|=%.1e" % (name, sum(p.numel() for p in model.parameters()),
                                     len(tensors), os.path.getsize(path), loss.item(),
                                     d_logits, d_loss, fd_worst))
    print("              step_losses: " + " ".join("%.4f" % s for s in step_losses))
    return os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "parity"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # reductions in a fixed order

    for name, _, cfg in FIXTURES:
        if (cfg.get("rope_scaling") or {}).get("rope_type") == "llama3":
            rows = R.llama3_regimes(cfg)
            print("llama3 rope regimes for %s (head_dim %d, original ctx %d):"
                  % (name, cfg["head_dim"], cfg["rope_scaling"]["original_max_position_embeddings"]))
            for j, f, w, reg, sc in rows:
                print("   i=%d inv_freq=%.6g wavelen=%.4g -> %s, scaled=%.6g" % (j, f, w, reg, sc))
            kinds = {r[3].split("(")[0] for r in rows}
            assert kinds == {"low", "medium", "high"}, kinds

    total = 0
    for name, seed, cfg in FIXTURES:
        total += generate(name, seed, cfg, args.out)
    for name, _, _ in FIXTURES:
        for fn in ("config.json", "train.json"):
            total += os.path.getsize(os.path.join(args.out, name, fn))
    print("all fixtures: %d bytes" % total)
    # The configs fix ~86k parameters; three F32 copies of each (param/grad/final)
    # put the set just over 1 MB.  Guard against accidental growth only.
    assert total < 1_200_000


if __name__ == "__main__":
    main()

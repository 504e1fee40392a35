#!/usr/bin/env python3
"""Grow the vocabulary of a `ferry make-model` checkpoint folder to VOCAB rows, in place.

make-model's vocabulary is its synthetic tokenizer's (about 460 tokens, padded to 512) and it has
no option for more, while the reference workload of shared/BENCHMARKING.md has vocab_size 32000.
This script rewrites `model.embed_tokens.weight` and `lm_head.weight` ([vocab, hidden]) with
VOCAB rows: the original rows first, then seeded random rows (N(0, 0.02), like make-model's), each
padded tensor in a shard file of its own (so no shard grows past make-model's --max-shard-size);
the shards they came from are rewritten without them and the index and config.json are updated.
Optional KEY=VALUE arguments set other config.json fields (numbers), e.g. rope_theta=10000.
Token ids past the tokenizer decode to nothing, so the tokenizer stays usable.

Standard library only (no numpy): the random rows repeat a block of 2^20 + 1 values.

    pad_vocab.py FOLDER VOCAB [rope_theta=10000 ...]
"""
import json
import os
import random
import struct
import sys

PADDED = ("model.embed_tokens.weight", "lm_head.weight")
ELEMENT = {"F32": 4, "F16": 2, "BF16": 2}


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return header, 8 + n


def write_shard(path, tensors):
    """tensors: list of (name, dtype, shape, nbytes, writer(fileobj))."""
    header = {}
    offset = 0
    for name, dtype, shape, nbytes, _ in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for *_, writer in tensors:
            writer(out)
    os.replace(tmp, path)


def copy_range(src, begin, nbytes):
    def writer(out):
        with open(src, "rb") as f:
            f.seek(begin)
            left = nbytes
            while left:
                chunk = f.read(min(left, 64 << 20))
                if not chunk:
                    raise IOError(f"{src}: short read")
                out.write(chunk)
                left -= len(chunk)
    return writer


def random_block(dtype, count, seed):
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 0.02) for _ in range(count)]
    f32 = struct.pack(f"<{count}f", *values)
    if dtype == "F32":
        return f32
    if dtype == "BF16":  # upper halves of the float32 values
        return b"".join(f32[i + 2:i + 4] for i in range(0, len(f32), 4))
    return struct.pack(f"<{count}e", *values)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    folder, vocab = sys.argv[1], int(sys.argv[2])
    extra = dict(a.split("=", 1) for a in sys.argv[3:])
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    old_vocab = int(config["vocab_size"])
    hidden = int(config["hidden_size"])
    if vocab < old_vocab:
        sys.exit(f"pad_vocab: vocab {vocab} is smaller than the checkpoint's {old_vocab}")

    index_path = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    else:  # a single model.safetensors (which loaders prefer to an index): make it a shard
        single = "model-00001-of-00001.safetensors"
        os.replace(os.path.join(folder, "model.safetensors"), os.path.join(folder, single))
        header, _ = read_header(os.path.join(folder, single))
        index = {"metadata": {}, "weight_map": {k: single for k in header
                                                if k != "__metadata__"}}
    weight_map = index["weight_map"]
    targets = [n for n in PADDED if n in weight_map]
    block = None
    for i, name in enumerate(targets):
        shard = os.path.join(folder, weight_map[name])
        header, data_start = read_header(shard)
        info = header[name]
        dtype, shape = info["dtype"], info["shape"]
        begin, end = info["data_offsets"]
        if shape != [old_vocab, hidden] or dtype not in ELEMENT:
            sys.exit(f"pad_vocab: {name} is {dtype} {shape}, expected [{old_vocab}, {hidden}]")
        row = hidden * ELEMENT[dtype]
        if block is None:
            # 2^20 + 1 values: not a whole number of rows, so padded rows do not repeat.
            block = random_block(dtype, (1 << 20) + 1, seed=1234)

        def padded_writer(out, shard=shard, start=data_start + begin, nbytes=end - begin,
                          row=row):
            copy_range(shard, start, nbytes)(out)
            left = (vocab - old_vocab) * row
            while left:
                piece = block[:min(left, len(block))]
                out.write(piece)
                left -= len(piece)

        new_file = f"model-vocab{vocab}-{i + 1:05d}.safetensors"
        write_shard(os.path.join(folder, new_file),
                    [(name, dtype, [vocab, hidden], vocab * row, padded_writer)])
        # The shard it came from, without it.
        rest = []
        for other, oi in sorted(header.items(), key=lambda kv: kv[1].get("data_offsets", [0])[0]
                                if kv[0] != "__metadata__" else -1):
            if other in ("__metadata__", name):
                continue
            b, e = oi["data_offsets"]
            rest.append((other, oi["dtype"], oi["shape"], e - b,
                         copy_range(shard, data_start + b, e - b)))
        if rest:
            write_shard(shard, rest)
        else:
            os.remove(shard)
        weight_map[name] = new_file

    total = 0
    for f in sorted(set(weight_map.values())):
        header, _ = read_header(os.path.join(folder, f))
        total += sum(v["data_offsets"][1] - v["data_offsets"][0]
                     for k, v in header.items() if k != "__metadata__")
    index.setdefault("metadata", {})["total_size"] = total
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
    config["vocab_size"] = vocab
    for key, value in extra.items():
        config[key] = json.loads(value)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    print(f"pad_vocab: {folder}: vocab {old_vocab} -> {vocab}, {total} bytes of weights")


if __name__ == "__main__":
    main()

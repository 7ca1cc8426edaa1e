#!/usr/bin/env python3
"""Write a deterministic safetensors-style sample model into DIR:
SHARDS shards "model-0000i-of-0000N.safetensors" (a valid safetensors header,
BF16 tensors of pseudo-random bytes), model.safetensors.index.json,
config.json, generation_config.json and a ~1 MB tokenizer.json.

  make_model.py DIR SIZE_MIB [SHARDS]
"""
import json
import os
import random
import sys

top, size_mib = sys.argv[1], int(sys.argv[2])
shards = int(sys.argv[3]) if len(sys.argv) > 3 else 4
rng = random.Random(42)
os.makedirs(top, exist_ok=True)
per_shard = (size_mib << 20) // shards
hidden = 1024
weight_map = {}

for s in range(shards):
    name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    tensors, off, i = {}, 0, 0
    while off < per_shard - (1 << 20):
        rows = min(4096, (per_shard - off) // (hidden * 2))
        tname = f"model.layers.{s * 1000 + i}.mlp.weight"
        tensors[tname] = {"dtype": "BF16", "shape": [rows, hidden],
                          "data_offsets": [off, off + rows * hidden * 2]}
        weight_map[tname] = name
        off += rows * hidden * 2
        i += 1
    header = json.dumps({"__metadata__": {"format": "pt"}, **tensors}).encode()
    header += b" " * (-len(header) % 8)
    with open(os.path.join(top, name), "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        left = off
        while left:
            n = min(left, 8 << 20)
            f.write(rng.randbytes(n))
            left -= n

with open(os.path.join(top, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": size_mib << 20}, "weight_map": weight_map}, f, indent=1)
with open(os.path.join(top, "config.json"), "w") as f:
    json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
               "num_hidden_layers": len(weight_map), "torch_dtype": "bfloat16"}, f, indent=1)
with open(os.path.join(top, "generation_config.json"), "w") as f:
    json.dump({"do_sample": True, "temperature": 0.6}, f)
with open(os.path.join(top, "tokenizer.json"), "w") as f:
    vocab = {f"tok{i}_{rng.getrandbits(32):08x}": i for i in range(40000)}
    json.dump({"version": "1.0", "model": {"type": "BPE", "vocab": vocab}}, f)

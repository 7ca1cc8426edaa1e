#!/usr/bin/env python3
"""Load a safetensors model directory the way an inference server does: read
config.json and the index, then each shard's header and every tensor's bytes
(positioned reads at the offsets the header gives). Prints what it read and
how fast. Exits non-zero if a header or a tensor is malformed or short.

  load_model.py DIR
"""
import json
import os
import sys
import time

top = sys.argv[1]
t0 = time.monotonic()
config = json.load(open(os.path.join(top, "config.json")))
index = json.load(open(os.path.join(top, "model.safetensors.index.json")))
shards = sorted(set(index["weight_map"].values()))
n_tensors = n_bytes = 0
first_byte = None
for shard in shards:
    fd = os.open(os.path.join(top, shard), os.O_RDONLY)
    hlen = int.from_bytes(os.pread(fd, 8, 0), "little")
    if first_byte is None:
        first_byte = time.monotonic() - t0
    header = json.loads(os.pread(fd, hlen, 8))
    base = 8 + hlen
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        want = b - a
        off = 0
        while off < want:
            chunk = os.pread(fd, min(want - off, 16 << 20), base + a + off)
            if not chunk:
                sys.exit(f"load_model: {shard}: tensor {name} is short")
            off += len(chunk)
        n_tensors += 1
        n_bytes += want
    os.close(fd)
dt = time.monotonic() - t0
print(f"loaded {config.get('architectures', ['?'])[0]}: {len(shards)} shards, {n_tensors} tensors, "
      f"{n_bytes / 2**20:.0f} MiB in {dt:.2f} s ({n_bytes / 1e6 / dt:.0f} MB/s), "
      f"first byte after {first_byte * 1000:.1f} ms")

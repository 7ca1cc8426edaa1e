#!/usr/bin/env python3
"""Write the integration test's source tree into DIR (deterministic):
nested prefixes, N small keys in one prefix, special-character names, empty
files, an empty directory (uploaded as a "dir/" marker), and one large file
(BIG_MIB MiB, mostly holes, with random blocks at known places).

  gen_tree.py DIR MANY BIG_MIB
"""
import os
import random
import sys

top, many, big_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1234)


def write(rel, data):
    path = os.path.join(top, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


write("config.json", b'{"model_type": "llama", "hidden_size": 4096}\n')
write("a/b/c/deep.bin", rng.randbytes(3 << 20))
write("a/b/shard-00001.safetensors", rng.randbytes(1 << 20))
write("a/top.txt", b"top\n")
write("empty.bin", b"")
write("a/b/empty2", b"")
for name in ["sp ace", "plus+sign", "pct%41", "eq=val&amp", "tilde~x", "unicodé-日本語",
             "quote'q", "semi;colon", "paren(1)", "star*", "hash#1", "comma,x", "at@x"]:
    write("special/" + name, (name + "\n").encode())
for i in range(many):
    write("many/k%05d" % i, b"%d\n" % i)
os.makedirs(os.path.join(top, "emptydir"), exist_ok=True)

# The large file: holes, with random 1 MiB blocks at the start, around 2 GiB
# (past 2^31, where 32-bit offsets would break) and at the end.
big = os.path.join(top, "big/model-big.safetensors")
os.makedirs(os.path.dirname(big), exist_ok=True)
size = big_mib << 20
with open(big, "wb") as f:
    f.truncate(size)
    for off in sorted({0, size // 3, min(size - (1 << 20), (2 << 30) - 4096), size - (1 << 20)}):
        f.seek(off)
        f.write(rng.randbytes(1 << 20))

#!/usr/bin/env python3
"""Write the seed corpus of fuzz_tree_load: metadata snapshot bodies (the
format of fs/tree.c's tree_serialize, after decompression).

Record: u8 kind (1 file, 2 dir), u16 path length, path, and for files u64
size, i64 mtime, u8 ETag length, ETag. Host byte order, as tree.c writes it.

  python3 tests/fuzz/mkseeds_tree.py [out_dir]   (default: corpus/fuzz_tree_load)
"""
import os
import struct
import sys

MAGIC = b"MFSTREE1"  # the reader also takes v2 (MFSTREE2: an inode before each record)


def f(path, size, mtime, etag):
    p, e = path.encode(), etag.encode()
    return struct.pack("=BH", 1, len(p)) + p + struct.pack("=QqB", size, mtime, len(e)) + e


def d(path):
    p = path.encode()
    return struct.pack("=BH", 2, len(p)) + p


SEEDS = {
    # A model repository as a listing of s3://models/ produces it.
    "model_repo.bin": MAGIC + b"".join([
        d("llama"),
        f("llama/config.json", 654, 1714566896, "9b2cf535f27731c974343645a3985328"),
        f("llama/model-00001-of-00002.safetensors", 5135149760, 1714566910,
          "d41d8cd98f00b204e9800998ecf8427e-613"),
        f("llama/model-00002-of-00002.safetensors", 1459729952, 1714566920,
          "0c7ab2e4a7b4d3b2a8c0f1e2d3c4b5a6-175"),
        f("llama/tokenizer.json", 1842767, 1714566897, "1f0c7ab2e4a7b4d3b2a8c0f1e2d3c4b5"),
        d("llama/original"),
        f("llama/original/params.json", 199, 1714566899, "5d2c0e4fb7ab4b0f8e8f1b1e0a7d3c21"),
        f("README.md", 4096, 1600000000, ""),
        d("empty"),
    ]),
    # Conflicts and keys the naming rules skip: an object hidden by a directory
    # of the same name, "a//b", "..", a NAME_MAX+1 segment, an over-long ETag
    # length is left to the fuzzer.
    "conflicts_and_skips.bin": MAGIC + b"".join([
        f("a", 1, 1, "x"),
        f("a/b", 2, 2, "y"),
        f("a", 3, 3, "z"),
        d("a/b"),
        f("c//d", 4, 4, "w"),
        f("e/../f", 5, 5, "v"),
        f("g/" + "n" * 256, 6, 6, "u"),
        f("g/" + "n" * 255, 7, -7, "t" * 127),
        d("h/i/j/k/l/m/n/o"),
        f("h/i/j/k/l/m/n/o/p", 0, 0, ""),
    ]),
    # Over 512 nodes, so the (parent, name) hash grows past its first 1024
    # slots; small records so that it stays under run.sh's -max_len.
    "many_nodes.bin": MAGIC + b"".join(
        [d("d%03d" % i) for i in range(600)] +
        [f("d%03d/f%02d" % (i % 7, i), i, i, "e") for i in range(60)]),
    "magic_only.bin": MAGIC,
    # A valid record followed by a truncated one.
    "truncated.bin": MAGIC + f("x/y", 10, 10, "etag") + struct.pack("=BH", 1, 9) + b"x/z",
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_tree_load")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as fh:
            fh.write(data)


if __name__ == "__main__":
    main()

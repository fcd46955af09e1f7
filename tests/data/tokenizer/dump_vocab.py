#!/usr/bin/env python3
"""Writes the tokenizer.* metadata of a GGUF file as JSON (the fixtures of tests/tokenizer).

Standalone (no gguf-py): reads the GGUF v2/v3 header and key/value section only.
Usage: dump_vocab.py MODEL.gguf OUT.json
"""
import json
import struct
import sys

SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read(f, fmt):
    size = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, f.read(size))[0]


def read_str(f):
    return f.read(read(f, "Q")).decode("utf-8")


def read_value(f, t):
    if t in SCALARS:
        return read(f, SCALARS[t])
    if t == 8:
        return read_str(f)
    if t == 9:
        et, n = read(f, "I"), read(f, "Q")
        return [read_value(f, et) for _ in range(n)]
    raise ValueError("unknown GGUF value type %d" % t)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        if f.read(4) != b"GGUF":
            raise SystemExit("%s: not a GGUF file" % src)
        version = read(f, "I")
        if version not in (2, 3):
            raise SystemExit("%s: GGUF version %d" % (src, version))
        read(f, "Q")  # tensor count
        kv = {}
        for _ in range(read(f, "Q")):
            key = read_str(f)
            kv[key] = read_value(f, read(f, "I"))
    out = {k: v for k, v in kv.items() if k.startswith("tokenizer.")}
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()

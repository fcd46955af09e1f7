#!/usr/bin/env python3
"""Rewrites, in place, tokenizer.ggml.token_type of a `pipelm mkmodel` GGUF so that llama.cpp loads it.

mkmodel marks its 256 GPT-2 byte-level tokens ("Ā", "Ġ", "a", ...) as BYTE (6). Current llama.cpp
(the one node-llama-cpp 3.22.1 ships) treats BYTE tokens of a BPE vocabulary as SPM-style "<0xXX>"
byte-fallback tokens and reads text.substr(3, 2) while building its token-to-piece cache, which
throws "basic_string::substr: __pos (which is 3) > this->size() (which is 2)" and the model fails
to load. Real GLM-4 GGUFs (convert_hf_to_gguf.py) mark these tokens NORMAL (1). This script sets
every BYTE token whose text is not "<0xXX>" to NORMAL; only those int32 values change, in place
(tensors, sizes and offsets stay as they are). pipelm reads the result the same way.

usage: gguf-byte-tokens-normal.py FILE.gguf   (prints how many entries it changed)
"""
import struct
import sys

SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def main(path):
    with open(path, "r+b") as f:
        def read(fmt):
            n = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, f.read(n))

        def read_str():
            (n,) = read("Q")
            return f.read(n)

        def skip_value(t):
            if t in SCALAR:
                f.seek(SCALAR[t], 1)
            elif t == 8:
                (n,) = read("Q")
                f.seek(n, 1)
            elif t == 9:
                et, n = read("IQ")
                if et in SCALAR:
                    f.seek(SCALAR[et] * n, 1)
                else:
                    for _ in range(n):
                        skip_value(et)
            else:
                raise SystemExit(f"{path}: unknown GGUF value type {t}")

        if f.read(4) != b"GGUF":
            raise SystemExit(f"{path}: not a GGUF file")
        _version, _n_tensors, n_kv = read("IQQ")
        tokens, types_at, n_types = None, None, 0
        for _ in range(n_kv):
            key = read_str()
            (t,) = read("I")
            if key == b"tokenizer.ggml.tokens" and t == 9:
                et, n = read("IQ")
                tokens = [read_str() for _ in range(n)] if et == 8 else None
                if tokens is None:
                    raise SystemExit(f"{path}: tokenizer.ggml.tokens is not a string array")
            elif key == b"tokenizer.ggml.token_type" and t == 9:
                et, n = read("IQ")
                if et != 5:
                    raise SystemExit(f"{path}: tokenizer.ggml.token_type is not an int32 array")
                types_at, n_types = f.tell(), n
                f.seek(4 * n, 1)
            else:
                skip_value(t)
        if tokens is None or types_at is None or n_types != len(tokens):
            raise SystemExit(f"{path}: no tokenizer.ggml.tokens / token_type arrays of equal length")
        f.seek(types_at)
        types = list(struct.unpack(f"<{n_types}i", f.read(4 * n_types)))
        changed = 0
        for i, (tok, ty) in enumerate(zip(tokens, types)):
            if ty == 6 and not (len(tok) == 6 and tok.startswith(b"<0x") and tok.endswith(b">")):
                types[i] = 1
                changed += 1
        if changed:
            f.seek(types_at)
            f.write(struct.pack(f"<{n_types}i", *types))
        print(f"{path}: {changed} BYTE token types set to NORMAL")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])

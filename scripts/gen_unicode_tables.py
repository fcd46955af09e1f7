#!/usr/bin/env python3
"""Generates runtime/tokenizer/unicode_tables.cc: the Unicode code point classes that the
glm4 pre-tokenizer needs, as sorted, non-overlapping, inclusive [first, last] ranges.

  letter      \\p{L}: general categories Lu Ll Lt Lm Lo
  number      \\p{N}: general categories Nd Nl No
  whitespace  \\s as llama.cpp's unicode.cpp / PCRE with UCP: the White_Space property
              (U+0009-000D, U+0020, U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029,
              U+202F, U+205F, U+3000)

llama.cpp's tables (src/unicode-data.cpp) follow Unicode 15.1, and the tokenizer should classify
code points exactly as llama.cpp does. Data source: by default Python's own `unicodedata` module
(its Unicode version is written into the output; Python 3.11 has 14.0, 3.13 has 15.1).
`--ucd PATH/UnicodeData.txt` reads a Unicode Character Database file instead, e.g. the Debian
package unicode-data (/usr/share/unicode/UnicodeData.txt, 15.0 on Debian 12). From 15.0 data the
script adds the one 15.1 change that touches these classes (the 622 letters of CJK Unified
Ideographs Extension I, U+2EBF0..U+2EE5D, category Lo; 15.1's other 5 new characters are symbols).
The committed table was made with

    python3 scripts/gen_unicode_tables.py --ucd /usr/share/unicode/UnicodeData.txt

Usage: gen_unicode_tables.py [--ucd FILE] [-o OUTPUT]  (default output: the path above).
"""
import argparse
import os
import re
import sys
import unicodedata

MAX_CP = 0x110000
LETTER = {"Lu", "Ll", "Lt", "Lm", "Lo"}
NUMBER = {"Nd", "Nl", "No"}
# Unicode White_Space property (PropList.txt); unchanged since Unicode 6.
WHITESPACE = [0x0009, 0x000A, 0x000B, 0x000C, 0x000D, 0x0020, 0x0085, 0x00A0, 0x1680,
              *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]


def categories_from_python():
    cats = [unicodedata.category(chr(cp)) for cp in range(MAX_CP)]
    return cats, "Python %s unicodedata" % sys.version.split()[0], unicodedata.unidata_version


def categories_from_ucd(path):
    cats = ["Cn"] * MAX_CP
    first = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            fields = line.split(";")
            cp, name, cat = int(fields[0], 16), fields[1], fields[2]
            if name.endswith(", First>"):
                first = cp
                continue
            if name.endswith(", Last>"):
                if first is None:
                    raise SystemExit("%s: range end %04X without a start" % (path, cp))
                for c in range(first, cp + 1):
                    cats[c] = cat
                first = None
                continue
            cats[cp] = cat
    version = "unknown"
    readme = os.path.join(os.path.dirname(path), "ReadMe.txt")
    if os.path.exists(readme):
        with open(readme, encoding="utf-8", errors="replace") as f:
            m = re.search(r"Version (\d+\.\d+\.\d+) of the Unicode Standard", f.read())
            if m:
                version = m.group(1)
    return cats, os.path.basename(path), version


def ranges(pred):
    out = []
    start = None
    for cp in range(MAX_CP + 1):
        inside = cp < MAX_CP and pred(cp)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            out.append((start, cp - 1))
            start = None
    return out


def emit(name, rs):
    lines = ["const CodepointRange %s[] = {" % name]
    row = []
    for a, b in rs:
        row.append("{0x%05X, 0x%05X}," % (a, b))
        if len(row) == 4:
            lines.append("    " + " ".join(row))
            row = []
    if row:
        lines.append("    " + " ".join(row))
    lines.append("};")
    lines.append("const size_t %sCount = sizeof(%s) / sizeof(%s[0]);" % (name, name, name))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ucd", help="UnicodeData.txt to read instead of Python's unicodedata")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("-o", "--output",
                    default=os.path.join(here, "..", "runtime", "tokenizer", "unicode_tables.cc"))
    args = ap.parse_args()

    cats, source, version = categories_from_ucd(args.ucd) if args.ucd else categories_from_python()
    if version == "15.0.0":
        for cp in range(0x2EBF0, 0x2EE5E):  # Unicode 15.1: CJK Unified Ideographs Extension I
            assert cats[cp] == "Cn"
            cats[cp] = "Lo"
        source += " + Unicode 15.1 CJK Extension I"
        version = "15.1.0"
    elif version != "unknown" and tuple(map(int, version.split("."))) < (15, 1, 0):
        print("warning: Unicode %s data is older than llama.cpp's 15.1; pass --ucd with newer data"
              % version, file=sys.stderr)
    ws = set(WHITESPACE)
    letter = ranges(lambda cp: cats[cp] in LETTER)
    number = ranges(lambda cp: cats[cp] in NUMBER)
    white = ranges(lambda cp: cp in ws)

    text = "\n".join([
        "// generated by scripts/gen_unicode_tables.py from %s (Unicode %s); do not edit." % (source, version),
        "// Inclusive code point ranges, sorted: \\p{L} (Lu Ll Lt Lm Lo), \\p{N} (Nd Nl No) and \\s (White_Space).",
        "#include \"runtime/tokenizer/unicode.h\"",
        "",
        "namespace pipelm::tok::unicode {",
        "",
        "const char* const kUnicodeVersion = \"%s\";" % version,
        "",
        emit("kLetterRanges", letter),
        "",
        emit("kNumberRanges", number),
        "",
        emit("kWhitespaceRanges", white),
        "",
        "}  // namespace pipelm::tok::unicode",
        "",
    ])
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    print("%s: %d letter, %d number, %d whitespace ranges (Unicode %s)"
          % (args.output, len(letter), len(number), len(white), version))


if __name__ == "__main__":
    main()

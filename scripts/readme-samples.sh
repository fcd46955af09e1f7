#!/usr/bin/env bash
# README.md's sample outputs come from the binary, and a test keeps them so.
#
#   scripts/readme-samples.sh           regenerate every marked sample in README.md in place
#   scripts/readme-samples.sh --check   compare instead (ctest's readme_test), and check that every
#                                       relative link and repository path in README.md exists and
#                                       that the command table lists every command of `pipelm --help`
#                                       and the package list is scripts/setup.sh's
#
# The binary: $PIPELM, else $BUILD/pipelm (BUILD defaults to build, where scripts/setup.sh and
# scripts/test.sh build). Commands run in the repository root with a fresh XDG_CACHE_HOME (the
# embedded model is written there) and stdin from /dev/null; mpirun runs as root and oversubscribed
# as in scripts/test.sh. A sample whose command needs a program that is not installed (mpirun) is
# skipped with the reason. PIPELM_README=FILE works on another file (to test this script).
#
# A sample in README.md is an HTML comment, then a fenced block whose first line is the command:
#
#   <!-- sample: NAME -->
#   ```console
#   $ build/pipelm run ...
#   (what it prints: stdout and stderr, in the order written)
#   ```
#
# `build/pipelm` in the command is replaced by the binary; the command must exit 0. Its output
# is normalised before it is written or compared, so that only what varies between machines and
# runs is hidden, while token text, splits, sizes and counts stay exact:
#   12.3 t/s -> <t/s>            0.020 s, 12 ms, 40 us -> <s>, <ms>, <us>
#   busy 32% 41% -> busy <%> <%> 2026-12-06[T18:00:00[.123]Z] -> <date>
#   4 threads -> <n> threads      the repository root -> .     the binary -> build/pipelm
#   the cache directory -> <cache>
# Exit: 0 pass (or regenerated), 1 a check failed, 2 usage or no binary.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
README=${PIPELM_README:-$ROOT/README.md}  # another file: for testing this script on a mutated copy
MODE=write
case "${1:-}" in
    --check) MODE=check ;;
    "") ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: scripts/readme-samples.sh [--check]" >&2; exit 2 ;;
esac
BUILD=${BUILD:-build}
[[ $BUILD == /* ]] || BUILD=$ROOT/$BUILD
BIN=${PIPELM:-$BUILD/pipelm}
[[ $BIN == /* ]] || BIN=$PWD/$BIN
[[ -x $BIN ]] || { echo "readme-samples: no binary at $BIN (build first, or set BUILD=dir or PIPELM=path)" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pipelm-readme.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export XDG_CACHE_HOME=$TMP/cache
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# The normalisation described above (stdin -> stdout); idempotent, so README's samples go
# through it too before the comparison.
normalise() {
    local root_re bin_re cache_re
    root_re=$(printf '%s' "$ROOT" | sed 's/[][\/.^$*]/\\&/g')
    bin_re=$(printf '%s' "$BIN" | sed 's/[][\/.^$*]/\\&/g')
    cache_re=$(printf '%s' "$XDG_CACHE_HOME" | sed 's/[][\/.^$*]/\\&/g')
    sed -E \
        -e "s/$bin_re/build\/pipelm/g" -e "s/$cache_re/<cache>/g" -e "s/$root_re/./g" \
        -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z?)?/<date>/g' \
        -e 's/\b[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)? ?t\/s\b/<t\/s>/g' \
        -e 's/\b[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)? (s|ms|us)\b/<\3>/g' \
        -e 's/\b[0-9]+ threads\b/<n> threads/g' \
        -e ':a' -e 's/(busy( <%>)*) [0-9]+(\.[0-9]+)?%/\1 <%>/' -e 'ta'
}

# ---- the samples --------------------------------------------------------------------------------
# One record per sample: NAME <tab> line of the command <tab> line of the closing fence.
awk '
    /^<!-- sample: [^ ]+ -->$/ { name = $3; want = NR + 1; next }
    want && NR == want {
        if ($0 !~ /^```/) { printf "%s\t%d\tbad\n", name, NR; want = 0; next }
        cmd = NR + 1; next_cmd = 1; want = 0; next
    }
    next_cmd && NR == cmd { next }
    next_cmd && /^```$/ { printf "%s\t%d\t%d\n", name, cmd, NR; next_cmd = 0 }
' "$README" > "$TMP/samples"
n_samples=0
: > "$TMP/replacements"
while IFS=$'\t' read -r name cmd_line end_line; do
    n_samples=$((n_samples + 1))
    if [[ $end_line == bad ]]; then fail "README.md:$cmd_line: sample '$name': the marker is not followed by a fenced block"; continue; fi
    line=$(sed -n "${cmd_line}p" "$README")
    if [[ $line != '$ '* ]]; then fail "README.md:$cmd_line: sample '$name': the block's first line is not '\$ COMMAND'"; continue; fi
    cmd=${line#'$ '}
    prog=${cmd%% *}
    if [[ $prog != build/pipelm ]] && ! command -v "$prog" >/dev/null; then
        echo "skip: sample '$name' (README.md:$cmd_line) needs $prog, which is not installed"
        continue
    fi
    run=${cmd//build\/pipelm/$(printf '%q' "$BIN")}
    start=$SECONDS
    (cd "$ROOT" && timeout 120 bash -c "$run" < /dev/null > "$TMP/$name.raw" 2>&1)
    rc=$?
    normalise < "$TMP/$name.raw" > "$TMP/$name.out"
    echo "sample '$name': \$ $cmd  (exit $rc, $((SECONDS - start)) s)"
    if ((rc != 0)); then
        fail "README.md:$cmd_line: sample '$name' exited $rc:"
        sed 's/^/    /' "$TMP/$name.out"
        continue
    fi
    if [[ $MODE == check ]]; then
        sed -n "$((cmd_line + 1)),$((end_line - 1))p" "$README" | normalise > "$TMP/$name.readme"
        if ! diff -u --label "README.md (sample '$name')" --label "$cmd" "$TMP/$name.readme" "$TMP/$name.out" > "$TMP/$name.diff"; then
            fail "README.md:$cmd_line: sample '$name' differs from what the command prints now (run scripts/readme-samples.sh to regenerate it; PIPELM=$BIN):"
            cat "$TMP/$name.diff"
        fi
    else
        printf '%s\t%s\t%s\n' "$cmd_line" "$end_line" "$TMP/$name.out" >> "$TMP/replacements"
    fi
done < "$TMP/samples"
((n_samples > 0)) || fail "README.md has no marked sample (<!-- sample: NAME --> before a fenced block)"

if [[ $MODE == write ]]; then
    ((fails == 0)) || { echo "readme-samples: $fails failure(s); README.md left as it was"; exit 1; }
    # Between each command line and its closing fence, the new output; the rest as it was.
    awk -F'\t' -v reps="$TMP/replacements" '
        BEGIN { while ((getline r < reps) > 0) { split(r, f, "\t"); from[f[1]] = f[2]; file[f[1]] = f[3] } }
        skip_to && FNR < skip_to { next }
        { skip_to = 0; print }
        FNR in from {
            while ((getline o < file[FNR]) > 0) print o
            close(file[FNR]); skip_to = from[FNR]
        }
    ' "$README" > "$TMP/README.new"
    if cmp -s "$README" "$TMP/README.new"; then
        echo "README.md: $n_samples sample(s), all up to date"
    else
        cat "$TMP/README.new" > "$README"
        echo "README.md: $n_samples sample(s) regenerated; review with git diff README.md"
    fi
    exit 0
fi

# ---- links and repository paths -----------------------------------------------------------------
# A clean clone has the tracked files only (and nothing above its root): with git, a path exists
# when it is tracked (a file, or a folder holding one); without git, when it is on disk.
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files > "$TMP/files"
else
    (cd "$ROOT" && find . -path ./build\* -prune -o -type f -print | sed 's|^\./||') > "$TMP/files"
fi
in_repo() {
    local p=${1%/}
    p=${p#./}
    [[ $p != ../* && $p != */../* ]] || return 1
    grep -qxF -- "$p" "$TMP/files" || grep -q -- "^$(printf '%s' "$p" | sed 's/[][\.^$*]/\\&/g')/" "$TMP/files"
}
# GitHub's heading anchors of a markdown file: lower case, punctuation dropped, spaces -> '-'.
anchors() {
    grep -E '^#{1,6} ' "$ROOT/$1" | sed -E 's/^#+ +//; s/[[:space:]]+$//' | tr '[:upper:]' '[:lower:]' |
        sed -E 's/[^a-z0-9 _-]//g; s/ /-/g'
}
# Markdown links [text](target): relative targets must exist, #anchors must name a heading.
grep -noE '\]\([^)[:space:]]+\)' "$README" | sed -E 's/\]\(//; s/\)$//' | while IFS=: read -r ln target; do
    [[ $target == http://* || $target == https://* || $target == mailto:* ]] && continue
    path=${target%%#*}
    anchor=; [[ $target == *#* ]] && anchor=${target#*#}
    [[ -z $path ]] && path=README.md
    if ! in_repo "$path"; then echo "FAIL: README.md:$ln: the link ($target) points at $path, which is not in the repository"; continue; fi
    if [[ -n $anchor && $path == *.md ]] && ! anchors "$path" | grep -qxF -- "$anchor"; then
        echo "FAIL: README.md:$ln: the link ($target): $path has no heading with the anchor #$anchor"
    fi
done > "$TMP/links"
# Paths written in the text (`runtime/model/arch.cc`, tests/runtime/recovery_test.cc, ...): those
# under a top-level folder of the repository must exist; test data outside it (shared/...) is
# not in a clone.
tops=$(cut -d/ -f1 -s "$TMP/files" | sort -u | grep -v '^build' | sed 's/\./\\./g' | paste -sd'|')
sed -E 's/\]\([^)]*\)/]/g' "$README" | grep -noE "(^|[^A-Za-z0-9_./-])(($tops)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])" |
    sed -E "s/^([0-9]+):[^A-Za-z0-9_.]?/\1:/" | while IFS=: read -r ln path; do
    in_repo "$path" || echo "FAIL: README.md:$ln: $path is not in the repository"
done >> "$TMP/links"
grep -noE '(^|[^A-Za-z0-9_./-])(\.\./)*shared/[A-Za-z0-9_./-]+' "$README" | while IFS=: read -r ln path; do
    echo "FAIL: README.md:$ln: ${path#[^.s]} is outside the repository (a clone does not have it)"
done >> "$TMP/links"
if [[ -s $TMP/links ]]; then
    cat "$TMP/links"
    fails=$((fails + $(wc -l < "$TMP/links")))
else
    echo "links and paths: all in the repository"
fi

# ---- the command table --------------------------------------------------------------------------
"$BIN" --help | awk '/^commands:/ { on = 1; next } on && /^$/ { exit } on { print $1 }' | sort > "$TMP/help-commands"
awk '/^## Commands/ { on = 1; next } on && /^## / { exit } on' "$README" |
    sed -nE 's/^\| `([a-z]+)` \|.*/\1/p' | sort > "$TMP/table-commands"
if [[ ! -s $TMP/help-commands ]]; then
    fail "pipelm --help lists no commands (expected a 'commands:' section)"
elif ! diff "$TMP/help-commands" "$TMP/table-commands" > "$TMP/cmd.diff"; then
    fail "README.md's command table (## Commands) and pipelm --help list different commands:"
    sed -n 's/^< /    missing from the table: /p; s/^> /    in the table, not in --help: /p' "$TMP/cmd.diff"
else
    echo "command table: the $(wc -l < "$TMP/help-commands") commands of pipelm --help"
fi

# ---- the package list --------------------------------------------------------------------------
# README's "installs only missing Debian packages (`...`" against PKGS=(...) in scripts/setup.sh.
tr '\n' ' ' < "$README" | grep -oE 'installs only missing Debian packages \(`[^`]+`' |
    sed -E 's/.*\(`//; s/`$//' | tr -s ' ' '\n' | sed '/^$/d' | sort > "$TMP/readme-pkgs"
sed -nE 's/^PKGS=\((.*)\)$/\1/p' "$ROOT/scripts/setup.sh" | tr -s ' ' '\n' | sed '/^$/d' | sort > "$TMP/setup-pkgs"
if [[ ! -s $TMP/readme-pkgs || ! -s $TMP/setup-pkgs ]]; then
    fail "cannot find the package list in README.md (\"installs only missing Debian packages (\`...\`\") or PKGS=(...) in scripts/setup.sh"
elif ! diff "$TMP/setup-pkgs" "$TMP/readme-pkgs" > "$TMP/pkg.diff"; then
    fail "README.md's package list and PKGS in scripts/setup.sh differ:"
    sed -n 's/^< /    missing from README.md: /p; s/^> /    in README.md, not in setup.sh: /p' "$TMP/pkg.diff"
else
    echo "package list: the $(wc -l < "$TMP/setup-pkgs") packages of scripts/setup.sh"
fi

if ((fails)); then
    echo "readme_test: $fails failure(s); run scripts/readme-samples.sh to regenerate the samples, fix links and the table by hand"
    exit 1
fi
echo "readme_test: passed ($n_samples samples)"

#!/bin/sh
# packaging/man.sh SOURCE.md OUT_DIR VERSION: renders one man page source,
# docs/NAME.N.md, as OUT_DIR/manN/NAME.N.gz with lowdown (apt-get install
# lowdown). Every docs/*.N.md is a man page of section N; build.sh runs this
# for each of them.
#
# A source starts with `# NAME(N) — what it is`. That line becomes the .TH
# header (lowdown metadata), the `##` sections become the page's sections,
# and a page without a `## NAME` section gets one from the first line, so
# whatis/apropos find it. Links show their text only (they point at other
# Markdown files in docs/).
set -eu

src=$1
out=$2
version=$3

file=$(basename "$src" .md)
name=${file%.*}
section=${file##*.}
first=$(head -n 1 "$src")
case $first in
"# $name($section)"*) ;;
*)
    echo "$src: the first line must be '# $name($section) — what it is', not '$first'" >&2
    exit 1
    ;;
esac
what=${first#"# $name($section)"}
what=${what#" — "}

# The page's date: when its source last changed (reproducible builds), else today.
date=$(git -C "$(dirname "$src")" log -1 --format=%cs -- "$(basename "$src")" 2>/dev/null || true)
[ -n "$date" ] || date=$(date -u +%Y-%m-%d)

mkdir -p "$out/man$section"
{
    if ! grep -q '^## NAME$' "$src"; then
        if [ -z "$what" ]; then
            echo "$src: no '## NAME' section and no description on the first line" >&2
            exit 1
        fi
        printf '## NAME\n\n%s - %s\n\n' "$name" "$what"
    fi
    # The NAME line takes a plain hyphen, as whatis expects.
    tail -n +2 "$src" | sed '/^## NAME$/,/^## /s/^\([^ ]*\) — /\1 - /'
} | lowdown -s -tman --nroff-nolinks \
    -M "title=$name" -M "section=$section" -M "date=$date" \
    -M "source=audisp $version" -M "shiftheadinglevelby=-1" |
    gzip -9n >"$out/man$section/$name.$section.gz"

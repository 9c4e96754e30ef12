#!/usr/bin/env bash
# benches/filter.sh: what filter expressions cost per record on a 1M-record
# replay of the real corpus, against a no-filter baseline measured in the
# same run, and what the audisp-filter program adds end to end. See
# benches/README.md.
#
# Usage: benches/filter.sh [--records N] [--runs N] [--no-build]
#   --records N   records to replay (default 1000000)
#   --runs N      repetitions of every case (default 5); medians are printed
#   --no-build    use what is already built
#
# Needs: cargo, zstd, GNU time (/usr/bin/time). Runs in about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

records=1000000
runs=5
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --records) records=$2; shift ;;
        --runs) runs=$2; shift ;;
        --no-build) build=0 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "filter.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for tool in zstd /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "filter.sh: $tool not found" >&2; exit 2; }
done
if [ "$build" = 1 ]; then
    cargo build --release --bin audisp-filter >&2
    cargo bench --bench filter --no-run >&2
fi
bench=$(cargo bench --bench filter --no-run --message-format=json 2>/dev/null |
    grep '"name":"filter"' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
[ -x "$bench" ] || { echo "filter.sh: bench binary not found" >&2; exit 2; }
filter=$PWD/target/release/audisp-filter

tmp=$(mktemp -d /tmp/audisp-filter-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
umask 022
zstd -dc --long=27 tests/data/corpus.log.zst >"$tmp/corpus.log"

echo "== expressions, per record (benches/filter.rs): load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" "$tmp/corpus.log" --records "$records" --runs "$runs" --write "$tmp/replay.log"

# End to end: audisp-filter reading the replay and piping what passes to
# `cat > /dev/null`, next to `cat | cat` on the same file.
printf '# no rules: nothing matches, drop mode forwards everything\n' >"$tmp/none.rules"
printf '%s\n' 'type r= SYSCALL && syscall i= openat && success r= no' >"$tmp/three.rules"
printf '%s\n' '(type r= SYSCALL && syscall i= openat && success r= no)' \
    '\record_type >= 1100 && \record_type <= 1199 && auid i= nobody' \
    '\regexp /name="\/bin\/echo"/' >"$tmp/rules3.rules"
cat "$tmp/replay.log" >/dev/null

run() { # prints "wall cpu" of the command, stdin from the replay
    /usr/bin/time -f '%e %U %S' -o "$tmp/time" "$@" <"$tmp/replay.log" >/dev/null 2>"$tmp/log" ||
        { cat "$tmp/log" >&2; exit 1; }
    awk '{printf "%s %.3f\n", $1, $2 + $3}' "$tmp/time"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A wall cpu
cases=("ceiling: cat | cat" "audisp-filter drop, no rules (forwards all)"
       "audisp-filter keep, 1 three-clause rule" "audisp-filter drop, 1 three-clause rule"
       "audisp-filter keep, 3 rules (ORed)")
for ((r = 0; r < runs; r++)); do
    for c in "${cases[@]}"; do
        case "$c" in
            ceiling*) out=$(run sh -c 'cat | cat >/dev/null') ;;
            *"no rules"*) out=$(run "$filter" drop "$tmp/none.rules" /bin/sh -c 'exec cat >/dev/null') ;;
            *"keep, 1"*) out=$(run "$filter" keep "$tmp/three.rules" /bin/sh -c 'exec cat >/dev/null') ;;
            *"drop, 1"*) out=$(run "$filter" drop "$tmp/three.rules" /bin/sh -c 'exec cat >/dev/null') ;;
            *"3 rules"*) out=$(run "$filter" keep "$tmp/rules3.rules" /bin/sh -c 'exec cat >/dev/null') ;;
        esac
        wall[$c]+="${out% *} "
        cpu[$c]+="${out#* } "
    done
done
n=$(wc -l <"$tmp/replay.log")
echo
echo "== audisp-filter end to end, $n records, median of $runs: load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-46s %8s %12s %8s %14s\n' case "wall s" records/s "CPU s" "CPU ns/record"
for c in "${cases[@]}"; do
    w=$(tr ' ' '\n' <<<"${wall[$c]}" | grep . | median)
    u=$(tr ' ' '\n' <<<"${cpu[$c]}" | grep . | median)
    awk -v c="$c" -v w="$w" -v u="$u" -v n="$n" \
        'BEGIN {printf "%-46s %8.2f %12.0f %8.2f %14.0f\n", c, w, (w > 0 ? n / w : 0), u, 1e9 * u / n}'
done

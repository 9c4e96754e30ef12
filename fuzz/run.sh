#!/usr/bin/env bash
# fuzz/run.sh: runs the fuzz targets one after another with libFuzzer and
# AddressSanitizer, on the stable toolchain.
#
# Usage: fuzz/run.sh [--time SECS] [--no-asan] [TARGET...]
#   --time SECS  how long each target runs (default 60)
#   --no-asan    build without AddressSanitizer (faster, finds less)
#   TARGET...    the targets to run (default: every one, `cargo fuzz list`)
#
# Installs cargo-fuzz (from crates.io) if it is missing. cargo-fuzz passes
# -Z flags to rustc (-Zsanitizer=address and others), which only a nightly
# compiler accepts; RUSTC_BOOTSTRAP=1 makes the stable one accept them too.
# The corpus grows in fuzz/corpus/TARGET (not in git); fuzz/seeds/TARGET, if
# present, is read as extra input. A crash leaves its input in
# fuzz/artifacts/TARGET/ and this script goes on with the next target, then
# exits 1. Replay one input with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET FILE`
# from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=60
sanitizer=()
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) secs="${2:-}"; shift $(( $# > 1 )) ;;
        --no-asan) sanitizer=(--sanitizer none) ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1") ;;
    esac
    shift
done
case "$secs" in
    ''|*[!0-9]*) echo "run.sh: --time takes whole seconds, not '$secs'" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
failed=()
summary=()
for t in "${targets[@]}"; do
    corpus=(fuzz/corpus/"$t")
    mkdir -p "${corpus[0]}"
    [ -d fuzz/seeds/"$t" ] && corpus+=(fuzz/seeds/"$t")
    log="fuzz/artifacts/$t.log"
    mkdir -p fuzz/artifacts
    echo "run.sh: $t for ${secs}s" >&2
    if cargo fuzz run "${sanitizer[@]}" "$t" "${corpus[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | tee "$log" | grep --line-buffered -E '^(==|INFO: |#[0-9]+[[:space:]]+(INITED|DONE))|panicked|Failing input|SUMMARY' >&2; then
        :
    fi
    if ! grep -q '^Done [0-9]* runs' "$log"; then
        failed+=("$t")
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    files=$(find "${corpus[0]}" -type f | wc -l)
    summary+=("$t: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus ${files} files")
done
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "run.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "run.sh: every target ran ${secs}s without a failure"

#!/usr/bin/env bash
# Runs the cargo-fuzz targets on stable Rust (no sanitizer; see README.md).
#
#   fuzz/run.sh [RUNS] [TARGET...]      RUNS executions of each target (default 1000000)
#   fuzz/run.sh smoke                   CI's short run: 20 s of each target
#
# Needs `cargo install cargo-fuzz`. The corpus grows in fuzz/corpus/TARGET (not committed),
# starting from the seeds in fuzz/seeds/TARGET; crashes land in fuzz/artifacts/TARGET. Prints
# executions, time and peak RSS per target; fails on the first crash, leak of memory past the
# limits, or timeout.
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-1000000}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(codec_decode protocol_messages ui_params cli_input)
if [[ $runs == smoke ]]; then
    limit=(-max_total_time=20)
else
    limit=(-runs="$runs")
fi
# Debug assertions and overflow checks on; no sanitizer (ASan needs nightly).
build=(--sanitizer none --debug-assertions)
cargo fuzz build "${build[@]}"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    dict=()
    [[ -f "dicts/$t.dict" ]] && dict=(-dict="dicts/$t.dict")
    start=$(date +%s)
    cargo fuzz run "${build[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        "${limit[@]}" -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=10 -max_len=65536 \
        -print_final_stats=1 "${dict[@]}" 2>"/tmp/weir-fuzz-$t.log" ||
        { tail -40 "/tmp/weir-fuzz-$t.log"; exit 1; }
    end=$(date +%s)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "/tmp/weir-fuzz-$t.log" | grep -o '[0-9]*$')
    rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "/tmp/weir-fuzz-$t.log" | grep -o '[0-9]*$')
    echo "$t: $execs executions in $((end - start)) s, peak RSS $rss MB, corpus $(ls "corpus/$t" | wc -l) inputs"
done

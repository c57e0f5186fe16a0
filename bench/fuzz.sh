#!/usr/bin/env bash
# Coverage-guided fuzzing of imgsearch's readers of untrusted bytes with
# AFL++ (cargo-afl, stable toolchain): image decode through the preparation
# step, the flat vector file and its checksums, the record catalogue, the
# graph file, the model file. The targets are in fuzz/src/lib.rs.
#
#   bash bench/fuzz.sh [MINUTES] [TARGET...]     # default: 10 minutes, every target
#
# Targets run side by side, one per core (FUZZ_JOBS overrides). Crashes and
# hangs are kept under target/fuzz/out/TARGET/default/{crashes,hangs}; to
# replay one: fuzz/target/release/TARGET < FILE. With RESULTS=1 the table
# goes into bench/RESULTS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
minutes=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode flat catalogue graph model)
jobs=${FUZZ_JOBS:-$(nproc)}
work=$root/target/fuzz

command -v cargo-afl >/dev/null || cargo install cargo-afl --version 0.18.2 --locked
cargo afl config --build >/dev/null 2>&1 || true
(cd "$root/fuzz" && cargo afl build --release)
bins=$root/fuzz/target/release
rm -rf "$work/seeds" && mkdir -p "$work/out"
"$bins/seeds" "$work/seeds"

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
run_one() {
  local t=$1
  rm -rf "$work/out/$t"
  # -V: stop after this many seconds; -t: an input taking over 2 s is a hang.
  cargo afl fuzz -i "$work/seeds/$t" -o "$work/out/$t" -V $((minutes * 60)) -t 2000 \
    "$bins/$t" > "$work/$t.log" 2>&1 || echo "$t: afl-fuzz exited $? (see $work/$t.log)" >&2
}
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

stat() { awk -F' *: *' -v k="$2" '$1 == k { print $2 }' "$work/out/$1/default/fuzzer_stats"; }
table="| target | minutes | executions | per second | corpus | edges covered | crashes | hangs |
|---|---:|---:|---:|---:|---:|---:|---:|"
for t in "${targets[@]}"; do
  table+="
| \`$t\` | $minutes | $(stat "$t" execs_done) | $(stat "$t" execs_per_sec) | $(stat "$t" corpus_count) | $(stat "$t" bitmap_cvg) | $(stat "$t" saved_crashes) | $(stat "$t" saved_hangs) |"
done
echo "$table"
if [ "${RESULTS:-0}" = 1 ]; then
  "$root/bench/write-results.sh" fuzz "Fuzzing" "bench/fuzz.sh $minutes" "$table"
fi

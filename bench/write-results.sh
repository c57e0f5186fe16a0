#!/usr/bin/env bash
# Writes a benchmark's table into bench/RESULTS.md between its markers
# (`<!-- NAME:begin -->` … `<!-- NAME:end -->`), stamped with the script,
# the date and the machine; appends a new section under HEADING when the
# markers are not there yet.
#
#   bench/write-results.sh NAME HEADING SCRIPT TABLE
set -euo pipefail
name=$1 heading=$2 script=$3 table=$4
root=$(cd "$(dirname "$0")/.." && pwd)
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
section=$(printf '<!-- %s:begin -->\n`%s`, %s, on %s.\n\n%s\n<!-- %s:end -->' "$name" "$script" "$(date +%F)" "$machine" "$table" "$name")
results=$root/bench/RESULTS.md
if grep -q "<!-- $name:begin -->" "$results"; then
  awk -v section="$section" -v begin="<!-- $name:begin -->" -v end="<!-- $name:end -->" '
    $0 == begin { print section; skip = 1; next }
    $0 == end { skip = 0; next }
    !skip { print }' "$results" > "$results.tmp" && mv "$results.tmp" "$results"
else
  printf '\n## %s\n\n%s\n' "$heading" "$section" >> "$results"
fi
echo "wrote the table into $results"

#!/usr/bin/env bash
# Kill -9 campaign: ingest 20,000 MNIST PNGs with `imgsearch ingest`, killed
# with SIGKILL at a random moment KILLS times (default 20), each time run
# again until one run completes. Then the index must equal an uninterrupted
# run's: same records (path, label) and the same embeddings, no duplicates,
# `status` must show flat rows = graph points = images, and a one-shot
# query (read from the record catalogue) must answer as on the uninterrupted
# index. Prints a table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${IMGSEARCH_DATA:-$root/../shared/data}
work=$root/target/bench-kill9
bin=$root/target/release/imgsearch
kills=${KILLS:-20}
cd "$root"
cargo build --release
rm -rf "$work" && mkdir -p "$work"
"$bin" dataset export mnist "$data/mnist" --out "$work/imgs" --split train --limit 20000 >/dev/null

"$bin" ingest "$work/imgs" --index "$work/reference" --model digits >/dev/null
"$bin" export --index "$work/reference" --format csv | cut -d, -f2- | sort >"$work/reference.csv"

RANDOM=${SEED:-7}
echo "| kill | after (ms) | records when killed |"
echo "|---:|---:|---:|"
for k in $(seq 1 "$kills"); do
  delay=$((RANDOM % 1200 + 50))
  "$bin" ingest "$work/imgs" --index "$work/killed" --model digits >/dev/null 2>&1 &
  pid=$!
  sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  n=$("$bin" status --index "$work/killed" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"])' || echo "-")
  echo "| $k | $delay | $n |"
done
"$bin" ingest "$work/imgs" --index "$work/killed" --model digits >/dev/null
"$bin" export --index "$work/killed" --format csv | cut -d, -f2- | sort >"$work/killed.csv"
status=$("$bin" status --index "$work/killed" --json)
python3 - "$status" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
print(f"\nafter the last run: {s['images']} images, flat rows {s['flat_rows']}, graph points {s['graph_points']}, tombstones {s['tombstones']}")
PY
if cmp -s "$work/reference.csv" "$work/killed.csv"; then
  echo "records and embeddings: identical to the uninterrupted run ($(wc -l <"$work/reference.csv") rows)"
else
  echo "records and embeddings: DIFFERENT from the uninterrupted run"
  exit 1
fi
# The same query on both indexes, from their record catalogues: the same
# paths, labels and distances (ids may differ).
# sed reads to the end (head would close the pipe early: SIGPIPE under pipefail).
probe=$(find "$work/imgs/3" -name '*.png' | sort | sed -n 1p)
hits() { "$bin" query "$probe" --index "$1" -k 50 --json | python3 -c '
import json, sys
for h in json.load(sys.stdin)[0]["results"]:
    print(h["path"], h["label"], "%.5f" % h["distance"])'; }
if [ "$(hits "$work/reference")" = "$(hits "$work/killed")" ]; then
  echo "a one-shot query (record catalogue): the same 50 hits as on the uninterrupted index"
else
  echo "a one-shot query (record catalogue): DIFFERENT hits from the uninterrupted index"
  exit 1
fi

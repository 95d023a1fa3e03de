#!/usr/bin/env bash
# Runs `emulator bench` at several steady rates and plots end-to-end latency (p50, p99)
# against throughput into a PNG. With SOURCE_BROKERS and LOCAL_BROKERS set (Apache Kafka,
# see infra/kafka-local), it runs there and adds MirrorMaker 2 (--peer mm2).
#
#   infra/bench/latency-plot.sh [OUT.png]        default: docs/latency.png
#   RATES="500 1000 2000" SECS=3 infra/bench/latency-plot.sh     (defaults: 250 1000 4000 8000, 2 s)
#
# matplotlib comes from PyPI into a venv under ~/.cache/kafka-replicator (pinned below).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/docs/latency.png}
rates=${RATES:-250 1000 4000 8000}
secs=${SECS:-2}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kafka-replicator
venv=$cache/plot-venv

if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  echo "latency-plot: installing matplotlib into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

brokers=()
peer=()
events=1000
kafka="librdkafka mock cluster"
if [[ -n ${SOURCE_BROKERS:-} && -n ${LOCAL_BROKERS:-} ]]; then
  brokers=(--source-brokers "$SOURCE_BROKERS" --local-brokers "$LOCAL_BROKERS")
  peer=(--peer mm2)
  events=${EVENTS:-5000}
  kafka="Apache Kafka $(basename "$(ls "$cache"/kafka-local/libs/kafka_2.13-*.jar 2>/dev/null | head -n 1)" .jar | sed 's/kafka_2.13-//')"
fi

(cd "$root" && cargo build --release -p emulator --quiet)
bin=${CARGO_TARGET_DIR:-$root/target}/release/emulator
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for rate in $rates; do
  echo "latency-plot: $rate events/s for $secs s" >&2
  "$bin" "${brokers[@]}" bench --events "$events" --latency-rate "$rate" --latency-secs "$secs" \
    "${peer[@]}" --json 2>/dev/null | tail -n 1 >>"$results"
done
mkdir -p "$(dirname "$out")"
"$venv/bin/python" "$here/latency_plot.py" "$results" "$out" "$(nproc) cores, $kafka"
echo "latency-plot: wrote $out" >&2

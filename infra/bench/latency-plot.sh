#!/usr/bin/env bash
# Runs `emulator bench` at several steady rates and plots end-to-end latency (p50, p99)
# against throughput into a PNG. With SOURCE_BROKERS and LOCAL_BROKERS set (Apache Kafka,
# see infra/kafka-local), it runs there and adds MirrorMaker 2 (--peer mm2).
#
#   infra/bench/latency-plot.sh [OUT.png]        default: docs/latency.png
#   RATES="500 1000 2000" SECS=3 infra/bench/latency-plot.sh     (defaults: 250 1000 4000 8000, 2 s)
#   LINK_DELAY_MS=25 LINK_MBIT=20 infra/bench/latency-plot.sh docs/latency-wan.png
#       the client (and MirrorMaker 2, given SOURCE_LINK, see infra/kafka-local's
#       KAFKA_LOCAL_LINK_PORT) across a shaped link (toxiproxy, from .ci/tools.sh), with
#       compression on as over a real network
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

link=()
if [[ -n ${LINK_DELAY_MS:-} || -n ${LINK_MBIT:-} ]]; then
  : "${LINK_DELAY_MS:?set LINK_DELAY_MS and LINK_MBIT together}" "${LINK_MBIT:?set LINK_DELAY_MS and LINK_MBIT together}"
  eval "$(bash "$root/.ci/tools.sh")"
  link=(--link-delay-ms "$LINK_DELAY_MS" --link-mbit "$LINK_MBIT" --compression)
  if [[ ${#peer[@]} -gt 0 ]]; then
    : "${SOURCE_LINK:?MirrorMaker 2 over the link needs SOURCE_LINK=\$(infra/kafka-local/kafka-local.sh link source)}"
    link+=(--source-link "$SOURCE_LINK")
  fi
  kafka+=", link $LINK_DELAY_MS ms each way, $LINK_MBIT Mbit/s"
fi

(cd "$root" && cargo build --release -p emulator --quiet)
bin=${CARGO_TARGET_DIR:-$root/target}/release/emulator
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for rate in $rates; do
  echo "latency-plot: $rate events/s for $secs s" >&2
  "$bin" "${brokers[@]}" bench --events "$events" --latency-rate "$rate" --latency-secs "$secs" \
    "${peer[@]}" "${link[@]}" --json 2>/dev/null | tail -n 1 >>"$results"
done
mkdir -p "$(dirname "$out")"
"$venv/bin/python" "$here/latency_plot.py" "$results" "$out" "$(nproc) cores, $kafka"
echo "latency-plot: wrote $out" >&2

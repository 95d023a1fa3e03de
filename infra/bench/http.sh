#!/usr/bin/env bash
# HTTP throughput of GET /events at small batches, with wrk (Debian package `wrk`; installed
# here with apt-get when missing and run as root). Starts the emulator (release build, no
# client, rate limits off) with a backlog, then asks for the same small page over and over:
# the API and consumer pod's cost per request, not Kafka's.
#
#   infra/bench/http.sh [LIMIT ...]          default: 1 10 100
#   DURATION=10s CONNECTIONS=32 infra/bench/http.sh 10
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
limits=("${@:-1 10 100}")
# shellcheck disable=SC2206
limits=(${limits[*]})
duration=${DURATION:-10s}
connections=${CONNECTIONS:-32}

if ! command -v wrk >/dev/null; then
  [[ $(id -u) == 0 ]] || { echo "http.sh: wrk is missing: apt-get install wrk" >&2; exit 1; }
  apt-get install -y -q wrk >/dev/null
fi

(cd "$root" && cargo build --release -p emulator --quiet)
bin=${CARGO_TARGET_DIR:-$root/target}/release/emulator
ready=$(mktemp)
log=$(mktemp)
rm -f "$ready"
RATE_LIMIT_KEY_MAX=0 RATE_LIMIT_MAX=0 "$bin" --no-client --events 2000 --rate 0 --port 0 \
  --ready-file "$ready" >"$log" 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null; wait "$emulator" 2>/dev/null; rm -f "$ready" "$log"' EXIT
for _ in $(seq 120); do
  [[ -s $ready ]] && break
  kill -0 "$emulator" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.5
done
[[ -s $ready ]] || { echo "http.sh: the emulator did not get ready" >&2; exit 1; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$ready" "$1"; }
api=$(field api_base)
key=$(field api_key)
# Wait until the backlog is in the pod.
for _ in $(seq 60); do
  count=$(curl -fsS -H "x-api-key: $key" "$api/events?cursor=earliest&limit=2000" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
  [[ $count -ge 2000 ]] && break
  sleep 0.5
done

echo "limit  requests/s  events/s  p50      p99      (wrk, $connections connections, $duration, $(nproc) cores)"
for limit in "${limits[@]}"; do
  out=$(wrk -t2 -c"$connections" -d"$duration" --latency -H "x-api-key: $key" \
    "$api/events?cursor=earliest&limit=$limit")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
  printf '%-6s %-11s %-9.0f %-8s %-8s %s\n' "$limit" "$rps" "$(python3 -c "print($rps*$limit)")" "$p50" "$p99" "$errors"
done

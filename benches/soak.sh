#!/usr/bin/env bash
# Bounded soak test on loopback: mixed ingestion (benches/loadgen.rs), cache traffic (wrk) and
# queries (curl) against the release binary for SOAK_SECONDS (default 300). Prints throughput
# and perfd's RSS at start, every minute and at the end; fails if RSS at the end is more than
# 1.5× the RSS after the first minute (memory must not keep growing).
#   SOAK_SECONDS=300 benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SOAK_SECONDS:-300}
PORT=18472
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build -q --release --bin perfd --example loadgen
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/perfd --listen 127.0.0.1:$PORT --data-dir "$work/data" 2>"$work/perfd.log" &
pid=$!
for _ in $(seq 200); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.05; done
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
echo "start: RSS $(rss) kB"
for i in $(seq 0 99); do
  curl -s -XPUT "http://127.0.0.1:$PORT/api/v1/cache/llm_response/k$i" --data-binary "value-$i" >/dev/null
done

# Ingestion: 2,000 series, 10 k-line requests over 4 connections, bounded by count and time.
target/release/examples/loadgen --url http://127.0.0.1:$PORT --points 2000000 --series 2000 --repeat \
  --connections 4 --seconds "$SECS" >"$work/ingest.txt" 2>/dev/null &
# Cache reads.
wrk -t1 -c16 -d"${SECS}s" "http://127.0.0.1:$PORT/api/v1/cache/llm_response/k7" >"$work/wrk.txt" &
# Queries: hourly averages over everything, raw reads of one series, series listing.
(
  end=$((SECONDS + SECS)); n=0
  while ((SECONDS < end)); do
    day_ago=$((($(date +%s) - 86400) * 1000))
    curl -s -G "http://127.0.0.1:$PORT/api/v1/query_range" --data-urlencode 'query=cpu_usage' -d start=$day_ago -d step=1h >/dev/null
    curl -s -G "http://127.0.0.1:$PORT/api/v1/query_range" --data-urlencode 'query=cpu_usage{host="host-00007"}' -d start=0 >/dev/null
    curl -s -G "http://127.0.0.1:$PORT/api/v1/series" --data-urlencode 'match=cpu_usage{region="r1"}' >/dev/null
    n=$((n + 3))
  done
  echo "$n" >"$work/queries.txt"
) &
first=""
for m in $(seq 1 $(((SECS + 59) / 60))); do
  sleep $((SECS < 60 ? SECS : 60))
  r=$(rss); [[ -z "$first" ]] && first=$r
  echo "minute $m: RSS $r kB"
done
wait %2 %3 %4 2>/dev/null || true
last=$(rss)
echo "end: RSS $last kB"
echo "ingest: $(cat "$work/ingest.txt")"
echo "cache reads: $(grep Requests/sec "$work/wrk.txt")"
echo "queries: $(cat "$work/queries.txt" 2>/dev/null || echo '?') in ${SECS}s"
curl -s http://127.0.0.1:$PORT/api/v1/metrics/database | head -c 400; echo
if ((last * 2 > first * 3)); then
  echo "FAIL: RSS grew from $first kB to $last kB"
  exit 1
fi
echo "ok: RSS $first kB after the first minute, $last kB at the end"

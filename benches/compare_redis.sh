#!/usr/bin/env bash
# perfd's HTTP cache vs redis-server on this machine, loopback only, side by side in one run:
# GET hits of a 512-byte value over 50 connections (wrk vs redis-benchmark without pipelining),
# and 16-key mget (perfd's binary mget vs redis-benchmark MGET with -P 16).
#   SECONDS_PER_RUN=10 benches/compare_redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${SECONDS_PER_RUN:-10}
PERFD_PORT=18471
REDIS_PORT=18379
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build -q --release --bin perfd
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

target/release/perfd --listen 127.0.0.1:$PERFD_PORT --data-dir "$work/perfd" 2>"$work/perfd.log" &
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
for _ in $(seq 200); do curl -sf http://127.0.0.1:$PERFD_PORT/healthz >/dev/null && break; sleep 0.05; done
value=$(head -c 512 /dev/zero | tr '\0' 'v')
keys='{"keys":['
for i in $(seq 0 15); do
  curl -s -XPUT "http://127.0.0.1:$PERFD_PORT/api/v1/cache/llm_response/key$i" --data-binary "$value" >/dev/null
  keys+="{\"strategy\":\"llm_response\",\"key\":\"key$i\"}"; [[ $i -lt 15 ]] && keys+=','
done
keys+=']}'
cat >"$work/mget.lua" <<LUA
wrk.method = "POST"
wrk.body = '$keys'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/x-perfd-mget"
LUA

echo "== perfd GET hit (wrk, 50 connections, 2 threads, ${DUR}s)"
wrk -t2 -c50 -d${DUR}s --latency "http://127.0.0.1:$PERFD_PORT/api/v1/cache/llm_response/key0" | grep -E "Requests/sec|99%|50%"
echo "== redis GET (redis-benchmark, 50 connections, no pipelining)"
redis-benchmark -p $REDIS_PORT -t get -d 512 -c 50 -n $((DUR * 100000)) -q --csv 2>/dev/null | tail -1
redis-benchmark -p $REDIS_PORT -t get -d 512 -c 50 -n $((DUR * 50000)) 2>/dev/null | grep -E "requests per second|99.000%|latency summary" -A2 | head -8
echo "== perfd mget of 16 keys (binary answer)"
wrk -t2 -c50 -d${DUR}s --latency -s "$work/mget.lua" "http://127.0.0.1:$PERFD_PORT/api/v1/cache/mget" | grep -E "Requests/sec|99%|50%"
echo "== redis GET -P 16 (keys/s)"
redis-benchmark -p $REDIS_PORT -t get -d 512 -c 50 -P 16 -n $((DUR * 400000)) -q 2>/dev/null | tail -1

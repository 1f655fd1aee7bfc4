#!/usr/bin/env bash
# perfd's HTTP cache vs redis-server on this machine, loopback only, side by side in one run.
# Each server runs on core 0 (perfd with one HTTP worker: Redis is one thread too), each client
# on core 1, so neither client steals its server's core. 512-byte values, 50 connections:
#  1. GET hit, no pipelining: wrk vs redis-benchmark (whose key is set first, so its GETs are hits).
#  2. 16 keys per request: perfd's mget (compact request and answer) vs redis-benchmark GET -P 16.
#  3. One client for both (benches/cachebench.rs): GET and 16-key mget, closed loop.
#  4. The floor (benches/httpfloor.rs, also on core 0): a static HTTP answer of the same bytes on
#     tokio, no parsing or lookup, to show what any hand-written hit path could reach.
#  5. A reference HTTP server: nginx (one worker on core 0) answering `return 200` with a 512-byte
#     body from memory, measured like perfd, to show what the wrk-vs-redis-benchmark p99 measures.
#  6. PAIRS=n (default 0): n short pairs (2 s each) of perfd GET under wrk, then Redis GET under
#     redis-benchmark, alternating, with how many pairs meet "perfd's p99 <= Redis'" and the
#     median ratio. This host switches speed every few seconds; a short pair more often runs both
#     halves at one speed. Each pair also runs the floor under wrk: how often a server doing no
#     work meets the same goal.
#   ROUNDS=3 SECONDS_PER_RUN=6 PAIRS=20 benches/compare_redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${SECONDS_PER_RUN:-6}
ROUNDS=${ROUNDS:-3}
PAIRS=${PAIRS:-0}
PERFD_PORT=18471
REDIS_PORT=18379
FLOOR_PORT=18472
NGINX_PORT=18473
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build -q --release --bin perfd --example cachebench --example httpfloor
work=$(mktemp -d)
# nginx (a job too) removes its pid file as it stops, so that kill is best effort.
trap 'kill $(jobs -p) 2>/dev/null || true; kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT
client() { taskset -c 1 "$@"; }

# taskset execs the server, so `jobs -p` (used by the trap) holds the servers' own pids.
PERFD_HTTP_WORKERS=1 taskset -c 0 target/release/perfd --listen 127.0.0.1:$PERFD_PORT --data-dir "$work/perfd" >"$work/perfd.log" 2>&1 &
taskset -c 0 target/release/examples/httpfloor 127.0.0.1:$FLOOR_PORT >"$work/floor.log" 2>&1 &
head -c 512 /dev/zero | tr '\0' 'v' >"$work/value"
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000000;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work;
  uwsgi_temp_path $work; scgi_temp_path $work;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { default_type application/octet-stream; return 200 "$(cat "$work/value")"; }
  }
}
NGINX
taskset -c 0 "$(command -v nginx || echo /usr/sbin/nginx)" -c "$work/nginx.conf" &
taskset -c 0 redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
ready=
for _ in $(seq 200); do
  curl -sf http://127.0.0.1:$PERFD_PORT/healthz >/dev/null && curl -sf http://127.0.0.1:$FLOOR_PORT/ >/dev/null && curl -sf http://127.0.0.1:$NGINX_PORT/ >/dev/null && redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && ready=1 && break
  sleep 0.05
done
[[ -n $ready ]] || { echo "servers did not start:"; cat "$work/perfd.log" "$work/redis.log" "$work/nginx.log"; exit 1; }
lines=''
for i in $(seq 0 15); do
  curl -s -XPUT "http://127.0.0.1:$PERFD_PORT/api/v1/cache/llm_response/key$i" --data-binary @"$work/value" >/dev/null
  redis-cli -p $REDIS_PORT -x set "key$i" <"$work/value" >/dev/null
  lines+="llm_response:key$i\\n"
done
# redis-benchmark's GET reads this key; without it every GET is a (cheaper) miss.
redis-cli -p $REDIS_PORT -x set "key:__rand_int__" <"$work/value" >/dev/null

cat >"$work/pct.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("%d req/s, p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
LUA
cat >"$work/mget.lua" <<LUA
wrk.method = "POST"
wrk.body = "$lines"
wrk.headers["Content-Type"] = "application/x-perfd-mget"
wrk.headers["Accept"] = "application/x-perfd-mget"
LUA
cat "$work/pct.lua" >>"$work/mget.lua"

for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  echo -n "perfd GET (wrk -t1 -c50):           "
  client wrk -t1 -c50 -d"${DUR}"s -s "$work/pct.lua" "http://127.0.0.1:$PERFD_PORT/api/v1/cache/llm_response/key0" | tail -1
  echo -n "redis GET (redis-benchmark -c50):   "
  client redis-benchmark -p $REDIS_PORT -t get -d 512 -c 50 -n $((DUR * 100000)) 2>/dev/null |
    awk '/throughput summary/ {rps=$3} /avg +min/ {getline; print int(rps) " req/s, p50 " $3 " ms, p99 " $5 " ms"}'
  echo -n "perfd mget 16 (wrk -t1 -c50):       "
  client wrk -t1 -c50 -d"${DUR}"s -s "$work/mget.lua" "http://127.0.0.1:$PERFD_PORT/api/v1/cache/mget" | tail -1 |
    awk '{printf "%s (%d keys/s)\n", $0, $1 * 16}'
  echo -n "redis GET -P 16 (redis-benchmark):  "
  client redis-benchmark -p $REDIS_PORT -t get -d 512 -c 50 -P 16 -n $((DUR * 1500000)) -q 2>/dev/null | tr '\r' '\n' | grep -E "requests per second" | tail -1
  echo -n "floor GET (wrk -t1 -c50):           "
  client wrk -t1 -c50 -d"${DUR}"s -s "$work/pct.lua" "http://127.0.0.1:$FLOOR_PORT/api/v1/cache/llm_response/key0" | tail -1
  echo -n "nginx GET (wrk -t1 -c50):           "
  client wrk -t1 -c50 -d"${DUR}"s -s "$work/pct.lua" "http://127.0.0.1:$NGINX_PORT/api/v1/cache/llm_response/key0" | tail -1
  for target in "http://127.0.0.1:$PERFD_PORT" "redis://127.0.0.1:$REDIS_PORT"; do
    for mget in 0 16; do
      client target/release/examples/cachebench --target "$target" --seconds "$DUR" --mget $mget
    done
  done
  client target/release/examples/cachebench --target "http://127.0.0.1:$FLOOR_PORT" --seconds "$DUR" | sed 's/^/floor /'
  client target/release/examples/cachebench --target "http://127.0.0.1:$NGINX_PORT" --seconds "$DUR" | sed 's/^/nginx /'
  for target in "http://127.0.0.1:$PERFD_PORT" "redis://127.0.0.1:$REDIS_PORT" "http://127.0.0.1:$FLOOR_PORT" "http://127.0.0.1:$NGINX_PORT"; do
    client target/release/examples/cachebench --target "$target" --seconds "$DUR" --rate 90000 --from-send
  done
done

met=0
floor_met=0
ratios=''
for pair in $(seq "$PAIRS"); do
  ours=$(client wrk -t1 -c50 -d2s -s "$work/pct.lua" "http://127.0.0.1:$PERFD_PORT/api/v1/cache/llm_response/key0" | tail -1)
  theirs=$(client redis-benchmark -p $REDIS_PORT -t get -d 512 -c 50 -n 200000 2>/dev/null |
    awk '/throughput summary/ {rps=$3} /avg +min/ {getline; print int(rps) " req/s, p99 " $5 " ms"}')
  floor=$(client wrk -t1 -c50 -d2s -s "$work/pct.lua" "http://127.0.0.1:$FLOOR_PORT/api/v1/cache/llm_response/key0" | tail -1)
  p99_ours=$(sed -E 's/.*p99 ([0-9.]+) ms.*/\1/' <<<"$ours")
  p99_theirs=$(sed -E 's/.*p99 ([0-9.]+) ms.*/\1/' <<<"$theirs")
  p99_floor=$(sed -E 's/.*p99 ([0-9.]+) ms.*/\1/' <<<"$floor")
  verdict=$(awk -v a="$p99_ours" -v b="$p99_theirs" 'BEGIN { print (a <= b) ? "met" : "missed" }')
  [[ $verdict == met ]] && met=$((met + 1))
  awk -v a="$p99_floor" -v b="$p99_theirs" 'BEGIN { exit !(a <= b) }' && floor_met=$((floor_met + 1))
  ratios+="$(awk -v a="$p99_ours" -v b="$p99_theirs" 'BEGIN { print a / b }') "
  echo "pair $pair: perfd ${ours%%, p50*} p99 $p99_ours ms | redis $theirs | floor ${floor%%, p50*} p99 $p99_floor ms | $verdict"
done
if ((PAIRS)); then
  echo "pairs meeting perfd p99 <= Redis p99: $met of $PAIRS (the floor, under wrk as well: $floor_met of $PAIRS)"
  tr ' ' '\n' <<<"$ratios" | sed '/^$/d' | sort -g |
    awk '{r[NR] = $1} END { printf "perfd p99 / Redis p99 over the pairs: median %.2f, quartiles %.2f and %.2f\n", (r[int((NR + 1) / 2)] + r[int(NR / 2) + 1]) / 2, r[int(NR / 4) + 1], r[int(3 * NR / 4) + 1] }'
fi

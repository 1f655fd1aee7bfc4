#!/usr/bin/env bash
# How soon perfd uses Redis again after an outage, through the release binary (feature redis),
# loopback only. Redis is shut down OUTAGES times (default 5) for DOWN_SECONDS (default 3) each,
# with a write during the outage (so it is noticed and its key repaired); the script prints
# the time from Redis' restart until perfd's statistics say `l2.reachable` again (polled every
# 50 ms, at most 15 s), and the outages perfd counted.
#   OUTAGES=5 DOWN_SECONDS=3 benches/l2_recovery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUTAGES=${OUTAGES:-5}
DOWN=${DOWN_SECONDS:-3}
PORT=18496
REDIS_PORT=18397
command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
cargo build -q --release --features redis --bin perfd
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
redis() { redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & }
redis
printf '[cache.redis]\nurl = "redis://127.0.0.1:%s/"\n' $REDIS_PORT >"$work/perfd.toml"
RUST_LOG=info target/release/perfd --config "$work/perfd.toml" --listen 127.0.0.1:$PORT --data-dir "$work/data" \
  2>"$work/perfd.log" &
l2() { curl -s "http://127.0.0.1:$PORT/api/v1/metrics/cache" | python3 -c "import json,sys; print(json.load(sys.stdin)['cache_statistics']['l2']['$1'])" 2>/dev/null || true; }
wait_for() { for _ in $(seq 300); do [[ $(l2 reachable) == "$1" ]] && return 0; sleep 0.05; done; echo "l2.reachable never became $1"; exit 1; }
wait_for True
for n in $(seq "$OUTAGES"); do
  redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true
  curl -s -o /dev/null -XPUT "http://127.0.0.1:$PORT/api/v1/cache/crew_config/during-$n" --data-binary x
  wait_for False
  sleep "$DOWN"
  redis
  t0=$(date +%s%N)
  wait_for True
  echo "outage $n: used again $(( ($(date +%s%N) - t0) / 1000000 )) ms after Redis restarted"
done
echo "outages counted: $(l2 outages)"
grep -i "redis L2" "$work/perfd.log" | tail -2

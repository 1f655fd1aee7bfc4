#!/usr/bin/env bash
# perfd's alerts in a real Alertmanager (Debian's prometheus-alertmanager), through the release
# binary, loopback only: a threshold that fires at once must show in Alertmanager as an active
# alert with perfd's labels, stay active across resends, and end once the threshold is deleted.
# Then Alertmanager is restarted (it keeps alerts in memory only): perfd counts the failed
# deliveries meanwhile, and its retries bring the second alert back into the new Alertmanager.
#   benches/alertmanager.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=18497
AM_PORT=19093
AM=$(command -v prometheus-alertmanager || true)
if [[ -z $AM ]]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null
  AM=$(command -v prometheus-alertmanager)
fi
cargo build -q --release --bin perfd
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat >"$work/am.yml" <<YML
route: {receiver: nobody, group_wait: 1s, group_interval: 1s}
receivers: [{name: nobody}]
YML
am() {
  "$AM" --config.file="$work/am.yml" --storage.path="$work/am" --web.listen-address=127.0.0.1:$AM_PORT \
    --cluster.listen-address= --log.level=warn >>"$work/am.log" 2>&1 &
  echo $! >"$work/am.pid"
}
am
printf '[sampler]\ninterval = "1s"\n[alerts]\nnotify_url = "http://127.0.0.1:%s/api/v2/alerts"\nresend_interval = "2s"\n' \
  $AM_PORT >"$work/perfd.toml"
RUST_LOG=info target/release/perfd --config "$work/perfd.toml" --listen 127.0.0.1:$PORT --data-dir "$work/data" \
  2>"$work/perfd.log" &
P=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf "$P/healthz" >/dev/null && curl -sf "http://127.0.0.1:$AM_PORT/-/ready" >/dev/null && break; sleep 0.1; done
threshold() {
  curl -sf "$P/api/v1/alerts/thresholds" -H 'Content-Type: application/json' -d "{\"name\": \"$1\",
    \"selector\": \"perfd_process_threads\", \"aggregation\": \"last\", \"window\": \"1m\", \"comparison\": \">\",
    \"warning\": 0, \"for\": \"0s\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
# The state Alertmanager has for alertname $1: active, or gone (resolved or never seen).
state() {
  curl -s "http://127.0.0.1:$AM_PORT/api/v2/alerts" | python3 -c "
import json, sys
found = [a for a in json.load(sys.stdin) if a['labels'].get('alertname') == '$1']
print(found[0]['status']['state'] + ' ' + json.dumps(found[0]['labels'], sort_keys=True) if found else 'gone')" 2>/dev/null || echo unreachable
}
wait_state() { # alertname, wanted state word, seconds
  local t0=$SECONDS
  while ((SECONDS - t0 < $3)); do
    s=$(state "$1"); [[ $s == "$2"* ]] && { echo "  $1: $s (after $((SECONDS - t0)) s)"; return 0; }; sleep 0.2
  done
  echo "  $1: never $2 (last: $(state "$1"))"; exit 1
}
delivery() { curl -s "$P/api/v1/alerts" | python3 -c 'import json,sys; d=json.load(sys.stdin)["delivery"]; print(d["deliveries"], d["failures"], d["last_error"])'; }

echo "1. an alert that fires at once"
id=$(threshold "perfd threads")
wait_state "perfd threads" active 10
echo "2. still active after 6 s of resends (Alertmanager would let it lapse without them: endsAt = 4 resends)"
sleep 6
wait_state "perfd threads" active 1
echo "3. deleted threshold: the end reaches Alertmanager"
curl -sf -XDELETE "$P/api/v1/alerts/thresholds/$id"
wait_state "perfd threads" gone 10
echo "4. Alertmanager restarted (it keeps alerts in memory only): perfd's retries bring the alert back"
id2=$(threshold "perfd threads 2")
wait_state "perfd threads 2" active 10
kill "$(cat "$work/am.pid")"; wait "$(cat "$work/am.pid")" 2>/dev/null || true
sleep 4
echo "  while down: deliveries, failures, last error: $(delivery)"
am
wait_state "perfd threads 2" active 40
curl -sf -XDELETE "$P/api/v1/alerts/thresholds/$id2"
wait_state "perfd threads 2" gone 10
echo "  after: deliveries, failures, last error: $(delivery)"
grep -E "alerts (cannot be sent|reach)" "$work/perfd.log" | sed 's/^/  log: /'

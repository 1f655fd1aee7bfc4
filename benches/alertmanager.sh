#!/usr/bin/env bash
# perfd's alerts in a real Alertmanager (Debian's prometheus-alertmanager), through the release
# binary, loopback only: a threshold that fires at once must show in Alertmanager as an active
# alert with perfd's labels, stay active across resends, and end once the threshold is deleted.
# Then Alertmanager is restarted (it keeps alerts in memory only): perfd counts the failed
# deliveries meanwhile, and its retries bring the second alert back into the new Alertmanager.
# Last, https: an Alertmanager serving a certificate of a private CA (made with openssl) takes
# perfd's alerts when alerts.notify_ca_file names that CA, and a perfd without it is refused.
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

echo "5. https with a private CA"
TLS_PORT=19094
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" \
  -days 2 -subj "/CN=perfd bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/server.key" -out "$work/server.csr" \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -out "$work/server.pem" -days 2 -extfile "$work/san.ext" 2>/dev/null
printf 'tls_server_config:\n  cert_file: %s\n  key_file: %s\n' "$work/server.pem" "$work/server.key" >"$work/web.yml"
"$AM" --config.file="$work/am.yml" --storage.path="$work/am-tls" --web.listen-address=127.0.0.1:$TLS_PORT \
  --web.config.file="$work/web.yml" --cluster.listen-address= --log.level=warn >>"$work/am.log" 2>&1 &
tls_perfd() { # port, extra config line
  printf '[sampler]\ninterval = "1s"\n[alerts]\nnotify_url = "https://localhost:%s/api/v2/alerts"\nresend_interval = "2s"\n%s\n' \
    $TLS_PORT "$2" >"$work/perfd-$1.toml"
  target/release/perfd --config "$work/perfd-$1.toml" --listen 127.0.0.1:$1 --data-dir "$work/data-$1" 2>"$work/perfd-$1.log" &
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$1/api/v1/alerts/thresholds" -H 'Content-Type: application/json' -d "{\"name\": \"tls $1\",
    \"selector\": \"perfd_process_threads\", \"aggregation\": \"last\", \"window\": \"1m\", \"comparison\": \">\",
    \"warning\": 0, \"for\": \"0s\"}" >/dev/null
}
tls_perfd 18498 "notify_ca_file = \"$work/ca.pem\""
tls_perfd 18499 ""
t0=$SECONDS; seen=
while ((SECONDS - t0 < 15)); do
  seen=$(curl -s --cacert "$work/ca.pem" "https://localhost:$TLS_PORT/api/v2/alerts" | python3 -c '
import json, sys
print(" ".join(sorted(a["labels"]["alertname"] for a in json.load(sys.stdin))))' 2>/dev/null || true)
  [[ $seen == *"tls 18498"* ]] && break; sleep 0.2
done
echo "  alerts in the https Alertmanager after $((SECONDS - t0)) s: ${seen:-none}"
[[ $seen == *"tls 18498"* && $seen != *"tls 18499"* ]] || { echo "  expected tls 18498 only"; exit 1; }
sleep 2
echo "  the perfd without the CA: $(curl -s http://127.0.0.1:18499/api/v1/alerts | python3 -c 'import json,sys; d=json.load(sys.stdin)["delivery"]; print(d["failures"], "failures:", d["last_error"])')"

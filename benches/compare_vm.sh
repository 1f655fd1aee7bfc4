#!/usr/bin/env bash
# perfd vs VictoriaMetrics on this machine, loopback only: the same pre-built line-protocol bodies
# from benches/loadgen.rs, pushed over the same keep-alive connections to each server in turn.
# Prints acknowledged and queryable points/s and on-disk bytes per point for both.
#   POINTS=10000000 CONNECTIONS=8 benches/compare_vm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
POINTS=${POINTS:-10000000}
CONNECTIONS=${CONNECTIONS:-8}
PERFD_PORT=18470
VM_PORT=18428

command -v victoria-metrics >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics >/dev/null
}
cargo build -q --release --bin perfd --example loadgen
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
loadgen() { target/release/examples/loadgen --url "http://127.0.0.1:$1" --points "$POINTS" --connections "$CONNECTIONS" 2>/dev/null; }
wait_http() { for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1$2" >/dev/null && return 0; sleep 0.05; done; return 1; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

echo "== perfd (acknowledged = durable and queryable)"
target/release/perfd --listen 127.0.0.1:$PERFD_PORT --data-dir "$work/perfd" 2>"$work/perfd.log" &
perfd_pid=$!
wait_http $PERFD_PORT /healthz
perfd_out=$(loadgen $PERFD_PORT)
echo "$perfd_out"
kill -TERM $perfd_pid && wait $perfd_pid
target/release/perfd check --compact --data-dir "$work/perfd" >/dev/null
perfd_bytes=$(stat -c %s "$work/perfd/perfd.redb")

echo "== VictoriaMetrics $(victoria-metrics -version 2>&1 | head -1)"
victoria-metrics -storageDataPath="$work/vm" -httpListenAddr=127.0.0.1:$VM_PORT -retentionPeriod=100y \
  -search.disableCache -loggerLevel=ERROR >"$work/vm.log" 2>&1 &
vm_pid=$!
wait_http $VM_PORT /health
start=$(date +%s.%N)
vm_out=$(loadgen $VM_PORT)
echo "$vm_out"
# Queryable: poll (bounded, 120 s) until a count over all points sees every one of them.
q="sum(count_over_time(cpu_usage[2d]))"
for _ in $(seq 1200); do
  n=$(curl -s "http://127.0.0.1:$VM_PORT/api/v1/query" --data-urlencode "query=$q" | sed -n 's/.*"value":\[[0-9.]*,"\([0-9]*\)".*/\1/p')
  [[ "${n:-0}" -ge "$POINTS" ]] && break
  sleep 0.1
done
vm_query_secs=$(echo "$(date +%s.%N) - $start" | bc)
curl -s "http://127.0.0.1:$VM_PORT/internal/force_flush" >/dev/null
kill -INT $vm_pid && wait $vm_pid || true
vm_bytes=$(du -sb "$work/vm" | cut -f1)

perfd_rate=$(echo "$perfd_out" | field points_per_sec)
vm_ack=$(echo "$vm_out" | field points_per_sec)
vm_queryable=$(echo "$POINTS / $vm_query_secs" | bc)
printf '\n%-18s %14s %14s %12s\n' "" "acked pts/s" "queryable/s" "bytes/point"
printf '%-18s %14.0f %14.0f %12.2f\n' perfd "$perfd_rate" "$perfd_rate" "$(echo "$perfd_bytes / $POINTS" | bc -l)"
printf '%-18s %14.0f %14.0f %12.2f\n' VictoriaMetrics "$vm_ack" "$vm_queryable" "$(echo "$vm_bytes / $POINTS" | bc -l)"
printf 'ratio perfd/VM: queryable %.2fx, acked %.2fx\n' "$(echo "$perfd_rate / $vm_queryable" | bc -l)" "$(echo "$perfd_rate / $vm_ack" | bc -l)"

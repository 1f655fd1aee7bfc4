#!/usr/bin/env bash
# Checks that perfd makes only system calls the unit's SystemCallFilter= allows: a call outside
# it kills the service with SIGSYS under systemd, which no test run outside systemd would see.
# Runs the binary under `strace -f` through a workload that touches every thread and the usual
# paths (start and WAL replay, writes and commits, queries, cache, sampler ticks, executions,
# alerts and their delivery, a backup, a reload, the L1 snapshot at stop), then expands the filter with
# `systemd-analyze syscall-filter` and lists any call made that it does not allow. Rare paths
# (a full disk, a restore) are not exercised.
#   systemd/check-syscalls.sh [path/to/perfd]     (default target/debug/perfd)
# Needs strace, curl, python3 and systemd-analyze; .ci/run runs it after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/perfd}
unit=systemd/perfd.service
if ! strace -f -o /dev/null true 2>/dev/null; then
  echo "check-syscalls: skipped: strace cannot trace here (ptrace not permitted?)" >&2
  exit 0
fi
work=$(mktemp -d)
trap 'kill "$(cat "$work/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT

# An alert receiver, so the notifier thread's calls (name lookup, connect, TLS-less POST) are
# traced too; it notes each POST in $work/posted.
python3 - "$work" <<'PY' &
import http.server, sys
work = sys.argv[1]
class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        open(f"{work}/posted", "a").write("post\n")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
open(f"{work}/receiver.tmp", "w").write(str(server.server_port))
__import__("os").rename(f"{work}/receiver.tmp", f"{work}/receiver")
server.serve_forever()
PY
receiver_pid=$!
trap 'kill "$(cat "$work/pid" 2>/dev/null)" "$receiver_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do [[ -s $work/receiver ]] && break; sleep 0.05; done
PERFD_ALERTS_NOTIFY_URL="http://localhost:$(cat "$work/receiver")/api/v2/alerts" \
PERFD_SAMPLER_INTERVAL=1s RUST_LOG=info strace -f -qq -c -o "$work/counts" \
  "$bin" --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/log" 2>&1 &
echo $! >"$work/pid"
base=
for _ in $(seq 1 300); do
  base=$(grep -o 'listening on http://[0-9.:]*' "$work/log" | head -1 | sed 's/listening on //') || true
  [[ -n $base ]] && break
  sleep 0.1
done
[[ -n $base ]] || { cat "$work/log" >&2; echo "check-syscalls: perfd did not start" >&2; exit 1; }

call() { curl -sS -o /dev/null -w '%{http_code} ' "$@"; }
json=(-H 'content-type: application/json')
call -X PUT --data-binary hello "$base/api/v1/cache/crew_config/a"
call "$base/api/v1/cache/crew_config/a"
call -X POST --data-binary $'crew_config:a\ncrew_config:b' -H 'content-type: application/x-perfd-mget' \
  "$base/api/v1/cache/mget"
call -X POST --data-binary $'cpu,host=a v=1\ncpu,host=a v=2' "$base/write"
printf 'x v=1\n' | gzip | call -X POST --data-binary @- -H 'content-encoding: gzip' "$base/write"
call "$base/api/v1/query_range?query=cpu_v"
call "${json[@]}" -X POST -d '{"crew_id":"c"}' "$base/api/v1/executions"
call "${json[@]}" -X POST -d '{"name":"c","selector":"cpu_v","aggregation":"avg","window":"1m","comparison":">","warning":0,"for":"0s"}' \
  "$base/api/v1/alerts/thresholds"
call -X POST "$base/api/v1/admin/backup"
# A reload, asked over HTTP and by SIGHUP (the unit's ExecReload).
call -X POST "$base/api/v1/admin/reload"
kill -HUP "$(pgrep -P "$(cat "$work/pid")")"
call "$base/metrics"
call "$base/api/v1/metrics/resources/usage"
call "$base/api/v1/metrics/performance"
# Two sampler ticks: host readings, statistics written as series, the alert evaluated.
sleep 2.5
call "$base/api/v1/metrics/health"
call "$base/api/v1/alerts"
echo
[[ -s $work/posted ]] || { cat "$work/log" >&2; echo "check-syscalls: no alert reached the receiver" >&2; exit 1; }
# SIGTERM to perfd itself (strace would detach on its own), so the stop is traced too.
kill -TERM "$(pgrep -P "$(cat "$work/pid")")"
wait "$(cat "$work/pid")" || { cat "$work/log" >&2; echo "check-syscalls: perfd did not stop cleanly" >&2; exit 1; }

python3 - "$work/counts" "$unit" <<'PY'
import subprocess, sys
counts, unit = sys.argv[1], sys.argv[2]
listing = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
groups, cur = {}, None
for line in listing.splitlines():
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    if line.startswith("@"):
        cur = groups.setdefault(s, [])
    elif line.startswith(" ") and cur is not None:
        cur.append(s)
    else:
        cur = None
def expand(name, seen):
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    if name not in groups:
        sys.exit(f"check-syscalls: systemd-analyze does not know {name}")
    return set().union(*(expand(x, seen) for x in groups[name]))
allowed, denied, lines = set(), set(), []
for line in open(unit):
    if line.startswith("SystemCallFilter="):
        lines.append(line.split("=", 1)[1].strip())
if not lines or lines[0].startswith("~"):
    sys.exit("check-syscalls: the unit's first SystemCallFilter= must be an allow list")
for value in lines:
    deny = value.startswith("~")
    names = set().union(*(expand(n, set()) for n in value.lstrip("~").split()))
    (denied if deny else allowed).update(names)
allowed -= denied
used = []
for line in open(counts):
    parts = line.split()
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
        used.append(parts[-1])
if len(used) < 20:
    sys.exit(f"check-syscalls: strace counted only {used}; did the trace work?")
bad = sorted(set(used) - allowed)
if bad:
    sys.exit(f"check-syscalls: perfd made calls the unit's filter kills it for: {' '.join(bad)}")
print(f"check-syscalls: all {len(used)} system calls perfd made are allowed by {unit}")
PY

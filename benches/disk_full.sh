#!/usr/bin/env bash
# A full disk through the release binary (needs root: it mounts a tmpfs). perfd's data dir is on
# an 8 MiB tmpfs; one client writes until the disk is full and keeps writing for a while (every
# write is refused with 507), the tmpfs is then grown, and the script measures how long until
# writes are taken again, writes more, restarts perfd and checks that every acknowledged point
# is there. Prints the figures; exits non-zero if a point is missing.
#   benches/disk_full.sh            # FULL_SECONDS=20 by default
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "needs root (mounts a tmpfs)"; exit 1; }
PORT=18493
FULL_SECONDS=${FULL_SECONDS:-20}
cargo build -q --release --bin perfd
mnt=$(mktemp -d)
mount -t tmpfs -o size=8M tmpfs "$mnt"
trap 'pkill -f "listen 127.0.0.1:$PORT" || true; sleep 0.5; umount "$mnt" || true; rmdir "$mnt"' EXIT
start() {
  RUST_LOG=info target/release/perfd --listen 127.0.0.1:$PORT --data-dir "$mnt/d" >>"$mnt.log" 2>&1 &
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && return; sleep 0.1; done
  echo "perfd did not start"; cat "$mnt.log"; exit 1
}
start
python3 - "$PORT" "$FULL_SECONDS" "$mnt" <<'PY'
import http.client, json, os, subprocess, sys, time
port, full_seconds, mnt = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
base = int(time.time() * 1000) - 1_800_000
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
acked = []  # batch numbers acknowledged
def write(i):
    body = "\n".join(f"full,host=h{j} v={i}.{k} {base + i * 10 + k}" for j in range(200) for k in range(10))
    c.request("POST", "/write?precision=ms", body=body); r = c.getresponse(); r.read()
    if r.status == 204: acked.append(i)
    return r.status
def count():
    total = 0
    for s in range(base, base + (i + 1) * 10, 20_000):
        c.request("GET", f"/api/v1/query_range?query=full_v&start={s}&end={min(s + 20_000, base + (i + 1) * 10) - 1}")
        r = c.getresponse(); body = r.read()
        assert r.status == 200, body[:200]
        total += sum(len(x["points"]) for x in json.loads(body)["series"])
    return total
i = 0
while write(i) == 204: i += 1
full_at, refused = time.time(), 0
while time.time() - full_at < full_seconds:
    i += 1; refused += write(i) == 507
print(f"acknowledged {len(acked) * 2000:,} points, then {refused:,} writes refused in {full_seconds:.0f} s")
readable = count(); print(f"readable while full: {readable:,}")
subprocess.run(["mount", "-o", "remount,size=256M", mnt], check=True)
grown = time.time()
while True:
    i += 1
    if write(i) == 204: break
    time.sleep(0.05)
print(f"writes taken again {time.time() - grown:.1f} s after the disk was grown")
for _ in range(2000): i += 1; write(i)
want = len(acked) * 2000
json.dump({"i": i, "base": base, "want": want}, open(mnt + ".json", "w"))
print(f"acknowledged in all: {want:,}; readable: {count():,}")
PY
log=$(grep -E "storage failed|writable again|reopened" "$mnt.log" | cut -c1-160)
echo "$log"
pkill -TERM -f "listen 127.0.0.1:$PORT"; sleep 1
start
python3 - "$PORT" "$mnt" <<'PY'
import http.client, json, sys
port, mnt = int(sys.argv[1]), sys.argv[2]
st = json.load(open(mnt + ".json")); base, i, want = st["base"], st["i"], st["want"]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
total = 0
for s in range(base, base + (i + 1) * 10, 20_000):
    c.request("GET", f"/api/v1/query_range?query=full_v&start={s}&end={min(s + 20_000, base + (i + 1) * 10) - 1}")
    total += sum(len(x["points"]) for x in json.loads(c.getresponse().read())["series"])
print(f"after a restart: {total:,} of {want:,} acknowledged points")
sys.exit(0 if total == want else 1)
PY
rm -f "$mnt.log" "$mnt.json"

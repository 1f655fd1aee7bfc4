#!/usr/bin/env python3
"""Series deletion under load, through the release binary, loopback only, 20 s: four writers
send a point of their own series (`keep_v{w}`) with 20 new throw-away series (`junk_v{id}`) in
each request, while a fifth deletes `junk_v` every 100 ms with `storage.max_series` at 2,000 (so
writes are refused with 422 whenever junk fills the cap between deletes). Every acknowledged
`keep_v` point must read back, before and after a restart, nothing may answer 5xx, and the
purge of the deleted series' chunks must end once the deletes stop. A sixth thread writes
`cut_v` points and a seventh deletes time ranges of them every 100 ms, each range ending before
the newest point already acknowledged: every acknowledged `cut_v` point in a deleted range must
be gone and every other one there, and the answers must count exactly the points in the ranges.

    benches/delete_stress.py      (needs target/release/perfd)
"""
import json, random, subprocess, sys, tempfile, threading, time, urllib.request, urllib.parse
B = "http://127.0.0.1:18498"
work = tempfile.mkdtemp()
p = subprocess.Popen(["target/release/perfd", "--listen", B[7:], "--data-dir", work], stderr=subprocess.DEVNULL,
                     env={"PERFD_STORAGE_MAX_SERIES": "2000", "PERFD_WRITER_MAINTENANCE_INTERVAL": "20ms", "PATH": "/usr/bin"})
def http(method, path, body=None):
    req = urllib.request.Request(B + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
for _ in range(100):
    try:
        http("GET", "/healthz"); break
    except OSError:
        time.sleep(0.05)
stop = time.time() + 20
acked = {}   # (w, ts) -> v
problems, statuses, deletes = [], {}, [0]
lock = threading.Lock()
def writer(w):
    n = 0
    base = int(time.time() * 1000) - 3_600_000 * 2
    while time.time() < stop:
        n += 1
        ts = base + n
        junk = "".join(f"junk,id={random.randrange(10**9)} v=1 {ts}\n" for _ in range(20))
        s, b = http("POST", "/write?precision=ms", (f"keep,w={w} v={n} {ts}\n" + junk).encode())
        with lock:
            statuses[s] = statuses.get(s, 0) + 1
        if s == 204:
            acked[(w, ts)] = n
        elif s >= 500:
            problems.append((s, b[:200]))
def deleter():
    while time.time() < stop:
        s, b = http("POST", "/api/v1/admin/tsdb/delete_series?match=junk_v")
        if s != 200:
            problems.append(("delete", s, b[:200]))
        else:
            deletes[0] += json.loads(b)["deleted"]
        time.sleep(0.1)
cut = {}     # ts -> v of acknowledged cut_v points
cut_ranges, cut_counted = [], [0]
def cut_writer():
    n, base = 0, int(time.time() * 1000) - 3_600_000 * 2
    while time.time() < stop:
        n += 1
        s, b = http("POST", "/write?precision=ms", f"cut v={n} {base + n}\n".encode())
        if s == 204:
            with lock:
                cut[base + n] = n
        elif s >= 500:
            problems.append((s, b[:200]))
def range_deleter():
    done = 0   # the end of the last range: ranges do not overlap
    while time.time() < stop:
        time.sleep(0.1)
        with lock:
            newest = max(cut, default=0)
        a, b = max(done + 1, newest - 40), newest - 20
        if not cut or a > b:
            continue
        s, body = http("POST", "/api/v1/admin/tsdb/delete_series?" + urllib.parse.urlencode({"match": "cut_v", "start": a, "end": b}))
        if s != 200:
            problems.append(("range delete", s, body[:200]))
            continue
        cut_ranges.append((a, b))
        cut_counted[0] += json.loads(body)["deleted_points"]
        done = b
def cut_problems():
    s, b = http("GET", "/api/v1/query_range?" + urllib.parse.urlencode({"query": "cut_v", "start": 0}))
    got = {p[0]: p[1] for ser in json.loads(b)["series"] for p in ser["points"]}
    inside = lambda t: any(a <= t <= b for a, b in cut_ranges)
    wrong = sum(1 for t, v in cut.items() if (t in got) == inside(t) or (t in got and got[t] != v))
    return wrong + sum(1 for t in got if t not in cut)
ts = [threading.Thread(target=writer, args=(w,)) for w in range(4)] + [threading.Thread(target=deleter)]
ts += [threading.Thread(target=cut_writer), threading.Thread(target=range_deleter)]
[t.start() for t in ts]; [t.join() for t in ts]
missing = 0
for w in range(4):
    s, b = http("GET", "/api/v1/query_range?" + urllib.parse.urlencode({"query": f'keep_v{{w="{w}"}}', "start": 0}))
    got = {p[0]: p[1] for ser in json.loads(b)["series"] for p in ser["points"]}
    for (ww, t), v in acked.items():
        if ww == w and got.get(t) != v:
            missing += 1
in_ranges = sum(1 for t in cut if any(a <= t <= b for a, b in cut_ranges))
cut_wrong = cut_problems()
cut_report = (f"cut points {len(cut)}, {len(cut_ranges)} range deletes removed {cut_counted[0]} "
              f"(acknowledged in the ranges: {in_ranges}), wrong {cut_wrong}")
# The purge of every deleted series' chunks ends once the deletes stop.
purge_end = time.time() + 60
while True:
    writer_stats = json.loads(http("GET", "/api/v1/metrics/database")[1])["writer"]
    if writer_stats["purge_pending_groups"] == 0 or time.time() > purge_end:
        break
    time.sleep(0.05)
purged = f"purged chunks {writer_stats['purged_chunks']}, groups still pending {writer_stats['purge_pending_groups']}"
p.terminate(); p.wait()
p = subprocess.Popen(["target/release/perfd", "--listen", B[7:], "--data-dir", work], stderr=subprocess.DEVNULL,
                     env={"PERFD_STORAGE_MAX_SERIES": "2000", "PATH": "/usr/bin"})
for _ in range(100):
    try:
        http("GET", "/healthz"); break
    except OSError:
        time.sleep(0.05)
after = 0
for w in range(4):
    s, b = http("GET", "/api/v1/query_range?" + urllib.parse.urlencode({"query": f'keep_v{{w="{w}"}}', "start": 0}))
    got = {p[0]: p[1] for ser in json.loads(b)["series"] for p in ser["points"]}
    after += sum(1 for (ww, t), v in acked.items() if ww == w and got.get(t) == v)
cut_after = cut_problems()
p.terminate(); p.wait()
print(f"statuses {statuses}, acked keep points {len(acked)}, missing {missing}, after restart {after}, junk deleted {deletes[0]}, {purged}, problems {problems[:3]}")
print(f"{cut_report}, wrong after restart {cut_after}")
ok = not problems and missing == 0 and after == len(acked) and cut_counted[0] == in_ranges and cut_wrong == 0 and cut_after == 0
sys.exit(0 if ok else 1)

"""Read-your-writes under load: writers append points (durable acks) to their own series in a
past hour (so maintenance seals them while readers read) and in the current hour; readers check
that every point acknowledged before their query began comes back, value for value.

    PERFD_WRITER_SEAL_DELAY=1s target/release/perfd --listen 127.0.0.1:18491 --data-dir /tmp/st &
    python3 benches/store_stress.py 18491 25

With `PID DBFILE` after them, storage faults are injected too: every 1.5 s the file size limit of
process PID is set to DBFILE's size (`prlimit`: the file cannot grow, as on a full disk) and, 1.5 s
later, lifted. Refused writes (507/503) are not acknowledged; reads refused during a reopen (503)
are counted and retried; an acknowledged point must never go missing.

    python3 benches/store_stress.py 18491 30 $(pgrep -f 'listen 127.0.0.1:18491') /tmp/st/perfd.redb
"""
import os, subprocess
import http.client, threading, time, random, sys, json, urllib.parse
PORT = int(sys.argv[1]); SECONDS = float(sys.argv[2])
WRITERS, SERIES_PER_WRITER, READERS = 4, 5, 4
now_ms = int(time.time() * 1000)
HOURS = [now_ms - 3 * 3600_000 - (now_ms % 3600_000), now_ms - (now_ms % 3600_000)]  # a closed hour, the open one
acked = {}  # (w, s) -> list of (ts, value), in order
lock = threading.Lock(); stop = time.time() + SECONDS
problems, counts = [], {"writes": 0, "points": 0, "queries": 0, "checked": 0, "refused": 0, "unavailable": 0, "faults": 0}
def writer(w):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30); n = 0
    while time.time() < stop:
        lines, pts = [], []
        for _ in range(50):
            s = random.randrange(SERIES_PER_WRITER); n += 1
            ts = random.choice(HOURS) + n  # unique per writer and series: n grows
            v = round(random.uniform(-1e6, 1e6), 3)
            lines.append(f"ss,w={w},s={s} v={v} {ts}"); pts.append((s, ts, v))
        c.request("POST", "/write?precision=ms", body="\n".join(lines)); r = c.getresponse(); body = r.read()
        if r.status in (503, 507):
            with lock: counts["refused"] += 1
            time.sleep(0.01); continue
        if r.status != 204: problems.append(("write", r.status, body[:100])); continue
        with lock:
            for s, ts, v in pts: acked.setdefault((w, s), []).append((ts, v))
            counts["writes"] += 1; counts["points"] += len(pts)
def reader(_):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    while time.time() < stop:
        w, s = random.randrange(WRITERS), random.randrange(SERIES_PER_WRITER)
        with lock: expect = list(acked.get((w, s), []))
        q = urllib.parse.urlencode({"query": f'ss_v{{w="{w}",s="{s}"}}', "start": HOURS[0] - 1, "end": HOURS[1] + 3600_000})
        c.request("GET", f"/api/v1/query_range?{q}"); r = c.getresponse(); body = r.read()
        if r.status == 503:
            with lock: counts["unavailable"] += 1
            continue
        if r.status != 200: problems.append(("query", r.status, body[:200])); continue
        got = {}
        for ser in json.loads(body)["series"]:
            for ts, v in ser["points"]: got[ts] = v
        counts["queries"] += 1
        for ts, v in expect:
            counts["checked"] += 1
            if got.get(ts) != v:
                problems.append(("missing or wrong", (w, s), ts, v, got.get(ts))); break
def faults(pid, db):
    while time.time() < stop - 2:
        subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={os.path.getsize(db)}:"], check=True)
        counts["faults"] += 1; time.sleep(1.5)
        subprocess.run(["prlimit", f"--pid={pid}", "--fsize=unlimited:"], check=True); time.sleep(1.5)
    subprocess.run(["prlimit", f"--pid={pid}", "--fsize=unlimited:"], check=True)
extra = [threading.Thread(target=faults, args=(int(sys.argv[3]), sys.argv[4]))] if len(sys.argv) > 4 else []
ts = extra + [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)] + [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
for t in ts: t.start()
for t in ts: t.join()
print(counts, "problems", len(problems), problems[:5])

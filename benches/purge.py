#!/usr/bin/env python3
"""Purging deleted series while perfd runs, through the release binary, loopback only (~1 min).

A cardinality accident: 2,000 `junk_v{id}` series next to 2,000 `keep_v{id}` ones (they share
blocks), a point a minute for 24 closed hours. Then `junk_v` is deleted and the writer purges
its chunks. Prints how long the purge took, the chunk bytes and file size before and after, the
latency of a small steady write load during the purge against the same load after it, and how
long a range delete of half the kept points takes (and the steady writes' latency meanwhile), and how much the file grows over four more rounds of as much junk written and deleted (the purged pages
are reused).
Every `keep_v` point must still read back.

    benches/purge.py      (needs target/release/perfd; SERIES=2000 HOURS=24; BIN=another perfd
                           to compare: one without purging skips the wait)
"""
import json, os, statistics, subprocess, tempfile, threading, time, urllib.request, urllib.parse

B = "http://127.0.0.1:18497"
SERIES, HOURS = int(os.environ.get("SERIES", 2000)), int(os.environ.get("HOURS", 24))
work = tempfile.mkdtemp()
p = subprocess.Popen([os.environ.get("BIN", "target/release/perfd"), "--listen", B[7:], "--data-dir", work],
                     stderr=None if os.environ.get("LOGS") else subprocess.DEVNULL,
                     env={"PERFD_WRITER_SEAL_DELAY": "0s", "PERFD_WRITER_MAINTENANCE_INTERVAL": "100ms",
                          "PATH": "/usr/bin", "RUST_LOG": os.environ.get("RUST_LOG", "info")})


def http(method, path, body=None):
    req = urllib.request.Request(B + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def database():
    return json.loads(http("GET", "/api/v1/metrics/database")[1])


def until(what, test, limit=120):
    end = time.time() + limit
    while time.time() < end:
        try:
            got = test()
        except OSError:  # not listening yet
            got = None
        if got:
            return got
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def write_hours(names, t0):
    for h in range(HOURS):
        lines = []
        for m in range(60):
            ts = t0 + h * 3_600_000 + m * 60_000
            lines += [f"{n},id={i} v={(i * 7 + m) % 100}.5 {ts}\n" for i in range(SERIES) for n in names]
        s, b = http("POST", "/write?precision=ms", "".join(lines).encode())
        assert s == 204, (s, b[:200])
    # Closed hours: the next maintenance round seals them all (what stays open is the
    # sampler's and the steady writes' current hour, far less than an hour of these).
    until("sealing", lambda: database()["database"]["open_points"] < SERIES * 60)


def steady_writes(seconds):
    """Latencies (ms) of one small write after another: 10 points of 10 series each."""
    out, end, n = [], time.time() + seconds, 0
    while time.time() < end:
        n += 1
        ts = int(time.time() * 1000)
        body = "".join(f"steady,k={k} v={n} {ts}\n" for k in range(10)).encode()
        t = time.perf_counter()
        s, _ = http("POST", "/write?precision=ms", body)
        out.append((time.perf_counter() - t) * 1000)
        assert s == 204, s
    return out


def summary(lat):
    lat = sorted(lat)
    return f"{len(lat)} writes, p50 {statistics.median(lat):.2f} ms, p99 {lat[int(len(lat) * 0.99)]:.2f} ms"


try:
    until("start", lambda: http("GET", "/healthz")[0] == 200)
    now = int(time.time() * 1000)
    t0 = now - now % 3_600_000 - (HOURS + 2) * 3_600_000
    started = time.time()
    write_hours(["keep", "junk"], t0)
    print(f"wrote {2 * SERIES * HOURS * 60:,} points in {time.time() - started:.1f} s")
    before = database()["database"]
    baseline = steady_writes(5)

    during, done = [], {}
    s, b = http("POST", "/api/v1/admin/tsdb/delete_series?match=junk_v")
    started = time.time()
    assert s == 200 and json.loads(b)["deleted"] == SERIES, (s, b)

    def watch():
        until("the purge", lambda: database()["writer"].get("purge_pending_groups", 0) == 0, limit=600)
        done["s"] = time.time() - started
    w = threading.Thread(target=watch)
    w.start()
    while w.is_alive():
        during += steady_writes(0.5)
    after = database()
    print(f"purge: {after['writer'].get('purged_chunks', 0):,} chunks in {done['s']:.2f} s")
    print(f"chunk bytes {before['chunk_bytes']:,} -> {after['database']['chunk_bytes']:,}, "
          f"file {before['file_bytes']:,} -> {after['database']['file_bytes']:,} bytes")
    later = steady_writes(5)
    print(f"steady writes before the delete: {summary(baseline)}")
    print(f"steady writes during the purge:  {summary(during)}")
    print(f"steady writes after it:          {summary(later)}")
    print(f"slowest during the purge: {', '.join(f'{x:.1f}' for x in sorted(during)[-5:])} ms")
    print(f"p99 during / after: {sorted(during)[int(len(during) * 0.99)] / sorted(later)[int(len(later) * 0.99)]:.2f}")

    q = urllib.parse.urlencode({"query": "keep_v", "start": t0, "end": now, "step": "1d", "agg": "count",
                                "group": "sum"})
    s, b = http("GET", "/api/v1/query_range?" + q)
    kept = sum(v for ser in json.loads(b)["series"] for _, v in ser["points"])
    assert kept == SERIES * HOURS * 60, f"keep_v: {kept} of {SERIES * HOURS * 60} points read back"
    print(f"keep_v: all {kept:,} points read back")

    # A range delete (in slices, with writes taken between them): the first half of the kept
    # points, with the steady writes going on.
    half = t0 + HOURS // 2 * 3_600_000
    q = urllib.parse.urlencode({"match": "keep_v", "start": t0, "end": half - 1})
    res = {}

    def range_delete():
        started = time.time()
        res["answer"] = http("POST", "/api/v1/admin/tsdb/delete_series?" + q)
        res["took"] = time.time() - started
    d = threading.Thread(target=range_delete)
    d.start()
    while_deleting = []
    while d.is_alive():
        while_deleting += steady_writes(0.01)
    s, b = res["answer"]
    assert s == 200 and json.loads(b)["deleted_points"] == SERIES * HOURS * 30, (s, b)
    print(f"range delete of {SERIES * HOURS * 30:,} points ({SERIES * HOURS // 2:,} chunks) in {res['took']:.2f} s")
    print(f"steady writes during it: {summary(while_deleting)}, slowest {max(while_deleting):.1f} ms")

    # The accident again and again: each time as much junk, deleted (and purged) after.
    sizes = [database()["database"]["file_bytes"]]
    for c in range(int(os.environ.get("ROUNDS", 4))):
        write_hours([f"junk{c}"], t0)
        s, b = http("POST", f"/api/v1/admin/tsdb/delete_series?match=junk{c}_v")
        assert s == 200, (s, b)
        until("the purge", lambda: database()["writer"].get("purge_pending_groups", 0) == 0, limit=600)
        sizes.append(database()["database"]["file_bytes"])
    print("file after each of 4 more rounds of junk written and deleted: "
          + " -> ".join(f"{x / 1e6:.1f}" for x in sizes) + f" MB; chunks {database()['database']['chunk_bytes']:,} bytes")
finally:
    p.terminate()
    p.wait()
    subprocess.run(["rm", "-rf", work])

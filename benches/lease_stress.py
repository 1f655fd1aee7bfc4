"""Stampede control through the real binary: 20 rounds of 30 concurrent `GET ?wait=2s` on a
missing key. Whoever gets the lease PUTs the value after 50 ms, or (half the time) abandons it;
with a 300 ms lease TTL the next lease must go to exactly one waiter, no sooner than the TTL.
Checks: no request outlives its wait, every answer is the value, a lease, or a plain 404.

    PERFD_CACHE_LEASE_TTL=300ms target/release/perfd --listen 127.0.0.1:18480 --data-dir /tmp/lease &
    python3 benches/lease_stress.py 18480
"""
import http.client, threading, time, random, sys
PORT = int(sys.argv[1]); LEASE_TTL = 0.3; WAIT = 2.0; ROUNDS = 20; WAITERS = 30
problems = []; stats = {"lease": 0, "value": 0, "timeout404": 0, "abandoned": 0}
def one(key, grants, lock):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    t0 = time.time()
    c.request("GET", f"/api/v1/cache/llm_response/{key}?wait={WAIT}s"); r = c.getresponse(); body = r.read()
    dt = time.time() - t0
    if dt > WAIT + 0.5: problems.append(("slow", key, dt))
    if r.status == 200:
        stats["value"] += 1
        if not body.startswith(b"v-"): problems.append(("body", key, body))
    elif r.status == 404 and r.getheader("x-cache-fill") == "lease":
        with lock: grants.append(time.time())
        stats["lease"] += 1
        if random.random() < 0.5:
            time.sleep(0.05)
            c.request("PUT", f"/api/v1/cache/llm_response/{key}", body=b"v-" + key.encode()); r2 = c.getresponse(); r2.read()
            if r2.status != 204: problems.append(("put", key, r2.status))
        else:
            stats["abandoned"] += 1
    elif r.status == 404: stats["timeout404"] += 1
    else: problems.append(("status", key, r.status))
for rnd in range(ROUNDS):
    key = f"stampede-{rnd}-{random.random()}"; grants = []; lock = threading.Lock()
    ts = [threading.Thread(target=one, args=(key, grants, lock)) for _ in range(WAITERS)]
    for t in ts: t.start()
    for t in ts: t.join()
    grants.sort()
    for a, b in zip(grants, grants[1:]):
        if b - a < LEASE_TTL * 0.9: problems.append(("leases too close", key, round(b - a, 3)))
print(stats, "problems", len(problems), problems[:5])

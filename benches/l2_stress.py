"""L2 consistency through the real binary: per-key single writers (PUT version n, DELETE, or an
invalidation of all their keys) and readers (GET and 8-key mget) over 400 keys, with a 50-entry L1 so reads go to Redis; a 200 must never carry a
version older than the last write acknowledged before the read began. Unless a 4th argument is
given, Redis is stopped and resumed (SIGSTOP/SIGCONT) every 1.5 s. Loopback only.

    redis-server --port 18382 --save "" --appendonly no &
    PERFD_CACHE_MAX_ENTRIES=50 PERFD_CACHE_REDIS_URL=redis://127.0.0.1:18382/ \
      target/release/perfd --listen 127.0.0.1:18478 --data-dir /tmp/l2s &
    python3 benches/l2_stress.py 18478 $(pgrep -f 'redis-server.*18382') 30 [nostall]
"""
import http.client, threading, time, random, os, signal, sys, json
PORT = int(sys.argv[1]); REDIS_PID = int(sys.argv[2]); SECONDS = float(sys.argv[3])
KEYS, WRITERS, READERS = 400, 4, 6
acked = {}  # key -> (version, deleted)
lock = threading.Lock()
stop = time.time() + SECONDS
violations, counts = [], {"put": 0, "del": 0, "inv": 0, "get200": 0, "get404": 0, "mget": 0, "other": 0}
def conn():
    return http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
def key_name(k):
    return f"w{k % WRITERS}-{k}"
def writer(w):
    c = conn(); version = 0; mine = list(range(w, KEYS, WRITERS))
    while time.time() < stop:
        version += 1
        if version % 50 == 0:
            # Invalidate every key of this writer (and only those: single writer per key).
            c.request("POST", "/api/v1/cache/invalidate", body=json.dumps({"pattern": f"crew_config:w{w}-*"}),
                      headers={"Content-Type": "application/json"}); r = c.getresponse(); r.read()
            if r.status != 200: counts["other"] += 1; continue
            with lock:
                for k in mine: acked[k] = (version, True)
                counts["inv"] += 1
            continue
        k = random.choice(mine)
        if random.random() < 0.15:
            c.request("DELETE", f"/api/v1/cache/crew_config/{key_name(k)}"); r = c.getresponse(); r.read()
            with lock: acked[k] = (version, True); counts["del"] += 1
        else:
            c.request("PUT", f"/api/v1/cache/crew_config/{key_name(k)}", body=f"{version}"); r = c.getresponse(); r.read()
            if r.status != 204: counts["other"] += 1; continue
            with lock: acked[k] = (version, False); counts["put"] += 1
def check(k, v, before, level):
    if before and (v < before[0] or (before[1] and v <= before[0])):
        violations.append((key_name(k), v, before, level))
def reader(_):
    c = conn()
    while time.time() < stop:
        if random.random() < 0.5:
            k = random.randrange(KEYS)
            with lock: before = acked.get(k)
            c.request("GET", f"/api/v1/cache/crew_config/{key_name(k)}"); r = c.getresponse(); body = r.read()
            if r.status == 200: counts["get200"] += 1; check(k, int(body), before, r.getheader("x-cache"))
            elif r.status == 404: counts["get404"] += 1
            else: counts["other"] += 1
        else:
            ks = random.sample(range(KEYS), 8)
            with lock: befores = [acked.get(k) for k in ks]
            body = json.dumps({"keys": [{"strategy": "crew_config", "key": key_name(k)} for k in ks]})
            c.request("POST", "/api/v1/cache/mget", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse(); answer = r.read()
            if r.status != 200: counts["other"] += 1; continue
            counts["mget"] += 1
            for k, before, v in zip(ks, befores, json.loads(answer)["values"]):
                if v["hit"]: check(k, int(v["value"]), before, "mget")
def toggler():
    if len(sys.argv) > 4: return
    stopped = False
    while time.time() < stop:
        time.sleep(1.5)
        os.kill(REDIS_PID, signal.SIGCONT if stopped else signal.SIGSTOP); stopped = not stopped
    os.kill(REDIS_PID, signal.SIGCONT)
ts = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)] + \
     [threading.Thread(target=reader, args=(i,)) for i in range(READERS)] + [threading.Thread(target=toggler)]
for t in ts: t.start()
for t in ts: t.join()
print("counts", counts, "violations", len(violations), violations[:5])

"""L2 consistency through the real binary: per-key single writers (PUT version n, or DELETE)
and readers over 400 keys, with a 50-entry L1 so reads go to Redis; a 200 must never carry a
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
violations, counts = [], {"put": 0, "del": 0, "get200": 0, "get404": 0, "other": 0}
def conn():
    return http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
def writer(w):
    c = conn(); version = 0
    while time.time() < stop:
        k = random.randrange(w, KEYS, WRITERS); version += 1
        if random.random() < 0.15:
            c.request("DELETE", f"/api/v1/cache/crew_config/k{k}"); r = c.getresponse(); r.read()
            with lock: acked[k] = (version, True); counts["del"] += 1
        else:
            c.request("PUT", f"/api/v1/cache/crew_config/k{k}", body=f"{version}"); r = c.getresponse(); r.read()
            if r.status != 204: counts["other"] += 1; continue
            with lock: acked[k] = (version, False); counts["put"] += 1
def reader(_):
    c = conn()
    while time.time() < stop:
        k = random.randrange(KEYS)
        with lock: before = acked.get(k)
        c.request("GET", f"/api/v1/cache/crew_config/k{k}"); r = c.getresponse(); body = r.read()
        if r.status == 200:
            counts["get200"] += 1
            v = int(body)
            if before and (v < before[0] or (before[1] and v <= before[0])):
                violations.append((k, v, before, r.getheader("x-cache")))
        elif r.status == 404: counts["get404"] += 1
        else: counts["other"] += 1
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

#!/usr/bin/env python3
"""Line protocol read by perfd and by VictoriaMetrics, side by side (DESIGN: "the same mapping as
VictoriaMetrics"). Random valid lines with escaped commas, equals signs, spaces and backslashes
in tags, non-ASCII, quotes and braces, every kind of field value (floats, i and u integers,
booleans, strings), go to both servers: the series (name and labels) and the points of each must
be the same, random selectors (= != =~ !~, with and without a name) must list the same series, and each one's export imported by the
other must change nothing. Loopback only, bounded in count.

    ROUNDS=200 benches/lp_vs_vm.py      (needs target/release/perfd and victoria-metrics)
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROUNDS = int(os.environ.get("ROUNDS", "200"))
SELECTORS = int(os.environ.get("SELECTORS", "6"))
PERFD, VM = "http://127.0.0.1:18495", "http://127.0.0.1:18496"
PIECES = ["a", "b", "Z", "0", " ", ",", "=", "\\", '"', "}", "{", "\u00e9", "-", ".", "/", "'"]


def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait(url):
    for _ in range(200):
        try:
            if http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{url} did not answer")


def escape_tag(s):
    return "".join("\\" + c if c in "\\, =" else c for c in s)


def tag_value(rng):
    v = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))
    # A value that ends in a backslash would escape the separator after it if written bare;
    # escaped (as `\\`) it is fine. Values are always escaped here.
    return v


def field_value(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return repr(round(rng.uniform(-1e6, 1e6), rng.randint(0, 4))), True
    if kind == 1:
        return f"{rng.randint(-10**12, 10**12)}i", True
    if kind == 2:
        return f"{rng.randint(0, 10**12)}u", True
    if kind == 3:
        return rng.choice(["t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"]), True
    if kind == 4:
        return f"{rng.randint(0, 99)}e{rng.randint(-3, 3)}", True
    # A number in a string is that number to both; text is skipped by perfd and stored as 0 by
    # VictoriaMetrics (perfd's documented choice: no made-up values), so it is left out below.
    text = rng.choice(["x", "a b", "q\\\"q", "", "42", "-1.5", " 7e2 ", "12i"])
    numeric = text in ("42", "-1.5")
    return '"' + text + '"', numeric


def selector_value(v):
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def re_escape(s):
    """RE2's (and Rust regex's) escape of the metacharacters."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in s)


def regex_of(rng, values):
    """A regex of one or two alternatives made from label values a series has."""
    parts = []
    for _ in range(rng.randint(1, 2)):
        v = rng.choice(values)
        cut = rng.randint(0, len(v))
        parts.append(rng.choice([
            re_escape(v),
            re_escape(v[:cut]) + ".*",
            ".*" + re_escape(v[cut:]),
            re_escape(v[:cut]) + ".+",
            "[a-zA-Z0-9]" + re_escape(v[1:]) if v else "[a-z]*",
            "\\W" + re_escape(v[1:]) if v else "\\W*",
        ]))
    return "|".join(parts)


def random_selector(rng, r, name, known):
    """`name{…}` or `{__name__…,…}` with one or two matchers of = != =~ !~, and its regexes."""
    matchers, regexes = [], []
    values = [v for _, v in known] + [""]
    for _ in range(rng.randint(1, 2)):
        k, v = rng.choice(known)
        op = rng.choice(["=", "!=", "=~", "!~"])
        value = rng.choice([v, ""]) if op in ("=", "!=") else regex_of(rng, values)
        matchers.append(f"{k}{op}{selector_value(value)}")
        if op in ("=~", "!~"):
            regexes.append(value)
    if rng.random() < 0.3:
        # No name before the braces: every series of this round whose name the regex matches.
        named = f'__name__=~"lpvm{r}_{rng.choice(["a", "b", "."])}_.*"'
        return "{" + ",".join([named] + matchers) + "}", regexes
    return name + "{" + ",".join(matchers) + "}", regexes


def series_perfd(selector):
    status, text = http("GET", f"{PERFD}/api/v1/series?" + urllib.parse.urlencode({"match": selector}))
    assert status == 200, text
    return {(s["name"], tuple(sorted(s["labels"].items()))) for s in json.loads(text)["series"]}


def series_vm(selector):
    status, text = http("GET", f"{VM}/api/v1/series?" + urllib.parse.urlencode({"match[]": selector}))
    assert status == 200, text
    return {canonical(m) for m in json.loads(text)["data"]}


def body(rng, round_no, now_ms, text_fields):
    """A body of valid lines; adds to `text_fields` the points VictoriaMetrics makes of text."""
    lines = []
    for i in range(rng.randint(1, 8)):
        m = f"lpvm{round_no}_{rng.choice(['a', 'b'])}"
        tags = {}
        for _ in range(rng.randint(0, 3)):
            tags["".join(rng.choice("abxy") for _ in range(rng.randint(1, 3)))] = tag_value(rng)
        fields = {}
        for _ in range(rng.randint(1, 3)):
            fields[rng.choice(["v", "w", "n"])] = field_value(rng)
        if all(not numeric for _, numeric in fields.values()):
            fields["v"] = ("1", True)
        ts = now_ms - 60_000 + round_no * 10 + i
        for f, (v, numeric) in fields.items():
            if not numeric:
                text_fields.add((f"{m}_{f}", tuple(sorted(tags.items())), ts))
        line = m + "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()))
        line += " " + ",".join(f"{k}={v}" for k, (v, _) in fields.items())
        line += f" {ts}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def canonical(metric):
    labels = dict(metric)
    name = labels.pop("__name__", "")
    return name, tuple(sorted(labels.items()))


def export_perfd(names, raw=None):
    out = {}
    for name in names:
        q = urllib.parse.urlencode({"match": name, "start": 0, "end": int(time.time() * 1000) + 3_600_000})
        status, text = http("GET", f"{PERFD}/api/v1/export?{q}")
        assert status == 200, text
        if raw is not None:
            raw.append(text)
        for line in text.splitlines():
            d = json.loads(line)
            out[canonical(d["metric"])] = list(zip(d["timestamps"], d["values"]))
    return out


def export_vm(prefix, text_fields, raw=None):
    http("GET", f"{VM}/internal/force_flush")
    q = urllib.parse.urlencode({"match[]": '{__name__=~"%s.*"}' % prefix})
    status, text = http("GET", f"{VM}/api/v1/export?{q}")
    assert status == 200, text
    if raw is not None:
        raw.append(text)
    out = {}
    for line in text.splitlines():
        d = json.loads(line)
        name, labels = canonical(d["metric"])
        points = [p for p in sorted(zip(d["timestamps"], d["values"])) if (name, labels, p[0]) not in text_fields]
        if points:
            out[(name, labels)] = points
    return out


def main():
    if not os.path.exists("target/release/perfd") or not shutil.which("victoria-metrics"):
        sys.exit("needs target/release/perfd (cargo build --release) and victoria-metrics (apt)")
    work = tempfile.mkdtemp()
    procs = [
        subprocess.Popen(["target/release/perfd", "--listen", PERFD[7:], "--data-dir", f"{work}/perfd"],
                         stderr=subprocess.DEVNULL),
        subprocess.Popen(["victoria-metrics", f"-httpListenAddr={VM[7:]}", f"-storageDataPath={work}/vm",
                          "-search.latencyOffset=0s", "-loggerLevel=ERROR"], stderr=subprocess.DEVNULL),
    ]
    try:
        wait(f"{PERFD}/healthz")
        wait(f"{VM}/health")
        rng = random.Random(int(os.environ.get("SEED", "0")) or None)
        now_ms = int(time.time() * 1000)
        problems = skipped = 0
        for r in range(ROUNDS):
            text_fields = set()
            text = body(rng, r, now_ms, text_fields)
            sp, tp = http("POST", f"{PERFD}/write?precision=ms", text.encode())
            sv, tv = http("POST", f"{VM}/write?precision=ms", text.encode())
            if sp != 204 or sv != 204:
                problems += 1
                print(f"round {r}: perfd {sp} {tp!r}, vm {sv} {tv!r}\n{text}")
                continue
            # VictoriaMetrics makes points searchable within about a second: bounded polling.
            want_names = {f"lpvm{r}_{m}_{f}" for m in "ab" for f in "vwn"}
            ours = export_perfd(want_names)
            deadline = time.time() + 10
            while True:
                theirs = export_vm(f"lpvm{r}_", text_fields)
                if theirs == ours or time.time() > deadline:
                    break
                time.sleep(0.2)
            if theirs != ours:
                problems += 1
                print(f"round {r} differs:\n{text}")
                for k in sorted(set(ours) | set(theirs)):
                    if ours.get(k) != theirs.get(k):
                        print(f"  {k}: perfd {ours.get(k)} vm {theirs.get(k)}")
                continue
            # Selectors of = != =~ !~ (a label a series lacks reads as ""), listed by both.
            known = sorted({(k, v) for _, labels in ours for k, v in labels}) or [("a", "b")]
            for _ in range(SELECTORS):
                selector, regexes = random_selector(rng, r, rng.choice(sorted({n for n, _ in ours})), known)
                # VictoriaMetrics 1.79 reads a regex that matches "" its own way on a series
                # without the label (`a!~".*"` matches it, `a=~".+|x*"` does not); Prometheus, and
                # perfd, read the missing label as "" (labels_model checks that against a model).
                if any(re.fullmatch(x, "") for x in regexes):
                    skipped += 1
                    continue
                # Less the series VictoriaMetrics made only of text fields (perfd has none).
                text_only = {(n, l) for n, l, _ in text_fields} - set(ours)
                a, b = series_perfd(selector), series_vm(selector) - text_only
                if a != b:
                    problems += 1
                    print(f"round {r}: series of {selector}: perfd {sorted(a)} vm {sorted(b)}")
            # Each one's export imported by the other: accepted, and it changes nothing (the
            # same points again).
            mine, vms = [], []
            export_perfd(want_names, mine)
            export_vm(f"lpvm{r}_", set(), vms)
            sp, tp = http("POST", f"{PERFD}/api/v1/import", "".join(vms).encode())
            sv, tv = http("POST", f"{VM}/api/v1/import", "".join(mine).encode())
            again = export_perfd(want_names)
            # VictoriaMetrics' export holds the zeros it made of text fields: perfd stores them now.
            again = {k: [p for p in v if (k[0], k[1], p[0]) not in text_fields] for k, v in again.items()}
            again = {k: v for k, v in again.items() if v}
            if (sp, sv) != (204, 204) or again != ours:
                problems += 1
                print(f"round {r}: import perfd {sp} {tp!r}, vm {sv} {tv!r}; perfd after: {again == ours}")
        print(f"{ROUNDS} rounds, {problems} differing ({skipped} selectors with a regex matching \"\" skipped)")
        sys.exit(1 if problems else 0)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

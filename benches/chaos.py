#!/usr/bin/env python3
"""Chaos: 3 replicas of a small HTTP service under the control plane; one instance is kill -9'd
every second for 60 s. Reports whether every kill was recovered, crash-to-running latency
(p50/p99, with and without the backoff delay the supervisor chose) and the control plane's RSS
before and after.

Usage: python3 benches/chaos.py [--seconds 60] [--kiln target/release/kiln]
"""
import argparse, json, os, signal, sqlite3, statistics, subprocess, tempfile, time

SERVER = """
const http = require('http');
const s = http.createServer((q, r) => r.end('ok'));
s.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => s.close(() => process.exit(0)));
"""

STACK = """
name: chaos
services:
  target:
    run: node server.js
    replicas: 3
    health: { readiness: { http: /, interval: 200ms, timeout: 1s } }
    backoff: { initial: 10ms, max: 100ms, reset_after: 5s }
"""


def kiln(k, d, *args):
    return subprocess.run([k, "-C", d, *args], capture_output=True, text=True, check=True).stdout


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def parse_time(text):
    # RFC 3339 with nanoseconds and Z.
    base, _, frac = text.rstrip("Z").partition(".")
    t = time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return t + (float("0." + frac) if frac else 0.0)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--kiln", default=os.path.abspath("target/release/kiln"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "kiln.yaml"), "w").write(STACK)
        open(os.path.join(d, "server.js"), "w").write(SERVER)
        kiln(a.kiln, d, "up", "-d", "--interval", "5")
        daemon = int(open(os.path.join(d, ".kiln/kiln.pid")).read())
        try:
            rss_before = rss_kib(daemon)
            kills = 0
            start = time.monotonic()
            while time.monotonic() - start < a.seconds:
                tick = time.monotonic()
                instances = [i for i in json.loads(kiln(a.kiln, d, "ps", "--json")) if i["pid"]]
                victim = instances[kills % len(instances)]
                try:
                    os.kill(victim["pid"], signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                ps = json.loads(kiln(a.kiln, d, "ps", "--json"))
                if len(ps) == 3 and all(i["state"] == "ready" for i in ps):
                    break
                time.sleep(0.1)
            all_ready = all(i["state"] == "ready" for i in ps)
            rss_after = rss_kib(daemon)
        finally:
            kiln(a.kiln, d, "down")
        db = sqlite3.connect(os.path.join(d, ".kiln/state.db"))
        rows = db.execute("SELECT time, kind, message, data FROM events WHERE kind IN ('instance.exited','instance.restarting','instance.started') ORDER BY id").fetchall()
    pending = {}
    latencies, overheads = [], []
    for t, kind, message, data in rows:
        instance = message.split(":")[0]
        when = parse_time(t)
        data = json.loads(data) if data else {}
        if kind == "instance.exited" and "SIGKILL" in message:
            pending[instance] = {"exited": when}
        elif kind == "instance.restarting" and instance in pending:
            pending[instance]["delay"] = data.get("delay_ms", 0) / 1000
        elif kind == "instance.started" and instance in pending:
            p = pending.pop(instance)
            latencies.append((when - p["exited"]) * 1000)
            overheads.append((when - p["exited"] - p.get("delay", 0)) * 1000)
    print(f"kills: {kills}; recovered: {len(latencies)}; unrecovered: {len(pending)}; all 3 ready at the end: {all_ready}")
    if latencies:
        print(f"crash-to-running: p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms (backoff included)")
        print(f"minus the backoff delay: p50 {percentile(overheads, 50):.1f} ms, p99 {percentile(overheads, 99):.1f} ms")
    print(f"control plane RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after")


if __name__ == "__main__":
    main()

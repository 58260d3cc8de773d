#!/usr/bin/env python3
"""Scale: 200 supervised instances (20 services x 10 replicas); the control plane's idle CPU
(over 30 s, from /proc) and RSS, with and without a TCP readiness probe every 5 s.

Usage: python3 benches/scale.py [--kiln target/release/kiln] [--probes]
"""
import argparse, os, subprocess, tempfile, time

SERVER = """
const net = require('net');
net.createServer((c) => c.end()).listen(Number(process.env.PORT), '127.0.0.1');
"""


def stack(probes):
    out = "name: scale\nservices:\n"
    for i in range(20):
        if probes:
            out += f"  s{i}:\n    run: node server.js\n    replicas: 10\n    health: {{ readiness: {{ tcp: true, interval: 5s }} }}\n    ready_timeout: 120s\n"
        else:
            out += f"  s{i}:\n    run: sleep 100000\n    replicas: 10\n"
    return out


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.abspath("target/release/kiln"))
    ap.add_argument("--probes", action="store_true")
    ap.add_argument("--seconds", type=int, default=30)
    a = ap.parse_args()
    hz = os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "kiln.yaml"), "w").write(stack(a.probes))
        open(os.path.join(d, "server.js"), "w").write(SERVER)
        started = time.monotonic()
        subprocess.run([a.kiln, "-C", d, "up", "-d", "--interval", "5"], check=True, capture_output=True)
        up_seconds = time.monotonic() - started
        daemon = int(open(os.path.join(d, ".kiln/kiln.pid")).read())
        try:
            time.sleep(5)
            before = cpu_ticks(daemon)
            time.sleep(a.seconds)
            used = (cpu_ticks(daemon) - before) / hz
            rss = rss_kib(daemon)
            count = subprocess.run([a.kiln, "-C", d, "ps", "--json"], capture_output=True, text=True).stdout.count('"pid"')
        finally:
            subprocess.run([a.kiln, "-C", d, "down"], capture_output=True)
    print(f"instances: {count} ({'node TCP servers, tcp readiness every 5s' if a.probes else 'sleep, no probes'}); up in {up_seconds:.1f} s")
    print(f"control plane idle CPU: {100 * used / a.seconds:.2f}% of one core over {a.seconds} s (reconcile every 5 s)")
    print(f"control plane RSS: {rss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()

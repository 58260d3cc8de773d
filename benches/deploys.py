#!/usr/bin/env python3
"""Zero-downtime proof and chaos under load, through kiln's ingress on loopback.

deploys: 3 replicas behind a route under constant load (wrk, keep-alive connections); 20
  consecutive deploys cycling rolling → blue-green → canary, then one release that fails its
  readiness probe and one canary that answers 503 (both must roll back). Reports every
  deploy's strategy, result and duration, and the load's totals: failed = non-2xx + socket
  errors.
chaos: the same route; one instance kill -9'd every second for --seconds under load.
  Reports the success ratio.

Usage: python3 benches/deploys.py [--scenario deploys|chaos|both] [--kiln target/release/kiln]
       [--connections 16] [--seconds 60]
Needs: node, wrk (Debian package `wrk`).
"""
import argparse, json, os, re, signal, subprocess, tempfile, time

SERVER = r"""
const http = require('http');
const fs = require('fs');
const read = (f, d) => { try { return fs.readFileSync(f, 'utf8').trim(); } catch { return d; } };
const mode = read('mode', 'ok');
const version = read('version', '0');
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') { res.statusCode = mode === 'unhealthy' ? 503 : 200; return res.end(mode); }
  if (mode === 'errors') { res.statusCode = 503; return res.end('broken release'); }
  res.end('v' + version);
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeIdleConnections(); });
"""

STACK = """
name: bench
ingress: {{ listen: "127.0.0.1:0" }}
services:
  app:
    path: app
    run: node server.js
    replicas: 3
    health: {{ readiness: {{ http: /healthz, interval: 200ms, timeout: 1s, failure_threshold: 1 }} }}
    backoff: {{ initial: 10ms, max: 100ms, reset_after: 5s }}
    stop: {{ grace: 5s }}
    deploy: {deploy}
routes:
  - {{ host: app.localhost, path: /, service: app }}
"""

STRATEGIES = {
    "rolling": "{ strategy: rolling, max_surge: 1, max_unavailable: 0, min_healthy_time: 500ms, healthy_deadline: 10s }",
    "blue-green": "{ strategy: blue-green, healthy_deadline: 10s }",
    "canary": "{ strategy: canary, steps: [10, 50], pause: 2s, healthy_deadline: 10s, analysis: { min_requests: 20 } }",
}
SMALL_CANARY = "{ strategy: canary, steps: [10], pause: 2s, healthy_deadline: 10s, analysis: { min_requests: 20 } }"


def kiln(k, d, *args, check=True):
    return subprocess.run([k, "-C", d, *args], capture_output=True, text=True, check=check)


def write_release(d, version, mode, deploy):
    with open(os.path.join(d, "app", "version"), "w") as f:
        f.write(str(version))
    with open(os.path.join(d, "app", "mode"), "w") as f:
        f.write(mode)
    with open(os.path.join(d, "kiln.yaml"), "w") as f:
        f.write(STACK.format(deploy=deploy))


# Prints every failed response, so a failure can be explained.
WRK_LUA = """
response = function(status, headers, body)
  if status ~= 200 then
    io.write("FAILED " .. status .. " " .. string.sub(body or "", 1, 120) .. "\\n")
  end
end
"""


def start_wrk(addr, connections):
    script = os.path.join(tempfile.mkdtemp(), "fail.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA)
    return subprocess.Popen(
        ["wrk", "-t", "2", "-c", str(connections), "-d", "3600s", "--timeout", "10s", "--latency", "-s", script,
         "-H", "Host: app.localhost", f"http://{addr}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_wrk(proc):
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors = sum(int(x) for x in m.groups())
    p99 = m.group(1) if (m := re.search(r"99%\s+(\S+)", out)) else "?"
    failures = {}
    for line in out.splitlines():
        if line.startswith("FAILED "):
            failures[line] = failures.get(line, 0) + 1
    return {"total": total, "non2xx": non2xx, "socket_errors": errors, "p99": p99,
            "failures": failures}


def up(k, d):
    os.makedirs(os.path.join(d, "app"), exist_ok=True)
    with open(os.path.join(d, "app", "server.js"), "w") as f:
        f.write(SERVER)
    write_release(d, 0, "ok", STRATEGIES["rolling"])
    kiln(k, d, "up", "-d", "--interval", "30")
    return json.loads(kiln(k, d, "status", "--json").stdout)["ingress"]


def deploys(k, connections):
    d = tempfile.mkdtemp(prefix="kiln-deploys-")
    addr = up(k, d)
    wrk = start_wrk(addr, connections)
    time.sleep(1)
    plan = [(name, STRATEGIES[name], "ok") for name in list(STRATEGIES) * 7][:20]
    plan += [("rolling (unhealthy release)", STRATEGIES["rolling"], "unhealthy"),
             ("canary (503 release)", SMALL_CANARY, "errors")]
    rows = []
    started = time.time()
    for i, (label, deploy, mode) in enumerate(plan, start=1):
        write_release(d, i, mode, deploy)
        t = time.time()
        r = kiln(k, d, "deploy", "app", check=False)
        rows.append((i, label, r.returncode, time.time() - t))
    elapsed = time.time() - started
    time.sleep(1)
    load = stop_wrk(wrk)
    history = json.loads(kiln(k, d, "releases", "app", "--json").stdout)["deploys"]
    kiln(k, d, "down", check=False)
    print(f"\n{len(plan)} deploys in {elapsed:.1f} s under wrk -c {connections}")
    print(f"{'#':>3}  {'deploy':<28} {'result':<12} {'strategy':<11} {'duration':>9}")
    by_order = list(reversed(history))[1:]  # drop the initial start
    for (i, label, code, _), rec in zip(rows, by_order):
        print(f"{i:>3}  {label:<28} {rec['result']:<12} {rec['strategy']:<11} {rec['duration_ms']:>6} ms")
        if rec["result"] != "succeeded":
            print(f"       {rec['detail'].get('reason')}")
    for line, n in load["failures"].items():
        print(f"  {n} × {line}")
    failed = load["non2xx"] + load["socket_errors"]
    print(f"requests: {load['total']}, failed: {failed} (non-2xx {load['non2xx']}, socket errors "
          f"{load['socket_errors']}), p99 {load['p99']}")
    rollbacks = sum(1 for r in by_order if r["result"] == "rolled-back")
    print(f"rollbacks: {rollbacks}")
    return failed


def chaos(k, connections, seconds):
    d = tempfile.mkdtemp(prefix="kiln-chaos-")
    addr = up(k, d)
    wrk = start_wrk(addr, connections)
    time.sleep(1)
    kills = 0
    end = time.time() + seconds
    while time.time() < end:
        ps = json.loads(kiln(k, d, "ps", "--json").stdout)
        live = [i for i in ps if i.get("pid") and i["state"] == "ready"]
        if live:
            victim = live[kills % len(live)]
            try:
                os.kill(victim["pid"], signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(1)
    time.sleep(1)
    load = stop_wrk(wrk)
    kiln(k, d, "down", check=False)
    failed = load["non2xx"] + load["socket_errors"]
    ratio = 1 - failed / max(load["total"], 1)
    print(f"\nchaos: {kills} kill -9 in {seconds} s, 3 replicas, wrk -c {connections}")
    print(f"requests: {load['total']}, failed: {failed} (non-2xx {load['non2xx']}, socket errors "
          f"{load['socket_errors']}), success ratio {ratio * 100:.4f}%, p99 {load['p99']}")
    for line, n in load["failures"].items():
        print(f"  {n} × {line}")
    return failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="both", choices=["deploys", "chaos", "both"])
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=60)
    a = ap.parse_args()
    k = os.path.abspath(a.kiln)
    if a.scenario in ("deploys", "both"):
        deploys(k, a.connections)
    if a.scenario in ("chaos", "both"):
        chaos(k, a.connections, a.seconds)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time to detect and time to mitigate: a bad release under load, caught by its SLO's burn-rate
alert and rolled back by the alert's runbook, with the incident it opens.

One service behind kiln's ingress, an availability SLO (99.9 % over 30 d; the SRE Workbook's
page at 14.4x burn over 1 h and 5 m), `notify.evaluation_interval: 1s`, and a runbook
`roll-back` attached to the SLO's alerts. Under constant load (--clients keep-alive
connections), a new release is deployed that passes its readiness gate and then, after 3 s,
fails a share of its requests (--failure 100 = full outage, 20 = one request in five). The
script reads the load's own log and kiln's records:

  failure start  first failed response the load saw
  detected       the `alert.firing` event of the page alert
  mitigated      the rollback's deploy record finished (the good release serves again)
  last failure   the last failed response the load saw

and reports time to detect (detected - failure start), time to mitigate (mitigated - failure
start), the failed requests, and the share of the 30-day error budget they consumed at the
measured request rate. It then waits for the page to resolve and the incident it opened to be
marked mitigated (its timeline: --show-incident).

Usage: python3 benches/incident.py [--kiln target/release/kiln] [--failure 100] [--rounds 3]
       [--clients 2] [--show-incident]
Needs: node.
"""
import argparse, http.client, json, os, statistics, subprocess, tempfile, threading, time

SERVER = r"""
const http = require('http');
const fs = require('fs');
const read = (f, d) => { try { return fs.readFileSync(f, 'utf8').trim(); } catch (_) { return d; } };
const version = read('version', '0');
const failure = Number(read('failure', '0'));
const started = Date.now();
let n = 0;
const server = http.createServer((req, res) => {
  if (req.url === '/healthz') { res.end('ok'); return; }
  n += 1;
  // Fails `failure` percent of requests, evenly spread, once 3 s have passed: after the
  // deploy's readiness gate let it in.
  if (Date.now() - started > 3000 && (n * failure) % 100 < failure) {
    res.statusCode = 500; res.end('broken'); return;
  }
  res.end('v' + version);
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeIdleConnections(); });
"""

STACK = """
name: incident-bench
ingress: { listen: "127.0.0.1:0" }
services:
  app:
    path: app
    run: node server.js
    replicas: 2
    health: { readiness: { http: /healthz, interval: 200ms, timeout: 1s } }
    deploy: { strategy: rolling, max_surge: 1, max_unavailable: 0, healthy_deadline: 10s }
routes:
  - { host: app.localhost, path: /, service: app }
notify: { evaluation_interval: 1s }
alerts:
  - name: app-availability
    slo: { service: app, objective: 99.9%, window: 30d, min_requests: 10 }
    runbook: roll-back
runbooks:
  roll-back:
    description: Back to the release before the one that burns the error budget.
    params:
      service: { type: service, required: true }
    guards: { max_runs: 1, per: 1h }
    steps:
      - { action: rollback, with: { service: "${{ params.service }}" }, timeout: 60s }
"""

OBJECTIVE = 0.999
WINDOW_S = 30 * 86400


def kiln(k, d, *args, check=True):
    return subprocess.run([k, "-C", d, *args], capture_output=True, text=True, check=check)


def kiln_json(k, d, *args):
    return json.loads(kiln(k, d, *args, "--json").stdout)


class Load:
    """Keep-alive clients, each logging (time, ok) for every request."""

    def __init__(self, addr, clients):
        host, port = addr.rsplit(":", 1)
        self.stop = threading.Event()
        self.log = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(host, int(port)), daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def client(self, host, port):
        conn = None
        while not self.stop.is_set():
            ok = False
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=5)
                conn.request("GET", "/", headers={"Host": "app.localhost"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status < 500
            except (OSError, http.client.HTTPException):
                conn = None
            with self.lock:
                self.log.append((time.time(), ok))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)
        return self.log


def event_time(event):
    for key in ("at", "time", "created_at", "timestamp"):
        if key in event:
            value = event[key]
            if isinstance(value, (int, float)):
                return value / 1000 if value > 1e11 else value
            return iso_seconds(value)
    raise KeyError(f"no time in event {event}")


def iso_seconds(text):
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def one_round(k, failure, clients):
    d = tempfile.mkdtemp(prefix="kiln-incident-")
    os.makedirs(f"{d}/app")
    with open(f"{d}/kiln.yaml", "w") as f:
        f.write(STACK)
    with open(f"{d}/app/server.js", "w") as f:
        f.write(SERVER)
    with open(f"{d}/app/version", "w") as f:
        f.write("1")
    kiln(k, d, "up", "-d", "--interval", "30")
    try:
        addr = kiln_json(k, d, "status")["ingress"]
        load = Load(addr, clients)
        time.sleep(5)  # a healthy baseline for the SLO's rates
        with open(f"{d}/app/version", "w") as f:
            f.write("2")
        with open(f"{d}/app/failure", "w") as f:
            f.write(str(failure))
        kiln(k, d, "deploy", "app")
        deadline = time.time() + 120
        rolled_back = None
        while time.time() < deadline and rolled_back is None:
            deploys = kiln_json(k, d, "releases", "app").get("deploys", [])
            rolled_back = next((x for x in deploys if x.get("trigger") == "runbook" and x.get("result") == "succeeded"), None)
            time.sleep(0.2)
        # The page resolves once a window's burn rate falls below 14.4x, which takes good
        # requests after the failures (the load keeps going); its incident is then mitigated.
        deadline = time.time() + 300
        incidents = []
        while time.time() < deadline:
            incidents = kiln_json(k, d, "incident", "list")
            if incidents and incidents[0]["milestones"].get("mitigated"):
                break
            time.sleep(1)
        log = load.finish()
        events = kiln_json(k, d, "events", "--limit", "1000")
        timeline = kiln(k, d, "incident", "show", str(incidents[0]["id"])).stdout if incidents else ""
    finally:
        kiln(k, d, "down", check=False)
    if rolled_back is None:
        raise SystemExit("no rollback by the runbook within 120 s")
    failures = [t for t, ok in log if not ok]
    first_fail, last_fail = failures[0], failures[-1]
    firing = [e for e in events if e.get("kind") == "alert.firing" and "app-availability" in json.dumps(e)]
    detected = min(event_time(e) for e in firing if event_time(e) >= first_fail - 1)
    mitigated = iso_seconds(rolled_back["started_at"]) + rolled_back.get("duration_ms", 0) / 1000
    span = log[-1][0] - log[0][0]
    rate = len(log) / span
    budget = (1 - OBJECTIVE) * rate * WINDOW_S
    return {
        "ttd": detected - first_fail,
        "ttm": mitigated - first_fail,
        "last_failure_after": last_fail - first_fail,
        "failed": len(failures),
        "requests": len(log),
        "rate": rate,
        "budget_share": len(failures) / budget,
        "incident": incidents[0] if incidents else None,
        "timeline": timeline,
        "mitigated_incident": (incidents[0]["milestones"]["mitigated"]["at"] / 1000 - first_fail)
        if incidents and incidents[0]["milestones"].get("mitigated") else None,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kiln", default="target/release/kiln")
    p.add_argument("--failure", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--show-incident", action="store_true", help="print each round's `kiln incident show`")
    a = p.parse_args()
    k = os.path.abspath(a.kiln)
    rounds = []
    for i in range(a.rounds):
        r = one_round(k, a.failure, a.clients)
        rounds.append(r)
        print(f"round {i + 1}: detect {r['ttd']:.2f} s, mitigate {r['ttm']:.2f} s, last failure at +{r['last_failure_after']:.2f} s, "
              f"{r['failed']} of {r['requests']} requests failed ({r['rate']:.0f}/s), "
              f"{100 * r['budget_share']:.4f} % of the 30-day budget")
        if r["mitigated_incident"] is not None:
            print(f"  the page resolved and its incident was marked mitigated at +{r['mitigated_incident']:.1f} s")
        if a.show_incident and r["timeline"]:
            print(r["timeline"])
    med = lambda key: statistics.median(r[key] for r in rounds)
    print(f"\nfailure {a.failure} %, {a.rounds} rounds, medians: time to detect {med('ttd'):.2f} s, "
          f"time to mitigate {med('ttm'):.2f} s, failed requests {med('failed'):.0f}, "
          f"error budget consumed {100 * med('budget_share'):.4f} % of 30 days at {med('rate'):.0f} req/s")


if __name__ == "__main__":
    main()

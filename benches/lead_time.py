#!/usr/bin/env python3
"""Lead time from `git push` to the new release serving production, with its parts.

A project (a node service and a GitHub Actions workflow that tests it and uploads it as an
artifact) is pushed to a local bare repository that `kiln up` follows through the
post-receive hook it installs. The stack has two environments: `staging` deploys a green run's
artifact by itself (`deploy: { auto: true }`), `production` promotes it automatically
(`promote: { from: staging, soak: 10s, pipeline: ci, auto: true }`). Each round commits a new
version, pushes it, and polls production's route every 20 ms until the new version answers.

Parts, from kiln's own records:
  queue      push → the pipeline run starts (hook, queue, fetch, workflow matching)
  pipeline   the run, start to finish
  staging    the run's end → staging's deploy finished (apply + rolling deploy)
  soak       staging's deploy finished → promotion recorded (the 10 s soak plus the
             control plane's 2 s gate check)
  promotion  promotion recorded → production's deploy started (plan, apply begins)
  rollout    production's deploy started → the new version first answers on its route
             (a rolling deploy serves its first new instance before it finishes)

With `--shop`, the project is the example stack instead: examples/shop copied into a scratch
repository with `kiln.delivery.yaml` as its kiln.yaml (the same setup as the test
crates/kiln/tests/shop_delivery.rs, with its 10 s soak). Its real ci.yml runs on every push
(npm ci from the npm cache, kept offline, and eslint; `node --test` per service; one artifact
per service directory); each round changes a comment in api/server.js, so only the api is
released, and "serving" is production's `/api/products` answering with the new release in its
`X-Release` header.

Usage: python3 benches/lead_time.py [--kiln target/release/kiln] [--rounds 3] [--shop]
Needs: node, git (and for --shop, npm with the shop's packages in its cache: `npm ci` in
examples/shop once).
"""
import argparse, json, os, shutil, statistics, subprocess, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from datetime import datetime

SERVER = r"""
const http = require('http');
const fs = require('fs');
const version = fs.readFileSync('version', 'utf8').trim();
const server = http.createServer((req, res) => res.end(req.url === '/healthz' ? 'ok' : 'v' + version));
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeIdleConnections(); });
"""

WORKFLOW = """
name: ci
on:
  push:
    branches: [main]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: test
        run: test "$(cat version)" != broken
      - run: mkdir -p dist && cp server.js version dist/
      - uses: actions/upload-artifact@v4
        with: { name: app, path: dist/ }
"""

STACK = """
name: leadtime
ingress: {{ listen: "127.0.0.1:0" }}
source: {{ repo: {bare}, branches: [main], poll: off }}
services:
  app:
    release: {{ pipeline: ci, artifact: app }}
    run: node server.js
    replicas: 2
    health: {{ readiness: {{ http: /healthz, interval: 100ms, timeout: 1s, failure_threshold: 1 }} }}
    stop: {{ grace: 5s }}
    deploy: {{ strategy: rolling, max_surge: 1, max_unavailable: 0, healthy_deadline: 10s }}
routes:
  - {{ host: app.localhost, path: /, service: app }}
environments:
  staging:
    routes: [ {{ host: staging.app.localhost, path: /, service: app }} ]
    deploy: {{ auto: true }}
  production:
    promote: {{ from: staging, soak: 10s, pipeline: ci, auto: true }}
"""


def run(*args, cwd=None, check=True):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=check)


def git(cwd, *args):
    return run("git", "-c", "user.name=bench", "-c", "user.email=bench@example.com",
               "-c", "init.defaultBranch=main", *args, cwd=cwd).stdout.strip()


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def get(addr, host):
    req = urllib.request.Request(f"http://{addr}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.read().decode()
    except Exception:
        return ""


def release_header(addr, host):
    """The `X-Release` header of the shop api's answer to `/api/products` ("" when it fails)."""
    req = urllib.request.Request(f"http://{addr}/api/products", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.headers.get("X-Release", "")
    except Exception:
        return ""


def copy_shop(to):
    skip = shutil.ignore_patterns(".kiln", "out", "node_modules", "data", "dist")
    shutil.copytree(os.path.join(ROOT, "examples/shop"), to, ignore=skip)
    with open(os.path.join(to, "kiln.delivery.yaml")) as f:
        text = f.read()
    return text.replace("listen: 127.0.0.1:8080", 'listen: "127.0.0.1:0"')


class AppProject:
    """The one-service project: a version file, answered by the service on `/`."""
    service, host, staging_host = "app", "app.localhost", "staging.app.localhost"

    def write(self, stack, bare):
        os.makedirs(os.path.join(stack, ".github/workflows"))
        files = {"server.js": SERVER, "version": "1", ".gitignore": ".kiln/\n",
                 ".github/workflows/ci.yml": WORKFLOW, "kiln.yaml": STACK.format(bare=bare)}
        for name, text in files.items():
            with open(os.path.join(stack, name), "w") as f:
                f.write(text)

    def serving(self, addr, host):
        return get(addr, host)

    def change(self, dev, round_):
        with open(os.path.join(dev, "version"), "w") as f:
            f.write(str(round_))


class ShopProject:
    """examples/shop with kiln.delivery.yaml; the api's release is what each round changes."""
    service, host, staging_host = "api", "shop.localhost", "staging.shop.localhost"

    def write(self, stack, bare):
        text = copy_shop(stack).replace("repo: ../shop.git", f"repo: {bare}")
        with open(os.path.join(stack, "kiln.yaml"), "w") as f:
            f.write(text)

    def serving(self, addr, host):
        return release_header(addr, host)

    def change(self, dev, round_):
        with open(os.path.join(dev, "api/server.js"), "a") as f:
            f.write(f"// lead-time round {round_}\n")


def wait(condition, seconds, what, every=0.02):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shop", action="store_true", help="the example stack (examples/shop)")
    a = ap.parse_args()
    k = os.path.abspath(a.kiln)
    project = ShopProject() if a.shop else AppProject()
    root = tempfile.mkdtemp(prefix="kiln-leadtime-")
    bare, stack, dev = (os.path.join(root, n) for n in ("app.git", "stack", "dev"))
    git(root, "init", "-q", "--bare", "app.git")
    project.write(stack, bare)
    git(stack, "init", "-q")
    git(stack, "add", "-A")
    git(stack, "commit", "-qm", "init")
    git(stack, "push", "-q", bare, "main")
    git(root, "clone", "-q", "app.git", "dev")
    # The shop's pipeline installs from the npm cache, never the network.
    env = dict(os.environ, npm_config_offline="true", SHOP_WEBHOOK_SECRET="bench")

    def kiln(*args, check=True):
        return subprocess.run([k, "-C", stack, *args], capture_output=True, text=True,
                              check=check, env=env)

    kiln("ci", "run", "ci.yml")
    kiln("up", "-d", "--interval", "30")
    try:
        addr = json.loads(kiln("status", "--json").stdout)["ingress"]
        wait(lambda: project.serving(addr, project.staging_host), 60, "staging's first release")
        # The first release reaches production by promotion too.
        first = wait(lambda: project.serving(addr, project.host), 90, "production's first release")
        print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
        # A rolling deploy answers with both releases for a while: "new" is one never seen.
        rows, seen = [], {first}
        for round_ in range(2, 2 + a.rounds):
            project.change(dev, round_)
            git(dev, "commit", "-qam", f"round {round_}")
            sha = git(dev, "rev-parse", "HEAD")
            pushed = time.time()
            git(dev, "push", "-q", "origin", "main")
            answer = lambda: project.serving(addr, project.host)
            new = wait(lambda: (lambda v: v not in seen and v != "" and v)(answer()), 180,
                       f"production, round {round_}")
            serving = time.time()
            seen.add(new)
            service = project.service

            def records():
                """This round's run and deploys, once kiln has recorded them all."""
                runs = json.loads(kiln("ci", "list", "--json").stdout)
                r = next((r for r in runs if r["commit"] == sha and r.get("finished_at")), None)
                deploys = [json.loads(kiln("releases", f"{service}.{env}", "--json").stdout)["deploys"]
                           for env in ("staging", "production")]
                latest = [d[0] if d and ts(d[0]["started_at"]) > pushed else None for d in deploys]
                return r and all(latest) and (r, *latest)

            r, staging, prod = wait(records, 60, f"the records of round {round_}", every=0.5)
            events = json.loads(kiln("events", "--json", "--limit", "200").stdout)
            promoted = max(ts(e["time"]) for e in events if e["kind"] == "promotion.recorded")
            fin = lambda d: ts(d["started_at"]) + d["duration_ms"] / 1000
            parts = {
                "queue": ts(r["started_at"]) - pushed,
                "pipeline": ts(r["finished_at"]) - ts(r["started_at"]),
                "staging": fin(staging) - ts(r["finished_at"]),
                "soak": promoted - fin(staging),
                "promotion": ts(prod["started_at"]) - promoted,
                "rollout": serving - ts(prod["started_at"]),
            }
            total = serving - pushed
            rows.append((total, parts))
            print(f"round {round_}: {total:.2f} s  " + "  ".join(f"{n} {v:.2f}" for n, v in parts.items()), flush=True)
        med = statistics.median(t for t, _ in rows)
        print(f"\nmedian lead time push → serving production: {med:.2f} s over {a.rounds} rounds")
        for name in rows[0][1]:
            print(f"  {name:<10} median {statistics.median(p[name] for _, p in rows):.2f} s")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        kiln("down", check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

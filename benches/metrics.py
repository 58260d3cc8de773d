#!/usr/bin/env python3
"""Metrics: kiln side by side with Prometheus (Debian's 2.42) in one run.

Live: a kiln stack runs N target instances (one service, `replicas: N`, each a small Python
HTTP server with S series: request counters, a latency histogram, gauges, cache counters) that
declare `metrics: { interval }`. kiln scrapes them; a Prometheus started by this script scrapes
the same ports at the same interval. After the run: RSS of both processes (median of samples
taken every 10 s over the second half), stored series and samples on both, and the latency
(p50/p99 over R runs, interleaved) of dashboard-like queries over the last 5 minutes, asked over
HTTP on both sides (kiln through `kiln up --api-listen` with its token).

Replay (compressed time): the same generator writes T targets x S series x 720 samples at 15 s
(3 hours) as OpenMetrics; Prometheus imports it with `promtool tsdb create-blocks-from
openmetrics` (its block format: chunks + index), kiln with the `replay` example of
kiln-metrics (appends the scrapes in time order, timing only the appends, then persists):
bytes per sample on disk and kiln's in-process ingestion rate.

Usage: python3 benches/metrics.py [--kiln target/release/kiln] [--targets 100] [--series 500]
       [--interval 1] [--seconds 240] [--runs 50] [--replay-targets 4] [--query LABEL ...]
"""
import argparse, base64, json, os, random, shutil, signal, socket, statistics, subprocess, sys
import tempfile, time, urllib.parse, urllib.request

# ---------------------------------------------------------------------------------------------
# The series generator, shared by the live targets and the replay file.

ROUTES = [f"/r{i}" for i in range(10)]
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


class Target:
    """500 series (with the default sizes) whose values evolve one step at a time."""

    def __init__(self, seed, series=500):
        self.rng = random.Random(seed)
        scale = max(1, series // 500)
        self.req = {(r, m, c): 0 for r in ROUTES for m in ("GET", "POST") for c in ("200", "404", "500")}
        self.hist = {r: [0] * (len(BUCKETS) + 1) for r in ROUTES}
        self.hsum = {r: 0.0 for r in ROUTES}
        self.mem = {f"p{i}": self.rng.randrange(1 << 20, 1 << 28) // 4096 * 4096 for i in range(100 * scale)}
        self.queue = {f"q{i}": self.rng.randrange(0, 5) for i in range(100 * scale)}
        self.cache = {f"c{i}": 0 for i in range(100 * scale)}
        self.step = 0

    def advance(self):
        rng = self.rng
        self.step += 1
        for k in self.req:
            base = 20 if k[2] == "200" else (2 if k[2] == "404" else 0.3)
            self.req[k] += int(rng.expovariate(1 / base)) if rng.random() < 0.9 else 0
        for r in ROUTES:
            n = rng.randrange(5, 40)
            counts = self.hist[r]
            for _ in range(n):
                lat = rng.lognormvariate(-3.5, 1.0)
                i = next((j for j, b in enumerate(BUCKETS) if lat <= b), len(BUCKETS))
                counts[i] += 1
                self.hsum[r] += lat
        for k in self.mem:
            if rng.random() < 0.3:
                self.mem[k] = max(4096, self.mem[k] + rng.randrange(-64, 65) * 4096)
        for k in self.queue:
            if rng.random() < 0.05:
                self.queue[k] = rng.randrange(0, 5)
        for k in self.cache:
            self.cache[k] += rng.randrange(0, 30)

    def families(self):
        """[(family, type, [(name, labels, value)])]."""
        req = [("http_requests_total", f'method="{m}",route="{r}",code="{c}"', v) for (r, m, c), v in self.req.items()]
        hist = []
        for r in ROUTES:
            cum = 0
            for b, n in zip(BUCKETS + ["+Inf"], self.hist[r]):
                cum += n
                hist.append(("http_request_duration_seconds_bucket", f'route="{r}",le="{b}"', cum))
            hist.append(("http_request_duration_seconds_sum", f'route="{r}"', round(self.hsum[r], 6)))
            hist.append(("http_request_duration_seconds_count", f'route="{r}"', cum))
        mem = [("app_memory_bytes", f'pool="{k}"', v) for k, v in self.mem.items()]
        queue = [("app_queue_depth", f'queue="{k}"', v) for k, v in self.queue.items()]
        cache = [("app_cache_hits_total", f'cache="{k}"', v) for k, v in self.cache.items()]
        return [
            ("http_requests", "counter", req),
            ("http_request_duration_seconds", "histogram", hist),
            ("app_memory_bytes", "gauge", mem),
            ("app_queue_depth", "gauge", queue),
            ("app_cache_hits", "counter", cache),
        ]

    def text(self):
        out = []
        for fam, kind, samples in self.families():
            out.append(f"# TYPE {fam} {kind}\n")
            out.extend(f"{n}{{{l}}} {v}\n" for n, l, v in samples)
        return "".join(out)


def serve_target(port, seed, series, interval):
    """One live target: values advance once per `interval` of wall time, so every scraper
    within the same interval sees the same values."""
    import asyncio

    t = Target(seed, series)
    started = time.monotonic()
    cache = {"step": -1, "body": b""}

    def body():
        step = int((time.monotonic() - started) / interval)
        while t.step < step:
            t.advance()
        if cache["step"] != t.step:
            cache["step"], cache["body"] = t.step, t.text().encode()
        return cache["body"]

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                path = head.split(b" ", 2)[1]
                data = body() if path == b"/metrics" else b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: %d\r\n\r\n" % len(data) + data)
                await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def write_replay(path, targets, series, samples, step_s):
    """OpenMetrics with timestamps, each family's samples contiguous (promtool needs that)."""
    gens = [Target(1000 + i, series) for i in range(targets)]
    t0 = 1_700_000_000
    steps = []  # per step, per target, families
    for k in range(samples):
        for g in gens:
            g.advance()
        steps.append([g.families() for g in gens])
    with open(path, "w") as f:
        for fi, (fam, kind, _) in enumerate(steps[0][0]):
            f.write(f"# TYPE {fam} {kind}\n")
            for k, per_target in enumerate(steps):
                ts = t0 + k * step_s
                for ti, fams in enumerate(per_target):
                    for n, l, v in fams[fi][2]:
                        f.write(f'{n}{{target="t{ti}",{l}}} {v} {ts}\n')
        f.write("# EOF\n")
    return samples * sum(len(s) for _, _, s in steps[0][0]) * targets


# ---------------------------------------------------------------------------------------------
# Measurement helpers.

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get_json(url, headers=None, data=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def timed_query(base, headers, path, params):
    data = urllib.parse.urlencode(params).encode()
    h = dict(headers)
    h["content-type"] = "application/x-www-form-urlencoded"
    started = time.perf_counter()
    body = get_json(base + path, h, data)
    took = time.perf_counter() - started
    if body.get("status") != "success":
        raise RuntimeError(f"{base}{path} {params}: {body}")
    return took, body["data"]["result"]


def dir_bytes(path, pred=lambda p: True):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if pred(p):
                total += os.path.getsize(p)
    return total


QUERIES = [
    ("req rate by route", "sum by (route) (rate(http_requests_total[1m]))"),
    ("error ratio", 'sum(rate(http_requests_total{code="500"}[1m])) / sum(rate(http_requests_total[1m]))'),
    ("p99 latency by route", "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[1m])))"),
    ("memory by instance", "sum by (instance) (app_memory_bytes)"),
    ("up by service", "sum by (service) (up)"),
    ("top5 cache hit rate", "topk(5, sum by (cache) (rate(app_cache_hits_total[1m])))"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.abspath("target/release/kiln"))
    ap.add_argument("--replay-bin", default=os.path.abspath("target/release/examples/replay"))
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--series", type=int, default=500)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=int, default=240)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--replay-targets", type=int, default=4)
    ap.add_argument("--query", action="append", metavar="LABEL",
                    help="time only this dashboard query (by its label; repeatable)")
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--skip-replay", action="store_true")
    ap.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)  # internal: PORT SEED SERIES
    a = ap.parse_args()
    if a.serve:
        serve_target(int(a.serve[0]), int(a.serve[1]), int(a.serve[2]), a.interval)
        return
    if not a.skip_replay:
        replay(a)
    if not a.skip_live:
        live(a)


def replay(a):
    with tempfile.TemporaryDirectory() as d:
        om = os.path.join(d, "replay.om")
        started = time.monotonic()
        samples = write_replay(om, a.replay_targets, a.series, 720, 15)
        print(f"replay: {a.replay_targets * a.series} series x 720 samples at 15 s = {samples} samples "
              f"({os.path.getsize(om) / 1e6:.0f} MB OpenMetrics, generated in {time.monotonic() - started:.0f} s)")
        prom = os.path.join(d, "prom")
        started = time.monotonic()
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, prom],
                       check=True, capture_output=True)
        prom_s = time.monotonic() - started
        chunks = dir_bytes(prom, lambda p: "/chunks/" in p)
        total = dir_bytes(prom)
        prom_samples = 0
        for b in os.listdir(prom):
            meta = os.path.join(prom, b, "meta.json")
            if os.path.exists(meta):
                prom_samples += json.load(open(meta))["stats"]["numSamples"]
        kiln_dir = os.path.join(d, "kiln")
        out = subprocess.run([a.replay_bin, om, kiln_dir], check=True, capture_output=True, text=True).stdout
        k = json.loads(out.strip().splitlines()[-1])
        print(f"  prometheus (promtool import {prom_s:.0f} s): {prom_samples} samples, "
              f"chunks {chunks / prom_samples:.3f} B/sample, all files {total / prom_samples:.3f} B/sample")
        print(f"  kiln: {k['samples']} samples, segments {k['bytes'] / k['samples']:.3f} B/sample; "
              f"ingest {k['samples_per_second'] / 1e6:.2f} M samples/s on one thread "
              f"(median of {k['runs']} runs, appends only)")
        print(f"  ratio kiln/prometheus (all files): {(k['bytes'] / k['samples']) / (total / prom_samples):.2f}")


def live(a):
    d = tempfile.mkdtemp(prefix="kiln-metrics-bench-")
    prom_proc = None
    try:
        me = os.path.abspath(__file__)
        # The port comes from the environment at run time, so the command runs under sh.
        stack = (f"name: metricsbench\nservices:\n  t:\n"
                 f"    run: exec python3 {me} --interval {a.interval} --serve $PORT $KILN_INSTANCE {a.series}\n"
                 f"    shell: true\n"
                 f"    replicas: {a.targets}\n"
                 f"    health: {{ readiness: {{ tcp: true, interval: 2s }} }}\n"
                 f"    ready_timeout: 300s\n"
                 f"    metrics: {{ path: /metrics, interval: {int(a.interval * 1000)}ms }}\n")
        open(os.path.join(d, "kiln.yaml"), "w").write(stack)
        subprocess.run([a.kiln, "-C", d, "up", "-d", "--api-listen", "127.0.0.1:0"], check=True,
                       capture_output=True)
        status = json.loads(subprocess.run([a.kiln, "-C", d, "status", "--json"], check=True,
                                           capture_output=True, text=True).stdout)
        kiln_base = "http://" + status["api"]
        token = open(os.path.join(d, ".kiln/api-token")).read().strip()
        kiln_h = {"authorization": f"Bearer {token}"}
        kiln_pid = int(open(os.path.join(d, ".kiln/kiln.pid")).read())
        ps = json.loads(subprocess.run([a.kiln, "-C", d, "ps", "--json"], check=True,
                                       capture_output=True, text=True).stdout)
        ports = sorted(i["port"] for i in ps)
        prom_port = free_port()
        conf = os.path.join(d, "prometheus.yml")
        with open(conf, "w") as f:
            f.write(f"global:\n  scrape_interval: {int(a.interval * 1000)}ms\n  scrape_timeout: {int(a.interval * 1000)}ms\n"
                    "scrape_configs:\n  - job_name: t\n    static_configs:\n      - targets:\n")
            for p in ports:
                f.write(f"        - 127.0.0.1:{p}\n")
        prom_proc = subprocess.Popen(
            ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={d}/prom",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1d"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        prom_base = f"http://127.0.0.1:{prom_port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                get_json(prom_base + "/api/v1/status/buildinfo")
                break
            except Exception:
                time.sleep(0.2)
        print(f"live: {len(ports)} targets x {a.series} series, scraped every {a.interval} s by both, for {a.seconds} s")
        rss = {"kiln": [], "prometheus": []}
        started = time.monotonic()
        while time.monotonic() - started < a.seconds:
            time.sleep(10)
            if time.monotonic() - started >= a.seconds / 2:
                rss["kiln"].append(rss_kib(kiln_pid))
                rss["prometheus"].append(rss_kib(prom_proc.pid))
        now = time.time()
        count_q = 'count({__name__=~".+"})'
        appended = {
            "kiln": own_metric(kiln_base, kiln_h, "kiln_scrape_samples_total"),
            "prometheus": own_metric(prom_base, {}, "prometheus_tsdb_head_samples_appended_total"),
        }
        for name, base, h in (("kiln", kiln_base, kiln_h), ("prometheus", prom_base, {})):
            _, series = timed_query(base, h, "/api/v1/query", {"query": count_q, "time": now})
            print(f"  {name}: {series[0]['value'][1]} series, {appended[name]:.0f} samples appended, "
                  f"RSS median {statistics.median(rss[name]) / 1024:.0f} MiB (of {len(rss[name])} readings)")
        ratio = statistics.median(rss["kiln"]) / statistics.median(rss["prometheus"])
        print(f"  RSS ratio kiln/prometheus: {ratio:.2f}")
        print(f"  query latency over the last 5 min, range step 15 s, {a.runs} runs each, interleaved:")
        print(f"    {'query':<24} {'kiln p50':>9} {'kiln p99':>9} {'prom p50':>9} {'prom p99':>9} {'p99 ratio':>9}")
        for label, q in QUERIES:
            if a.query and label not in a.query:
                continue
            times = {"kiln": [], "prometheus": []}
            for _ in range(a.runs):
                for name, base, h in (("kiln", kiln_base, kiln_h), ("prometheus", prom_base, {})):
                    took, _ = timed_query(base, h, "/api/v1/query_range",
                                          {"query": q, "start": now - 300, "end": now, "step": 15})
                    times[name].append(took * 1000)
            p = {n: (statistics.median(v), statistics.quantiles(v, n=100)[98]) for n, v in times.items()}
            print(f"    {label:<24} {p['kiln'][0]:8.1f}ms {p['kiln'][1]:8.1f}ms {p['prometheus'][0]:8.1f}ms "
                  f"{p['prometheus'][1]:8.1f}ms {p['kiln'][1] / p['prometheus'][1]:9.2f}")
        print(f"  on disk now: kiln {dir_bytes(os.path.join(d, '.kiln/metrics')) / 1e6:.1f} MB, "
              f"prometheus {dir_bytes(os.path.join(d, 'prom')) / 1e6:.1f} MB (both mostly WAL this early; "
              "bytes per sample come from the replay)")
        kiln_cpu = cpu_seconds(kiln_pid)
        prom_cpu = cpu_seconds(prom_proc.pid)
        print(f"  CPU over the whole run: kiln {kiln_cpu:.0f} s, prometheus {prom_cpu:.0f} s")
    finally:
        if prom_proc:
            prom_proc.terminate()
            try:
                prom_proc.wait(30)
            except subprocess.TimeoutExpired:
                prom_proc.kill()
        subprocess.run([a.kiln, "-C", d, "down"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def own_metric(base, headers, name):
    """The sum of a metric's samples in a server's own /metrics."""
    req = urllib.request.Request(base + "/metrics", headers=headers)
    text = urllib.request.urlopen(req, timeout=60).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith(name) and not l.startswith("#"))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Ingress speed, side by side in one run: kiln's proxy vs nginx vs HAProxy in front of the same
upstream on loopback, and the upstream hit directly as the limit. wrk drives each at 1, 16 and
128 connections; targets are interleaved round by round so a noisy neighbour hurts them alike.
Reports medians over the rounds of requests/s and p50/p99 latency, and ratios against nginx,
with the spread of p99 over the rounds (it moves by a factor of two or more from round to round
on this 2-core machine) and, rounds being interleaved, in how many rounds each target's p99 was
below nginx's in the same round,
and the proxy's own CPU time per request (user + system, all its processes and threads, from
/proc): on a shared machine that figure moves much less than throughput does.

All three proxies do the same work per request: HTTP/1.1 keep-alive to the upstream, and
X-Forwarded-For/-Proto/-Host and X-Request-Id set on the way up. Each gets 2 workers (the
machine's cores): kiln's tokio runtime, nginx `worker_processes 2`, HAProxy `nbthread 2`.

Needs: `cargo build --release -p kiln-ingress --examples`, and the Debian packages nginx,
haproxy and wrk.

Usage: python3 benches/ingress.py [--rounds 3] [--seconds 5] [--conns 1,16,128]
       [--only kiln,nginx,haproxy,direct] [--body 13] [--kiln-threads N (default: cores)]
       [--kiln-before PATH]   (an older build of the `proxy` example, measured in the same run)
       [--post BYTES]   (POST requests with a body of BYTES instead of GETs: kiln sends a
                         request with a body upstream through hyper's client, not its own exchange)
"""
import argparse, os, re, shutil, socket, statistics, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "target/release/examples")

NGINX = """
daemon off;
master_process on;
user root;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"""

HAPROXY = """
global
  maxconn 4000
  nbthread 2
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  option forwardfor
  unique-id-format %{{+X}}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
  http-request set-header X-Request-Id %[unique-id]
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be
backend be
  server s1 127.0.0.1:{upstream}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def to_ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def cpu_seconds(root_pid):
    """User + system CPU of a process, its threads and its direct children (nginx workers)."""
    pids = [root_pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == root_pid:
                pids.append(int(entry))
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(port, conns, seconds, pid=None, script=None):
    threads = min(conns, 2)
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--latency"]
        + (["-s", script] if script else []) + [f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        print(f"    ! errors on port {port}: {errors and errors.group(0)} {socket_errors and socket_errors.group(0)}")
    return rps, p50, p99, cpu / max(requests, 1) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", default="1,16,128")
    ap.add_argument("--only", default="direct,kiln,nginx,haproxy")
    ap.add_argument("--body", type=int, default=13, help="upstream response body bytes")
    ap.add_argument("--kiln-before", help="an older `proxy` example binary to compare with")
    ap.add_argument("--post", type=int, help="POST requests with a body of this many bytes")
    ap.add_argument("--kiln-threads", type=int, default=os.cpu_count() or 1,
                    help="serving threads, as the control plane uses one per core "
                         "(0: one multi-threaded tokio runtime)")
    a = ap.parse_args()
    for tool in ("wrk", "nginx", "haproxy"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is missing: apt-get install -y nginx haproxy wrk")
    conns = [int(c) for c in a.conns.split(",")]
    only = a.only.split(",")
    procs = []
    with tempfile.TemporaryDirectory() as d:
        try:
            upstream = free_port()
            up = subprocess.Popen([os.path.join(EXAMPLES, "bench_upstream"),
                                   f"127.0.0.1:{upstream}", str(a.body)], stderr=subprocess.DEVNULL)
            procs.append(up)
            wait_port(upstream, up)
            targets = {"direct": upstream}
            pids = {"direct": up.pid}
            # Both kiln builds serve the same way (older builds ignore the variable).
            env = dict(os.environ)
            if a.kiln_threads:
                env["KILN_INGRESS_THREADS"] = str(a.kiln_threads)
            else:
                env.pop("KILN_INGRESS_THREADS", None)
            if "kiln" in only:
                port = free_port()
                p = subprocess.Popen([os.path.join(EXAMPLES, "proxy"), f"127.0.0.1:{port}",
                                      f"127.0.0.1:{upstream}"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(p)
                wait_port(port, p)
                targets["kiln"] = port
                pids["kiln"] = p.pid
            if a.kiln_before:
                port = free_port()
                p = subprocess.Popen([a.kiln_before, f"127.0.0.1:{port}", f"127.0.0.1:{upstream}"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(p)
                wait_port(port, p)
                targets["kiln-before"] = port
                pids["kiln-before"] = p.pid
                only.append("kiln-before")
            if "nginx" in only:
                port = free_port()
                conf = os.path.join(d, "nginx.conf")
                open(conf, "w").write(NGINX.format(d=d, upstream=upstream, port=port))
                nginx = shutil.which("nginx") or "/usr/sbin/nginx"
                p = subprocess.Popen([nginx, "-p", d, "-c", conf], stderr=subprocess.DEVNULL)
                procs.append(p)
                wait_port(port, p)
                targets["nginx"] = port
                pids["nginx"] = p.pid
            if "haproxy" in only:
                port = free_port()
                conf = os.path.join(d, "haproxy.cfg")
                open(conf, "w").write(HAPROXY.format(upstream=upstream, port=port))
                haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
                p = subprocess.Popen([haproxy, "-db", "-f", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(p)
                wait_port(port, p)
                targets["haproxy"] = port
                pids["haproxy"] = p.pid
            names = [n for n in ("direct", "kiln-before", "kiln", "nginx", "haproxy")
                     if n in targets and n in only]
            script = None
            if a.post is not None:
                script = os.path.join(d, "post.lua")
                with open(script, "w") as f:
                    f.write(f'wrk.method = "POST"\nwrk.body = string.rep("x", {a.post})\n')
            print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
            results = {}
            for c in conns:
                for name in names:  # warm pools and caches
                    wrk(targets[name], c, 1, pids[name], script)
                for r in range(a.rounds):
                    for name in names:
                        res = wrk(targets[name], c, a.seconds, pids[name], script)
                        results.setdefault((name, c), []).append(res)
                        print(f"  c={c} round {r + 1} {name}: {res[0]:.0f} req/s, "
                              f"p50 {res[1]:.3f} ms, p99 {res[2]:.3f} ms, "
                              f"{res[3]:.1f} us CPU/request", flush=True)
            print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
            print()
            print("| connections | target | requests/s | p50 | p99 | CPU/request | req/s vs nginx | p99 vs nginx |")
            print("|---|---|---|---|---|---|---|---|")
            for c in conns:
                med = {n: tuple(statistics.median(x[i] for x in results[(n, c)]) for i in range(4))
                       for n in names}
                for n in names:
                    rps, p50, p99, cpu = med[n]
                    vs = (f"{rps / med['nginx'][0]:.2f}", f"{p99 / med['nginx'][2]:.2f}") \
                        if "nginx" in med else ("-", "-")
                    p99s = [x[2] for x in results[(n, c)]]
                    spread = f" ({min(p99s):.2f}–{max(p99s):.2f})" if len(p99s) > 1 else ""
                    print(f"| {c} | {n} | {rps:,.0f} | {p50:.3f} ms | {p99:.3f} ms{spread} | {cpu:.1f} µs | {vs[0]} | {vs[1]} |")
            if "nginx" in names and a.rounds > 1:
                print()
                for c in conns:
                    paired = []
                    for n in names:
                        if n == "nginx":
                            continue
                        below = sum(x[2] < y[2] for x, y in zip(results[(n, c)], results[("nginx", c)]))
                        paired.append(f"{n} {below}/{a.rounds}")
                    print(f"c={c}: rounds with p99 below nginx's in the same round: {', '.join(paired)}")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""System calls, context switches and CPU migrations per proxied request, kiln's proxy against
nginx with benches/ingress.py's configuration, in front of the same upstream on loopback.

Counted by the kernel (`perf stat` on the syscall tracepoints of the proxy's processes and
threads only, not wrk's or the upstream's), so the figures do not move with the machine's load
the way requests/s does. One `wrk -t1 -cC -dSs` run per measurement after a 1 s warm-up; the
targets alternate round by round. Reads that found nothing (EAGAIN) are counted apart.

Needs: `cargo build --release -p kiln-ingress --examples`, perf (linux-perf), nginx, wrk.

Usage: python3 benches/ingress_syscalls.py [--conns 1,16] [--seconds 3] [--rounds 2]
       [--targets kiln:2,kiln:0,nginx]  (kiln:N = KILN_INGRESS_THREADS=N; kiln:0 = unset, one
       multi-threaded runtime) [--proxy PATH] [--before PATH] (kiln-before:N, an older build)
       [--per-thread] [--post BYTES]  (POST requests with a body of BYTES, which take hyper's
       client upstream rather than kiln's own exchange)
"""
import argparse, os, re, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingress  # noqa: E402  (the bench's nginx configuration and helpers)

CALLS = ["read", "recvfrom", "recvmsg", "readv", "write", "writev", "sendto", "sendmsg",
         "epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "accept4", "close", "shutdown",
         "setsockopt", "getsockopt", "getpid", "clock_gettime", "timerfd_settime", "ioctl",
         "connect", "socket", "sched_yield", "mmap", "munmap", "madvise", "brk", "mprotect"]
EAGAIN_ON = ["read", "recvfrom", "recvmsg", "readv", "accept4"]


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def wrk_args(script):
    return ["-s", script] if script else []


def measure(pids, port, conns, seconds, per_thread, script=None):
    events = ["context-switches", "cpu-migrations", "task-clock", "raw_syscalls:sys_enter"]
    events += [f"syscalls:sys_enter_{c}" for c in CALLS]
    cmd = ["perf", "stat", "-x", ";", "-p", ",".join(map(str, pids))]
    for e in events:
        cmd += ["-e", e]
    for c in EAGAIN_ON:
        cmd += ["-e", f"syscalls:sys_exit_{c}", "--filter", "ret == -11"]
    if per_thread:
        cmd.append("--per-thread")
    perf = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", *wrk_args(script),
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         check=True).stdout
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    counts = {}
    for line in err.splitlines():
        f = line.split(";")
        if len(f) < 3:
            continue
        if per_thread:
            thread, value, event = f[0], f[1], f[3]
        else:
            thread, value, event = "", f[0], f[2]
        try:
            v = float(value)
        except ValueError:
            continue
        name = event.replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all")
        name = name.replace("syscalls:sys_exit_", "EAGAIN ")
        counts[(thread, name)] = counts.get((thread, name), 0) + v
    return requests, counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", default="1,16")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--targets", default="kiln:2,kiln:0,nginx")
    ap.add_argument("--proxy", default=os.path.join(ingress.EXAMPLES, "proxy"))
    ap.add_argument("--before", help="an older build of the `proxy` example (kiln-before:N)")
    ap.add_argument("--per-thread", action="store_true")
    ap.add_argument("--post", type=int, help="POST bodies of this many bytes")
    a = ap.parse_args()
    for tool in ("wrk", "perf"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    procs = []
    with tempfile.TemporaryDirectory() as d:
        try:
            upstream = ingress.free_port()
            up = subprocess.Popen([os.path.join(ingress.EXAMPLES, "bench_upstream"),
                                   f"127.0.0.1:{upstream}", "13"], stderr=subprocess.DEVNULL)
            procs.append(up)
            ingress.wait_port(upstream, up)
            targets = []
            for t in a.targets.split(","):
                name, _, threads = t.partition(":")
                port = ingress.free_port()
                if name in ("kiln", "kiln-before"):
                    env = dict(os.environ)
                    env.pop("KILN_INGRESS_THREADS", None)
                    if threads and threads != "0":
                        env["KILN_INGRESS_THREADS"] = threads
                    binary = a.proxy if name == "kiln" else a.before
                    p = subprocess.Popen([binary, f"127.0.0.1:{port}", f"127.0.0.1:{upstream}"],
                                         env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
                    procs.append(p)
                    ingress.wait_port(port, p)
                    label = f"{name} ({'multi-thread runtime' if threads in ('', '0') else 'per core, ' + threads + ' threads'})"
                    targets.append((label, port, lambda p=p: [p.pid]))
                elif name == "nginx":
                    conf = os.path.join(d, "nginx.conf")
                    open(conf, "w").write(ingress.NGINX.format(d=d, upstream=upstream, port=port))
                    p = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", d,
                                          "-c", conf], stderr=subprocess.DEVNULL)
                    procs.append(p)
                    ingress.wait_port(port, p)
                    targets.append(("nginx (2 workers)", port, lambda p=p: [p.pid] + children(p.pid)))
                else:
                    raise SystemExit(f"unknown target {t}")
            script = None
            if a.post is not None:
                script = os.path.join(d, "post.lua")
                open(script, "w").write(
                    f'wrk.method = "POST"\nwrk.body = string.rep("x", {a.post})\n')
            print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
            for c in [int(x) for x in a.conns.split(",")]:
                for label, port, pids in targets:
                    subprocess.run(["wrk", "-t1", f"-c{c}", "-d1s", *wrk_args(script),
                                    f"http://127.0.0.1:{port}/"],
                                   capture_output=True, check=True)
                for r in range(a.rounds):
                    for label, port, pids in targets:
                        n, counts = measure(pids(), port, c, a.seconds, a.per_thread, script)
                        shown = {k: v / n for k, v in counts.items()
                                 if v / n >= 0.005 or k[1] in ("all", "context-switches")}
                        cells = ", ".join(
                            f"{(k[0] + ' ') if k[0] else ''}{k[1]} "
                            + (f"{v * 1000:.1f} µs" if k[1] == "task-clock" else f"{v:.3f}")
                            for k, v in sorted(shown.items(), key=lambda kv: (kv[0][0], -kv[1])))
                        print(f"c={c} round {r + 1} {label}: {n} requests; per request: {cells}",
                              flush=True)
            print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
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

#!/usr/bin/env python3
"""`kiln ci run` side by side with plain bash running the same commands, in one run.

1. wide:  20 independent jobs x 10 trivial steps (`echo`), jobs 2 at a time (kiln's default
          limit is the number of cores; this machine has 2). Two bash peers: `inline` runs each
          step's command in the job's shell (the limit), `per-step` starts one `bash -e` per
          step as kiln and GitHub do.
2. graph: 100 jobs, fan-out/fan-in: root -> 98 jobs needing root -> final needing all 98;
          every job is one `sleep D` step. The ideal on 2 cores is (1 + 49 + 1) x D; bash runs
          root, the 98 in pairs, then final.
3. npm:   examples/shop's lockfile: checkout, setup-node with `cache: npm`, `npm ci`; a cold
          run (cache miss: npm downloads) vs a warm one (~/.npm restored by the cache).

Usage: python3 benches/pipelines.py [--runs 5] [--kiln target/release/kiln] [--sleep 0.1] [--no-npm]
                                   [--kiln-before OLD_BINARY] [--only wide|graph|npm]
`--kiln-before` adds an older build to the wide table, run interleaved with the others.
Prints Markdown tables of medians; per-step overhead is (kiln - bash) / steps per lane (100).
"""
import argparse, json, os, resource, shutil, statistics, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, cwd, env=None, check=True):
    out = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and out.returncode != 0:
        raise SystemExit(f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def timed(cmd, cwd, env=None):
    """Wall seconds and CPU seconds (user + sys of the process tree) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    sh(cmd, cwd, env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def medians(runs, *fs):
    """Runs each f once per round, interleaved (so a busy moment hits all of them alike);
    returns the (wall, CPU) medians of each."""
    results = [[] for _ in fs]
    for _ in range(runs):
        for r, f in zip(results, fs):
            r.append(f())
    return [(statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)) for r in results]


def git_repo(dir, files):
    os.makedirs(dir, exist_ok=True)
    for path, text in files.items():
        p = os.path.join(dir, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    sh(["git", "init", "-q", "-b", "main"], dir, env)
    sh(["git", "add", "-A"], dir, env)
    sh(["git", "commit", "-qm", "bench"], dir, env)


def wide_workflow(jobs, steps):
    out = "on: push\njobs:\n"
    for j in range(jobs):
        out += f"  j{j}:\n    runs-on: ubuntu-latest\n    steps:\n"
        for s in range(steps):
            out += f"      - run: echo \"job {j} step {s}\"\n"
    return out


def wide_bash(jobs, steps, per_step):
    out = "#!/bin/bash\nset -e\n"
    for j in range(jobs):
        out += f"j{j}() {{\n"
        for s in range(steps):
            cmd = f'echo "job {j} step {s}"'
            out += f"  bash -e -c '{cmd}'\n" if per_step else f"  {cmd}\n"
        out += "}\n"
    for j in range(0, jobs, 2):
        out += f"j{j} > /dev/null & j{j + 1} > /dev/null & wait\n"
    return out


def graph_workflow(middle, d):
    out = f"on: push\njobs:\n  root:\n    runs-on: ubuntu-latest\n    steps: [ {{ run: sleep {d} }} ]\n"
    for m in range(middle):
        out += f"  m{m}:\n    needs: root\n    runs-on: ubuntu-latest\n    steps: [ {{ run: sleep {d} }} ]\n"
    needs = ", ".join(f"m{m}" for m in range(middle))
    out += f"  final:\n    needs: [{needs}]\n    runs-on: ubuntu-latest\n    steps: [ {{ run: sleep {d} }} ]\n"
    return out


def graph_bash(middle, d):
    out = f"#!/bin/bash\nset -e\nbash -e -c 'sleep {d}'\n"
    for m in range(0, middle, 2):
        out += f"bash -e -c 'sleep {d}' & bash -e -c 'sleep {d}' & wait\n"
    out += f"bash -e -c 'sleep {d}'\n"
    return out


NPM_WORKFLOW = """on: push
jobs:
  deps:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with: { node-version: 20, cache: npm }
      - run: npm ci --prefer-offline --no-audit --no-fund
"""


def step_times(kiln, repo, run_id):
    shown = json.loads(sh([kiln, "-C", repo, "ci", "show", str(run_id), "--json"], repo).stdout)
    steps = shown["jobs"][0]["steps"]
    return {s["name"]: s["duration_ms"] / 1000 for s in steps}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--kiln", default=os.path.join(ROOT, "target/release/kiln"))
    p.add_argument("--sleep", type=float, default=0.1)
    p.add_argument("--no-npm", action="store_true")
    p.add_argument("--kiln-before", help="an older kiln binary, compared in the wide table")
    p.add_argument("--only", choices=["wide", "graph", "npm"])
    a = p.parse_args()
    kiln = os.path.abspath(a.kiln)
    print("load average at start: %.1f %.1f %.1f (2 cores)\n" % os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        if a.only in (None, "wide"):
            wide(a, kiln, tmp)
        if a.only in (None, "graph"):
            graph(a, kiln, tmp)
        if a.only in (None, "npm") and not a.no_npm:
            npm(a, kiln, tmp)


def wide(a, kiln, tmp):
    repo = os.path.join(tmp, "wide")
    git_repo(repo, {"kiln.yaml": "name: bench\nresources: {}\n",
                    ".github/workflows/ci.yml": wide_workflow(20, 10)})
    for name, per_step in (("inline", False), ("per-step", True)):
        with open(os.path.join(tmp, f"wide-{name}.sh"), "w") as f:
            f.write(wide_bash(20, 10, per_step))
    runners = [lambda: timed([kiln, "-C", repo, "ci", "run"], repo),
               lambda: timed(["bash", os.path.join(tmp, "wide-inline.sh")], tmp),
               lambda: timed(["bash", os.path.join(tmp, "wide-per-step.sh")], tmp)]
    if a.kiln_before:
        before = os.path.abspath(a.kiln_before)
        runners.append(lambda: timed([before, "-C", repo, "ci", "run"], repo))
    k, inline, per, *old = medians(a.runs, *runners)
    print(f"## 20 jobs x 10 steps (200 steps, 2 jobs at a time), medians of {a.runs}\n")
    print("| runner | wall | CPU (user+sys) | kiln overhead per step (wall, per lane of 100 steps) | kiln CPU per step |")
    print("|---|---|---|---|---|")
    print(f"| kiln ci run | {k[0]:.3f} s | {k[1]:.3f} s | | |")
    for name, r in (("bash inline (the limit)", inline), ("bash, one `bash -e` per step", per)):
        print(f"| {name} | {r[0]:.3f} s | {r[1]:.3f} s | {(k[0] - r[0]) / 100 * 1000:.2f} ms | {(k[1] - r[1]) / 200 * 1000:.2f} ms |")
    for r in old:
        print(f"| kiln ci run (before: {a.kiln_before}) | {r[0]:.3f} s | {r[1]:.3f} s | "
              f"{(r[0] - inline[0]) / 100 * 1000:.2f} ms over inline bash | {(r[1] - per[1]) / 200 * 1000:.2f} ms over per-step bash |")


def graph(a, kiln, tmp):
    repo = os.path.join(tmp, "graph")
    git_repo(repo, {"kiln.yaml": "name: bench\nresources: {}\n",
                    ".github/workflows/ci.yml": graph_workflow(98, a.sleep)})
    with open(os.path.join(tmp, "graph.sh"), "w") as f:
        f.write(graph_bash(98, a.sleep))
    ideal = (1 + 49 + 1) * a.sleep
    kg, bg = medians(
        a.runs,
        lambda: timed([kiln, "-C", repo, "ci", "run"], repo),
        lambda: timed(["bash", os.path.join(tmp, "graph.sh")], tmp))
    print(f"\n## 100-job fan-out/fan-in, each job `sleep {a.sleep}`, 2 cores, medians of {a.runs}\n")
    print(f"Critical path on 2 cores: (1 + 49 + 1) x {a.sleep} s = {ideal:.2f} s\n")
    print("| runner | wall | vs critical path | CPU (user+sys) |")
    print("|---|---|---|---|")
    for name, r in (("kiln ci run", kg), ("bash (pairs + wait)", bg)):
        print(f"| {name} | {r[0]:.3f} s | +{(r[0] / ideal - 1) * 100:.1f} % | {r[1]:.3f} s |")



def npm(a, kiln, tmp):
    repo = os.path.join(tmp, "npm")
    shop = os.path.join(ROOT, "examples/shop")
    files = {"kiln.yaml": "name: bench\nresources: {}\n", ".github/workflows/ci.yml": NPM_WORKFLOW}
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(shop, name)) as f:
            files[name] = f.read()
    git_repo(repo, files)
    home = os.path.join(tmp, "home")
    env = dict(os.environ, HOME=home, npm_config_cache=os.path.join(home, ".npm"))
    run_id = 0
    rows = {"miss": [], "hit": []}
    runs = max(1, min(a.runs, 3))
    for _ in range(runs):
        for kind in ("miss", "hit"):
            if kind == "miss":
                shutil.rmtree(os.path.join(repo, ".kiln/cache"), ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
            os.makedirs(home)
            wall, _ = timed([kiln, "-C", repo, "ci", "run"], repo, env)
            run_id += 1
            t = step_times(kiln, repo, run_id)
            restore = next(v for n, v in t.items() if "setup-node" in n)
            npm = next(v for n, v in t.items() if "npm ci" in n)
            rows[kind].append((wall, restore, npm))
    print(f"\n## `npm ci` of examples/shop's lockfile with setup-node `cache: npm`, medians of {runs}\n")
    print("| cache | whole run | setup-node (restore) | npm ci |")
    print("|---|---|---|---|")
    for kind in ("miss", "hit"):
        r = rows[kind]
        print(f"| {kind} | {statistics.median(x[0] for x in r):.2f} s | {statistics.median(x[1] for x in r) * 1000:.0f} ms | {statistics.median(x[2] for x in r):.2f} s |")


if __name__ == "__main__":
    main()

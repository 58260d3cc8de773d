#!/usr/bin/env python3
"""Plan and no-op apply of N resources: kiln (file resources) side by side with Terraform
(terraform_data, its built-in resource: no provider download) in one run.

Usage: python3 benches/plan_apply.py [--n 10000] [--runs 5] [--kiln target/release/kiln]
Prints a Markdown table of medians (wall seconds, peak RSS) and kiln/Terraform ratios.
"""
import argparse, os, shutil, statistics, subprocess, tempfile, time


def timed(cmd, cwd, env=None):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS in MiB)."""
    start = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, cwd=cwd, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - start
    if out.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{out.stderr[-2000:]}")
    rss_kib = int(out.stderr.strip().splitlines()[-1])
    return elapsed, rss_kib / 1024


def median_of(runs, cmd, cwd, env=None):
    results = [timed(cmd, cwd, env) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def kiln_stack(dir, n):
    with open(os.path.join(dir, "kiln.yaml"), "w") as f:
        f.write("name: bench\nvars: { greeting: hello }\nresources:\n")
        for i in range(n):
            f.write(f"  r{i}: {{ kind: file, path: out/{i % 100}/r{i}, content: \"${{{{ vars.greeting }}}} {i}\" }}\n")


def terraform_stack(dir, n):
    with open(os.path.join(dir, "main.tf"), "w") as f:
        f.write('variable "greeting" {\n  default = "hello"\n}\n')
        for i in range(n):
            f.write(f'resource "terraform_data" "r{i}" {{\n  input = "${{var.greeting}} {i}"\n}}\n')


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--kiln", default=os.path.abspath("target/release/kiln"))
    p.add_argument("--no-terraform", action="store_true")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        k = os.path.join(tmp, "kiln")
        os.makedirs(k)
        kiln_stack(k, a.n)
        kiln = [a.kiln, "-C", k]
        create = timed(kiln + ["apply"], k)
        plan = median_of(a.runs, kiln + ["plan"], k)
        plan_nr = median_of(a.runs, kiln + ["plan", "--no-refresh"], k)
        noop = median_of(a.runs, kiln + ["apply"], k)
        rows.append(("kiln", create, plan, plan_nr, noop))
        if not a.no_terraform and shutil.which("terraform"):
            t = os.path.join(tmp, "tf")
            os.makedirs(t)
            terraform_stack(t, a.n)
            env = dict(os.environ, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
            subprocess.run(["terraform", "init", "-input=false"], cwd=t, env=env, check=True, stdout=subprocess.DEVNULL)
            tf = ["terraform"]
            create = timed(tf + ["apply", "-auto-approve", "-input=false", "-parallelism=10"], t, env)
            runs = max(1, min(a.runs, 3))
            plan = median_of(runs, tf + ["plan", "-input=false", "-parallelism=10"], t, env)
            plan_nr = median_of(runs, tf + ["plan", "-input=false", "-refresh=false", "-parallelism=10"], t, env)
            noop = median_of(runs, tf + ["apply", "-auto-approve", "-input=false", "-parallelism=10"], t, env)
            rows.append(("terraform", create, plan, plan_nr, noop))
    print(f"N = {a.n} resources; medians of {a.runs} runs (Terraform: up to 3); wall seconds / peak RSS MiB\n")
    print("| tool | create | plan (refresh) | plan --no-refresh | no-op apply |")
    print("|---|---|---|---|---|")
    for name, *cols in rows:
        print(f"| {name} | " + " | ".join(f"{s:.2f} s / {m:.0f} MiB" for s, m in cols) + " |")
    if len(rows) == 2:
        ratios = [rows[0][i][0] / rows[1][i][0] for i in range(1, 5)]
        print("| kiln / terraform | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()

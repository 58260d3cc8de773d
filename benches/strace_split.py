#!/usr/bin/env python3
"""Splits an `strace -f -qq -o FILE` trace by who made each call: the traced program's own
threads (pids that never exec), its spawned children before their `execve` (the vfork/fork
child's setup) and after it (the step's shell). Prints calls per step for each group.

Usage: strace -f -qq -o /tmp/t kiln -C REPO ci run; python3 benches/strace_split.py /tmp/t STEPS
"""
import collections, re, sys


def split(path, steps):
    lines = open(path).read().splitlines()
    calls = collections.defaultdict(list)
    for line in lines:
        m = re.match(r'(\d+)\s+(\w+)\(', line)
        if m:
            calls[m.group(1)].append(m.group(2))
    root = lines[0].split()[0]
    own, before, after = collections.Counter(), collections.Counter(), collections.Counter()
    for pid, made in calls.items():
        if pid != root and 'execve' in made:
            i = made.index('execve')
            before.update(made[:i])
            after.update(made[i:])
        else:
            own.update(made)
    for name, c in (("own threads", own), ("child before exec", before), ("child after exec", after)):
        top = ", ".join(f"{k} {v / steps:.1f}" for k, v in c.most_common(14))
        print(f"{name}: {sum(c.values()) / steps:.1f} per step: {top}")


if __name__ == "__main__":
    split(sys.argv[1], int(sys.argv[2]))

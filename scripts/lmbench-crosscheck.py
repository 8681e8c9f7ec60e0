#!/usr/bin/env python3
"""Cross-check the native figures of `cellvisor bench` against LMbench 3 itself.

usage: lmbench-crosscheck.py [--free] LMBENCH_SRC AGENT [ROUNDS]

LMBENCH_SRC is a local clone of the public LMbench 3 repository (github.com/intel/lmbench);
nothing of it is part of this project. The LMbench programs that match our microbenchmarks are
built into a temporary directory (lat_proc statically, as our agent is static; its exec target
is LMbench's own static hello), then LMbench and `AGENT micro` (cellvisor-agent, run natively)
alternate for ROUNDS rounds (default 3); the agent's fork+exec and fork+sh run LMbench's hello
too (`--exec`), so both time the same work. Prints, per figure, both medians over the rounds and
their ratio, and whether it lies within 20%. Both run pinned to CPU 0 (every process they
fork inherits it), as LMBENCH_SCHED=SINGLE would: on a machine where a wake-up on the other
CPU costs an IPI through the outer hypervisor, the round trips (pipe, ctx, fork+exit's wait)
are bimodal otherwise, and which mode a run lands in decides the figure. `--free` lets the
scheduler place them. Needs gcc and libtirpc-dev (LMbench's bench.h includes <rpc/rpc.h>).
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

LIB = "lib_timing.c lib_mem.c lib_stats.c lib_sched.c getopt.c lib_debug.c lib_unix.c".split()
CFLAGS = ["-O2", "-w", "-I/usr/include/tirpc", "-DHAVE_uint=1", "-DHAVE_int64_t=1",
          "-DHAVE_socklen_t"]

# (LMbench program and arguments, [(our figure, pattern of its answer)]); LMbench prints to
# stderr.
CASES = [
    (["lat_syscall", "-N", "11", "null"], [("null_syscall", r"Simple syscall: ([\d.]+)")]),
    (["lat_syscall", "-N", "11", "read"], [("null_read", r"Simple read: ([\d.]+)")]),
    (["lat_syscall", "-N", "11", "write"], [("null_write", r"Simple write: ([\d.]+)")]),
    (["lat_proc", "-N", "11", "fork"], [("fork_exit", r"fork\+exit: ([\d.]+)")]),
    (["lat_proc", "-N", "11", "exec"], [("fork_exec", r"fork\+execve: ([\d.]+)")]),
    (["lat_proc", "-N", "11", "shell"], [("fork_sh", r"fork\+/bin/sh -c: ([\d.]+)")]),
    (["lat_pipe", "-N", "11"], [("pipe_latency", r"Pipe latency: ([\d.]+)")]),
    (["lat_unix", "-N", "11"], [("unix_latency", r"sock stream latency: ([\d.]+)")]),
    (["lat_ctx", "-N", "11", "-s", "0", "2", "8", "16"],
     [("ctx_2", r"^2 ([\d.]+)"), ("ctx_8", r"^8 ([\d.]+)"), ("ctx_16", r"^16 ([\d.]+)")]),
    # LMbench's MB is 10^6 bytes; ours MiB: compared in MB/s.
    (["bw_pipe", "-N", "11"], [("pipe_bandwidth", r"Pipe bandwidth: ([\d.]+) MB/sec")]),
]
NAMES = [n for _, figs in CASES for n, _ in figs]


def build(src, out):
    progs = {"lat_syscall": [], "lat_pipe": [], "lat_unix": [], "lat_ctx": [], "bw_pipe": [],
             "lat_proc": ["-static", "-DSTATIC"]}
    for prog, extra in progs.items():
        libs = [] if "-static" in extra else ["-ltirpc"]
        subprocess.run(["gcc", *CFLAGS, *extra, "-o", os.path.join(out, prog), prog + ".c",
                        *LIB, "-lm", *libs], cwd=src, check=True)
    # lat_proc's static exec target is fixed at /tmp/hello-s.
    subprocess.run(["gcc", *CFLAGS, "-static", "-o", "/tmp/hello-s", "hello.c"], cwd=src,
                   check=True)


def lmbench(bindir, case):
    argv, figs = case
    p = subprocess.run([os.path.join(bindir, argv[0]), *argv[1:]], capture_output=True,
                       text=True, check=True, preexec_fn=PLACE)
    out = {}
    for name, pat in figs:
        m = re.search(pat, p.stdout + p.stderr, re.M)
        if not m:
            raise SystemExit(f"{argv[0]}: no figure in {p.stdout + p.stderr!r}")
        out[name] = float(m.group(1))
    return out


def ours(agent):
    # fork+exec and fork+sh run the same program as LMbench's: its static hello.
    p = subprocess.run([agent, "micro", "--interval-ms", "5", "--exec", "/tmp/hello-s"],
                       capture_output=True, text=True, check=True, preexec_fn=PLACE)
    figs = json.loads(p.stdout.strip().splitlines()[-1])["micro"]
    out = {f["name"]: f["median"] for f in figs}
    out["pipe_bandwidth"] *= 1.048576
    return out


# Where the benchmarks run: CPU 0 (default), or wherever the scheduler puts them (--free).
PLACE = None


def main():
    global PLACE
    args = sys.argv[1:]
    if "--free" in args:
        args.remove("--free")
    else:
        PLACE = lambda: os.sched_setaffinity(0, {0})  # noqa: E731
    if len(args) < 2:
        raise SystemExit(__doc__)
    src = os.path.join(args[0], "src")
    agent = os.path.abspath(args[1])
    rounds = int(args[2]) if len(args) > 2 else 3
    bindir = tempfile.mkdtemp(prefix="lmbench-")
    try:
        build(src, bindir)
        theirs = {n: [] for n in NAMES}
        mine = {n: [] for n in NAMES}
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}", file=sys.stderr)
            for c in CASES:
                for k, v in lmbench(bindir, c).items():
                    theirs[k].append(v)
            for k, v in ours(agent).items():
                if k in mine:
                    mine[k].append(v)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
        if os.path.exists("/tmp/hello-s"):
            os.remove("/tmp/hello-s")
    place = "free" if PLACE is None else "both pinned to CPU 0"
    print(f"native figures, cellvisor-agent micro vs LMbench 3 (median of {rounds} alternating rounds, {place})")
    print(f"{'figure':<16} {'unit':>6} {'LMbench':>10} {'ours':>10} {'ours/LMb':>9}  within 20%")
    inside = 0
    for name in NAMES:
        t, m = statistics.median(theirs[name]), statistics.median(mine[name])
        unit = "MB/s" if name == "pipe_bandwidth" else "us"
        ok = abs(m / t - 1) <= 0.20
        inside += ok
        print(f"{name:<16} {unit:>6} {t:>10.3f} {m:>10.3f} {m / t:>9.2f}  {'yes' if ok else 'NO'}")
    print(f"{inside} of {len(NAMES)} within 20%")


if __name__ == "__main__":
    main()

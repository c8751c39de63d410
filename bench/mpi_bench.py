#!/usr/bin/env python3
"""scripts/bench mpi: data-parallel training over MPI against one process, same machine, same
global batch, same cores, in one run, alternating (one process x T threads, mpirun -np R x T/R
threads, ...) for --rounds rounds.

Each run is `distill pretrain` on the KJV text for --steps steps; its throughput is the median of
the per-step tokens/s in metrics.jsonl after the first --skip steps. Under mpirun each step line
also has comm_s (the gradient all-reduce's wall time), reported as a share of the step.

Prints a table and one JSON summary line (also written to --json), with the CPU flags.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess

from hostinfo import cpu_info, cpu_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTILL = os.path.join(ROOT, "build", "distill")


def run(preset, ranks, threads, a, corpus):
    out = os.path.join(ROOT, "build", "bench-runs", f"mpi-{preset}-{ranks}")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    cmd = [DISTILL, "pretrain", corpus, "--out", out, "--preset", preset, "--steps", str(a.steps),
           "--batch-size", str(a.B), "--seq-len", str(a.T), "--grad-accum", str(a.accum),
           "--warmup", "2", "--eval-every", "0", "--eval-batches", "1", "--save-every", "0",
           "--threads", str(threads)]
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", a.bind,
               "-x", f"OMP_NUM_THREADS={threads}"] + cmd
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rates, comm = [], []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            j = json.loads(line)
            if "tokens_per_s" in j and j["step"] > a.skip:
                rates.append(j["tokens_per_s"])
                if "comm_s" in j:
                    comm.append(j["comm_s"] * j["tokens_per_s"] / (a.B * a.T * a.accum))
    return statistics.median(rates), (statistics.median(comm) if comm else 0.0)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="gpt2,llama")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="cores in all (ranks x threads/rank)")
    p.add_argument("--B", type=int, default=16)
    p.add_argument("--T", type=int, default=256)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--skip", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bind", default="core", help="mpirun --bind-to (core, none)")
    p.add_argument("--no-allreduce", action="store_true", help="skip the MPI_Allreduce table")
    p.add_argument("--json", default=os.path.join(ROOT, "build", "bench-mpi.json"))
    a = p.parse_args()
    corpus = os.path.join(ROOT, "build", "data", "kjv.txt")
    presets = {"gpt2": "gpt2-bench", "llama": "llama-bench"}
    per_rank = max(1, a.threads // a.ranks)
    cpu = cpu_info()
    print(cpu_line(cpu))
    print(f"global batch {a.B}x{a.T}x{a.accum}, {a.steps} steps, median of steps > {a.skip}; "
          f"{a.rounds} alternating rounds")
    summary = {"cpu": cpu, "B": a.B, "T": a.T, "accum": a.accum,
               "ranks": a.ranks, "threads": a.threads, "results": {}}
    print(f"{'config':8} {'1 proc x ' + str(a.threads) + ' thr':>16} "
          f"{str(a.ranks) + ' ranks x ' + str(per_rank) + ' thr':>18} {'ratio':>7} {'comm':>6}")
    for name in a.configs.split(","):
        one, many, comm = [], [], []
        for _ in range(a.rounds):
            one.append(run(presets[name], 1, a.threads, a, corpus)[0])
            r, c = run(presets[name], a.ranks, per_rank, a, corpus)
            many.append(r)
            comm.append(c)
        m1, m2 = statistics.median(one), statistics.median(many)
        share = statistics.median(comm)
        print(f"{name:8} {m1:>12.0f} tok/s {m2:>14.0f} tok/s {m2 / m1:>7.3f} {share:>6.1%}")
        summary["results"][name] = {"one_proc_tok_s": one, "mpi_tok_s": many,
                                    "ratio": m2 / m1, "comm_share": share}
    # The all-reduce alone (bench/allreduce_bench.cpp): gpt2-bench's gradient in one message and
    # in buckets, and the 0.5B shape's in dist.cpp's 2^22-float buckets.
    ab = os.path.join(ROOT, "build", "allreduce_bench")
    if os.path.exists(ab) and not a.no_allreduce:
        env = dict(os.environ)
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        print(f"\nMPI_Allreduce, {a.ranks} ranks (median of 5):")
        summary["allreduce"] = []
        for floats, buckets in ((13891584, [13891584, 1 << 24, 1 << 22, 1 << 20]),
                                (494032768, [1 << 22])):
            out = subprocess.run(["mpirun", "-np", str(a.ranks), "--oversubscribe", ab,
                                  str(floats)] + [str(b) for b in buckets], env=env, check=True,
                                 capture_output=True, text=True).stdout
            for l in out.splitlines():
                if l.startswith("{"):
                    j = json.loads(l)
                    summary["allreduce"].append(j)
                    print(f"  {j['floats'] * 4 / 1e6:8.0f} MB in buckets of "
                          f"{j['bucket'] * 4 / 1e6:6.1f} MB: {j['seconds'] * 1e3:8.1f} ms "
                          f"({j['GB_per_s']:.2f} GB/s)")
    line = json.dumps(summary)
    print(line)
    with open(a.json, "w") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()

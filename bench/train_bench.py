#!/usr/bin/env python3
"""scripts/bench train: distill against the PyTorch peer, same model, same machine, same threads,
in one run, alternating (ours, peer, ours, peer, ...) for --rounds rounds; then our bf16 mode
against our fp32, and the bf16 loss curve against the fp32 one over 200 real training steps.

Prints the CPU flags, a table and one JSON summary line (also written to --json). The peer runs
in its best configuration on this machine (../shared/PEERS.md): the OpenMP OpenBLAS, with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset in its own environment only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from hostinfo import cpu_info, cpu_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTILL = os.path.join(ROOT, "build", "distill")
PEER = os.path.join(ROOT, "bench", "train_torch.py")

CONFIGS = {
    # name: (distill preset, peer arguments)
    "gpt2": ("gpt2-bench", ["--arch", "gpt2", "--layers", "6", "--d", "384", "--heads", "6",
                            "--V", "8192"]),
    "llama": ("llama-bench", ["--arch", "llama", "--layers", "6", "--d", "384", "--heads", "6",
                              "--kv-heads", "2", "--ff", "1024", "--V", "8192", "--no-tie"]),
}


def run_json(cmd, env=None):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def ours(preset, precision, a):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    return run_json([DISTILL, "bench", "train", "--preset", preset, "--batch-size", str(a.B),
                     "--seq-len", str(a.T), "--steps", str(a.steps), "--warmup", "3",
                     "--precision", precision, "--threads", str(a.threads)], env)


def peer(args, a):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    env["LD_LIBRARY_PATH"] = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
    env["OMP_NUM_THREADS"] = str(a.threads)
    return run_json(["/usr/bin/python3", PEER] + args +
                    ["--T", str(a.T), "--B", str(a.B), "--steps", str(a.steps), "--warmup", "3",
                     "--threads", str(a.threads)], env)


def gemm_peak(precision, a):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    runs = [run_json([DISTILL, "bench", "gemm", "--size", "2048", "--precision", precision,
                      "--threads", str(a.threads)], env)["gflops"] for _ in range(3)]
    return max(runs)


def loss_tracking(a, corpus):
    """200 pretraining steps of the gpt2 bench model on real text in fp32 and in bf16."""
    result = {}
    for precision in ("f32", "bf16"):
        out = os.path.join(ROOT, "build", "bench-runs", "bf16-track-" + precision)
        subprocess.run(["rm", "-rf", out], check=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        subprocess.run([DISTILL, "pretrain", corpus, "--out", out, "--preset", "gpt2-bench",
                        "--steps", str(a.track_steps), "--batch-size", str(a.B), "--seq-len",
                        str(a.T), "--lr", "1e-3", "--warmup", "20", "--eval-every", "50",
                        "--eval-batches", "4", "--save-every", "0", "--precision", precision,
                        "--threads", str(a.threads)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        train, val = {}, {}
        with open(os.path.join(out, "metrics.jsonl")) as f:
            for line in f:
                j = json.loads(line)
                if "loss" in j:
                    train[j["step"]] = j["loss"]
                if "val_loss" in j:
                    val[j["step"]] = j["val_loss"]
        last = max(train)
        # The train loss of one batch is noisy: compare the mean of the last 10 steps.
        result[precision] = {"train_last10": statistics.mean(train[s] for s in range(last - 9, last + 1)),
                             "val": val[last]}
    f, b = result["f32"], result["bf16"]
    result["val_rel_diff"] = abs(b["val"] - f["val"]) / f["val"]
    result["train_rel_diff"] = abs(b["train_last10"] - f["train_last10"]) / f["train_last10"]
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--configs", default="gpt2,llama")
    ap.add_argument("--track-steps", type=int, default=200)
    ap.add_argument("--corpus", default=os.path.join(ROOT, "build", "data", "kjv.txt"))
    ap.add_argument("--no-track", action="store_true", help="skip the bf16 loss-tracking run")
    ap.add_argument("--json", default=os.path.join(ROOT, "build", "bench-train.json"))
    a = ap.parse_args()

    summary = {"threads": a.threads, "B": a.B, "T": a.T, "steps": a.steps, "rounds": a.rounds}
    summary["cpu"] = cpu_info()
    print(cpu_line(summary["cpu"]), flush=True)
    summary["gemm_peak_gflops"] = {"f32": gemm_peak("f32", a), "bf16": gemm_peak("bf16", a)}
    print(f"GEMM peak, {a.threads} threads, 2048^3: fp32 {summary['gemm_peak_gflops']['f32']:.0f} "
          f"GFLOP/s, bf16 {summary['gemm_peak_gflops']['bf16']:.0f} GFLOP/s", flush=True)
    for name in a.configs.split(","):
        preset, peer_args = CONFIGS[name]
        rows = {"distill_f32": [], "pytorch": [], "distill_bf16": []}
        gflops = {"distill_f32": [], "distill_bf16": []}
        for r in range(a.rounds):
            for key, fn in (("distill_f32", lambda: ours(preset, "f32", a)),
                            ("pytorch", lambda: peer(peer_args, a)),
                            ("distill_bf16", lambda: ours(preset, "bf16", a))):
                j = fn()
                rows[key].append(j["tokens_per_s"])
                if key in gflops:
                    gflops[key].append(j["gflops"])
                print(f"  {name} round {r + 1}: {key:13s} {j['tokens_per_s']:8.0f} tokens/s",
                      flush=True)
        pair_ratios = [o / p for o, p in zip(rows["distill_f32"], rows["pytorch"])]
        med = {k: statistics.median(v) for k, v in rows.items()}
        res = {
            "tokens_per_s": med,
            "ratio_f32_vs_pytorch": statistics.median(pair_ratios),
            "pair_ratios": pair_ratios,
            "ratio_bf16_vs_f32": med["distill_bf16"] / med["distill_f32"],
            "gflops_f32": statistics.median(gflops["distill_f32"]),
            "gflops_bf16": statistics.median(gflops["distill_bf16"]),
        }
        res["f32_fraction_of_gemm_peak"] = res["gflops_f32"] / summary["gemm_peak_gflops"]["f32"]
        summary[name] = res
        print(f"{name}: distill fp32 {med['distill_f32']:.0f} tok/s, PyTorch {med['pytorch']:.0f} "
              f"tok/s, ratio {res['ratio_f32_vs_pytorch']:.2f}x (pairs "
              f"{', '.join(f'{x:.2f}' for x in pair_ratios)}); "
              f"{res['gflops_f32']:.0f} GFLOP/s = {100 * res['f32_fraction_of_gemm_peak']:.0f}% "
              f"of fp32 GEMM peak; bf16 {med['distill_bf16']:.0f} tok/s = "
              f"{res['ratio_bf16_vs_f32']:.2f}x our fp32", flush=True)
    if not a.no_track:
        if not os.path.exists(a.corpus):
            sys.exit(f"error: corpus {a.corpus} not found (scripts/demo writes it)")
        t = loss_tracking(a, a.corpus)
        summary["bf16_loss_tracking"] = t
        print(f"bf16 vs fp32 after {a.track_steps} steps (gpt2-bench, real text): held-out "
              f"{t['bf16']['val']:.4f} vs {t['f32']['val']:.4f} ({100 * t['val_rel_diff']:.2f}%), "
              f"train (last 10) {t['bf16']['train_last10']:.4f} vs {t['f32']['train_last10']:.4f} "
              f"({100 * t['train_rel_diff']:.2f}%)", flush=True)
    with open(a.json, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A model of data-parallel training's cost at larger scale (docs/scaling.md).

Per optimizer step each of N ranks computes 6 * P * G / N FLOPs (forward + backward of a model of
P parameters over a global batch of G tokens; attention's T^2 term is left out, which flatters
compute at long context) and the ranks all-reduce P fp32 gradients. A ring all-reduce moves
2 (N-1)/N * 4P bytes in and out of every rank and takes 2 (N-1) latency-bound hops:

    t_comm = 2 (N-1)/N * 4P / bandwidth + 2 (N-1) * latency
    t_comp = 6 P G / (N * flops_per_rank * efficiency)

Without overlap a step takes t_comp + t_comm; with the all-reduce overlapped with the backward
pass (2/3 of t_comp), max(t_comp, t_comm + t_comp / 3). Scaling efficiency is the single-rank
step time over N times the step time.

Usage: tools/scaling_model.py [--json] (prints docs/scaling.md's table)
"""
import argparse
import json

NETWORKS = {  # name: (bytes/s per rank, latency s)
    "10 GbE": (1.25e9, 30e-6),
    "100 Gb/s IB": (12.5e9, 2e-6),
}
MODELS = {  # name: parameters
    "gpt2-bench 14M": 14.2e6,
    "0.5B (Qwen2.5-0.5B shape)": 494e6,
    "1B": 1.0e9,
}


def step(P, G, N, flops, eff, bw, lat, overlap):
    comp = 6.0 * P * G / (N * flops * eff)
    comm = 0.0 if N == 1 else 2.0 * (N - 1) / N * 4.0 * P / bw + 2.0 * (N - 1) * lat
    return max(comp, comm + comp / 3.0) if overlap else comp + comm


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flops", type=float, default=1.5e12,
                   help="fp32 FLOP/s of one rank (a 32-core AVX-512 socket at ~47 GFLOP/s/core)")
    p.add_argument("--efficiency", type=float, default=0.6, help="share of peak a step reaches")
    p.add_argument("--tokens", type=float, default=2**19, help="global batch in tokens")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = []
    for model, P in MODELS.items():
        for net, (bw, lat) in NETWORKS.items():
            for N in (8, 64, 256):
                one = step(P, a.tokens, 1, a.flops, a.efficiency, bw, lat, False)
                plain = step(P, a.tokens, N, a.flops, a.efficiency, bw, lat, False)
                over = step(P, a.tokens, N, a.flops, a.efficiency, bw, lat, True)
                comm = 2.0 * (N - 1) / N * 4.0 * P / bw + 2.0 * (N - 1) * lat
                rows.append({"model": model, "network": net, "ranks": N,
                             "grad_MB": 4 * P / 1e6, "comm_s": comm, "step_s": plain,
                             "eff": one / (N * plain), "eff_overlap": one / (N * over)})
    if a.json:
        print(json.dumps(rows))
        return
    print(f"global batch {a.tokens:.0f} tokens, {a.flops / 1e12:.2f} TFLOP/s per rank at "
          f"{a.efficiency:.0%}\n")
    print("| model | gradient | network | ranks | all-reduce | step | efficiency | overlapped |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['grad_MB']:.0f} MB | {r['network']} | {r['ranks']} | "
              f"{r['comm_s'] * 1e3:.1f} ms | {r['step_s']:.2f} s | {r['eff']:.0%} | "
              f"{r['eff_overlap']:.0%} |")


if __name__ == "__main__":
    main()

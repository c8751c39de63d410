#!/usr/bin/env python3
"""scripts/bench serve: `distill serve` under a bounded load on loopback, at several client
concurrencies (default 1, 2, 4, 8, 16), with wrk (Debian) holding C keep-alive connections, each
sending /v1/completions requests back to back for --seconds.

Reported per concurrency: requests/s, generated tokens/s (the server's own
distill_generated_tokens_total over the run, so it is what the engine produced, not an
assumption), p50 / p99 latency (wrk --latency), non-2xx answers, and the average number of
sequences per engine pass (batching at work). The last line is throughput growth from 1 to the
highest concurrency: batching concurrent requests into shared forward passes should make it grow
well beyond 1x.

The model is a small byte-level gpt2 (--preset, default gpt2-mini: 6 layers, width 256, 4.8M
parameters) briefly pretrained on the KJV text, so the bench needs nothing downloaded. The server and wrk share this machine's cores: on a busy machine
the figures are indicative.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(r"^" + re.escape(name) + r" ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def parse_wrk(out):
    def to_ms(v, unit):
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    lat = {}
    for p in ("50", "99"):
        m = re.search(r"^\s+" + p + r"%\s+([0-9.]+)(us|ms|s|m)\s*$", out, re.M)
        lat[p] = to_ms(*m.groups()) if m else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return rps, lat["50"], lat["99"], int(non2xx.group(1)) if non2xx else 0, errors.group(0) if errors else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distill", default=os.path.join(ROOT, "build", "distill"))
    ap.add_argument("--model", help="model directory to serve (default: pretrain --preset briefly)")
    ap.add_argument("--preset", default="gpt2-mini",
                    help="built-in shape pretrained for the bench when no --model is given")
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--seconds", type=int, default=4, help="load duration per concurrency and round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds over all concurrencies (medians reported: the machine may be shared)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP threads of the server (default 1: wrk needs the other core of a "
                         "2-core machine; two OMP threads that spin-wait against a busy load "
                         "generator lose far more than they gain)")
    ap.add_argument("--max-batch", type=int, default=16)
    a = ap.parse_args()

    work = os.path.join(ROOT, "build", "bench-serve")
    os.makedirs(work, exist_ok=True)
    model = a.model
    if not model:
        model = os.path.join(work, "pretrain-" + a.preset, "model")
        if not os.path.exists(os.path.join(model, "config.json")):
            corpus = os.path.join(ROOT, "build", "data", "kjv.txt")
            print(f"pretraining a small byte-level {a.preset} for the bench ...", file=sys.stderr)
            subprocess.run([a.distill, "pretrain", corpus, "--preset", a.preset, "--steps", "40",
                            "--batch-size", "8", "--seq-len", "128", "--eval-every", "1000",
                            "--save-every", "1000", "--out", os.path.join(work, "pretrain-" + a.preset)],
                           check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    server = subprocess.Popen([a.distill, "serve", "--model", model, "--model-name", "bench",
                               "--port", "0", "--max-batch", str(a.max_batch), "--max-queue", "1024"],
                              stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"),
                              env=env, text=True)
    try:
        line = server.stdout.readline()
        port = int(re.search(r":(\d+) ", line).group(1))
        body = json.dumps({"model": "bench", "prompt": "And God said, Let there be light",
                           "max_tokens": a.max_tokens, "temperature": 0.8})
        wenv = dict(os.environ, SERVE_BENCH_BODY=body)
        url = f"http://127.0.0.1:{port}/v1/completions"
        # Warm-up.
        subprocess.run(["wrk", "-t1", "-c1", "-d2s", "-s", os.path.join(ROOT, "bench", "serve_wrk.lua"), url],
                       env=wenv, check=True, capture_output=True)
        levels = [int(x) for x in a.concurrency.split(",")]
        print(f"distill serve, {a.preset if not a.model else a.model} byte-level, max_tokens {a.max_tokens}, {a.threads} OMP threads, "
              f"max batch {a.max_batch}, {a.seconds}s per level, {a.rounds} rounds over the levels "
              f"(medians; wrk on the same machine)")
        runs = {c: [] for c in levels}
        for r in range(a.rounds):
            for c in levels:
                tok0 = metric(port, "distill_generated_tokens_total")
                pass0 = metric(port, "distill_engine_passes_total")
                seq0 = metric(port, "distill_engine_sequences_total")
                t0 = time.time()
                out = subprocess.run(["wrk", f"-t{min(c, 2)}", f"-c{c}", f"-d{a.seconds}s", "--latency",
                                      "--timeout", "30s", "-s", os.path.join(ROOT, "bench", "serve_wrk.lua"), url],
                                     env=wenv, check=True, capture_output=True, text=True).stdout
                dt = time.time() - t0
                rps, p50, p99, non2xx, sock = parse_wrk(out)
                tok_s = (metric(port, "distill_generated_tokens_total") - tok0) / dt
                passes = metric(port, "distill_engine_passes_total") - pass0
                seqs = metric(port, "distill_engine_sequences_total") - seq0
                runs[c].append((rps, tok_s, p50, p99, seqs / passes if passes else 0.0, non2xx))
                print(f"  round {r + 1} clients {c:>2}: {rps:7.1f} req/s {tok_s:7.0f} tok/s  p50 {p50:7.1f} ms"
                      f"  p99 {p99:7.1f} ms  {(seqs / passes if passes else 0):5.2f} seq/pass  non-2xx {non2xx}"
                      + (f"  {sock}" if sock else ""), file=sys.stderr)
        med = lambda xs: statistics.median(xs)
        print(f"{'clients':>7} {'req/s':>9} {'gen tok/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'seq/pass':>9} {'non-2xx':>8}")
        for c in levels:
            col = list(zip(*runs[c]))
            print(f"{c:>7} {med(col[0]):>9.1f} {med(col[1]):>10.0f} {med(col[2]):>9.1f} {med(col[3]):>9.1f} "
                  f"{med(col[4]):>9.2f} {sum(col[5]):>8}")
        lo, hi = min(levels), max(levels)
        ratios = [h[0] / l[0] for l, h in zip(runs[lo], runs[hi]) if l[0] > 0]
        print(f"throughput {hi} clients / {lo} client: median {med([r[0] for r in runs[hi]]) / max(1e-9, med([r[0] for r in runs[lo]])):.2f}x"
              + (f" (per-round ratios: {', '.join(f'{x:.2f}' for x in ratios)})" if ratios else ""))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

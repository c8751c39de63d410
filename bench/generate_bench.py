#!/usr/bin/env python3
"""scripts/bench generate: distill's inference against llama.cpp, same model, same machine, same
threads, in one run.

For each model (the llama-bench and gpt2-bench presets of ../shared/PEERS.md, random weights, which
cost the same as trained ones), `distill bench generate --save-model` writes the model and
`distill export --type f32` turns it into a GGUF; both sides then load that one GGUF file. Each
round runs `distill bench generate` and bench/llama_gen_peer (llama.cpp through its C API) once
each, alternating which goes first, and each reports, per batch size, the median over --reps
repetitions of:
  pp: B prompts of P tokens processed from an empty KV cache, up to every sequence's first
      (greedy) token: B*P / time;
  tg: the next G tokens of every sequence, one decode step of B rows per token: B*G / time.
The table shows the medians over rounds and the median of the per-round ratios distill/llama.cpp.
Prints a table and one JSON summary line (also written to --json).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
DISTILL = os.path.join(BUILD, "distill")
PEER = os.path.join(BUILD, "llama_gen_peer")

# name: distill preset (vocabulary 8192, 6 layers, d 384; see src/model/presets.cpp)
CONFIGS = {"llama": "llama-bench", "gpt2": "gpt2-bench"}


def run_lines(cmd, env=None):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr.strip()}")
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


def prepare(name, preset, a):
    work = os.path.join(BUILD, "bench-generate")
    os.makedirs(work, exist_ok=True)
    model_dir = os.path.join(work, name)
    gguf = os.path.join(work, name + "-f32.gguf")
    subprocess.run(["rm", "-rf", model_dir], check=True)
    run_lines([DISTILL, "bench", "generate", "--preset", preset, "--seed", "1",
               "--save-model", model_dir])
    subprocess.run([DISTILL, "export", "--model", model_dir, "--format", "gguf", "--type", "f32",
                    "--tokenizer", "bytes", "--out", gguf], check=True, stdout=subprocess.DEVNULL)
    return gguf


def common_args(a):
    return ["--batches", a.batches, "--prompt-tokens", str(a.prompt_tokens), "--gen-tokens",
            str(a.gen_tokens), "--reps", str(a.reps)]


def ours(gguf, a):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    return run_lines([DISTILL, "bench", "generate", "--model", gguf, "--threads", str(a.threads)] +
                     common_args(a), env)


def peer(gguf, a):
    return run_lines([PEER, gguf, "--threads", str(a.threads)] + common_args(a))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per process and batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    # The gpt2 preset has 256 positions: prompt + generated tokens + 1 must fit.
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=96)
    ap.add_argument("--configs", default="llama,gpt2")
    ap.add_argument("--json", default=os.path.join(BUILD, "bench-generate.json"))
    a = ap.parse_args()
    if not os.path.exists(PEER):
        sys.exit("error: build/llama_gen_peer is missing: install the llama.cpp peer with "
                 "(cd tests/interop && npm ci --ignore-scripts --omit=optional) and rebuild")

    summary = {"threads": a.threads, "prompt_tokens": a.prompt_tokens,
               "gen_tokens": a.gen_tokens, "rounds": a.rounds, "reps": a.reps,
               "weights": "f32 (GGUF exported by distill, loaded by both)",
               "peer": "llama.cpp (node-llama-cpp 3.21.1 prebuilt, C API, default context "
                       "settings: f16 KV cache, flash attention auto)"}
    print(f"prompt {a.prompt_tokens} tokens, {a.gen_tokens} generated tokens per sequence, "
          f"{a.threads} threads, {a.rounds} rounds x {a.reps} repetitions", flush=True)
    for name in a.configs.split(","):
        gguf = prepare(name, CONFIGS[name], a)
        runs = {}  # (side, batch) -> list of per-round {"pp":, "tg":}
        for r in range(a.rounds):
            order = [("distill", ours), ("llama.cpp", peer)]
            if r % 2:
                order.reverse()
            for side, fn in order:
                for j in fn(gguf, a):
                    runs.setdefault((side, j["batch"]), []).append(
                        {"pp": j["pp_tokens_per_s"], "tg": j["tg_tokens_per_s"]})
                    print(f"  {name} round {r + 1} {side:9s} batch {j['batch']}: "
                          f"pp {j['pp_tokens_per_s']:8.0f} tok/s, tg {j['tg_tokens_per_s']:7.0f} "
                          f"tok/s", flush=True)
        res = {}
        for b in [int(x) for x in a.batches.split(",")]:
            ours_r, peer_r = runs[("distill", b)], runs[("llama.cpp", b)]
            entry = {}
            for k in ("pp", "tg"):
                pairs = [o[k] / p[k] for o, p in zip(ours_r, peer_r)]
                entry[k] = {"distill": statistics.median(o[k] for o in ours_r),
                            "llama.cpp": statistics.median(p[k] for p in peer_r),
                            "ratio": statistics.median(pairs), "pair_ratios": pairs}
            res[f"batch{b}"] = entry
            print(f"{name} batch {b}: pp distill {entry['pp']['distill']:.0f} vs llama.cpp "
                  f"{entry['pp']['llama.cpp']:.0f} tok/s = {entry['pp']['ratio']:.2f}x; "
                  f"tg distill {entry['tg']['distill']:.0f} vs llama.cpp "
                  f"{entry['tg']['llama.cpp']:.0f} tok/s = {entry['tg']['ratio']:.2f}x", flush=True)
        summary[name] = res
    with open(a.json, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

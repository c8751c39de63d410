#!/usr/bin/env python3
"""scripts/bench generate: distill's inference against llama.cpp, same model, same machine, same
threads, in one run.

The peer is llama.cpp at its best here: built natively (-march=native, by bench/build_llama_native,
from the source bundle npm's node-llama-cpp ships) and driven through its C API by
bench/llama_gen_peer.cpp. The same program linked with node-llama-cpp's prebuilt libraries (what a
user gets from npm: ggml's zen4 CPU variant) is the second column.

For each model (the llama-bench and gpt2-bench presets of ../shared/PEERS.md and llama-110m, a
113M-parameter llama whose weights do not fit in cache; random weights, which cost the same as
trained ones) and each weight type (--types, default f32, bf16, q8_0), `distill bench generate
--save-model` writes the model and `distill export --type T` turns it into a GGUF; every side
then loads that one GGUF file, distill with --weights T. Each
round runs `distill bench generate`, the native peer and the prebuilt peer once each, rotating
which goes first, and each reports, per batch size, the median over --reps repetitions of:
  pp: B prompts of P tokens processed from an empty KV cache, up to every sequence's first
      (greedy) token: B*P / time;
  tg: the next G tokens of every sequence, one decode step of B rows per token: B*G / time.
The table shows the medians over rounds and the median of the per-round ratios distill/peer.
As a check that the C-API peer gives llama.cpp its best, llama.cpp's own llama-bench (native build)
then runs on the same GGUF at batch 1: pp P from an empty cache, tg G from an empty cache and at
depth P (the peer's shape: generation after the prompt).
Prints a table, a closing note (CPU flags, load, llama.cpp commit, native build time) and one JSON
summary line (also written to --json).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from hostinfo import cpu_info, cpu_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
DISTILL = os.path.join(BUILD, "distill")
NATIVE = os.path.join(BUILD, "llama.cpp-native")
PEERS = {"native": os.path.join(NATIVE, "peer", "llama_gen_peer"),
         "prebuilt": os.path.join(BUILD, "llama_gen_peer")}
LLAMA_BENCH = os.path.join(NATIVE, "build", "bin", "llama-bench")

# name: distill preset (src/model/presets.cpp): the two bench shapes of ../shared/PEERS.md
# (vocabulary 8192, 6 layers, d 384, 16-18M parameters: their f32 weights fit in this machine's L3)
# and llama-110m (16 layers, d 768, 113M parameters, 453 MB in f32: streamed from memory).
CONFIGS = {"llama": "llama-bench", "gpt2": "gpt2-bench", "llama110m": "llama-110m"}


def run_lines(cmd, env=None):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr.strip()}")
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def prepare(name, preset, wtype):
    """The model's GGUF with its matrices in `wtype` (norms f32), written by distill export; every
    side loads it, and distill runs it with --weights wtype (a q8_0 GGUF then runs with its own
    bytes: distill's q8_0 is ggml's)."""
    work = os.path.join(BUILD, "bench-generate")
    os.makedirs(work, exist_ok=True)
    model_dir = os.path.join(work, name)
    gguf = os.path.join(work, f"{name}-{wtype}.gguf")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        run_lines([DISTILL, "bench", "generate", "--preset", preset, "--seed", "1",
                   "--save-model", model_dir])
    subprocess.run([DISTILL, "export", "--model", model_dir, "--format", "gguf", "--type", wtype,
                    "--tokenizer", "bytes", "--out", gguf], check=True, stdout=subprocess.DEVNULL)
    return gguf


def common_args(a):
    return ["--batches", a.batches, "--prompt-tokens", str(a.prompt_tokens), "--gen-tokens",
            str(a.gen_tokens), "--reps", str(a.reps)]


def ours(gguf, a, wtype):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    return run_lines([DISTILL, "bench", "generate", "--model", gguf, "--threads", str(a.threads),
                      "--weights", wtype, "--kv-cache", a.kv_cache] + common_args(a), env)


def peer_runner(path):
    def run(gguf, a, wtype):
        return run_lines([path, gguf, "--threads", str(a.threads)] + common_args(a))
    return run


def llama_bench(gguf, a):
    """llama.cpp's own llama-bench, batch 1, default settings but the thread count: tok/s
    (median of its repetitions) for pp P, tg G from an empty cache and tg G at depth P."""
    base = [LLAMA_BENCH, "-m", gguf, "-t", str(a.threads), "-r", str(a.reps), "-o", "json"]
    res = {}
    for args in (["-p", str(a.prompt_tokens), "-n", "0"],
                 ["-p", "0", "-n", str(a.gen_tokens), "-d", f"0,{a.prompt_tokens}"]):
        out = subprocess.run(base + args, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: llama-bench failed:\n{out.stderr.strip()[-2000:]}")
        for t in json.loads(out.stdout):
            key = (f"pp{t['n_prompt']}" if t["n_prompt"] else f"tg{t['n_gen']}") + \
                  (f"@d{t['n_depth']}" if t.get("n_depth") else "")
            res[key] = statistics.median(t["samples_ts"])
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per process and batch")
    ap.add_argument("--quick", action="store_true",
                    help="development run: 1 round, 2 repetitions, 32 generated tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    # The gpt2 preset has 256 positions: prompt + generated tokens + 1 must fit.
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=96)
    ap.add_argument("--configs", default="llama,gpt2,llama110m")
    ap.add_argument("--types", default="f32,bf16,q8_0",
                    help="weight types of the linear layers (f32, bf16, f16, q8_0), same on every side")
    ap.add_argument("--kv-cache", default="f16",
                    help="distill's KV cache type (default f16: what llama.cpp's default context "
                         "holds, so both sides read the same bytes per cached position)")
    ap.add_argument("--peers", default="native,prebuilt",
                    help="llama.cpp builds to compare with, the first is the main column")
    ap.add_argument("--no-llama-bench", action="store_true", help="skip llama-bench's own figures")
    ap.add_argument("--json", default=os.path.join(BUILD, "bench-generate.json"))
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.reps, a.gen_tokens = 1, 2, 32
    peers = [p for p in a.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            sys.exit(f"error: unknown peer {p} (native, prebuilt)")
        if not os.path.exists(PEERS[p]):
            sys.exit(f"error: {PEERS[p]} is missing: " +
                     ("run bench/build_llama_native" if p == "native" else
                      "install the llama.cpp peer with (cd tests/interop && npm ci "
                      "--ignore-scripts --omit=optional) and rebuild"))
    run_llama_bench = not a.no_llama_bench and "native" in peers
    sides = [("distill", ours)] + [(p, peer_runner(PEERS[p])) for p in peers]
    main_peer = peers[0]

    native_info = {}
    if os.path.exists(os.path.join(NATIVE, "info.json")):
        with open(os.path.join(NATIVE, "info.json")) as f:
            native_info = json.load(f)
    cpu = cpu_info()
    summary = {"threads": a.threads, "prompt_tokens": a.prompt_tokens,
               "gen_tokens": a.gen_tokens, "rounds": a.rounds, "reps": a.reps,
               "weights": "per table row: the GGUF's matrix type (exported by distill, loaded by "
                          "every side; distill runs it with --weights of that type)",
               "kv_cache": f"distill {a.kv_cache}, llama.cpp f16",
               "peer": f"llama.cpp {main_peer} ('llama.cpp' and 'ratio' below), C API, default "
                       "context settings: f16 KV cache, flash attention auto",
               "peers": {"native": "llama.cpp built from node-llama-cpp 3.21.1's source bundle "
                                   "with GGML_NATIVE=ON (bench/build_llama_native)",
                         "prebuilt": "node-llama-cpp 3.21.1's prebuilt libraries (zen4 CPU "
                                     "variant on this machine)"},
               "llama_cpp_native": native_info, "cpu": cpu, "load_before": load_average()}
    print(f"prompt {a.prompt_tokens} tokens, {a.gen_tokens} generated tokens per sequence, "
          f"{a.threads} threads, {a.rounds} rounds x {a.reps} repetitions, KV cache {a.kv_cache} "
          f"(llama.cpp f16); load {load_average()}",
          flush=True)
    tables = {}
    for name, wtype in [(n, t) for n in a.configs.split(",") for t in a.types.split(",")]:
        gguf = prepare(name, CONFIGS[name], wtype)
        key = f"{name}-{wtype}"
        runs = {}  # (side, batch) -> list of per-round {"pp":, "tg":}
        for r in range(a.rounds):
            k = r % len(sides)
            for side, fn in sides[k:] + sides[:k]:
                for j in fn(gguf, a, wtype):
                    if "system_info" in j:
                        summary.setdefault("system_info", {})[side] = j["system_info"]
                    runs.setdefault((side, j["batch"]), []).append(
                        {"pp": j["pp_tokens_per_s"], "tg": j["tg_tokens_per_s"]})
                    print(f"  {key} round {r + 1} {side:8s} batch {j['batch']}: "
                          f"pp {j['pp_tokens_per_s']:8.0f} tok/s, tg {j['tg_tokens_per_s']:7.0f} "
                          f"tok/s", flush=True)
        res = {}
        for b in [int(x) for x in a.batches.split(",")]:
            ours_r = runs[("distill", b)]
            entry = {}
            for k in ("pp", "tg"):
                e = {"distill": statistics.median(o[k] for o in ours_r)}
                for p in peers:
                    peer_r = runs[(p, b)]
                    pairs = [o[k] / q[k] for o, q in zip(ours_r, peer_r)]
                    suffix = "" if p == main_peer else "_" + p
                    e["llama.cpp" + suffix] = statistics.median(q[k] for q in peer_r)
                    e["ratio" + suffix] = statistics.median(pairs)
                    e["pair_ratios" + suffix] = pairs
                entry[k] = e
            res[f"batch{b}"] = entry
        if run_llama_bench:
            res["llama_bench"] = llama_bench(gguf, a)
        summary[key] = res
        tables[key] = res
    summary["load_after"] = load_average()

    # The table: tok/s medians over rounds, then the median per-round ratio distill/peer.
    cols = [f"llama.cpp {p}" for p in peers]
    print()
    print(f"{'model-weights':16s} {'B':>2s} {'':2s} {'distill':>9s} " +
          " ".join(f"{c:>18s}" for c in cols) + "  " +
          " ".join(f"{'vs ' + p:>12s}" for p in peers))
    for name, res in tables.items():
        for bk, entry in res.items():
            if not bk.startswith("batch"):
                continue
            for k in ("pp", "tg"):
                e = entry[k]
                vals = [e["llama.cpp" + ("" if p == main_peer else "_" + p)] for p in peers]
                ratios = [e["ratio" + ("" if p == main_peer else "_" + p)] for p in peers]
                print(f"{name:16s} {bk[5:]:>2s} {k:2s} {e['distill']:9.0f} " +
                      " ".join(f"{v:18.0f}" for v in vals) + "  " +
                      " ".join(f"{x:11.2f}x" for x in ratios))
    if run_llama_bench:
        print()
        print(f"llama-bench (native, batch 1, {a.threads} threads, median of {a.reps}), tok/s; "
              f"the C-API peer's batch-1 figures beside it:")
        for name, res in tables.items():
            lb = res["llama_bench"]
            pp_key, tg_key = f"pp{a.prompt_tokens}", f"tg{a.gen_tokens}"
            depth_key = f"{tg_key}@d{a.prompt_tokens}"
            peer_b1 = res.get("batch1", {})
            line = (f"  {name:16s} {pp_key} {lb.get(pp_key, 0):7.0f}  {tg_key} "
                    f"{lb.get(tg_key, 0):6.0f}  {depth_key} {lb.get(depth_key, 0):6.0f}")
            if "pp" in peer_b1 and main_peer == "native":
                line += (f"   | peer pp {peer_b1['pp']['llama.cpp']:7.0f}  "
                         f"tg (after the prompt) {peer_b1['tg']['llama.cpp']:6.0f}")
            print(line)
    print()
    print(cpu_line(cpu))
    if native_info:
        first = native_info.get("first_build", native_info)
        print(f"llama.cpp native: commit {native_info.get('commit', '?')[:12]}, version "
              f"{native_info.get('version', '?')} (node-llama-cpp release "
              f"{native_info.get('node_llama_cpp_release', '?')}), build from scratch "
              f"{first.get('build_seconds', '?')} s with {first.get('build_jobs', '?')} jobs "
              f"({first.get('load_after_build', '?').split('load average: ')[-1]} load); "
              f"{' '.join(native_info.get('cmake_options', []))}")
    if "native" in summary.get("system_info", {}):
        print(f"ggml CPU backend (native): {summary['system_info']['native']}")
    print(f"load average (1/5/15 min): {summary['load_before']} before, "
          f"{summary['load_after']} after")
    with open(a.json, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

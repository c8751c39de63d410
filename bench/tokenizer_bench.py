#!/usr/bin/env python3
"""scripts/bench tokenizer: distill's tokenizers against Hugging Face tokenizers (the Rust
library, through the npm binding @anush008/tokenizers pinned in bench/package-lock.json), same
tokenizer.json, same text, same threads, in one run, alternating (ours, peer, ours, peer, ...)
for --rounds rounds; medians are reported.

Both sides encode the file line by line in one batch call, with HF's default of matching
special tokens written in the text (distill: --parse-special) (distill: `distill tokenizer bench`,
encode_batch over OpenMP threads; peer: bench/tokenizer_peer.mjs, encodeBatch over rayon threads,
RAYON_NUM_THREADS = --threads), after one untimed warm-up pass, and must produce the same number
of tokens. Throughput is MB of UTF-8 text per wall second and per CPU second of the process (the
steadier figure on a shared machine).

Corpora: the KJV Bible (`bible gen1:1-rev22:21`, Debian's bible-kjv) and the fixtures'
sample-multilingual.txt repeated 2000 times (Korean, Chinese, code, emoji, whitespace runs).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTILL = os.path.join(ROOT, "build", "distill")
PEER = os.path.join(ROOT, "bench", "tokenizer_peer.mjs")
TESTDATA = os.path.join(ROOT, "tests", "data")


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def ours(a, tokenizer, corpus, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return run_json([a.distill, "--threads", str(threads), "tokenizer", "bench", "--tokenizer",
                     tokenizer, "--file", corpus, "--seconds", str(a.seconds),
                     "--parse-special"], env)


def peer(a, tokenizer, corpus, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    return run_json(["node", PEER, "--tokenizer", tokenizer, "--file", corpus, "--seconds",
                     str(a.seconds)], env)


def corpora(workdir, testdata):
    os.makedirs(workdir, exist_ok=True)
    kjv = os.path.join(workdir, "kjv.txt")
    if not os.path.exists(kjv) or os.path.getsize(kjv) == 0:
        with open(kjv, "w") as f:
            subprocess.run(["bible", "gen1:1-rev22:21"], stdout=f, check=True)
    multi = os.path.join(workdir, "multilingual-x2000.txt")
    if not os.path.exists(multi):
        with open(os.path.join(testdata, "hf-tokenizers", "sample-multilingual.txt")) as f:
            text = f.read()
        with open(multi, "w") as f:
            f.write(text * 2000)
    return {"kjv": kjv, "multilingual": multi}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizers", default="gpt2,qwen3",
                   help="names under testdata/hf-tokenizers (comma-separated)")
    p.add_argument("--corpora", default="kjv,multilingual", help="kjv, multilingual")
    p.add_argument("--threads", default="1,%d" % os.cpu_count(), help="thread counts to compare")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per configuration")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    p.add_argument("--distill", default=DISTILL)
    p.add_argument("--testdata", default=os.environ.get("DISTILL_TESTDATA", TESTDATA))
    p.add_argument("--workdir", default=os.path.join(ROOT, "build", "data"))
    p.add_argument("--json", help="also write the summary here")
    a = p.parse_args()

    files = corpora(a.workdir, a.testdata)
    rows = []
    print("%-7s %-13s %3s %10s %10s %7s %12s %12s %7s" %
          ("tok", "corpus", "thr", "ours MB/s", "peer MB/s", "ratio", "ours MB/cpu", "peer MB/cpu",
           "ratio"))
    for name in a.tokenizers.split(","):
        tokenizer = os.path.join(a.testdata, "hf-tokenizers", name, "tokenizer.json")
        for corpus_name in a.corpora.split(","):
            for threads in [int(t) for t in a.threads.split(",")]:
                us, them = [], []
                for _ in range(a.rounds):
                    us.append(ours(a, tokenizer, files[corpus_name], threads))
                    them.append(peer(a, tokenizer, files[corpus_name], threads))
                if us[0]["tokens"] != them[0]["tokens"]:
                    print("warning: %s on %s: distill made %d tokens, the peer %d" %
                          (name, corpus_name, us[0]["tokens"], them[0]["tokens"]),
                          file=sys.stderr)
                med = lambda runs, key: statistics.median(r[key] for r in runs)
                row = {
                    "tokenizer": name, "corpus": corpus_name, "threads": threads,
                    "bytes": us[0]["bytes"], "tokens": us[0]["tokens"],
                    "same_tokens": us[0]["tokens"] == them[0]["tokens"],
                    "ours_mb_per_s": med(us, "mb_per_s"), "peer_mb_per_s": med(them, "mb_per_s"),
                    "ours_mb_per_cpu_s": med(us, "mb_per_cpu_s"),
                    "peer_mb_per_cpu_s": med(them, "mb_per_cpu_s"),
                }
                row["ratio"] = row["ours_mb_per_s"] / row["peer_mb_per_s"]
                row["cpu_ratio"] = row["ours_mb_per_cpu_s"] / row["peer_mb_per_cpu_s"]
                rows.append(row)
                print("%-7s %-13s %3d %10.2f %10.2f %6.1fx %12.2f %12.2f %6.1fx" %
                      (name, corpus_name, threads, row["ours_mb_per_s"], row["peer_mb_per_s"],
                       row["ratio"], row["ours_mb_per_cpu_s"], row["peer_mb_per_cpu_s"],
                       row["cpu_ratio"]), flush=True)
    summary = {"bench": "tokenizer", "rounds": a.rounds, "rows": rows}
    print(json.dumps(summary))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()

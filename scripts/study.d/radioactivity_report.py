#!/usr/bin/env python3
"""Summarises a run of scripts/study.d/radioactivity into DOCS/NAME-results.md and DOCS/NAME.svg
(NAME: radioactivity by default). Usage: radioactivity_report.py RUN DOCS [STUDENTS [NAME]]. Every number comes from the JSON files that
`distill detect text|model --json` wrote; nothing is re-computed here except counts and rates."""
import json
import math
import os
import sys

run, docs = sys.argv[1], sys.argv[2]
students_dir = sys.argv[3] if len(sys.argv) > 3 else "students"
doc_name = sys.argv[4] if len(sys.argv) > 4 else "radioactivity"
os.makedirs(docs, exist_ok=True)


def load(path):
    with open(path) as f:
        return json.load(f)


def log10p(r):
    v = r["log10_p"]
    return -math.inf if v == "-inf" else float(v)


def fmt_p(r):
    v = log10p(r)
    return f"{10 ** v:.3g}" if v > -4 else f"1e{v:.1f}"


lines = []
out = lines.append

# --- text detection on the teacher's own outputs -------------------------------------------
wm, plain = load(f"{run}/detect-watermarked.json"), load(f"{run}/detect-plain.json")
key = wm["key"]


def rates(d):
    texts = d["texts"]
    n = len(texts)
    z4 = sum(1 for t in texts if t["z"] >= d["threshold_z"])
    p01 = sum(1 for t in texts if t["p"] <= 0.01)
    p05 = sum(1 for t in texts if t["p"] <= 0.05)
    scored = sum(t["scored"] for t in texts) / max(n, 1)
    return n, z4, p01, p05, scored


out("# Radioactivity study: results of the last run")
out("")
# The teacher: the study's own BPE teacher (STUDY_VOCAB) or the byte-level demo teacher.
bpe = os.path.exists(f"{run}/tokenizer/tokenizer.json")
if bpe:
    cfg = load(f"{run}/teacher/model/config.json")
    teacher = (f"`{run}/teacher/model` (GPT-2, {cfg['n_layer']} layers, d {cfg['n_embd']}, trained by the "
               f"study on the KJV text with its BPE tokenizer of {cfg['vocab_size']} tokens)")
    unit = "BPE tokens"
else:
    teacher = "`demo/teacher` (byte-level GPT-2, 4.9M parameters)"
    unit = "tokens (bytes)"
out("Reproduces Sander et al. 2024 (*Watermarking Makes Language Models Radioactive*) with")
out(f"`scripts/study radioactivity` (numbers below are from its last run; the raw JSON is in `{run}/`).")
out("")
out("## Setup")
out("")
out(f"- Teacher: {teacher}. Key: {key}, secret derived from a fixed seed.")
out("- Prompts: 64-byte passages of the training part of the KJV text; the teacher completes each")
out(f"  with 200 {unit} at temperature 1, once with the watermark and once without.")
# The students' shape and fine-tuning length, from the first student's files.
first = next((f"{run}/{students_dir}/{n}" for n in sorted(os.listdir(f"{run}/{students_dir}"))
              if os.path.exists(f"{run}/{students_dir}/{n}/model/config.json")), None)
if first:
    scfg = load(f"{first}/model/config.json")
    with open(f"{first}/metrics.jsonl") as f:
        steps = max(json.loads(l)["step"] for l in f if l.strip())
    shape = f"GPT-2, {scfg['n_layer']} layers, d {scfg['n_embd']}, {steps} fine-tuning steps of 16 x 256 tokens"
else:
    shape = "none trained yet"
out(f"- Students ({shape}): a base pretrained on the KJV text in the teacher's tokens")
out("  fine-tuned with cross-entropy on a mix where f% of the prompts carry the watermarked")
out("  completion and the rest the plain one (same prompts, so only the watermark differs).")
out("- Tests (`distill detect model`), every (seed, token) pair scored once, exact binomial tail:")
out("  - *open, supervised*: the student reads the watermarked texts it was trained on (for 0%: the")
out("    5% selection of the same seed, which it never saw); its top-1 predictions are scored,")
out("    skipping predictions whose (window, token) already occurs earlier in the text it reads;")
out("  - *open, all outputs*: the same on every watermarked output the teacher produced;")
out("  - *closed*: the student completes the prompts (128 tokens, temperature 1); windows that occur")
out("    in the prompt are skipped, and only windows that occur in the watermarked data are scored.")
out("")
out("## Text detection on the teacher's own outputs (200 tokens each)")
out("")
n, z4, p01, p05, sc = rates(wm)
pn, pz4, pp01, pp05, psc = rates(plain)
out("| texts | count | mean pairs scored | z >= 4 | p <= 0.01 | p <= 0.05 |")
out("|---|---|---|---|---|---|")
out(f"| watermarked | {n} | {sc:.0f} | {z4} ({100*z4/n:.1f}%) | {p01} ({100*p01/n:.1f}%) | {p05} ({100*p05/n:.1f}%) |")
out(f"| plain | {pn} | {psc:.0f} | {pz4} ({100*pz4/pn:.1f}%) | {pp01} ({100*pp01/pn:.1f}%) | {pp05} ({100*pp05/pn:.1f}%) |")
out("")
out(f"Pooled over the watermarked texts: T = {wm['pooled']['scored']}, G = {wm['pooled']['green']}, "
    f"z = {wm['pooled']['z']:.1f}, p = {fmt_p(wm['pooled'])}; over the plain texts: "
    f"T = {plain['pooled']['scored']}, G = {plain['pooled']['green']}, z = {plain['pooled']['z']:.2f}, "
    f"p = {fmt_p(plain['pooled'])}.")
out("")

# --- students ------------------------------------------------------------------------------
students = []
sdir = f"{run}/{students_dir}"
for name in sorted(os.listdir(sdir)):
    d = f"{sdir}/{name}"
    # A student's tests are written in order (open supervised, open all, closed); one whose
    # study was stopped part-way is reported with the tests it has.
    if not os.path.exists(f"{d}/open-all.json"):
        continue
    f = float(name.split("-")[0][1:])
    seed = int(name.split("-s")[1])
    s = {"name": name, "f": f, "seed": seed,
         "sup": load(f"{d}/open-supervised.json"), "all": load(f"{d}/open-all.json")}
    if os.path.exists(f"{d}/closed.json"):
        s["closed"] = load(f"{d}/closed.json")
    if os.path.exists(f"{d}/open-supervised-nodedup.json"):
        s["nodedup"] = load(f"{d}/open-supervised-nodedup.json")
    students.append(s)
students.sort(key=lambda s: (s["f"], s["seed"]))

out("## Students: log10 p against the fraction of watermarked training data")
out("")
out("| student | open, supervised: T / G / log10 p | open, all outputs: T / G / log10 p | closed: T / G / log10 p |")
out("|---|---|---|---|")
for s in students:
    cells = []
    for k in ("sup", "all", "closed"):
        if k not in s:
            cells.append("not run")
            continue
        r = s[k]["result"]
        cells.append(f"{r['scored']} / {r['green']} ({100*r['green']/max(r['scored'],1):.1f}%) / {log10p(r):.1f}")
    out(f"| {s['f']:g}% seed {s['seed']} | " + " | ".join(cells) + " |")
out("")

calib = [s for s in students if "calibration" in s["sup"]]
if calib:
    out("## Calibration on the 0% students (random keys)")
    out("")
    out("The same open, supervised test rescored under random keys: the p-values should be uniform,")
    out("so at alpha = 0.01 about 1% of the tests reject. Without dedup, a pair that repeats counts")
    out("its single coin flip many times and the binomial null is far too narrow:")
    out("")
    out("| student | dedup | keys | pairs per test | p <= 0.01 | p <= 0.05 | KS D | KS p |")
    out("|---|---|---|---|---|---|---|---|")
    tot_keys = tot_01 = 0
    for s in calib:
        for label, d in (("yes", s["sup"]), ("no", s.get("nodedup"))):
            if not d:
                continue
            c = d["calibration"]
            if label == "yes":
                tot_keys += c["keys"]
                tot_01 += c["below_0.01"]
            out(f"| {s['name']} | {label} | {c['keys']} | {c['mean_scored']:.0f} | "
                f"{c['below_0.01']} ({100*c['below_0.01']/c['keys']:.1f}%) | "
                f"{c['below_0.05']} ({100*c['below_0.05']/c['keys']:.1f}%) | {c['ks_d']:.3f} | {c['ks_p']:.3g} |")
    out("")
    if tot_keys:
        out(f"With dedup, {tot_01} of {tot_keys} random-key tests reject at alpha = 0.01 "
            f"({100*tot_01/tot_keys:.2f}%).")
        out("")

# --- plot ----------------------------------------------------------------------------------
W, H, L, R, T, B = 640, 400, 70, 170, 30, 50
fr = [0, 1, 5, 10, 100]
xs = {f: L + i * (W - L - R) / (len(fr) - 1) for i, f in enumerate(fr)}
vals = [max(log10p(s[k]["result"]), -400) for s in students for k in ("sup", "all", "closed") if k in s]
ymin = min(vals + [-6]) * 1.05
ymax = 0.5


def y(v):
    v = max(v, ymin)
    return T + (ymax - v) / (ymax - ymin) * (H - T - B)


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">% of training data watermarked</text>',
       f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">log10 p</text>']
for f in fr:
    svg.append(f'<text x="{xs[f]}" y="{H-B+16}" text-anchor="middle">{f}</text>')
step = 10 ** max(0, math.floor(math.log10(max(1, -ymin))) )
v = 0
while v >= ymin:
    svg.append(f'<line x1="{L-4}" y1="{y(v):.1f}" x2="{W-R}" y2="{y(v):.1f}" stroke="#eee"/>')
    svg.append(f'<text x="{L-6}" y="{y(v)+4:.1f}" text-anchor="end">{v:g}</text>')
    v -= step
svg.append(f'<line x1="{L}" y1="{y(-5):.1f}" x2="{W-R}" y2="{y(-5):.1f}" stroke="#c00" stroke-dasharray="4 3"/>')
svg.append(f'<text x="{W-R+4}" y="{y(-5)+4:.1f}" fill="#c00">p = 1e-5</text>')
colors = {"sup": "#1f77b4", "all": "#2ca02c", "closed": "#ff7f0e"}
labels = {"sup": "open, supervised", "all": "open, all outputs", "closed": "closed"}
for k, off in (("sup", -6), ("all", 0), ("closed", 6)):
    for s in students:
        if s["f"] not in xs or k not in s:
            continue
        svg.append(f'<circle cx="{xs[s["f"]]+off:.1f}" cy="{y(log10p(s[k]["result"])):.1f}" r="4" '
                   f'fill="{colors[k]}" fill-opacity="0.8"><title>{s["name"]} {labels[k]}: '
                   f'log10 p = {log10p(s[k]["result"]):.1f}</title></circle>')
for i, k in enumerate(("sup", "all", "closed")):
    svg.append(f'<circle cx="{W-R+14}" cy="{T+40+i*18}" r="4" fill="{colors[k]}"/>')
    svg.append(f'<text x="{W-R+24}" y="{T+44+i*18}">{labels[k]}</text>')
svg.append("</svg>")
with open(f"{docs}/{doc_name}.svg", "w") as f:
    f.write("\n".join(svg) + "\n")
out(f"![log10 p against the watermarked fraction]({doc_name}.svg)")
out("")
with open(f"{docs}/{doc_name}-results.md", "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"wrote {docs}/{doc_name}-results.md and {docs}/{doc_name}.svg")

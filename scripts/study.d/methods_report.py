#!/usr/bin/env python3
"""Summarises a run of scripts/study.d/methods into DOCS/methods-results.md and two SVG plots:
DOCS/methods-task.svg (task exact match per method, one dot per seed, the teacher as a line) and
DOCS/methods-cost.svg (training wall time against task exact match).

usage: methods_report.py RUN_DIR DOCS_DIR TEXT SEED [SEED ...]
"""
import json
import math
import os
import statistics
import struct
import sys

run, docs, text, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
# distill eval holds out the last 5% of the text's bytes (--val-fraction 0.05).
_size = os.path.getsize(text)
HELD_BYTES = _size - (_size - int(_size * 0.05))

ORDER = ["ce", "kl", "rkl", "gkd-0.5", "gkd-1", "kl+hidden", "pruned", "random", "keep-layers",
         "xtok-uld"]
LABEL = {
    "ce": "CE baseline (early-stopped)",
    "kl": "supervised KD, forward KL",
    "rkl": "supervised, reverse KL",
    "gkd-0.5": "on-policy GKD, lambda 0.5 (JSD 0.5)",
    "gkd-1": "on-policy GKD, lambda 1 (JSD 0.5)",
    "kl+hidden": "forward KL + hidden states (cosine)",
    "pruned": "pruned teacher (Minitron) + KL",
    "random": "random init, pruned shape, + KL",
    "keep-layers": "teacher layers 0,5 + KL",
    "xtok-uld": "BPE-512 student, ULD + CE",
}


def params_of(model_dir):
    """Parameter count from the safetensors header(s)."""
    total = 0
    for name in os.listdir(model_dir):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            c = 1
            for d in v["shape"]:
                c *= d
            total += c
    return total


def read_lines(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out


def bits_per_byte(rep, m):
    """Held-out nats per token -> bits per byte of the held-out text (comparable across
    tokenizers: every report holds out the same text)."""
    ho = m.get("held_out", {})
    nll = ho.get("mean_nll")
    if nll is None:
        return None
    tokens = rep["held_out"].get("tokens") if isinstance(rep.get("held_out"), dict) else None
    if m.get("vocab_size") == 256 or not tokens:
        return nll / math.log(2)  # byte-level: a token is a byte
    return nll * tokens / HELD_BYTES / math.log(2)


rows = {}  # method -> list of per-seed dicts
teacher = {}
teacher_bpb = None
for seed in seeds:
    reports = []
    for name in (f"eval-s{seed}", f"eval-xtok-s{seed}"):
        rep_path = os.path.join(run, name, "report.json")
        if not os.path.exists(rep_path):
            if name.startswith("eval-xtok"):
                continue  # the cross-tokenizer student was not run with this seed
            print(f"missing {rep_path}: run scripts/study methods first", file=sys.stderr)
            sys.exit(1)
        reports.append((name, json.load(open(rep_path))))
    for rep_name, rep in reports:
      for m in rep["models"]:
        if m["role"] == "teacher" and rep_name.startswith("eval-s"):
            teacher = m
            teacher_bpb = bits_per_byte(rep, m)
            continue
        name = m["name"]
        if rep_name.startswith("eval-xtok"):
            name = "xtok-uld"
            m = dict(m)
            m["held_out"] = {k: v for k, v in m["held_out"].items()
                             if k in ("mean_nll", "perplexity")}
        rd = os.path.join(run, f"{name}-s{seed}")
        metrics = read_lines(os.path.join(rd, "metrics.jsonl"))
        steps = [x for x in metrics if "loss" in x]
        evals = [x for x in metrics if "val_loss" in x]
        wall = open(os.path.join(rd, "wall_s")).read().strip() if os.path.exists(
            os.path.join(rd, "wall_s")) else "nan"
        ho = m.get("held_out", {})
        bpb = bits_per_byte(rep, m)
        rows.setdefault(name, []).append({
            "seed": seed,
            "exact": m["task"]["exact_match"],
            "kl": ho.get("kl_to_teacher"),
            "ppl": ho.get("perplexity"),
            "bpb": bpb,
            "agree": ho.get("top1_agreement"),
            "wall": float(wall),
            "steps": steps[-1]["step"] if steps else 0,
            "best": m.get("checkpoint", "").split(":")[0].replace("step ", "").replace(" of ", "/"),
            "params": params_of(os.path.join(rd, "model")),
            "curve": [(x["step"], x["val_loss"]) for x in evals],
            "tokens_per_step": (steps[0]["tokens"] if steps else 0),
        })


def fmt(v, f="{:.3f}"):
    return "n/a" if v is None else f.format(v)


def mean(vals):
    vals = [v for v in vals if v is not None]
    return statistics.mean(vals) if vals else None


names = [n for n in ORDER if n in rows] + [n for n in rows if n not in ORDER]
lines = []
lines.append("| method | params | task exact match (per seed) | mean | KL to teacher "
             "| perplexity | held-out bits/byte | top-1 agreement | best step | wall s (mean) |")
lines.append("|---|---|---|---|---|---|---|---|---|---|")
t_exact = teacher.get("task", {}).get("exact_match")
lines.append(f"| teacher (demo/teacher) | {params_of(teacher['dir']) if teacher else 'n/a'} "
             f"| {fmt(t_exact)} | {fmt(t_exact)} | 0 "
             f"| {fmt(teacher.get('held_out', {}).get('perplexity'), '{:.2f}')} | {fmt(teacher_bpb)} "
             f"| 1 | | |")
for n in names:
    r = rows[n]
    lines.append(
        f"| {LABEL.get(n, n)} (`{n}`; seed {', '.join(x['seed'] for x in r)}) | {r[0]['params']:,} | "
        + " / ".join(fmt(x["exact"]) for x in r)
        + f" | **{fmt(mean([x['exact'] for x in r]))}** | {fmt(mean([x['kl'] for x in r]))} "
        f"| {fmt(mean([x['ppl'] for x in r]), '{:.2f}')}{' (BPE tokens)' if n.startswith('xtok') else ''} "
        f"| {fmt(mean([x['bpb'] for x in r]))} | {fmt(mean([x['agree'] for x in r]))} "
        f"| {' / '.join(str(x['best']) for x in r)} | {fmt(mean([x['wall'] for x in r]), '{:.0f}')} |")
table = "\n".join(lines)

# --- task plot: one row per method, dots per seed, teacher line ---
W, rowh, L, R, T, B = 760, 26, 300, 30, 30, 40
H = T + B + rowh * len(names)
allx = [x["exact"] for n in names for x in rows[n]] + ([t_exact] if t_exact else [])
xmax = max(allx) * 1.1 if allx else 1
def X(v):
    return L + (W - L - R) * v / xmax
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">Task exact match by method (dots: seeds; bar: mean)</text>']
for i in range(6):
    v = xmax * i / 5
    svg.append(f'<line x1="{X(v):.1f}" y1="{T}" x2="{X(v):.1f}" y2="{H-B}" stroke="#eee"/>')
    svg.append(f'<text x="{X(v):.1f}" y="{H-B+16}" text-anchor="middle">{v:.2f}</text>')
if t_exact:
    svg.append(f'<line x1="{X(t_exact):.1f}" y1="{T}" x2="{X(t_exact):.1f}" y2="{H-B}" stroke="#c33" stroke-dasharray="4,3"/>')
    svg.append(f'<text x="{X(t_exact)-4:.1f}" y="{T+10}" text-anchor="end" fill="#c33">teacher {t_exact:.3f}</text>')
for k, n in enumerate(names):
    y = T + rowh * k + rowh / 2
    m = mean([x["exact"] for x in rows[n]])
    svg.append(f'<text x="{L-8}" y="{y+4:.1f}" text-anchor="end">{LABEL.get(n, n)}</text>')
    svg.append(f'<rect x="{L}" y="{y-7:.1f}" width="{X(m)-L:.1f}" height="14" fill="#9bc"/>')
    for x in rows[n]:
        svg.append(f'<circle cx="{X(x["exact"]):.1f}" cy="{y:.1f}" r="4" fill="#135"/>')
svg.append(f'<text x="{(L+W-R)/2}" y="{H-6}" text-anchor="middle">exact match of the rest of the word (1000 held-out passages)</text>')
svg.append("</svg>")
with open(os.path.join(docs, "methods-task.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")

# --- cost vs quality: mean wall time against mean task exact match, one point per method ---
W2, H2, L2, R2, T2, B2 = 760, 400, 60, 30, 30, 44
pts = [(n, mean([x["wall"] for x in rows[n]]), mean([x["exact"] for x in rows[n]])) for n in names]
pts = [p for p in pts if p[1] is not None and p[2] is not None]
if pts:
    xmax2 = max(p[1] for p in pts) * 1.15
    ymax2 = max([p[2] for p in pts] + ([t_exact] if t_exact else [])) * 1.1
    def PX(v):
        return L2 + (W2 - L2 - R2) * v / xmax2
    def PY(v):
        return T2 + (H2 - T2 - B2) * (1 - v / ymax2)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W2}" height="{H2}" font-family="sans-serif" font-size="12">',
           f'<text x="{W2/2}" y="18" text-anchor="middle" font-size="14">Training wall time vs task exact match (means over seeds)</text>']
    for i in range(6):
        v = ymax2 * i / 5
        svg.append(f'<line x1="{L2}" y1="{PY(v):.1f}" x2="{W2-R2}" y2="{PY(v):.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{L2-6}" y="{PY(v)+4:.1f}" text-anchor="end">{v:.2f}</text>')
        x = xmax2 * i / 5
        svg.append(f'<text x="{PX(x):.1f}" y="{H2-B2+16}" text-anchor="middle">{x:.0f}</text>')
    if t_exact:
        svg.append(f'<line x1="{L2}" y1="{PY(t_exact):.1f}" x2="{W2-R2}" y2="{PY(t_exact):.1f}" stroke="#c33" stroke-dasharray="4,3"/>')
        svg.append(f'<text x="{W2-R2}" y="{PY(t_exact)-4:.1f}" text-anchor="end" fill="#c33">teacher</text>')
    for n, w, e in pts:
        svg.append(f'<circle cx="{PX(w):.1f}" cy="{PY(e):.1f}" r="4" fill="#135"/>')
        svg.append(f'<text x="{PX(w)+6:.1f}" y="{PY(e)-5:.1f}">{n}</text>')
    svg.append(f'<text x="{(L2+W2-R2)/2}" y="{H2-8}" text-anchor="middle">training wall time, seconds (2 threads)</text>')
    svg.append("</svg>")
    with open(os.path.join(docs, "methods-cost.svg"), "w") as f:
        f.write("\n".join(svg) + "\n")

with open(os.path.join(docs, "methods-results.md"), "w") as f:
    f.write("<!-- written by scripts/study.d/methods_report.py; do not edit by hand -->\n")
    f.write(f"Seeds: {', '.join(seeds)}. Tokens per step: {rows[names[0]][0]['tokens_per_step'] if names else 0}.\n\n")
    f.write(table + "\n")
print(table)

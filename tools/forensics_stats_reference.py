#!/usr/bin/python3
"""Reference values (SciPy) for src/forensics/stats.cpp, written to
tests/fixtures/forensics_stats.json. Run with Debian's python3-scipy:

    /usr/bin/python3 tools/forensics_stats_reference.py
"""
import json
import math
import os

import numpy as np
from scipy import special, stats

out = {"binomial_sf": [], "gamma_sf": [], "normal": [], "holm": [], "ks": []}

for k, n, p in [(0, 10, 0.25), (1, 10, 0.25), (3, 10, 0.25), (10, 10, 0.25),
                (50, 200, 0.25), (75, 200, 0.25), (120, 200, 0.25), (200, 200, 0.25),
                (30, 200, 0.25), (5200, 20000, 0.25), (6000, 20000, 0.25),
                (500, 1000, 0.5), (700, 1000, 0.5), (3, 1000, 0.001), (1, 1, 0.5),
                (90000, 300000, 0.25), (260000, 1000000, 0.25)]:
    # log of P(X >= k) = sf(k - 1); logsf keeps precision deep in the tail.
    ref = float(stats.binom.logsf(k - 1, n, p))
    if math.isinf(ref) and k <= n:
        # SciPy underflows deep in the tail: sum every term in log space instead.
        terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) +
                 i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
        top = max(terms)
        ref = top + math.log(sum(math.exp(t - top) for t in terms))
    out["binomial_sf"].append({"k": k, "n": n, "p": p, "ln_sf": ref})

for a, x in [(1, 0.5), (1, 20), (5, 2), (5, 5), (5, 30), (200, 180), (200, 200), (200, 260),
             (200, 600), (0.5, 0.1), (2.5, 10), (10000, 10300), (10000, 9800), (50, 400)]:
    out["gamma_sf"].append({"a": a, "x": x, "ln_sf": float(stats.gamma.logsf(x, a))})

for z in [-8, -3, -1, 0, 0.5, 1.96, 4, 8, 20, 37, 45, 100]:
    out["normal"].append({"z": z, "cdf": float(stats.norm.cdf(z)),
                          "ln_sf": float(stats.norm.logsf(z))})
out["quantile"] = [{"p": p, "z": float(stats.norm.ppf(p))}
                   for p in [1e-12, 1e-5, 0.01, 0.025, 0.3, 0.5, 0.8, 0.975, 0.999999]]


# Holm-Bonferroni by its definition: the j-th smallest p (0-based) times (m - j), made monotone.
for ps in [[0.01, 0.04, 0.03, 0.005], [0.5, 1e-6, 0.02], [0.2], [0.03, 0.03, 0.03]]:
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adj, running = [0.0] * m, 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * ps[i]))
        adj[i] = running
    out["holm"].append({"p": ps, "adjusted": adj})

rng = np.random.default_rng(7)
for name, values in [("uniform200", rng.uniform(size=200)),
                     ("beta_skewed300", rng.beta(0.7, 1.0, size=300)),
                     ("uniform1000", rng.uniform(size=1000)),
                     ("small12", rng.uniform(size=12))]:
    r = stats.kstest(values, "uniform", method="asymp")
    out["ks"].append({"name": name, "values": [float(v) for v in values],
                      "d": float(r.statistic), "p": float(r.pvalue)})

path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "forensics_stats.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote", os.path.normpath(path))

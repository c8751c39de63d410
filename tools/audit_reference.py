#!/usr/bin/python3
"""Reference Shapiro-Wilk values (SciPy's swilk, AS R94) for src/forensics/normality.cpp, written
to tests/fixtures/audit_shapiro.json. Each case stores its sample (so the C++ test feeds the
identical numbers) with SciPy's W and p, and W recomputed in double precision from Royston's
coefficients (w_double): SciPy's Fortran swilk works in single precision, which moves W by up to
~4e-6 at n = 5000 -- enough to move p by 3% there, so p is checked as p(W_scipy, n). Run with
Debian's python3-scipy:

    /usr/bin/python3 tools/audit_reference.py
"""
import json
import os

import numpy as np
from scipy import stats
from scipy.stats import norm

rng = np.random.default_rng(20240607)
cases = []


def royston_w(x):
    """W in double precision: Royston (1995) coefficients, as in AS R94 but without float32."""
    x = np.sort(np.array(x, dtype=np.float64))
    n = len(x)
    if n == 3:
        a = np.array([-np.sqrt(0.5), 0.0, np.sqrt(0.5)])
    else:
        m = norm.ppf((np.arange(1, n + 1) - 0.375) / (n + 0.25))
        mm = (m * m).sum()
        u = 1 / np.sqrt(n)
        poly = lambda c, v: sum(ci * v**i for i, ci in enumerate(c))
        an = m[-1] / np.sqrt(mm) + poly([0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056], u)
        if n > 5:
            an1 = m[-2] / np.sqrt(mm) + poly([0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633], u)
            phi = (mm - 2 * m[-1]**2 - 2 * m[-2]**2) / (1 - 2 * an**2 - 2 * an1**2)
            a = m / np.sqrt(phi)
            a[-1], a[-2], a[0], a[1] = an, an1, -an, -an1
        else:
            phi = (mm - 2 * m[-1]**2) / (1 - 2 * an**2)
            a = m / np.sqrt(phi)
            a[-1], a[0] = an, -an
    return float(min(1.0, (a @ x)**2 / ((x - x.mean())**2).sum()))


def add(name, x):
    x = [float(round(v, 6)) for v in x]
    w, p = stats.shapiro(np.array(x))
    cases.append({"name": name, "n": len(x), "x": x, "w": float(w), "p": float(p),
                  "w_double": royston_w(x)})


for n in [3, 4, 5, 6, 7, 11, 12, 20, 50, 200, 1000, 5000]:
    add(f"normal_{n}", rng.normal(size=n))
for n in [3, 4, 5, 8, 11, 12, 30, 100, 500, 2000]:
    add(f"exponential_{n}", rng.exponential(size=n))
for n in [10, 60, 400]:
    add(f"uniform_{n}", rng.uniform(size=n))
# Two modes (what a template sweep's minimum distances look like) and a heavy tail.
add("bimodal_300", np.concatenate([rng.normal(0.1, 0.02, 150), rng.normal(0.8, 0.05, 150)]))
add("lognormal_150", rng.lognormal(0.0, 1.0, 150))
add("three_points", [1.0, 2.0, 4.0])

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "audit_shapiro.json")
with open(out, "w") as f:
    json.dump({"generator": "tools/audit_reference.py", "scipy": __import__("scipy").__version__,
               "cases": cases}, f)
print(f"wrote {len(cases)} cases to {out}")

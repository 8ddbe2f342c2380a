#!/usr/bin/python3
"""Recomputes the SciPy reference values quoted in StatisticsTests.cs.

Run with Debian 12's python3 + python3-scipy (SciPy 1.10.1, NumPy 1.24): /usr/bin/python3 reference_values.py
"""
import itertools

import numpy as np
from scipy import stats

darwin = [49, -67, 8, 16, 6, 23, 28, 41, 14, 29, 56, 24, 75, 60, -48]
print("Darwin, wilcoxon two-sided:", stats.wilcoxon(darwin))
print("Darwin, wilcoxon greater:", stats.wilcoxon(darwin, alternative="greater"))

x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]
print("depression, wilcoxon greater:", stats.wilcoxon(x, y, alternative="greater"))
print("depression, wilcoxon two-sided:", stats.wilcoxon(np.subtract(x, y)))


def exact_with_ties(d):
    """W+ and its two-sided p over all sign patterns of the midranks (the exact conditional test)."""
    d = [v for v in d if v != 0]
    ranks = stats.rankdata(np.abs(d))
    w_plus = sum(r for r, v in zip(ranks, d) if v > 0)
    mean = ranks.sum() / 2
    hits = sum(1 for signs in itertools.product([0, 1], repeat=len(d))
               if abs(sum(r for r, s in zip(ranks, signs) if s) - mean) >= abs(w_plus - mean) - 1e-9)
    return w_plus, hits / 2 ** len(d)


print("ties, exact:", exact_with_ties([1, 1, -1, 2, 2, 2, 3]), exact_with_ties([1.5, -0.5, 2, 3, -1, 0]))

big = [((i * 7) % 9 - 3) * 0.5 + (0.5 if i % 5 == 0 else 0) for i in range(120)]
print("120 differences, approx:", stats.wilcoxon(big, method="approx", correction=True, zero_method="wilcox"))
nonzero = [v for v in big if v != 0]
ranks = stats.rankdata(np.abs(nonzero))
print("  W+ =", sum(r for r, v in zip(ranks, nonzero) if v > 0))

observed = abs(sum(darwin))
hits = sum(1 for s in itertools.product([1, -1], repeat=15) if abs(sum(a * b for a, b in zip(s, darwin))) >= observed)
print("Darwin, exact permutation:", hits, hits / 2 ** 15)

x20 = np.array([(i * 13) % 7 - 2.5 + 0.4 for i in range(20)])
signs = ((np.arange(2 ** 20)[:, None] >> np.arange(20)) & 1) * -2 + 1
print("20 pairs, exact permutation p:", (np.abs(signs @ x20) >= abs(x20.sum()) - 1e-9).mean())

print("McNemar b=1, c=7:", stats.binomtest(1, 8, 0.5).pvalue)
print("norm.ppf:", [stats.norm.ppf(q) for q in (0.975, 0.8, 0.001, 0.3)])

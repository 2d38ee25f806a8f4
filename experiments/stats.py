"""Statistics of the study: intervals, paired tests and the false-discovery correction.

Pure functions of lists of numbers (no JAX, no files), tested on hand-computed values
(tests/stats_test.py). A paired comparison over seeds is reported three ways, as SPEC.md section 8
asks: the mean difference with its 95 % Student-t interval, the exact two-sided sign-flip
permutation p-value, and the Benjamini-Hochberg q-value over every comparison of a table.
"""

import itertools
import math

import numpy as np

# An exact permutation test enumerates 2^n sign patterns; past this many pairs it would take
# too long, and a study of this size has no such comparison.
MAX_EXACT_PAIRS = 20


def t_quantile(level, dof):
  """The two-sided Student-t quantile t_{(1 + level) / 2, dof}."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf((1.0 + level) / 2.0, dof))


def finite(values):
  """The finite values of `values` as floats (None and NaN left out)."""
  return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_ci(values, level=0.95):
  """(mean, half-width of the t-interval, n) of the finite values; NaN half-width when n < 2."""
  values = finite(values)
  n = len(values)
  if n == 0:
    return math.nan, math.nan, 0
  mean = sum(values) / n
  if n < 2:
    return mean, math.nan, n
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return mean, t_quantile(level, n - 1) * sd / math.sqrt(n), n


def sign_flip_p(differences):
  """Exact two-sided sign-flip permutation p-value of paired differences d_1..d_n.

  Under the null hypothesis each d_i is as likely to be -d_i, so the 2^n sign patterns s are
  equally likely and p = #{s : |sum_i s_i d_i| >= |sum_i d_i|} / 2^n (the observed pattern
  counts; sums within 1e-12 of the observed one count as reaching it). With n pairs the smallest
  p is 2 / 2^n: 0.0625 at n = 5, 0.0078 at n = 8. NaN when there are no pairs.

  Raises:
    ValueError: more than MAX_EXACT_PAIRS pairs.
  """
  d = np.asarray(finite(differences), dtype=np.float64)
  n = d.size
  if n == 0:
    return math.nan
  if n > MAX_EXACT_PAIRS:
    raise ValueError(f'{n} pairs: the exact test enumerates 2^n patterns; at most '
                     f'{MAX_EXACT_PAIRS}.')
  signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
  sums = np.abs(signs @ d)
  observed = abs(float(d.sum()))
  return float(np.mean(sums >= observed - 1e-12))


def bh_qvalues(pvalues):
  """Benjamini-Hochberg q-values, in the order given; NaN p-values stay NaN and do not count.

  With the m finite p-values sorted p_(1) <= ... <= p_(m): q_(i) = min_{j >= i} m p_(j) / j,
  capped at 1. A comparison with q <= 0.05 is a discovery at a false-discovery rate of 5 %.
  """
  p = np.asarray([math.nan if v is None else float(v) for v in pvalues], dtype=np.float64)
  q = np.full(p.shape, math.nan)
  keep = np.flatnonzero(np.isfinite(p))
  m = keep.size
  if m == 0:
    return q.tolist()
  order = keep[np.argsort(p[keep], kind='stable')]
  scaled = p[order] * m / np.arange(1, m + 1)
  q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
  return q.tolist()


def resolved(mean, half):
  """Whether the interval mean +- half excludes 0."""
  return math.isfinite(mean) and math.isfinite(half) and abs(mean) > half


def format_ci(mean, half):
  """'0.123 ± 0.045'; '0.123' without a half-width; '-' without a mean."""
  if not math.isfinite(mean):
    return '-'
  return f'{mean:.3f}' if not math.isfinite(half) else f'{mean:.3f} ± {half:.3f}'


def format_difference(mean, half):
  """A paired difference: '+0.123 ± 0.045' where the interval excludes 0, else
  '+0.012, not resolved (±0.100)' (never 'ties': no equivalence margin is tested)."""
  if not math.isfinite(mean):
    return '-'
  if not math.isfinite(half):
    return f'{mean:+.3f}, not resolved (one seed)'
  if resolved(mean, half):
    return f'{mean:+.3f} ± {half:.3f}'
  return f'{mean:+.3f}, not resolved (±{half:.3f})'


def format_p(value):
  """p- and q-values: three decimals, '<0.001' below."""
  if value is None or not math.isfinite(value):
    return '-'
  return '<0.001' if value < 0.001 else f'{value:.3f}'

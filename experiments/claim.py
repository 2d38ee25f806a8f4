r"""Checks the whole-object claim on a study's rows; writes claim.json only where it is met.

  python experiments/claim.py --csv=experiments/results/tuned/study.csv \
      [--write=experiments/results/claim.json]

The claim, declared before the tuned study's report ran (SPEC.md section 8): at a body_cue level,
a method beats the **best baseline** there (study.BASELINES: the one with the highest mean CorLoc
among those present at that level; WILDCAT when it is the only one), over the seeds both ran:

  met = n >= 8 seeds
        and mean CorLoc >= 0.55
        and mean gain (CorLoc - baseline's) >= 0.10
        and the gain's 95 % t-interval lower bound > 0 (the margin the bound must clear)
        and the exact sign-flip permutation p < 0.05
        and the gain > 0 on at least 7/8 of the seeds
        and |mean(classification mAP - baseline's)| <= 0.02
        and mean(background activation - baseline's) <= +0.02  (no worse, the mAP tolerance;
                                                                 absent: not met)
        and mean(PxAP - baseline's) >= -0.02                     (no worse; skipped if absent)
        and at body_cue 1 (the level where the body is as strong as the part), the method's mean
            CorLoc within 0.03 of the best method's there (any method but the probes, over the
            seeds both ran), with one training (ACoL's two classifiers are two): a method that
            gains in the thesis's regime must not lose where every map already covers the body.
            A CSV without body_cue 1 rows of the method cannot meet the claim.

Rows come from the test split when the CSV has any (the split a claim is reported on), from the
validation split otherwise (older studies). Prints one markdown row per (method, body_cue) with
each criterion and the cost ratios against the baseline (training and evaluation seconds, mean
over the same seeds: a ratio means something only where both ran on one machine in one sitting).
With --write, writes {"method", "body_cue", "baseline"} of the best met cell (highest mean gain);
without a met cell it writes nothing and says so.
"""

import argparse
import json
import math
import os
import sys


from experiments import stats
from experiments import study

MIN_SEEDS, MIN_CORLOC, MIN_GAIN, MARGIN, MAX_P = 8, 0.55, 0.10, 0.0, 0.05
MIN_WINS = 7 / 8  # Fraction of seeds on which the method must gain.
MAX_MAP_CHANGE = 0.02  # Also the tolerance of "no worse" for background activation and PxAP.
FULL_CUE, MAX_FULL_CUE_GAP = 1.0, 0.03  # At body_cue 1: within 0.03 of the best method there.
PROBES = ('body_only', 'part_only')


def trainings(method):
  """How many networks a method trains one after the other: 2 for ACoL's heads, else 1."""
  fields = study.METHODS.get(study.TRAINED_AS.get(method, method), {})
  return 2 if fields.get('model.head') == 'acol' else 1


def full_cue_gap(rows, method):
  """(best method at body_cue 1, its mean CorLoc minus `method`'s over the seeds both ran
  there), or (None, nan) when `method` has no row at body_cue 1. Probes are left out."""
  at_full = [r for r in rows if float(r['body_cue']) == FULL_CUE and r['method'] not in PROBES]
  table = {(r['method'], int(r['seed'])): r[study.PRIMARY] for r in at_full}
  mine = {seed: v for (name, seed), v in table.items() if name == method}
  if not mine:
    return None, math.nan
  gaps = {}
  for other in study._methods_in(at_full):  # pylint: disable=protected-access
    seeds = [s for s in mine if (other, s) in table]
    if seeds:
      gaps[other] = _mean([table[(other, s)] - mine[s] for s in seeds])
  gaps = {m: g for m, g in gaps.items() if math.isfinite(g)}
  if not gaps:
    return None, math.nan
  top = max(gaps, key=lambda m: gaps[m])
  return top, gaps[top]


def claim_rows(rows):
  """The rows a claim is judged on: the test split's if there are any, else all."""
  test = [r for r in rows if r.get('split') == 'test']
  return test or list(rows)


def _paired(rows, method, cue, baseline):
  """{seed: (method row, baseline row)} at body_cue `cue`."""
  table = {(r['method'], float(r['body_cue']), int(r['seed'])): r for r in rows}
  return {seed: (row, table[(baseline, c, seed)]) for (name, c, seed), row in sorted(table.items())
          if name == method and c == cue and (baseline, c, seed) in table}


def _mean(values):
  values = stats.finite(values)
  return sum(values) / len(values) if values else math.nan


def claims(rows, level=0.95):
  """One dict per (method, body_cue) with a baseline partner: the criteria and whether all hold."""
  rows = claim_rows(rows)
  out = []
  for cue in sorted({float(r['body_cue']) for r in rows}):
    at_cue = [r for r in rows if float(r['body_cue']) == cue]
    baseline = study.best_baseline(at_cue, cue)
    for method in study._methods_in(at_cue):  # pylint: disable=protected-access
      if method in study.BASELINES or method in PROBES:
        continue
      pairs = _paired(at_cue, method, cue, baseline)
      if not pairs:
        continue
      diff = lambda key: [a.get(key, math.nan) - b.get(key, math.nan) for a, b in pairs.values()]
      ratio = lambda key: (sum(a[key] for a, _ in pairs.values()) /
                           sum(b[key] for _, b in pairs.values()))
      gains = diff(study.PRIMARY)
      entry = {
          'method': method, 'body_cue': cue, 'baseline': baseline,
          'seeds': len(stats.finite(gains)),  # A pair without both CorLocs is no seed.
          'corloc': stats.mean_ci([a[study.PRIMARY] for a, _ in pairs.values()], level)[:2],
          'gain': stats.mean_ci(gains, level)[:2], 'p': stats.sign_flip_p(gains),
          'wins': sum(g > 0 for g in gains),
          'map_change': stats.mean_ci(diff('classification_map'), level)[:2],
          'background_change': _mean(diff('parts_background_activation')),
          'pxap_change': _mean(diff('pxap')),
          'train_ratio': ratio('train_s'), 'eval_ratio': ratio('eval_s'),
          'trainings': trainings(method)}
      entry['full_cue_best'], entry['full_cue_gap'] = full_cue_gap(rows, method)
      entry['met'] = _met(entry)
      out.append(entry)
  return out


def _met(c):
  gain, half = c['gain']
  return bool(c['seeds'] >= MIN_SEEDS and c['corloc'][0] >= MIN_CORLOC and gain >= MIN_GAIN
              and math.isfinite(half) and gain - half > MARGIN and c['p'] < MAX_P
              and c['wins'] >= MIN_WINS * c['seeds']
              and abs(c['map_change'][0]) <= MAX_MAP_CHANGE
              and c['background_change'] <= MAX_MAP_CHANGE
              and not c['pxap_change'] < -MAX_MAP_CHANGE
              and c['full_cue_gap'] <= MAX_FULL_CUE_GAP and c['trainings'] == 1)


def markdown(found):
  """The table of `claims`."""
  fmt = lambda pair: stats.format_ci(*pair)
  lines = ['| method | body_cue | baseline | seeds | CorLoc | CorLoc − baseline | p | seeds gaining '
           '| mAP − baseline | backgr. − baseline | PxAP − baseline | best at body_cue 1 − method '
           '| trainings | train s ratio | eval s ratio | met |', '| --- ' * 16 + '|']
  for c in found:
    lines.append(f"| {c['method']} | {c['body_cue']:g} | {c['baseline']} | {c['seeds']} | "
                 f"{fmt(c['corloc'])} | {stats.format_difference(*c['gain'])} | "
                 f"{stats.format_p(c['p'])} | {c['wins']}/{c['seeds']} | {fmt(c['map_change'])} | "
                 f"{c['background_change']:+.3f} | {c['pxap_change']:+.3f} | "
                 f"{_full_cue_text(c)} | {c['trainings']} | {c['train_ratio']:.2f} | "
                 f"{c['eval_ratio']:.2f} | {'yes' if c['met'] else 'no'} |")
  return '\n'.join(lines) + '\n'


def _full_cue_text(c):
  if c['full_cue_best'] is None:
    return 'no body_cue 1 rows'
  return f"{c['full_cue_gap']:+.3f} ({c['full_cue_best']})"


def best(found):
  """The met cell with the largest mean gain, or None."""
  met = [c for c in found if c['met']]
  return max(met, key=lambda c: c['gain'][0]) if met else None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--csv', required=True, help="a study's study.csv")
  parser.add_argument('--write', default='', help='claim.json to write if a cell meets the claim')
  args = parser.parse_args()
  if not os.path.isfile(args.csv):
    sys.exit(f'error: {args.csv} not found; pass the study.csv that experiments/study.py wrote.')
  found = claims(study.read_rows(args.csv))
  print(markdown(found))
  chosen = best(found)
  if chosen is None:
    print(f'no (method, body_cue) meets the claim (>= {MIN_SEEDS} seeds, CorLoc >= {MIN_CORLOC}, '
          f'>= {MIN_GAIN} above the best baseline with the interval above {MARGIN} and p < '
          f'{MAX_P}, mAP within {MAX_MAP_CHANGE}, within {MAX_FULL_CUE_GAP} of the best method at '
          f'body_cue 1 with one training); nothing written.')
    return
  print(f"met: {chosen['method']} at body_cue {chosen['body_cue']:g} against {chosen['baseline']}")
  if args.write:
    from excam_jax.runtime import files  # pylint: disable=g-import-not-at-top
    files.write_text(args.write, json.dumps({'method': chosen['method'],
                                             'body_cue': chosen['body_cue'],
                                             'baseline': chosen['baseline']}) + '\n')
    print(f'wrote {args.write}')


if __name__ == '__main__':
  main()

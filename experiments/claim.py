r"""Checks the whole-object claim on a study's rows; writes claim.json only where it is met.

  python experiments/claim.py --csv=experiments/results/study_band.csv \
      [--write=experiments/results/claim.json]

For every (method, body_cue) of the rows other than WILDCAT's, over the seeds where both the
method and WILDCAT ran (exact scoring, non-difficult objects, as the study scores them):

  met = n >= 3 seeds and mean CorLoc >= 0.6 and mean(CorLoc - WILDCAT's) >= 0.25
        and |mean(classification mAP - WILDCAT's)| <= 0.02.

Prints one markdown row per (method, body_cue) with each criterion, its 95 % t-interval, and the
cost ratios against WILDCAT (training and evaluation seconds, mean over the same seeds: a ratio
means something only where both ran on one machine in one sitting, as the cells of one study
invocation do; rows carried over from another machine's study compare machines). With
--write, writes {"method": NAME, "body_cue": LEVEL} of the best met cell (highest mean CorLoc
gain); without a met cell it writes nothing and says so.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import study  # pylint: disable=wrong-import-position

MIN_SEEDS, MIN_CORLOC, MIN_GAIN, MAX_MAP_CHANGE = 3, 0.6, 0.25, 0.02


def _paired(rows, method, cue, baseline=study.BASELINE):
  """{seed: (method row, baseline row)} at body_cue `cue`."""
  table = {(r['method'], float(r['body_cue']), int(r['seed'])): r for r in rows}
  return {seed: (row, table[(baseline, c, seed)]) for (name, c, seed), row in sorted(table.items())
          if name == method and c == cue and (baseline, c, seed) in table}


def claims(rows, level=0.95):
  """One dict per (method, body_cue) with a WILDCAT partner: the criteria and whether all hold."""
  out = []
  cells = sorted({(r['method'], float(r['body_cue'])) for r in rows if r['method'] != study.BASELINE})
  for method, cue in cells:
    pairs = _paired(rows, method, cue)
    if not pairs:
      continue
    mine = [p[0] for p in pairs.values()]
    diff = lambda key: [a[key] - b[key] for a, b in pairs.values()]
    ratio = lambda key: (sum(a[key] for a, _ in pairs.values()) /
                         sum(b[key] for _, b in pairs.values()))
    corloc = study.mean_ci([r['corloc'] for r in mine], level)
    gain = study.mean_ci(diff('corloc'), level)
    map_change = study.mean_ci(diff('classification_map'), level)
    met = (len(pairs) >= MIN_SEEDS and corloc[0] >= MIN_CORLOC and gain[0] >= MIN_GAIN
           and abs(map_change[0]) <= MAX_MAP_CHANGE)
    out.append({'method': method, 'body_cue': cue, 'seeds': len(pairs), 'corloc': corloc[:2],
                'gain': gain[:2], 'map_change': map_change[:2],
                'train_ratio': ratio('train_s'), 'eval_ratio': ratio('eval_s'), 'met': met})
  return out


def markdown(found):
  """The table of `claims`."""
  fmt = lambda pair: study.format_ci(*pair)
  lines = ['| method | body_cue | seeds | CorLoc | CorLoc − WILDCAT | mAP − WILDCAT | train s / WILDCAT '
           '| eval s / WILDCAT | met |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for c in found:
    lines.append(f"| {c['method']} | {c['body_cue']:g} | {c['seeds']} | {fmt(c['corloc'])} | "
                 f"{fmt(c['gain'])} | {fmt(c['map_change'])} | {c['train_ratio']:.2f} | "
                 f"{c['eval_ratio']:.2f} | {'yes' if c['met'] else 'no'} |")
  return '\n'.join(lines) + '\n'


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
          f'>= {MIN_GAIN} above WILDCAT, mAP within {MAX_MAP_CHANGE}); nothing written.')
    return
  print(f"met: {chosen['method']} at body_cue {chosen['body_cue']:g}")
  if args.write:
    from excam_jax import files  # pylint: disable=g-import-not-at-top
    files.write_text(args.write, json.dumps({'method': chosen['method'],
                                             'body_cue': chosen['body_cue']}) + '\n')
    print(f'wrote {args.write}')


if __name__ == '__main__':
  main()

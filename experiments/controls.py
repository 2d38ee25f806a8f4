r"""The controls' verdicts: PROTOCOL.md's pre-declared readings applied mechanically to a study's rows.

  python experiments/controls.py --csv=experiments/results/tuned/study.csv

experiments/results/tuned/PROTOCOL.md ("What the controls decide") wrote down, before any
report cell ran, what each control predicts. This script reads them off the rows (the test
split's when the CSV has any, as claim.py does), per body_cue level, on the paired seeds:

- **max identity** (wildcat_max vs excam, CorLoc): excam - wildcat_max not resolved and its mean
  within +-MAX_IDENTITY (0.05): "the class-wise max explains ex-CAM's boxes at this setting";
  resolved: ex-CAM differs from the max by that much; otherwise (not resolved, |mean| >= 0.05):
  not decided at this n.
- **delta 0.7** (excam_d07 vs excam, CorLoc): not worse (the difference's interval reaches 0
  or lies above it) is what a sequential mechanism predicts; worse (resolved below 0) is not.
- **more maps** (excam_m4 and excam_m8 vs excam, body coverage): a sequential mechanism
  predicts body coverage growing with M: m8 - excam resolved above 0.
- **hard masks** (excam_hard vs excam, CorLoc): a resolved difference says the masks' gradient
  matters; otherwise it is not shown to.
- **ACoL's parts** (CorLoc): the relative box rule alone on WILDCAT (wildcat_relative -
  wildcat), the rule on ACoL (acol - acol_zero), and ACoL's second classifier at z > 0
  (acol_zero - wildcat).

Each level's list opens with the setting each method ran at: every method at its own tuned
choice (the controls at ex-CAM's), so a difference between two tuned methods (wildcat_max - excam,
wildcat_relative - wildcat) can hold a difference of pooling as well as of mechanism where the two
settings differ. Every difference is printed with its 95 % t-interval and exact sign-flip p
("not resolved (+-X)" where the interval contains 0); a control absent from the rows is said to be
absent.
"""

import argparse

from experiments import stats
from experiments import study

MAX_IDENTITY = 0.05  # |mean| below which an unresolved excam - wildcat_max reads as the identity.


def difference(rows, metric, method, other, cue, level=0.95):
  """(mean, half-width, sign-flip p, n) of method - other on the seeds both ran at `cue`; None
  when either is absent there."""
  diffs = study.paired_differences(rows, metric, method, other).get(cue)
  if not diffs:
    return None
  values = stats.finite(diffs)
  if not values:
    return None
  mean, half, _ = stats.mean_ci(values, level)
  return mean, half, stats.sign_flip_p(values), len(values)


def _said(found, metric):
  mean, half, p, n = found
  return f'{stats.format_difference(mean, half)} {metric}, p = {stats.format_p(p)}, n = {n}'


def max_identity(rows, cue):
  found = difference(rows, 'corloc', 'excam', 'wildcat_max', cue)
  if found is None:
    return 'max identity: wildcat_max or excam absent.'
  mean, half = found[:2]
  if stats.resolved(mean, half):
    verdict = 'ex-CAM differs from the class-wise max of its maps'
  elif abs(mean) < MAX_IDENTITY:
    verdict = "the class-wise max explains ex-CAM's boxes at this setting"
  else:
    verdict = 'not decided at this n'
  return f'max identity (excam - wildcat_max): {_said(found, "CorLoc")}: {verdict}.'


def delta_07(rows, cue):
  found = difference(rows, 'corloc', 'excam_d07', 'excam', cue)
  if found is None:
    return 'delta 0.7: excam_d07 or excam absent.'
  mean, half = found[:2]
  worse = stats.resolved(mean, half) and mean < 0
  verdict = ('worse: not what a sequential mechanism predicts' if worse
             else 'not worse: as a sequential mechanism predicts')
  return f'delta 0.7 (excam_d07 - excam): {_said(found, "CorLoc")}: {verdict}.'


def more_maps(rows, cue):
  lines = []
  for method in ('excam_m4', 'excam_m8'):
    found = difference(rows, 'parts_body_coverage', method, 'excam', cue)
    if found is None:
      lines.append(f'more maps: {method} or excam absent.')
      continue
    mean, half = found[:2]
    grows = stats.resolved(mean, half) and mean > 0
    verdict = ('body coverage grows with M' if grows
               else 'body coverage is not shown to grow with M')
    lines.append(f'more maps ({method} - excam): {_said(found, "body coverage")}: {verdict}.')
  return lines


def hard_masks(rows, cue):
  found = difference(rows, 'corloc', 'excam', 'excam_hard', cue)
  if found is None:
    return 'hard masks: excam_hard or excam absent.'
  mean, half = found[:2]
  verdict = ("the masks' gradient matters" if stats.resolved(mean, half)
             else "the masks' gradient is not shown to matter")
  return f'hard masks (excam - excam_hard): {_said(found, "CorLoc")}: {verdict}.'


def acol_parts(rows, cue):
  lines = []
  for method, other, what in (('wildcat_relative', 'wildcat', 'the relative rule on WILDCAT'),
                              ('acol', 'acol_zero', "the relative rule on ACoL's maps"),
                              ('acol_zero', 'wildcat', "ACoL's second classifier at z > 0")):
    found = difference(rows, 'corloc', method, other, cue)
    lines.append(f'{what} ({method} - {other}): ' + (_said(found, 'CorLoc') + '.' if found
                                                     else f'{method} or {other} absent.'))
  return lines


CONTROLLED = ('excam', 'wildcat_max', 'excam_d07', 'excam_m4', 'excam_m8', 'excam_hard', 'wildcat',
              'wildcat_relative', 'acol', 'acol_zero')


def settings(rows, cue):
  """The line naming the setting (or settings) each method of the controls ran at `cue`."""
  said = []
  for method in CONTROLLED:
    found = sorted({r.get('setting') or 'none' for r in rows
                    if r['method'] == method and float(r['body_cue']) == cue})
    if found:
      said.append(f"{method} {' / '.join(found)}")
  return 'settings (a control and its reference may differ in them): ' + (
      ', '.join(said) if said else 'no method of the controls ran') + '.'


def verdicts(rows):
  """{body_cue: [lines]} for every level of the rows (claim.py's choice of split)."""
  out = {}
  for cue in sorted({float(r['body_cue']) for r in rows}):
    out[cue] = [settings(rows, cue), max_identity(rows, cue), delta_07(rows, cue),
                *more_maps(rows, cue), hard_masks(rows, cue), *acol_parts(rows, cue)]
  return out


def markdown(found):
  lines = ['# The controls (PROTOCOL.md, "What the controls decide")', '']
  for cue, said in found.items():
    lines += [f'## body_cue {cue:g}', ''] + [f'- {line}' for line in said] + ['']
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--csv', required=True, help="a study's study.csv")
  args = parser.parse_args()
  rows = study.read_rows(args.csv)
  if not rows:
    raise SystemExit(f'error: no rows in {args.csv}; pass the study.csv of a study that ran.')
  rows = [r for r in rows if r.get('split') == 'test'] or rows
  keys = [(r['method'], float(r['body_cue']), int(r['seed'])) for r in rows]
  if len(set(keys)) < len(keys):
    raise SystemExit(f'error: {args.csv} holds several settings of a method for one seed (a '
                     'tuning.csv?); pass the study.csv of a report (study.py --choices).')
  print(markdown(verdicts(rows)))


if __name__ == '__main__':
  main()

r"""Which body_cue levels are the thesis's regime, from the body-only and part-only probes.

  python experiments/study.py --workdir=runs/probes --methods=body_only --body_cue=0,0.25,0.5,0.75,1 \
      --seeds=0,1,2 --set=model.kmax=0.3
  python experiments/study.py --workdir=runs/probes --methods=part_only --body_cue=0 --seeds=0,1,2 \
      --set=model.kmax=0.3
  python experiments/certify.py --csv=runs/probes/study.csv [--levels]

The rule (experiments/results/tuned/PROTOCOL.md, declared before the probes finished): a level is
certified when the body-only probe's mean classification mAP over the seeds is >= MIN_BODY (about
twice chance: the body is evidence) and the paired difference part-only - body-only is >= MIN_GAP
with its 95 % t-interval above 0 (the part is the stronger evidence). The part-only probe leaves
the bodies out, so its data do not depend on body_cue: a seed's part-only row at the same level
is used where there is one, else that seed's part-only row at any level.

Prints one markdown row per level; --levels prints only the certified levels, comma-separated (for
a shell to pass to --body_cue), at most MAX_LEVELS of them (those with the highest body-only mAP).
"""

import argparse
import os
import sys


from experiments import stats
from experiments import study

MIN_BODY, MIN_GAP, MAX_LEVELS = 0.5, 0.10, 2
METRIC = 'classification_map'


def certify(rows, level=0.95):
  """One dict per body_cue with body-only rows: the probes' figures and whether it is certified."""
  part = {}
  for r in sorted(rows, key=lambda r: float(r['body_cue'])):
    if r['method'] == 'part_only':
      part.setdefault(int(r['seed']), {})[float(r['body_cue'])] = r[METRIC]
  out = []
  for cue in sorted({float(r['body_cue']) for r in rows if r['method'] == 'body_only'}):
    body = {int(r['seed']): r[METRIC] for r in rows
            if r['method'] == 'body_only' and float(r['body_cue']) == cue}
    gaps = [part[s].get(cue, next(iter(part[s].values()))) - v for s, v in sorted(body.items())
            if s in part]
    body_ci = stats.mean_ci(list(body.values()), level)
    gap_ci = stats.mean_ci(gaps, level)
    ok = (body_ci[0] >= MIN_BODY and gap_ci[0] >= MIN_GAP and stats.resolved(*gap_ci[:2])
          and gap_ci[0] > 0)
    out.append({'body_cue': cue, 'body': body_ci, 'gap': gap_ci, 'certified': ok})
  return out


def levels(found):
  """The certified levels, at most MAX_LEVELS (highest body-only mAP first), in increasing order."""
  chosen = sorted((c for c in found if c['certified']), key=lambda c: -c['body'][0])[:MAX_LEVELS]
  return sorted(c['body_cue'] for c in chosen)


def markdown(found):
  lines = ['| body_cue | seeds | body-only mAP | part-only − body-only | certified |',
           '| --- | --- | --- | --- | --- |']
  for c in found:
    lines.append(f"| {c['body_cue']:g} | {c['body'][2]} | {stats.format_ci(*c['body'][:2])} | "
                 f"{stats.format_difference(*c['gap'][:2])} | {'yes' if c['certified'] else 'no'} |")
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  parser.add_argument('--csv', required=True, help="the probes' study.csv")
  parser.add_argument('--levels', action='store_true', help='print only the certified levels')
  args = parser.parse_args()
  if not os.path.isfile(args.csv):
    sys.exit(f'error: {args.csv} not found; run the probes first (see the docstring).')
  found = certify(study.read_rows(args.csv))
  if args.levels:
    print(','.join(f'{c:g}' for c in levels(found)))
    return
  print(markdown(found))
  print(f"certified: {', '.join(f'{c:g}' for c in levels(found)) or 'none'} (body-only mAP >= "
        f'{MIN_BODY}, part-only above it by >= {MIN_GAP} with the interval above 0)')


if __name__ == '__main__':
  main()

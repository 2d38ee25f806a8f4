"""Restore, one prediction pass, metrics + parts measures + figures + report: the body of the
evaluate command (excam_jax/evaluate.py) and of the ablations' final evaluations.

Kept apart from the command module, which defines command-line flags, so that other commands
(ablate) can call it.
"""

import json
import os

import jax
import numpy as np

from excam_jax import checkpoints
from excam_jax import config_checks
from excam_jax import files
from excam_jax import visualize
from excam_jax import xla_setup
from excam_jax.data import image_ops
from excam_jax.data import pipeline
from excam_jax.errors import UserError
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import evaluator
from excam_jax.evaluation import parts
from excam_jax.evaluation import report
from excam_jax.models import expansion as expansionlib
from excam_jax.models import network


def make_predict_fn(model, variables, expansion=None):
  """A jitted images -> numpy (logits, class_maps), float32, for the evaluation and `localize`.

  `expansion`: None, or a transform (apply_fn, images) -> (logits, class_maps) of the maps
  (models/expansion.py), as `expansion.from_config(config.eval)` gives.
  """
  xla_setup.enable_compilation_cache()

  @jax.jit
  def forward(variables, images):
    def apply(x):
      logits, aux = model.apply(variables, x, train=False)
      return logits.astype('float32'), aux['class_maps'].astype('float32')
    if expansion is None:
      return apply(images)
    return expansion(apply, images)

  def predict_fn(images):
    logits, class_maps = forward(variables, np.asarray(images, np.float32))
    return np.asarray(logits), np.asarray(class_maps)

  return predict_fn


class _Examples:
  """The first `count` real examples of the pass, with the model's outputs, for the figures."""

  def __init__(self, count):
    self.count, self.taken = count, []

  def add(self, batch, logits, class_maps):
    have = sum(len(t['mask']) for t in self.taken)
    if have >= self.count:
      return
    keep = np.flatnonzero(np.asarray(batch['mask']) > 0)[:self.count - have]
    fields = {k: np.asarray(v)[keep] for k, v in batch.items()}
    fields.update(logits=np.asarray(logits)[keep], class_maps=np.asarray(class_maps)[keep])
    self.taken.append(fields)

  def batch(self):
    return {k: np.concatenate([t[k] for t in self.taken]) for k in self.taken[0]}


def write_figures(out_dir, examples, class_names, per_class, dataset, threshold, compare=None):
  """Writes ap_bars.png, boxes.png and cams.png; boxes come from boxes.map_to_boxes at the
  original size (what the metrics scored), drawn scaled onto the model's input image."""
  metric = report.bar_metric(dataset)
  runs = {'ours': per_class[metric]}
  if compare:
    runs[compare[0]] = compare[1]
  runs.update(report.PER_CLASS_REFERENCES.get(dataset, {}).get(metric, {}))
  visualize.save_ap_bars(os.path.join(out_dir, 'ap_bars.png'), class_names, runs,
                         title=f'{metric} per class, {dataset}', ylabel=metric)
  images = np.clip(image_ops.denormalize(examples['image']), 0, 1)
  size = images.shape[1]
  box_panels, cam_panels, box_titles, cam_titles = [], [], [], []
  for i, image in enumerate(images):
    height, width = (int(v) for v in examples['orig_size'][i])
    to_input = np.array([size / width, size / height, size / width, size / height])
    labels = examples['box_labels'][i]
    gt = boxlib.normalized_to_pixels(examples['boxes'][i][labels >= 0], size, size)
    logits, maps = examples['logits'][i], np.moveaxis(examples['class_maps'][i], -1, 0)
    predicted = np.flatnonzero(logits > 0)
    pred = [tuple(np.floor(np.asarray(b) * to_input).astype(int))
            for c in predicted for b in boxlib.map_to_boxes(maps[c], height, width, threshold)]
    box_panels.append(visualize.overlay_boxes(image, gt, pred))
    box_titles.append(', '.join(class_names[c] for c in predicted) or '(none predicted)')
    shown = boxlib.upsample(maps, size, size)
    for c in sorted(set(labels[labels >= 0].tolist()) | set(predicted.tolist())):
      cam_panels.append(visualize.overlay_cam(image, 1.0 / (1.0 + np.exp(-shown[c]))))
      cam_titles.append(f'{i}: {class_names[c]} s={1.0 / (1.0 + np.exp(-logits[c])):.2f}')
  visualize.save_panels(os.path.join(out_dir, 'boxes.png'), box_panels, box_titles)
  visualize.save_panels(os.path.join(out_dir, 'cams.png'), cam_panels, cam_titles)


def _with_eval_split(config, split):
  """A copy of `config` whose eval_split is `split` (so dataset_info checks that split)."""
  config = config.copy_and_resolve_references()
  config.data.eval_split = split
  return config


def _output_dir(workdir, step, split, config, output):
  out_dir = output or os.path.join(workdir, 'eval', str(step))
  if not output and split != config.data.eval_split:
    out_dir = os.path.join(out_dir, split)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserError(f'the output {out_dir} is a file, not a directory; pass another --output.')
  files.check_writable(out_dir, f'cannot write to {out_dir}; pass a writable --output.')
  return out_dir


def map_expansion_fields(config, overrides):
  """config.eval's map-transform fields (models/expansion.py: DEFAULTS where absent) with
  `overrides` (a dict; None values ignored) on top, checked."""
  fields = dict(expansionlib.DEFAULTS)
  fields.update({k: v for k, v in (config.get('eval') or {}).items() if k in fields})
  fields.update({k: v for k, v in (overrides or {}).items() if v is not None})
  config_checks.validate_map_expansion(fields)
  return fields


def evaluate_checkpoint(workdir, split=None, step=None, compare=None, figures=8, workers=0,
                        output=None, protocol=None, expansion=None):
  """Restores a run's checkpoint and config, evaluates a split in one pass, writes the report.

  Every argument is checked, and the output folder made and probed, before the model runs.

  Args:
    workdir: the run.
    split: the split; the config's eval_split if None.
    step: the checkpoint step; the latest readable one if None.
    compare: another run's metrics.json for ap_bars.png.
    figures: examples drawn in boxes.png and cams.png (0: no figures).
    workers: processes for the MaxBoxAcc sweep.
    output: output folder (default <workdir>/eval/<step>[/<split>]).
    protocol: overrides of config.eval's protocol fields (a dict; None values are ignored).
    expansion: overrides of config.eval's 'map_expansion*' fields (a dict, None values
      ignored): the maps' transform (models/expansion.py: the relative box rule, test-time
      erasing, adversarial climbing).

  Returns:
    The output directory, holding metrics.json, tables.md and the figures.
  """
  config, variables, step = checkpoints.restore(workdir, step)
  split = split or config.data.eval_split
  info = pipeline.dataset_info(_with_eval_split(config, split))  # Checks the split.
  scoring = evaluator.protocol_from_config(config.get('eval'), **(protocol or {}))
  other = (report.load_compare(compare, info.num_classes, report.bar_metric(config.data.dataset))
           if compare else None)
  out_dir = _output_dir(workdir, step, split, config, output)
  expand = map_expansion_fields(config, expansion)
  predict_fn = make_predict_fn(network.create_model(config.model, info.num_classes), variables,
                               expansionlib.from_config(expand))
  pool = evaluator.sweep_pool(workers)
  failed = True
  try:
    scorer = evaluator.Evaluator(info.class_names, scoring, pool=pool)
    measures = parts.PartsMeasures(config.data.parts, split) if config.data.dataset == 'parts' else None
    examples = _Examples(figures)
    for batch in pipeline.eval_batches(config, split):
      if not np.any(np.asarray(batch['mask']) > 0):
        continue
      logits, class_maps = predict_fn(batch['image'])
      scorer.add(batch, logits, class_maps)
      if measures:
        measures.add(batch, class_maps)
      examples.add(batch, logits, class_maps)
    result = scorer.compute()
    failed = False
  finally:
    evaluator.close_pool(pool, failed)
  if measures:
    result.update(measures.compute())
  described = scoring.describe()
  described['map_expansion'] = expansionlib.describe(expand)
  result.update(dataset=config.data.dataset, split=split, step=int(step), protocol=described,
                metrics=report.METRICS)
  files.write_text(os.path.join(out_dir, 'metrics.json'),
                   json.dumps(report.jsonable(result), indent=2))
  files.write_text(os.path.join(out_dir, 'tables.md'),
                   report.markdown_report(result, info.class_names, config.data.dataset, split, step))
  if figures > 0 and examples.taken:
    write_figures(out_dir, examples.batch(), info.class_names, result['per_class'],
                  config.data.dataset, scoring.threshold, other)
  return out_dir

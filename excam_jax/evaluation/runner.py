"""Restore, one prediction pass, metrics + parts measures + figures + report: the body of the
evaluate command (excam_jax/evaluate.py) and of the ablations' final evaluations.

Kept apart from the command module, which defines command-line flags, so that other commands
(ablate) can call it.
"""

import hashlib
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
from excam_jax.errors import UserError, check_field
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import evaluator
from excam_jax.evaluation import parts
from excam_jax.evaluation import report
from excam_jax.evaluation import wsol_benchmark
from excam_jax.models import expansion as expansionlib
from excam_jax.models import network

# config.model fields that change only inference, not the trained arrays: an evaluation may
# override them on a checkpoint's config. Name -> allowed values.
INFERENCE_MODEL_FIELDS = {'acol_fusion': config_checks.ACOL_FUSIONS}


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


def write_figures(out_dir, examples, class_names, per_class, dataset, threshold, compare=None,
                  heat=visualize.sigmoid):
  """Writes ap_bars.png, boxes.png and cams.png; boxes come from boxes.map_to_boxes at the
  original size (what the metrics scored), drawn scaled onto the model's input image; `heat`
  draws the maps on their own scale (visualize.heat_fn). The WSOL benchmark's single-label sets
  (hundreds of classes: no bars) show the top-1 class's map and boxes."""
  single_label = dataset in wsol_benchmark.DATASETS
  if not single_label:
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
    predicted = np.argmax(logits)[None] if single_label else np.flatnonzero(logits > 0)
    pred = [tuple(np.floor(np.asarray(b) * to_input).astype(int))
            for c in predicted for b in boxlib.map_to_boxes(maps[c], height, width, threshold)]
    box_panels.append(visualize.overlay_boxes(image, gt, pred))
    box_titles.append(', '.join(class_names[c] for c in predicted) or '(none predicted)')
    shown = boxlib.upsample(maps, size, size)
    truth = set(labels[labels >= 0].tolist()) | (  # OpenImages has no boxes: its class_id.
        {int(examples['class_id'][i])} if 'class_id' in examples else set())
    for c in sorted(truth | set(predicted.tolist())):
      cam_panels.append(visualize.overlay_cam(image, heat(shown[c])))
      cam_titles.append(f'{i}: {class_names[c]} s={visualize.sigmoid(logits[c]):.2f}')
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


def model_fields(config, overrides):
  """A copy of config.model with `overrides` (a dict of INFERENCE_MODEL_FIELDS; None values
  ignored) on top, checked."""
  model = config.model.copy_and_resolve_references()
  for name, value in (overrides or {}).items():
    if value is None:
      continue
    if name not in INFERENCE_MODEL_FIELDS:
      raise UserError(f'model.{name} cannot change at evaluation (it defines the trained model); '
                      f'only {tuple(INFERENCE_MODEL_FIELDS)} can.')
    allowed = INFERENCE_MODEL_FIELDS[name]
    check_field(value in allowed, f'model.{name}', value, f'one of {allowed}')
    model[name] = value
  return model


class _OutputsCache:
  """The model's (logits, class maps) of every evaluated batch, kept in one .npz per key.

  A transform 'X+relative' is X's maps followed by the relative rule, a cheap numpy step: with a
  cache, X's outputs are computed once (AdvCAM's climb costs hundreds of plain passes) and
  'X' and 'X+relative' are both scored from them. The key fingerprints everything the outputs
  depend on: the checkpoint step, the split, the data and model configs and the transform X.
  """

  def __init__(self, folder, key_fields):
    digest = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode())
    self.path = os.path.join(folder, digest.hexdigest()[:20] + '.npz')
    self.stored = None
    if os.path.isfile(self.path):
      with np.load(self.path) as data:
        self.stored = [(data[f'logits_{i}'], data[f'maps_{i}']) for i in range(len(data) // 2)]
    self.new, self.used = [], 0

  def predict(self, predict_fn, images):
    """The stored outputs of the next batch, or predict_fn's (kept to be saved)."""
    if self.stored is not None:
      out = self.stored[self.used]
    else:
      out = predict_fn(images)
      self.new.append(out)
    self.used += 1
    return out

  def save(self):
    """Writes the outputs computed in this pass (atomically), unless they came from the file."""
    if self.stored is None and self.new:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      arrays = {}
      for i, (logits, maps) in enumerate(self.new):
        arrays[f'logits_{i}'], arrays[f'maps_{i}'] = logits, maps
      files.write_atomically(self.path, lambda f: np.savez(f, **arrays))


def evaluate_checkpoint(workdir, split=None, step=None, compare=None, figures=8, workers=0,
                        output=None, protocol=None, expansion=None, model_overrides=None,
                        outputs_cache=None):
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
    model_overrides: overrides of the checkpoint's config.model fields that change only
      inference (INFERENCE_MODEL_FIELDS; a dict, None values ignored), e.g.
      {'acol_fusion': 'logits'} scores an ACoL run's mean raw maps instead of its normalised ones.
    outputs_cache: a folder where the model's outputs under the transform (before a '+relative'
      step) are kept and reused: 'advcam' and 'advcam+relative' of one checkpoint then climb once.

  Returns:
    The output directory, holding metrics.json, tables.md and the figures.
  """
  config, variables, step = checkpoints.restore(workdir, step)
  model = model_fields(config, model_overrides)
  split = split or config.data.eval_split
  info = pipeline.dataset_info(_with_eval_split(config, split))  # Checks the split.
  scoring = evaluator.protocol_from_config(config.get('eval'), **(protocol or {}))
  other = (report.load_compare(compare, info.num_classes, report.bar_metric(config.data.dataset))
           if compare else None)
  out_dir = _output_dir(workdir, step, split, config, output)
  expand = map_expansion_fields(config, expansion)
  base, _, then = expand['map_expansion'].partition('+')
  cache = None
  if outputs_cache:  # The transform's '+relative' step runs after the (cached) outputs.
    cache = _OutputsCache(outputs_cache, {'step': int(step), 'split': split,
                                          'data': config.data.to_dict(),
                                          'batch': config.eval.batch_size, 'model': model.to_dict(),
                                          'transform': dict(expand, map_expansion=base)})
  model_fn = make_predict_fn(network.create_model(model, info.num_classes), variables,
                             expansionlib.from_config(dict(expand, map_expansion=base)
                                                      if cache else expand))

  def predict_fn(images):
    if cache is None:
      return model_fn(images)
    logits, maps = cache.predict(model_fn, images)
    if then == 'relative':
      maps = np.asarray(expansionlib.acol.normalise_maps(maps)) - expand['map_expansion_threshold']
    return logits, maps

  pool = evaluator.sweep_pool(workers)
  failed = True
  try:
    scorer = evaluator.make_scorer(info.class_names, scoring, pool=pool,
                                   dataset=config.data.dataset, eval_config=config.get('eval'))
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
    if cache:
      cache.save()
    failed = False
  finally:
    evaluator.close_pool(pool, failed)
  if measures:
    result.update(measures.compute())
  described = scorer.protocol.describe()
  described['map_expansion'] = expansionlib.describe(expand)
  if model.head == 'acol':
    described['acol_fusion'] = model.get('acol_fusion', 'normalised')
  result.update(dataset=config.data.dataset, split=split, step=int(step), protocol=described,
                metrics=report.METRICS)
  files.write_text(os.path.join(out_dir, 'metrics.json'),
                   json.dumps(report.jsonable(result), indent=2))
  files.write_text(os.path.join(out_dir, 'tables.md'),
                   report.markdown_report(result, info.class_names, config.data.dataset, split, step))
  if figures > 0 and examples.taken:
    write_figures(out_dir, examples.batch(), info.class_names, result['per_class'],
                  config.data.dataset, scoring.threshold, other, visualize.heat_fn(model, expand))
  return out_dir

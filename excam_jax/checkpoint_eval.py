"""evaluate_checkpoint: restore a run, one prediction pass, metrics + parts measures + figures +
report. The body of the evaluate command (excam_jax/evaluate.py), of the ablations' final
evaluations and of the study's cells.

Kept apart from the command module, which defines command-line flags, so that other commands
(ablate) can call it. The model runs through the one inference seam (excam_jax/inference.py);
the scores come from the metric layer (excam_jax/evaluation/).
"""

import json
import os

import numpy as np

from excam_jax import inference
from excam_jax import visualize
from excam_jax.data import image_ops
from excam_jax.data import pipeline
from excam_jax.data import sources
from excam_jax.errors import UserError
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import evaluator
from excam_jax.evaluation import parts
from excam_jax.evaluation import report
from excam_jax.models import map_transforms
from excam_jax.runtime import files
from excam_jax.training import checkpoints


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
  single_label = sources.is_benchmark(dataset)
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
      ignored): the maps' transform (models/map_transforms.py: the relative box rule, test-time
      erasing, adversarial climbing).
    model_overrides: overrides of the checkpoint's config.model fields that change only
      inference (INFERENCE_MODEL_FIELDS; a dict, None values ignored), e.g.
      {'acol_fusion': 'logits'} scores an ACoL run's mean raw maps instead of its normalised ones.
    outputs_cache: a folder where the model's outputs under the transform (before a '+relative'
      step) are kept and reused: 'advcam' and 'advcam+relative' of one checkpoint then climb once.

  Returns:
    The output directory, holding metrics.json, tables.md and the figures.
  """
  predictor = inference.load(workdir, step, expansion, model_overrides,
                             base_transform=bool(outputs_cache))
  config, step, expand = predictor.config, predictor.step, predictor.transform
  split = split or config.data.eval_split
  info = pipeline.dataset_info(_with_eval_split(config, split))  # Checks the split.
  scoring = evaluator.protocol_from_config(config.get('eval'), **(protocol or {}))
  other = (report.load_compare(compare, info.num_classes, report.bar_metric(config.data.dataset))
           if compare else None)
  out_dir = _output_dir(workdir, step, split, config, output)
  cache = None
  if outputs_cache:  # The transform's '+relative' step runs after the (cached) outputs.
    base = expand['map_expansion'].partition('+')[0]
    saved = os.path.join(os.path.abspath(workdir), checkpoints.CHECKPOINT_DIR, str(step))
    cache = inference.OutputsCache(outputs_cache, {
        # The step's folder's time: a run retrained in place to the same step is another key.
        'step': step, 'saved': os.stat(saved).st_mtime_ns if os.path.isdir(saved) else None,
        'split': split, 'data': config.data.to_dict(),
        'batch': config.eval.batch_size, 'model': config.model.to_dict(),
        'transform': dict(expand, map_expansion=base)})

  def predict_fn(images):
    if cache is None:
      return predictor(images)
    logits, maps = cache.predict(predictor, images)
    return logits, inference.relative_step(expand, maps)

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
  described['map_expansion'] = map_transforms.describe(expand)
  if config.model.head == 'acol':
    described['acol_fusion'] = config.model.get('acol_fusion', 'normalised')
  result.update(dataset=config.data.dataset, split=split, step=int(step), protocol=described,
                metrics=report.METRICS)
  files.write_text(os.path.join(out_dir, 'metrics.json'),
                   json.dumps(report.jsonable(result), indent=2))
  files.write_text(os.path.join(out_dir, 'tables.md'),
                   report.markdown_report(result, info.class_names, config.data.dataset, split, step))
  if figures > 0 and examples.taken:
    write_figures(out_dir, examples.batch(), info.class_names, result['per_class'],
                  config.data.dataset, scoring.threshold, other, predictor.heat)
  return out_dir

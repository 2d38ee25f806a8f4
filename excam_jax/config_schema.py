"""The one check of a whole config: every field against its allowed values, before any work.

A config has five sections: data, model, optim, train and eval (configs/voc12.py lists every
field).

`validate(config)` raises a ConfigError naming the first bad field and what it allows. It imports
neither JAX nor TensorFlow, so a command answers a wrong value at once.
"""

import math
import numbers
import os

from excam_jax.data import sources
from excam_jax.data import synthetic
from excam_jax.data import wsol
from excam_jax.errors import ConfigError, check_field

DATASETS = tuple(sources.SOURCES)  # data/sources.py: the one table of data sets.
HEADS = ('excam', 'wildcat', 'adl', 'cam', 'acol')
# How a WILDCAT-family head pools a class's M maps into its class map (models/wildcat.py).
CLASS_POOLINGS = ('mean', 'max')
SPATIAL_POOLINGS = ('wildcat', 'gap')  # model.spatial_pooling.
# ACoL's test-time map (models/acol.py): its two classifiers' normalised maps or raw maps z.
ACOL_FUSIONS = ('normalised', 'logits')
DEPTHS = (18, 34, 50, 101, 152)
OUTPUT_STRIDES = (8, 16, 32)
DTYPES = ('float32', 'bfloat16')
# How convolutions and their gradients are computed (models/fastconv.py).
CONV_IMPLS = ('auto', 'xla', 'dot1x1', 'matmul', 'onednn', 'onednn_mixed')
NORM_IMPLS = ('flax', 'fused')  # models/batchnorm.py IMPLS
LEARN_THRESHOLD = ('none', 'scalar', 'per_class')
DIVERSITY_LOSSES = ('none', 'pairwise_l2', 'cosine')
SCHEDULES = ('constant', 'cosine', 'step')
OPTIMIZERS = ('sgd', 'adamw')
# The classification loss: multi-label sigmoid BCE, or softmax cross-entropy for single-label data.
LOSSES = ('bce', 'softmax')
# config.optim fields added after runs were first saved, with the values those runs trained with
# (models/losses.py, train.py create_optimizer); decay_every_epochs is wsolevaluation's default.
OPTIM_DEFAULTS = {'loss': 'bce', 'nesterov': False, 'decay_every_epochs': 30,
                  'head_rate_stages': (), 'background_weight': 0.0, 'background_detach': False}
MAXBOXACC = ('exact', 'wsolevaluation')
# Input augmentations of training (training/augment.py), and their config.train fields with the
# defaults (wsolevaluation's) that configs saved before the fields existed count as holding.
AUGMENTS = ('none', 'has', 'cutmix')
AUGMENT_DEFAULTS = {'augment': 'none', 'has_grid': 4, 'has_drop_rate': 0.5, 'cutmix_beta': 1.0,
                    'cutmix_prob': 1.0}
# wsolevaluation's scoring of the WSOL benchmark's data sets (evaluation/wsol_benchmark.py), with
# its flags' names and defaults: the CAM thresholds' step, MaxBoxAccV2's IoU thresholds in
# percent, and boxes from every contour (True) or the largest (False, MaxBoxAcc V1).
WSOL_EVAL_DEFAULTS = {'cam_curve_interval': 0.001, 'iou_threshold_list': (30, 50, 70),
                      'multi_contour_eval': True}
# Test-time map transforms (models/map_transforms.py).
EXPANSIONS = ('none', 'relative', 'erase', 'advcam', 'cluster', 'affinity', 'guided',
              'erase+relative', 'advcam+relative')


def _is_int(value):
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_k(field, k, n, zero_ok):
  """k of top-k pooling: a fraction in (0, 1) or an integer count in [1, n]."""
  fraction = _is_real(k) and 0 < k < 1
  count = _is_real(k) and float(k).is_integer() and 1 <= k <= n
  zero = zero_ok and (k is None or (_is_real(k) and k == 0))
  off = '0 (off), ' if zero_ok else ''
  check_field(fraction or count or zero, field, k,
              f'{off}a fraction in (0, 1) or a whole count in [1, {n}] (h*w of the final map)')


def validate_model(config):
  """Checks the model-defining fields (config.model and config.data.image_size)."""
  m, size = config.model, config.data.image_size
  check_field(m.head in HEADS, 'model.head', m.head, f'one of {HEADS}')
  check_field(m.depth in DEPTHS, 'model.depth', m.depth, f'one of {DEPTHS}')
  check_field(_is_int(m.width) and m.width >= 1, 'model.width', m.width, 'an int >= 1')
  check_field(m.output_stride in OUTPUT_STRIDES, 'model.output_stride', m.output_stride,
              f'one of {OUTPUT_STRIDES}')
  dilate = m.get('dilate', True)  # Absent from configs saved before it existed.
  check_field(isinstance(dilate, bool), 'model.dilate', dilate, 'True or False')
  check_field(_is_int(size) and size >= 32 and size % 32 == 0, 'data.image_size', size,
              'a positive multiple of 32 (e.g. 224 or 448)')
  check_field(_is_int(m.num_maps) and m.num_maps >= 1, 'model.num_maps', m.num_maps,
              'an int >= 1')
  n = (size // m.output_stride) ** 2
  _check_k('model.kmax', m.kmax, n, zero_ok=False)
  _check_k('model.kmin', m.kmin, n, zero_ok=True)
  check_field(_is_real(m.alpha), 'model.alpha', m.alpha, 'a finite float')
  check_field(_is_real(m.drop_threshold) and 0 < m.drop_threshold < 1, 'model.drop_threshold',
              m.drop_threshold, 'delta in (0, 1)')
  check_field(_is_real(m.temperature) and m.temperature > 0, 'model.temperature', m.temperature,
              'a finite float > 0')
  check_field(m.learn_threshold in LEARN_THRESHOLD, 'model.learn_threshold', m.learn_threshold,
              f'one of {LEARN_THRESHOLD}')
  acol_head = m.get('acol_head', 'wildcat')
  check_field(acol_head in HEADS and acol_head != 'acol', 'model.acol_head', acol_head,
              f"one of {tuple(h for h in HEADS if h != 'acol')}")
  acol_threshold = m.get('acol_threshold', 0.6)
  check_field(_is_real(acol_threshold) and 0 < acol_threshold < 1, 'model.acol_threshold',
              acol_threshold, 'a float in (0, 1)')
  fusion = m.get('acol_fusion', 'normalised')  # Absent from configs saved before it existed.
  check_field(fusion in ACOL_FUSIONS, 'model.acol_fusion', fusion, f'one of {ACOL_FUSIONS}')
  kind = acol_head if m.head == 'acol' else m.head
  pooling = m.get('class_pooling', 'mean')
  check_field(pooling in CLASS_POOLINGS, 'model.class_pooling', pooling,
              f'one of {CLASS_POOLINGS}')
  check_field(pooling == 'mean' or kind != 'cam', 'model.class_pooling', pooling,
              "'mean' with a CAM head (it has one map per class, nothing to pool)")
  spatial = m.get('spatial_pooling', 'wildcat')
  check_field(spatial in SPATIAL_POOLINGS, 'model.spatial_pooling', spatial,
              f'one of {SPATIAL_POOLINGS}')
  check_field(spatial == 'wildcat' or kind != 'cam', 'model.spatial_pooling', spatial,
              "'wildcat' with a CAM head (it pools by its own global average)")
  generator = m.get('map_generator', False)
  check_field(isinstance(generator, bool), 'model.map_generator', generator, 'True or False')
  check_field(not generator or (kind != 'cam' and m.head != 'acol'), 'model.map_generator',
              generator, 'False with a CAM or ACoL head (the generator sits on a WILDCAT-family '
              'head)')
  stage = m.get('map_generator_stage', 4)
  stages = tuple(s for s in (1, 2, 3, 4) if 4 * 2 ** (s - 1) >= m.output_stride)
  check_field(_is_int(stage) and stage in stages, 'model.map_generator_stage', stage,
              f'one of {stages}: a trunk stage at the maps\' resolution (output_stride '
              f'{m.output_stride}; 4 is the trunk\'s output)')
  check_field(m.dtype in DTYPES, 'model.dtype', m.dtype, f'one of {DTYPES}')
  impl = m.get('conv_impl', 'auto')
  check_field(impl in CONV_IMPLS, 'model.conv_impl', impl, f'one of {CONV_IMPLS}')
  norm = m.get('norm_impl', 'flax')
  check_field(norm in NORM_IMPLS, 'model.norm_impl', norm, f'one of {NORM_IMPLS}')
  check_field(_is_real(m.adl_gamma) and 0 < m.adl_gamma <= 1, 'model.adl_gamma', m.adl_gamma,
              'a float in (0, 1]')
  check_field(_is_real(m.adl_drop_rate) and 0 <= m.adl_drop_rate <= 1, 'model.adl_drop_rate',
              m.adl_drop_rate, 'a float in [0, 1]')
  for flag in ('self_drop', 'straight_through', 'freeze_bn', 'remat'):
    check_field(isinstance(m[flag], bool), f'model.{flag}', m[flag], 'True or False')
  if m.pretrained:
    check_field(os.path.isfile(os.path.expanduser(m.pretrained)), 'model.pretrained',
                m.pretrained, 'the path of an existing .safetensors or .npz file (or empty for none)')
  if 'optim' in config:
    loss = config.optim.diversity_loss
    check_field(loss in DIVERSITY_LOSSES, 'optim.diversity_loss', loss, f'one of {DIVERSITY_LOSSES}')
    check_field(loss == 'none' or kind != 'cam', 'optim.diversity_loss', loss,
                "'none' with a CAM head (it has no per-class maps)")


def validate_data(config):
  """Checks config.data: the data set, its splits, and the generator's fields ('parts') or
  wsolevaluation's roots ('wsol/...')."""
  d = config.data
  check_field(d.dataset in DATASETS, 'data.dataset', d.dataset, f'one of {DATASETS}')
  splits = sources.SOURCES[d.dataset].splits(config)
  for field in ('train_split', 'eval_split'):
    check_field(d[field] in splits, f'data.{field}', d[field],
                f'a split of {d.dataset}: one of {sorted(splits)}')
  check_field(_is_int(d.shuffle_buffer) and d.shuffle_buffer >= 1, 'data.shuffle_buffer',
              d.shuffle_buffer, 'an int >= 1')
  if d.dataset in wsol.DATASETS:
    _validate_wsol(d)
  if d.dataset != 'parts':
    return
  p = d.parts
  check_field(p.preset in synthetic.PRESETS, 'data.parts.preset', p.preset,
              f'one of {sorted(synthetic.PRESETS)}')
  check_field(_is_int(p.num_classes) and 1 <= p.num_classes <= synthetic.MAX_CLASSES,
              'data.parts.num_classes', p.num_classes, f'an int in [1, {synthetic.MAX_CLASSES}]')
  check_field(_is_int(p.image_size) and p.image_size >= 32, 'data.parts.image_size',
              p.image_size, 'an int >= 32 (pixels)')
  for field in ('num_train', 'num_eval'):
    check_field(_is_int(p[field]) and p[field] >= 1, f'data.parts.{field}', p[field],
                'an int >= 1')
  check_field(_is_int(p.seed), 'data.parts.seed', p.seed, 'an int')
  cue = p.get('body_cue', 0.0)
  check_field(_is_real(cue) and 0.0 <= cue <= 1.0, 'data.parts.body_cue', cue, 'a float in [0, 1]')
  flag = p.get('difficult_objects', False)
  check_field(isinstance(flag, bool), 'data.parts.difficult_objects', flag, 'True or False')
  probe = p.get('probe', 'none')
  check_field(probe in synthetic.PROBES, 'data.parts.probe', probe, f'one of {synthetic.PROBES}')


def _validate_wsol(d):
  """config.data.wsol: wsolevaluation's three roots (data/wsol.py) and the training resize."""
  bench = wsol.DATASETS[d.dataset]
  layouts = {'data_root': f'<data_root>/{bench.folder}/<image_id>',
             'metadata_root': f'<metadata_root>/{bench.folder}/<train|val|test>/image_ids.txt'}
  if bench.masks:
    layouts['mask_root'] = f'<mask_root>/{bench.folder}/<mask_png>'
  for field, layout in layouts.items():
    root = d.wsol[field]
    check_field(isinstance(root, str) and root and
                os.path.isdir(os.path.join(os.path.expanduser(root), bench.folder)),
                f'data.wsol.{field}', root, f"a folder laid out as wsolevaluation's: {layout}")
  size = d.wsol.resize_size
  check_field(_is_int(size) and (not _is_int(d.image_size) or size >= d.image_size),
              'data.wsol.resize_size', size, 'an int >= data.image_size (256 for 224)')


def validate_training(config):
  """Checks config.optim (optimisation, schedule) and config.train (length, book-keeping,
  multi-host)."""
  o, t = config.optim, config.train
  for field in ('head_learning_rate', 'trunk_learning_rate', 'weight_decay', 'diversity_weight'):
    check_field(_is_real(o[field]) and o[field] >= 0, f'optim.{field}', o[field],
                'a finite float >= 0')
  area = o.get('area_weight', 0.0)
  check_field(_is_real(area) and area >= 0, 'optim.area_weight', area, 'a finite float >= 0')
  background = o.get('background_weight', 0.0)
  check_field(_is_real(background) and background >= 0, 'optim.background_weight', background,
              'a finite float >= 0')
  generator = config.model.get('map_generator', False) is True
  check_field(generator or not background, 'optim.background_weight', background,
              '0 without model.map_generator (it weighs the ratio of a generator\'s maps)')
  check_field(not generator or background > 0, 'optim.background_weight', background,
              '> 0 with model.map_generator (the generator learns from it; 1.0 is BAS\'s)')
  detach = o.get('background_detach', False)
  check_field(isinstance(detach, bool), 'optim.background_detach', detach, 'True or False')
  optimizer = o.get('optimizer', 'sgd')
  check_field(optimizer in OPTIMIZERS, 'optim.optimizer', optimizer, f'one of {OPTIMIZERS}')
  check_field(_is_real(o.momentum) and 0 <= o.momentum < 1, 'optim.momentum', o.momentum,
              'a float in [0, 1)')
  check_field(o.schedule in SCHEDULES, 'optim.schedule', o.schedule, f'one of {SCHEDULES}')
  new = {name: o.get(name, default) for name, default in OPTIM_DEFAULTS.items()}
  check_field(new['loss'] in LOSSES, 'optim.loss', new['loss'], f'one of {LOSSES}')
  check_field(new['loss'] == 'bce' or sources.is_benchmark(config.data.dataset), 'optim.loss',
              new['loss'], "'bce' on multi-label data ('softmax' needs one class per image: "
              f'a data set of {sources.BENCHMARKS})')
  check_field(isinstance(new['nesterov'], bool), 'optim.nesterov', new['nesterov'],
              'True or False')
  check_field(_is_int(new['decay_every_epochs']) and new['decay_every_epochs'] >= 1,
              'optim.decay_every_epochs', new['decay_every_epochs'], 'an int >= 1')
  stages = new['head_rate_stages']
  check_field(isinstance(stages, (tuple, list)) and all(s in (1, 2, 3, 4) for s in stages)
              and len(set(stages)) == len(stages), 'optim.head_rate_stages', stages,
              'a tuple of distinct ResNet stages in (1, 2, 3, 4), e.g. (4,) or ()')
  check_field(_is_int(o.warmup_steps) and o.warmup_steps >= 0, 'optim.warmup_steps',
              o.warmup_steps, 'an int >= 0')
  for field in ('batch_size', 'num_epochs', 'log_every_steps', 'eval_every_steps',
                'checkpoint_every_steps', 'keep_checkpoints'):
    check_field(_is_int(t[field]) and t[field] >= 1, f'train.{field}', t[field], 'an int >= 1')
  check_field(_is_int(t.seed), 'train.seed', t.seed, 'an int')
  aug = {name: t.get(name, default) for name, default in AUGMENT_DEFAULTS.items()}
  check_field(aug['augment'] in AUGMENTS, 'train.augment', aug['augment'], f'one of {AUGMENTS}')
  check_field(_is_int(aug['has_grid']) and aug['has_grid'] >= 1, 'train.has_grid',
              aug['has_grid'], 'an int >= 1 (the side of the hidden squares in pixels)')
  for field in ('has_drop_rate', 'cutmix_prob'):
    check_field(_is_real(aug[field]) and 0 <= aug[field] <= 1, f'train.{field}', aug[field],
                'a float in [0, 1]')
  check_field(_is_real(aug['cutmix_beta']) and aug['cutmix_beta'] > 0, 'train.cutmix_beta',
              aug['cutmix_beta'], 'a finite float > 0')
  dist = t.distributed
  check_field(_is_int(dist.num_processes) and dist.num_processes >= 1,
              'train.distributed.num_processes', dist.num_processes, 'an int >= 1')
  check_field(_is_int(dist.process_id) and 0 <= dist.process_id < dist.num_processes,
              'train.distributed.process_id', dist.process_id,
              f'an int in [0, {dist.num_processes}) (train.distributed.num_processes)')
  check_field(t.batch_size % dist.num_processes == 0, 'train.batch_size', t.batch_size,
              f'a multiple of train.distributed.num_processes ({dist.num_processes})')


def _grid_ok(value):
  return value is None or (_is_int(value) and value >= 8)


# The map-transform fields of config.eval (models/map_transforms.py): name -> (ok(value), allowed).
MAP_EXPANSION_CHECKS = {
    'map_expansion': (lambda v: v in EXPANSIONS, f'one of {EXPANSIONS}'),
    'map_expansion_steps': (lambda v: _is_int(v) and v >= 1, 'an int >= 1'),
    'map_expansion_threshold': (lambda v: _is_real(v) and 0 < v < 1, 'a float in (0, 1)'),
    'map_expansion_step_size': (lambda v: _is_real(v) and v > 0, 'a float > 0'),
    'map_expansion_weight': (lambda v: _is_real(v) and v >= 0, 'a float >= 0'),
    'map_expansion_climb_steps': (lambda v: _is_int(v) and v >= 1, 'an int >= 1'),
    'map_expansion_climb_classes': (lambda v: _is_int(v) and v >= 1, 'an int >= 1'),
    'map_expansion_temperature': (lambda v: _is_real(v) and v > 0, 'a float > 0'),
    'map_expansion_affinity_power': (lambda v: _is_real(v) and v > 0, 'a float > 0'),
    'map_expansion_radius': (lambda v: _is_int(v) and v >= 1, 'an int >= 1'),
    'map_expansion_eps': (lambda v: _is_real(v) and v > 0, 'a float > 0')}


def validate_map_expansion(fields):
  """Checks the map-transform fields present in the dict `fields` (MAP_EXPANSION_CHECKS)."""
  for name, (ok, allowed) in MAP_EXPANSION_CHECKS.items():
    if name in fields:
      check_field(ok(fields[name]), f'eval.{name}', fields[name], allowed)


def validate_eval(config):
  """Checks config.eval: the batch size, and the protocol of the localization metrics."""
  e = config.eval
  check_field(_is_int(e.batch_size) and e.batch_size >= 1, 'eval.batch_size', e.batch_size,
              'an int >= 1')
  check_field(isinstance(e.localization, bool), 'eval.localization', e.localization,
              'True or False')
  check_field(_is_real(e.threshold), 'eval.threshold', e.threshold, 'a finite float')
  check_field(e.maxboxacc in MAXBOXACC, 'eval.maxboxacc', e.maxboxacc, f'one of {MAXBOXACC}')
  for field in ('box_grid', 'sweep_grid', 'train_box_grid', 'train_sweep_grid'):
    check_field(_grid_ok(e[field]), f'eval.{field}', e[field],
                'None (the original image size) or an int >= 8')
  check_field(_is_real(e.sweep_step) and 0 < e.sweep_step < 1, 'eval.sweep_step', e.sweep_step,
              'a float in (0, 1)')
  validate_map_expansion({k: v for k, v in e.items() if k.startswith('map_expansion')})
  check_field(_is_int(e.pointwise_tolerance) and e.pointwise_tolerance >= 0,
              'eval.pointwise_tolerance', e.pointwise_tolerance, 'an int >= 0')
  w = {name: e.get(name, default) for name, default in WSOL_EVAL_DEFAULTS.items()}
  check_field(_is_real(w['cam_curve_interval']) and 0 < w['cam_curve_interval'] < 1,
              'eval.cam_curve_interval', w['cam_curve_interval'], 'a float in (0, 1)')
  ious = w['iou_threshold_list']
  check_field(isinstance(ious, (tuple, list)) and ious and
              all(_is_int(v) and 0 <= v <= 100 for v in ious), 'eval.iou_threshold_list', ious,
              'a non-empty tuple of IoU thresholds in percent, ints in [0, 100], e.g. (30, 50, 70)')
  check_field(isinstance(w['multi_contour_eval'], bool), 'eval.multi_contour_eval',
              w['multi_contour_eval'], 'True or False')


def validate(config):
  """Checks every field of an experiment config; raises ConfigError naming the first bad one."""
  try:
    validate_data(config)
    validate_model(config)
    validate_training(config)
    validate_eval(config)
  except (KeyError, AttributeError) as err:
    raise ConfigError(f'the config lacks the field {err}; start from a file in configs/ '
                      '(e.g. configs/voc12.py) and override fields on the command line.') from err

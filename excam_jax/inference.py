"""The one path from a trained run to class maps: restore -> model -> predict.

  predictor = inference.load('runs/voc12')                      # the latest checkpoint
  logits, class_maps = predictor(images)                        # normalised (N, S, S, 3) images
  heat = predictor.heat(class_maps[0, :, :, c])                 # in [0, 1], on the maps' own scale

`load` is what the evaluate command, `localize` and the experiment scripts use: it restores a
run's checkpoint and config, builds the model, applies the test-time map transform
(models/map_transforms.py; config.eval's fields, overridden by `transform`) and the inference-only
model fields (`model_overrides`, e.g. ACoL's fusion), and says on which scale the maps are
(`Predictor.scale`: 'logits', drawn as sigmoid(z), or 'normalised', stored as n - b with n in
[0, 1]; visualize.heat_fn).
"""

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import jax
import numpy as np

from excam_jax import config_schema
from excam_jax import visualize
from excam_jax.errors import UserError, check_field
from excam_jax.models import map_transforms
from excam_jax.models import network
from excam_jax.runtime import files
from excam_jax.training import checkpoints

# config.model fields that change only inference, not the trained arrays: an evaluation may
# override them on a checkpoint's config. Name -> allowed values.
INFERENCE_MODEL_FIELDS = {'acol_fusion': config_schema.ACOL_FUSIONS}


def make_predict_fn(model, variables, transform=None):
  """A jitted images -> numpy (logits, class_maps), float32.

  `transform`: None, or a map transform (apply_fn, images) -> (logits, class_maps), as
  `map_transforms.from_config(fields)` gives.
  """

  @jax.jit
  def forward(variables, images):
    def apply(x, with_features=False):
      logits, aux = model.apply(variables, x, train=False)
      out = (logits.astype('float32'), aux['class_maps'].astype('float32'))
      return out + (aux.get('features'),) if with_features else out
    if transform is None:
      return apply(images)
    return transform(apply, images)

  def predict_fn(images):
    logits, class_maps = forward(variables, np.asarray(images, np.float32))
    return np.asarray(logits), np.asarray(class_maps)

  return predict_fn


def transform_fields(config, overrides):
  """config.eval's map-transform fields (map_transforms.DEFAULTS where absent) with `overrides`
  (a dict; None values ignored) on top, checked."""
  fields = dict(map_transforms.DEFAULTS)
  fields.update({k: v for k, v in (config.get('eval') or {}).items() if k in fields})
  fields.update({k: v for k, v in (overrides or {}).items() if v is not None})
  config_schema.validate_map_expansion(fields)
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


def class_names(config):
  """Class names of a run's data set, without reading the data."""
  from excam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return list(pipeline.class_names(config))


@dataclasses.dataclass
class Predictor:
  """A restored run, ready to predict.

  Attributes:
    config: the run's config (config.model with the inference overrides applied).
    step: the checkpoint step restored.
    transform: the map-transform fields in use (`transform_fields`).
    predict: images (N, S, S, 3), normalised as the data pipeline does -> numpy (logits (N, C),
      class_maps (N, h, w, C)).
    heat: z -> heat in [0, 1], the maps drawn on their own scale (visualize.heat_fn).
    scale: 'logits' (heat = sigmoid(z)) or 'normalised' (heat = clip(z + b, 0, 1)).
    variables: the restored {'params', 'batch_stats'}.
  """
  config: Any
  step: int
  transform: dict
  predict: Callable
  heat: Callable
  scale: str
  variables: Any = None

  def __call__(self, images):
    return self.predict(images)

  @property
  def image_size(self):
    return self.config.data.image_size


def load(workdir, step=None, transform=None, model_overrides=None, base_transform=False):
  """Restores a run and returns its Predictor.

  Args:
    workdir: the training run's --workdir.
    step: the checkpoint step; the latest readable one if None.
    transform: overrides of config.eval's map-transform fields (a dict, None values ignored;
      e.g. {'map_expansion': 'advcam'}), or a transform name as a string.
    model_overrides: INFERENCE_MODEL_FIELDS overrides (a dict, None values ignored).
    base_transform: predict with the transform before its '+relative' step (the relative rule is
      a cheap numpy step the caller applies; `relative_step`), the heat still that of the whole.

  Raises:
    UserError: no usable checkpoint, or a bad override.
  """
  if isinstance(transform, str):
    transform = {'map_expansion': transform}
  config, variables, step = checkpoints.restore(workdir, step)
  config.model = model_fields(config, model_overrides)
  fields = transform_fields(config, transform)
  kind = fields['map_expansion'].partition('+')[0]
  if kind in map_transforms.READS_FEATURES and config.model.head == 'acol':
    raise UserError(f"map_expansion '{kind}' reads the trunk's features, which ACoL's two "
                    'classifiers do not share; use it with another head.')
  model = network.create_model(config.model, len(class_names(config)))
  run_fields = dict(fields, map_expansion=fields['map_expansion'].partition('+')[0]) if (
      base_transform) else fields
  heat = visualize.heat_fn(config.model, fields)
  return Predictor(config=config, step=int(step), transform=fields,
                   predict=make_predict_fn(model, variables, map_transforms.from_config(run_fields)),
                   heat=heat, scale='logits' if heat is visualize.sigmoid else 'normalised',
                   variables=variables)


def relative_step(fields, class_maps):
  """The '+relative' step of a transform 'X+relative' on X's maps (identity for other kinds)."""
  if fields['map_expansion'].partition('+')[2] != 'relative':
    return class_maps
  normalised = np.asarray(map_transforms.acol.normalise_maps(class_maps))
  return normalised - fields['map_expansion_threshold']


class OutputsCache:
  """The model's (logits, class maps) of every evaluated batch, kept in one .npz per key.

  A transform 'X+relative' is X's maps followed by the relative rule, a cheap numpy step: with a
  cache, X's outputs are computed once (AdvCAM's climb costs hundreds of plain passes) and
  'X' and 'X+relative' are both scored from them. The key fingerprints everything the outputs
  depend on: the checkpoint step (and when its folder was written), the split, the data and model configs and the transform X.
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

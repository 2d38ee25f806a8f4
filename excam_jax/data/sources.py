"""The one table of data sets: config.data.dataset -> a Source behind one interface.

A new data set is one spec module (its splits, class names, sizes and a batch module with
`train_batches(config, local, *, start_step, process_index)` and
`eval_batches(config, split, local, *, process_index)`) plus one entry in SOURCES. Batches are
numpy dicts (image, label, mask, boxes, box_labels, box_difficult, orig_size, image_id; OpenImages'
also segmentation masks): see data/pipeline.py for their order and determinism.
"""

from typing import Callable, NamedTuple

from excam_jax.data import parts_pipeline
from excam_jax.data import synthetic
from excam_jax.data import voc_info
from excam_jax.data import wsol
from excam_jax.runtime import native


class Source(NamedTuple):
  """What the package needs of a data set.

  Attributes:
    splits: config -> the split names.
    class_names: config -> class names, without reading any data.
    sizes: config -> (num_train, num_eval) of config.data's train and eval splits (may read
      metadata or prepare a TFDS data set).
    batches: () -> the module with train_batches and eval_batches (imported on first use).
    check: config -> None, raising UserError for a bad data section (before any data is read).
  """
  splits: Callable
  class_names: Callable
  sizes: Callable
  batches: Callable
  check: Callable = lambda config: None


def _voc_batches():
  native.import_tensorflow()  # Quietly, before voc_pipeline imports it.
  from excam_jax.data import voc_pipeline  # pylint: disable=g-import-not-at-top
  return voc_pipeline


def _parts_check(config):
  p = config.data.parts
  synthetic.validate(p.preset, p.num_classes, p.image_size)


PARTS = Source(
    splits=lambda config: synthetic.SPLITS,
    class_names=lambda config: synthetic.class_names(config.data.parts.num_classes),
    sizes=lambda config: (config.data.parts.num_train, config.data.parts.num_eval),
    batches=lambda: parts_pipeline,
    check=_parts_check)


def _voc(name):
  return Source(splits=lambda config: voc_info.SPLITS[name],
                class_names=lambda config: voc_info.CLASS_NAMES,
                sizes=lambda config: tuple(_voc_batches().split_sizes(config)),
                batches=_voc_batches)


def _wsol():
  return Source(splits=lambda config: wsol.SPLITS, class_names=wsol.class_names,
                sizes=lambda config: tuple(wsol.info(config)[3:5]), batches=lambda: wsol)


SOURCES = {'parts': PARTS, **{name: _voc(name) for name in voc_info.TARS},
           **{name: _wsol() for name in wsol.DATASETS}}

"""The one table of data sets: config.data.dataset -> a Source behind one interface.

A new data set is one spec module (its splits, class names, sizes and a batch module with
`train_batches(config, local, *, start_step, process_index)` and
`eval_batches(config, split, local, *, process_index)`) plus one entry in SOURCES. A TFDS data set
needs no batch module of its own: data/tfds_pipeline.py serves any TFDS spec module (STREAM,
raw_split) through tf.data. Batches are numpy dicts (image, label, mask, boxes, box_labels,
box_difficult, orig_size, image_id; the single-label sets also class_id, and object_mask where
they have masks): see data/pipeline.py for their order and determinism.

`benchmark` marks the single-label WSOL-benchmark sets (one class per image, class_id): scored by
evaluation/wsol_benchmark.py, trainable with the softmax loss, their figures showing the top-1
class. `is_benchmark(dataset)` is the one place that decision is read.
"""

from typing import Callable, NamedTuple

from excam_jax.data import cub_tfds
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
    benchmark: a single-label WSOL-benchmark set (module docstring).
  """
  splits: Callable
  class_names: Callable
  sizes: Callable
  batches: Callable
  check: Callable = lambda config: None
  benchmark: bool = False


def _tfds_batches(spec):
  """() -> tfds_pipeline.Batches of the TFDS spec module that spec() returns."""
  def batches():
    native.import_tensorflow()  # Quietly, before tfds_pipeline imports it.
    from excam_jax.data import tfds_pipeline  # pylint: disable=g-import-not-at-top
    return tfds_pipeline.Batches(spec())
  return batches


def _voc_spec():
  native.import_tensorflow()  # Quietly, before voc imports it.
  from excam_jax.data import voc  # pylint: disable=g-import-not-at-top
  return voc


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
  batches = _tfds_batches(_voc_spec)
  return Source(splits=lambda config: voc_info.SPLITS[name],
                class_names=lambda config: voc_info.CLASS_NAMES,
                sizes=lambda config: tuple(batches().split_sizes(config)),
                batches=batches)


def _wsol():
  return Source(splits=lambda config: wsol.SPLITS, class_names=wsol.class_names,
                sizes=lambda config: tuple(wsol.info(config)[3:5]), batches=lambda: wsol,
                benchmark=True)


def _cub_tfds():
  batches = _tfds_batches(lambda: cub_tfds)
  return Source(splits=lambda config: cub_tfds.SPLITS, class_names=cub_tfds.class_names,
                sizes=lambda config: tuple(batches().split_sizes(config)), batches=batches,
                benchmark=True)


SOURCES = {'parts': PARTS, **{name: _voc(name) for name in voc_info.TARS},
           **{name: _wsol() for name in wsol.DATASETS}, cub_tfds.NAME: _cub_tfds()}
# The single-label WSOL-benchmark sets, in table order.
BENCHMARKS = tuple(name for name, source in SOURCES.items() if source.benchmark)


def is_benchmark(dataset):
  """Whether `dataset` is a single-label WSOL-benchmark set (False for a name not in SOURCES)."""
  source = SOURCES.get(dataset)
  return source is not None and source.benchmark

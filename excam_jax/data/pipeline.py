"""Training and evaluation batches from config.dataset ('voc/2007', 'voc/2012', 'caltech_birds2011',
'parts' or the WSOL benchmark's 'wsol/cub', 'wsol/ilsvrc', 'wsol/openimages').

Every source gives a raw example stream in a fixed order (image_id = index in the split); all the
randomness is keyed by the seed and by positions in that stream, which makes the batches
deterministic, exactly resumable and independent of how many processes share them:

  train: epoch e is the raw stream shuffled with a seed derived from (config.train.seed, e); the epochs
         are concatenated and position p of the result is example p % B of global step p // B.
         Process i of P keeps positions with (p % B) // (B / P) == i; the flip of position p is
         drawn statelessly from (config.train.seed, p). Resuming at step t skips t * B raw records
         without decoding them.
  eval:  the raw stream in order, padded with mask-0 examples to a multiple of the global eval
         batch E; process i keeps the same slice of every global batch.

The parts data set runs in numpy (excam_jax.data.parts_pipeline) and never loads TensorFlow;
VOC and caltech_birds2011 run through tf.data (excam_jax.data.tfds_pipeline, one path for every TFDS
spec module), loaded on first use; the WSOL data sets
run in numpy and Pillow (excam_jax.data.wsol). The data sets are the table data/sources.py
SOURCES: a new one is a spec module plus one entry there.
"""

from typing import NamedTuple

from excam_jax.data import sources
from excam_jax.errors import UserError


class DatasetInfo(NamedTuple):
  """What the model and the metrics need to know about a data set."""
  name: str
  num_classes: int
  class_names: tuple
  num_train: int
  num_eval: int


def _check_dataset(config, *splits):
  source = sources.SOURCES.get(config.data.dataset)
  if source is None:
    raise UserError(f'config.data.dataset must be one of {sorted(sources.SOURCES)}, not '
                    f'{config.data.dataset!r}.')
  source.check(config)
  names = source.splits(config)
  for split in splits:
    if split not in names:
      raise UserError(f'{config.data.dataset} has splits {sorted(names)}; set config.data.train_split / '
                      f'config.data.eval_split to one of them, not {split!r}.')
  return source


def _source(config):
  """The module that makes config.data.dataset's batches (train_batches, eval_batches)."""
  return sources.SOURCES[config.data.dataset].batches()


def dataset_info(config):
  """Name, classes and split sizes of config.dataset (prepares VOC from local tars if needed)."""
  source = _check_dataset(config, config.data.train_split, config.data.eval_split)
  names = source.class_names(config)
  return DatasetInfo(config.data.dataset, len(names), names, *source.sizes(config))


def class_names(config):
  """The class names of config.data.dataset, without reading any data (WSOL: its metadata)."""
  return sources.SOURCES[config.data.dataset].class_names(config)


def local_batch_size(global_size, field, process_index, process_count):
  """This process's share of a global batch; UserError unless it divides evenly."""
  if global_size < 1 or global_size % process_count:
    raise UserError(f'config.{field} ({global_size}) must be a positive multiple of the number '
                    f'of processes ({process_count}).')
  if not 0 <= process_index < process_count:
    raise UserError(f'The process index {process_index} must lie in [0, {process_count}).')
  return global_size // process_count


def train_batches(config, *, start_step=0, process_index=0, process_count=1):
  """Infinite iterator of this process's training batches (numpy dicts, batch format of the package).

  Args:
    config: the experiment config (dataset, train_split, image_size, batch_size, shuffle_buffer,
      seed, and data_dir/manual_dir or parts).
    start_step: the first step to yield; batches equal those of a fresh iterator from that step.
    process_index: this process's index.
    process_count: number of processes; each gets config.train.batch_size // process_count examples.

  Returns:
    An iterator of dicts with image, label, ignore, boxes, box_labels, box_difficult, orig_size,
    image_id, mask.
  """
  local = local_batch_size(config.train.batch_size, 'train.batch_size', process_index, process_count)
  if start_step < 0:
    raise UserError(f'start_step must be non-negative, not {start_step}.')
  _check_dataset(config, config.data.train_split)
  return _source(config).train_batches(config, local, start_step=start_step,
                                       process_index=process_index)


def eval_batches(config, split=None, *, process_index=0, process_count=1):
  """Finite iterator over an evaluation split: every example once, the last batch padded.

  Args:
    config: the experiment config.
    split: split name; config.data.eval_split when None.
    process_index: this process's index.
    process_count: number of processes; each gets its slice of every global batch of
      config.eval.batch_size examples.

  Returns:
    An iterator of ceil(N / eval_batch_size) batches per process, as in the package docstring;
    padded examples have mask 0, box_labels -1 and image_id -1.
  """
  split = config.data.eval_split if split is None else split
  local = local_batch_size(config.eval.batch_size, 'eval.batch_size', process_index,
                           process_count)
  _check_dataset(config, split)
  return _source(config).eval_batches(config, split, local, process_index=process_index)

"""The WSOL benchmark's data sets (clovaai/wsolevaluation): CUB, ILSVRC and OpenImages.

config.data.dataset 'wsol/cub' | 'wsol/ilsvrc' | 'wsol/openimages' reads wsolevaluation's layout
through the three roots of its flags (config.data.wsol):

  <data_root>/<CUB|ILSVRC|OpenImages>/<image_id>             the images
  <metadata_root>/<CUB|ILSVRC|OpenImages>/<train|val|test>/  wsolevaluation's metadata/ folder:
      image_ids.txt     <image_id> per line (the image's path under its data set's folder)
      class_labels.txt  <image_id>,<class_id>
      image_sizes.txt   <image_id>,<width>,<height> (read for the box splits; OpenImages' are empty)
      localization.txt  CUB, ILSVRC: <image_id>,<x0>,<y0>,<x1>,<y1>, inclusive pixels, a line per
                        box; OpenImages: <image_id>,<mask_png>,<ignore_png>, a line per instance
                        mask, the ignore mask named on the image's first line only
  <mask_root>/OpenImages/<mask_png>                          the masks (> 0: object, ignore region)

'train' holds weak labels (only image_ids and class_labels are read); 'val' is the small fully
supervised split for every choice; 'test' is reported once. Every metadata line is checked at load
(one UserError naming the file, the line and the fix). Images and masks are looked for on disk at
load for val and test, and at their first read for train (stat-ing ILSVRC's 1.2M training images
would take minutes).

This module is the data sets' source, with parts_pipeline's interface (train_batches,
eval_batches), in numpy and Pillow on a thread pool: no TensorFlow. Preprocessing is
wsolevaluation's, Pillow's bilinear resize being torchvision's: train: resize to resize_size
squared, a random image_size crop and a horizontal flip drawn from (config.train.seed, stream
position) (the order rules of excam_jax.data.pipeline); eval: resize to image_size squared.
Boxes become TFDS-normalised [ymin, xmin, ymax, xmax] once, here. Batches hold the package's fields
(excam_jax/data/__init__.py; label one-hot, ignore all False, box_labels the class id) plus class_id
int32 (B,) and, for OpenImages' evaluation, object_mask uint8 (B, S, S): wsolevaluation's get_mask
at S x S (1 object, 0 background, 255 ignore; 255 in padded rows).
"""

import concurrent.futures
import functools
import itertools
import math
import os
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

from excam_jax.data import image_ops
from excam_jax.errors import UserError

SPLITS = ('train', 'val', 'test')
_FIX = "fix the line or take the file again from wsolevaluation's metadata/"
_STREAM = 2  # Keeps the crop and flip draws apart from the permutations' streams.


class Benchmark(NamedTuple):
  folder: str  # The data set's folder under each root.
  num_classes: int
  masks: bool  # Localised by instance masks (OpenImages), not boxes.


DATASETS = {'wsol/cub': Benchmark('CUB', 200, False),
            'wsol/ilsvrc': Benchmark('ILSVRC', 1000, False),
            'wsol/openimages': Benchmark('OpenImages', 100, True)}


class Split(NamedTuple):
  """One split's records, column by column; example i is line i + 1 of ids_file."""
  ids_file: str
  image_dir: str
  paths: list  # The image_ids: each image's path under image_dir.
  labels: np.ndarray  # int32 (n,) class ids.
  sizes: Optional[np.ndarray] = None  # int32 (n, 2) (height, width), box splits.
  boxes: Optional[list] = None  # float32 (k, 4) normalised boxes per example, box splits.
  masks: Optional[list] = None  # ([(mask, line)], (ignore, line)) per example, OpenImages val/test.
  mask_dir: str = ''
  localization_file: str = ''
  max_boxes: int = 1  # The most boxes of one image (the padded box rows of a batch).


def _bad(path, line, problem, fix=_FIX):
  return UserError(f'{path}, line {line}: {problem}; {fix}.')


def _rows(path, fields, layout):
  """Yields (line number, fields) of a metadata file; a missing file or a bad line: UserError."""
  try:
    file = open(path, encoding='utf-8')  # pylint: disable=consider-using-with
  except OSError as error:
    raise UserError(f'{path} cannot be read ({error.strerror}); set config.data.wsol.metadata_root '
                    "to wsolevaluation's metadata/ folder (<metadata_root>/<CUB|ILSVRC|OpenImages>"
                    f'/<train|val|test>/{os.path.basename(path)}).') from None
  with file:
    for number, line in enumerate(file, 1):
      row = line.rstrip('\r\n').split(',')
      if len(row) != fields:
        raise _bad(path, number, f'{len(row)} comma-separated fields where {layout} has {fields}')
      if not row[0]:
        raise _bad(path, number, 'an empty image_id')
      yield number, row


def _int(path, number, text, what, low, high=None):
  """int(text), in [low, high); else a UserError naming the file and line."""
  try:
    value = int(text)
  except ValueError:
    raise _bad(path, number, f'{what} {text!r} is not an integer') from None
  if value < low or (high is not None and value >= high):
    raise _bad(path, number, f'{what} {value} is outside [{low}, {high or "inf"})')
  return value


def _column(table, paths, ids_file, table_file):
  """[table[p] for p in paths]; the first image table_file lacks: UserError (truncated metadata)."""
  try:
    return [table[p] for p in paths]
  except KeyError as error:
    line = paths.index(error.args[0]) + 1
    raise UserError(f'{ids_file}, line {line}: {error.args[0]} has no line in {table_file}; the '
                    "metadata is truncated: take it again from wsolevaluation's metadata/."
                    ) from None


def _sizes_and_boxes(meta, paths, ids_file):
  """(height, width) per image and its normalised boxes, from image_sizes and localization.txt."""
  sizes_file = os.path.join(meta, 'image_sizes.txt')
  sizes = {}
  for n, (image_id, w, h) in _rows(sizes_file, 3, '<image_id>,<width>,<height>'):
    sizes[image_id] = (_int(sizes_file, n, h, 'the height', 1),
                       _int(sizes_file, n, w, 'the width', 1))
  sizes = np.array(_column(sizes, paths, ids_file, sizes_file), np.int32).reshape(-1, 2)
  size_of = dict(zip(paths, sizes.tolist()))
  loc_file = os.path.join(meta, 'localization.txt')
  boxes = {}
  for n, (image_id, *corners) in _rows(loc_file, 5, '<image_id>,<x0>,<y0>,<x1>,<y1>'):
    x0, y0, x1, y1 = (_int(loc_file, n, c, 'the coordinate', 0) for c in corners)
    if image_id not in size_of:
      continue  # Not in this split: wsolevaluation ignores it too.
    h, w = size_of[image_id]
    if not (x0 <= x1 < w and y0 <= y1 < h):
      raise _bad(loc_file, n, f'the box x0,y0,x1,y1 = {x0},{y0},{x1},{y1} is not inside the '
                 f'{w} x {h} image {image_id} with x0 <= x1 and y0 <= y1')
    # Inclusive pixels -> normalised edges: [y0 / H, x0 / W, (y1 + 1) / H, (x1 + 1) / W].
    boxes.setdefault(image_id, []).append([y0 / h, x0 / w, (y1 + 1) / h, (x1 + 1) / w])
  boxes = [np.array(b, np.float32) for b in _column(boxes, paths, ids_file, loc_file)]
  return sizes, boxes


def _masks(meta, paths, ids_file, mask_dir):
  """([(mask, line)], (ignore, line)) per image from OpenImages' localization.txt; masks stat-ed."""
  loc_file = os.path.join(meta, 'localization.txt')
  masks = {}
  for n, (image_id, mask, ignore) in _rows(loc_file, 3, '<image_id>,<mask_png>,<ignore_png>'):
    for name in [mask] + [ignore] * bool(ignore):
      if not name.lower().endswith('.png'):
        raise _bad(loc_file, n, f'{name!r} is not a PNG mask')
      if not os.path.isfile(os.path.join(mask_dir, name)):
        raise _bad(loc_file, n, f'the mask {os.path.join(mask_dir, name)} does not exist',
                   'set config.data.wsol.mask_root to the folder holding OpenImages/<mask_png> '
                   "(wsolevaluation's --mask_root) or fix the line")
    if image_id not in masks:
      if not ignore:
        raise _bad(loc_file, n, f'the first line of {image_id} names no ignore mask')
      masks[image_id] = ([], (ignore, n))
    elif ignore:
      raise _bad(loc_file, n, f'a second ignore mask for {image_id} (only its first line may)')
    masks[image_id][0].append((mask, n))
  return _column(masks, paths, ids_file, loc_file)


@functools.lru_cache(maxsize=8)
def load_split(dataset, split, data_root, metadata_root, mask_root=''):
  """Reads and checks one split's metadata (see the module docstring); cached per arguments."""
  bench = DATASETS[dataset]
  meta = os.path.join(os.path.expanduser(metadata_root), bench.folder, split)
  image_dir = os.path.join(os.path.expanduser(data_root), bench.folder)
  ids_file = os.path.join(meta, 'image_ids.txt')
  paths = [row[0] for _, row in _rows(ids_file, 1, '<image_id>')]
  labels_file = os.path.join(meta, 'class_labels.txt')
  labels = {image_id: _int(labels_file, n, c, 'the class id', 0, bench.num_classes)
            for n, (image_id, c) in _rows(labels_file, 2, '<image_id>,<class_id>')}
  labels = np.array(_column(labels, paths, ids_file, labels_file), np.int32)
  records = Split(ids_file, image_dir, paths, labels)
  if split == 'train':
    return records  # Weak labels only; images are looked for at their first read.
  for line, path in enumerate(paths, 1):
    if not os.path.isfile(os.path.join(image_dir, path)):
      raise _missing(records, line - 1)
  if not bench.masks:
    sizes, boxes = _sizes_and_boxes(meta, paths, ids_file)
    return records._replace(sizes=sizes, boxes=boxes, max_boxes=max(map(len, boxes), default=1))
  mask_dir = os.path.join(os.path.expanduser(mask_root), bench.folder)
  return records._replace(masks=_masks(meta, paths, ids_file, mask_dir), mask_dir=mask_dir,
                          localization_file=os.path.join(meta, 'localization.txt'))


def split_of(config, split):
  """The records of `split` of config.data.dataset (load_split with config.data.wsol's roots)."""
  w = config.data.wsol
  return load_split(config.data.dataset, split, w.data_root, w.metadata_root, w.mask_root)


def class_names(config):
  """The folder of each class's training images (CUB '001.Black_footed_Albatross', ILSVRC's wnid,
  OpenImages' MID) where each class has one and they differ; else 'class_000', 'class_001', ..."""
  train = split_of(config, 'train')
  folders = {}
  for path, label in zip(train.paths, train.labels.tolist()):
    folders.setdefault(label, set()).add(os.path.basename(os.path.dirname(path)))
  num = DATASETS[config.data.dataset].num_classes
  names = tuple(min(folders.get(c, {''})) for c in range(num))
  if all(len(f) == 1 for f in folders.values()) and len(folders) == num and all(names) and len(
      set(names)) == num:
    return names
  return tuple(f'class_{c:03d}' for c in range(num))


def info(config):
  """(name, num_classes, class_names, num_train, num_eval) of config.data.dataset."""
  num_train, num_eval = (len(split_of(config, s).paths)
                         for s in (config.data.train_split, config.data.eval_split))
  return (config.data.dataset, DATASETS[config.data.dataset].num_classes, class_names(config),
          num_train, num_eval)


def _missing(split, i):
  path = os.path.join(split.image_dir, split.paths[i])
  folder = os.path.basename(split.image_dir)
  return _bad(split.ids_file, i + 1, f'the image {path} does not exist',
              f'set config.data.wsol.data_root to the folder holding {folder}/<image_id> '
              "(wsolevaluation's --data_root) or remove the line")


def _image(split, i):
  """Example i's image, RGB (Pillow); a missing or unreadable file: UserError."""
  path = os.path.join(split.image_dir, split.paths[i])
  try:
    with Image.open(path) as image:
      return image.convert('RGB')
  except FileNotFoundError:
    raise _missing(split, i) from None
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise _bad(split.ids_file, i + 1, f'the image {path} cannot be read ({error})',
               'replace the file or remove the line') from None


def _train_image(split, i, position, size, resize, seed):
  """wsolevaluation's training image: resize, random crop, random flip (a draw per position)."""
  rng = np.random.default_rng([seed, _STREAM, int(position)])
  top, left = rng.integers(0, resize - size + 1, 2)
  image = np.asarray(_image(split, i).resize((resize, resize), Image.BILINEAR))
  image = image[top:top + size, left:left + size]
  return _normalize(image[:, ::-1] if rng.random() < 0.5 else image)


def _normalize(image):
  """uint8 RGB -> the model's float32 input (in the reading thread: it costs about a resize)."""
  return image_ops.normalize(image.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def _nearest(array, size):
  """cv2.resize(array, (size, size), interpolation=cv2.INTER_NEAREST): row floor(o * H / size)."""
  rows, cols = (np.minimum(np.floor(np.arange(size) * (1.0 / (size / n))).astype(int), n - 1)
                for n in array.shape[:2])
  return array[rows][:, cols]


def _mask(split, entry, size):
  """wsolevaluation's get_mask at size x size: 1 object (any instance), 255 ignore, 0 else."""
  def read(name, line):
    path = os.path.join(split.mask_dir, name)
    try:
      with Image.open(path) as image:
        if image.format != 'PNG':
          raise OSError(f'a {image.format} file, not a PNG')
        return _nearest(np.asarray(image.convert('L'), np.float32), size) > 0.5
    except (OSError, ValueError) as error:
      raise _bad(split.localization_file, line, f'the mask {path} cannot be read ({error})',
                 'replace the file or fix the line') from None
  instances, ignore = entry
  objects = np.any([read(*m) for m in instances], axis=0)
  ignored = read(*ignore) & ~objects
  return objects.astype(np.uint8) + 255 * ignored.astype(np.uint8)


def _eval_example(split, i, size):
  """(image at size x size, (height, width), object mask or None) of example i."""
  image = _image(split, i)
  if split.sizes is not None and tuple(split.sizes[i]) != (image.height, image.width):
    h, w = split.sizes[i]
    raise UserError(f'{os.path.dirname(split.ids_file)}/image_sizes.txt lists {split.paths[i]} '
                    f'as {w} x {h}, but the image is {image.width} x {image.height}; fix its line.')
  mask = _mask(split, split.masks[i], size) if split.masks is not None else None
  resized = np.asarray(image.resize((size, size), Image.BILINEAR))
  return _normalize(resized), (image.height, image.width), mask


def _batch(split, indices, images, num_classes, size):
  """The package's batch fields every split carries (class_id: the single label)."""
  n = len(indices)
  labels = split.labels[indices]
  onehot = np.zeros((n, num_classes), np.float32)
  onehot[np.arange(n), labels] = 1.0
  return {'image': np.array(images, np.float32).reshape(n, size, size, 3), 'label': onehot,
          'ignore': np.zeros((n, num_classes), bool), 'class_id': labels,
          'image_id': np.asarray(indices, np.int32), 'mask': np.ones(n, np.float32)}


def _pool():
  return concurrent.futures.ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0))))


def train_batches(config, local, *, start_step, process_index):
  """Infinite iterator of this process's training batches from `start_step` on."""
  split = split_of(config, config.data.train_split)
  n, global_batch, seed = len(split.paths), config.train.batch_size, config.train.seed
  size, num_classes = config.data.image_size, DATASETS[config.data.dataset].num_classes
  read = functools.partial(_train_image, split, size=size, resize=config.data.wsol.resize_size,
                           seed=seed)
  orders = {}
  with _pool() as pool:
    for step in itertools.count(start_step):
      positions = step * global_batch + process_index * local + np.arange(local)
      epochs = positions // n
      for e in set(epochs.tolist()) - set(orders):
        orders[e] = np.random.default_rng([seed, e]).permutation(n)
      orders = {e: order for e, order in orders.items() if e >= epochs.min()}
      indices = np.array([orders[e][p % n] for e, p in zip(epochs.tolist(), positions)])
      yield _batch(split, indices, list(pool.map(read, indices, positions)), num_classes, size)


def _eval_batch(split, indices, examples, num_classes, size):
  """A batch of evaluation examples: the common fields, boxes (padded) and object masks."""
  batch = _batch(split, indices, [e[0] for e in examples], num_classes, size)
  n, most = len(indices), split.max_boxes
  batch['boxes'] = np.zeros((n, most, 4), np.float32)
  batch['box_labels'] = np.full((n, most), -1, np.int32)
  for row, i in enumerate(indices if split.boxes is not None else ()):
    batch['boxes'][row, :len(split.boxes[i])] = split.boxes[i]
    batch['box_labels'][row, :len(split.boxes[i])] = split.labels[i]
  batch['box_difficult'] = np.zeros((n, most), bool)
  batch['orig_size'] = np.array([e[1] for e in examples], np.int32).reshape(n, 2)
  if split.masks is not None:
    batch['object_mask'] = np.array([e[2] for e in examples], np.uint8).reshape(n, size, size)
  return batch


def _padding(value, key, count):
  """`count` mask-0 rows for field `key`: zeros; -1 labels and ids; 255 (ignore) masks."""
  fill = {'box_labels': -1, 'image_id': -1, 'class_id': -1, 'object_mask': 255}.get(key, 0)
  return np.full((count,) + value.shape[1:], fill, value.dtype)


def eval_batches(config, split, local, *, process_index):
  """The split in order, padded with mask-0 examples to whole global batches."""
  records = split_of(config, split)
  n, global_batch = len(records.paths), config.eval.batch_size
  size, num_classes = config.data.image_size, DATASETS[config.data.dataset].num_classes
  read = functools.partial(_eval_example, records, size=size)
  with _pool() as pool:
    for start in range(0, math.ceil(n / global_batch) * global_batch, global_batch):
      positions = start + process_index * local + np.arange(local)
      real = positions[positions < n]
      batch = _eval_batch(records, real, list(pool.map(read, real)), num_classes, size)
      pad = local - len(real)
      if pad:
        batch = {k: np.concatenate([v, _padding(v, k, pad)]) for k, v in batch.items()}
      yield batch

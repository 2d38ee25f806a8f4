"""Tests of CUB-200-2011 through TFDS (data/cub_tfds.py): mocked TFDS data with consistent fakes
(images, one box inside each, a mask whose object pixels lie in the box), the raw stream, train
and eval batches, the WSOL benchmark's scores on them, the set-up error and the config."""

import contextlib
import io
import re
from unittest import mock

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import cub_tfds as cub_tfds_config
from excam_jax import config_schema
from excam_jax.data import cub_tfds
from excam_jax.data import pipeline
from excam_jax.data import prepare
from excam_jax.data import preprocess
from excam_jax.data import sources
from excam_jax.errors import UserError
from excam_jax.evaluation import evaluator
from excam_jax.evaluation import wsol_benchmark

SIZE = 32  # The model's input side in these tests.

# Per TFDS split: (height, width, label, (x, y, w, h)) as CUB's bounding_boxes.txt gives a box. The
# sides are multiples of SIZE and the box edges multiples of the scale, so that the box and the
# mask land on whole pixels at SIZE x SIZE.
FAKES = {
    'train': [(64, 96, 5, (18, 8, 48, 40)), (32, 64, 199, (0, 0, 64, 32)),
              (96, 64, 0, (8, 15, 32, 48))],
    'test': [(64, 96, 17, (30, 16, 36, 32)), (96, 96, 42, (24, 12, 48, 60)),
             (32, 32, 3, (4, 8, 16, 20))],
}


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def _mask(height, width, box):
  """CUB-like grey mask: 255 on the box's pixels x..x+w-1, y..y+h-1 (one at 200: still object),
  100 at (0, 0) when that lies outside the box (below the threshold: background)."""
  x, y, w, h = box
  mask = np.zeros((height, width), np.uint8)
  mask[y:y + h, x:x + w] = 255
  mask[y + 1, x + 1] = 200
  if x > 0 and y > 0:
    mask[0, 0] = 100
  return mask


def _fake_example(height, width, label, box, index):
  x, y, w, h = box
  image = np.zeros((height, width, 3), np.uint8)
  image[...] = (40 * index % 256, 90, 200)
  return {
      'image': _png(image),
      'image/filename': f'{label + 1:03d}.Bird/Bird_{index:04d}.jpg',
      'label': np.int64(label),
      'label_name': 'bird',
      # TFDS's bbox (caltech_birds.py _get_bounding_box_values), clipped to 1 as TFDS does.
      'bbox': np.minimum(np.array([y / height, x / width, (y + h) / height, (x + w) / width],
                                  np.float32), 1.0),
      'segmentation_mask': _png(_mask(height, width, box)),
  }


def _examples(split):
  """The fakes of a TFDS split spec such as 'train', 'train[:1]' or 'train[1:]'."""
  name, start, stop = re.fullmatch(r'(\w+)(?:\[(\d*):(\d*)\])?', str(split)).groups()
  examples = [_fake_example(*fake, i) for i, fake in enumerate(FAKES[name])]
  return examples[int(start) if start else None:int(stop) if stop else None]


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
  del self, read_config
  # The pipeline must not decode what it may skip: it asks TFDS for the encoded bytes.
  assert isinstance(decoders['image'], tfds.decode.SkipDecoding)
  assert isinstance(decoders['segmentation_mask'], tfds.decode.SkipDecoding)
  assert not shuffle_files
  examples = _examples(split)
  spec = {'image': tf.TensorSpec((), tf.string), 'image/filename': tf.TensorSpec((), tf.string),
          'label': tf.TensorSpec((), tf.int64), 'label_name': tf.TensorSpec((), tf.string),
          'bbox': tf.TensorSpec((4,), tf.float32),
          'segmentation_mask': tf.TensorSpec((), tf.string)}
  return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=spec)


@contextlib.contextmanager
def _mocked():
  """TFDS mock data with the fakes, the builder counted as prepared."""
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset), \
      mock.patch.object(cub_tfds, 'is_prepared', lambda builder: True):
    yield


def _config(tmp_path, **data):
  config = cub_tfds_config.get_config()
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.image_size = SIZE
  config.data.shuffle_buffer = 16
  config.train.batch_size = 2
  config.eval.batch_size = 2
  config.data.update(data)
  return config


def _package_box(height, width, box):
  """The package's normalised box: wsolevaluation's inclusive x1 = x + w, one pixel further."""
  x, y, w, h = box
  return np.minimum([y / height, x / width, (y + h + 1) / height, (x + w + 1) / width], 1.0)


def _nearest(array, size):
  """cv2 INTER_NEAREST: output row o reads row floor(o * H / size)."""
  rows, cols = (np.floor(np.arange(size) * n / size).astype(int) for n in array.shape)
  return array[rows][:, cols]


def _box_at_input(height, width, box):
  """1 on the box's pixels at SIZE x SIZE, 0 elsewhere (the fakes' boxes land on whole pixels)."""
  x, y, w, h = box
  sy, sx = height // SIZE, width // SIZE
  out = np.zeros((SIZE, SIZE), np.float32)
  out[y // sy:(y + h) // sy, x // sx:(x + w) // sx] = 1.0
  return out


# ----------------------------------------------------------------------------------------------
# The raw stream and the splits.


def test_raw_stream_fields_and_order(tmp_path):
  with _mocked():
    raw, num = cub_tfds.raw_split(_config(tmp_path), 'test')
    examples = list(raw.as_numpy_iterator())
  assert num == 3 and len(examples) == 3
  for i, (example, (height, width, label, box)) in enumerate(zip(examples, FAKES['test'])):
    assert set(example) == {'image', 'segmentation_mask', 'boxes', 'box_labels', 'box_difficult',
                            'class_id', 'image_id'}
    fake = _fake_example(height, width, label, box, i)
    assert example['image'] == fake['image']  # Still encoded.
    assert example['segmentation_mask'] == fake['segmentation_mask']
    np.testing.assert_array_equal(example['boxes'], fake['bbox'][None])
    assert example['box_labels'].tolist() == [label] and example['class_id'] == label
    assert example['box_difficult'].tolist() == [False]
    assert example['image_id'] == i


def test_val_and_train_rest_split_train(tmp_path, monkeypatch):
  monkeypatch.setattr(cub_tfds, 'VAL_SIZE', 1)
  config = _config(tmp_path)
  with _mocked():
    ids = {s: [int(e['class_id']) for e in cub_tfds.raw_split(config, s)[0].as_numpy_iterator()]
           for s in ('train', 'val', 'train_rest')}
    image_ids = [int(e['image_id'])
                 for e in cub_tfds.raw_split(config, 'train_rest')[0].as_numpy_iterator()]
  assert ids == {'train': [5, 199, 0], 'val': [5], 'train_rest': [199, 0]}
  assert image_ids == [0, 1]  # Indices within the split.
  assert cub_tfds.tfds_split('val') == 'train[:1]' and cub_tfds.tfds_split('test') == 'test'
  with pytest.raises(UserError, match=r"has splits \['test', 'train', 'train_rest', 'val'\]"):
    cub_tfds.tfds_split('validation')


def test_dataset_info(tmp_path):
  with _mocked():
    info = pipeline.dataset_info(_config(tmp_path))
  assert info == pipeline.DatasetInfo('caltech_birds2011', 200, cub_tfds.CLASS_NAMES, 3, 3)
  assert info.class_names[0] == '001.Black_footed_Albatross'
  assert info.class_names[199] == '200.Common_Yellowthroat'
  assert len(set(info.class_names)) == 200
  assert all(n.startswith(f'{i + 1:03d}.') for i, n in enumerate(info.class_names))


# ----------------------------------------------------------------------------------------------
# Batches.


def test_train_batch(tmp_path):
  config = _config(tmp_path, train_split='train')
  config.train.batch_size = 3
  with _mocked():
    batch = next(pipeline.train_batches(config))
  assert set(batch) == {'image', 'label', 'ignore', 'boxes', 'box_labels', 'box_difficult',
                        'orig_size', 'image_id', 'mask', 'class_id'}  # No mask decoded.
  assert batch['image'].shape == (3, SIZE, SIZE, 3) and batch['boxes'].shape == (3, 1, 4)
  assert sorted(batch['image_id'].tolist()) == [0, 1, 2]  # One epoch: every image once.
  for i, image_id in enumerate(batch['image_id']):
    height, width, label, box = FAKES['train'][image_id]
    assert batch['class_id'][i] == label and batch['box_labels'][i].tolist() == [label]
    np.testing.assert_array_equal(np.flatnonzero(batch['label'][i]), [label])
    np.testing.assert_array_equal(batch['orig_size'][i], [height, width])
    ymin, xmin, ymax, xmax = _package_box(height, width, box)
    flipped = [ymin, 1 - xmax, ymax, 1 - xmin]
    assert (np.allclose(batch['boxes'][i, 0], [ymin, xmin, ymax, xmax], atol=1e-6) or
            np.allclose(batch['boxes'][i, 0], flipped, atol=1e-6))
  assert not batch['ignore'].any() and batch['mask'].tolist() == [1, 1, 1]


def _eval_batches(config):
  with _mocked():
    return list(pipeline.eval_batches(config))


def test_eval_batches(tmp_path):
  batches = _eval_batches(_config(tmp_path))
  assert len(batches) == 2  # 3 test images in global batches of 2: one padding row.
  merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert set(merged) == {'image', 'label', 'ignore', 'boxes', 'box_labels', 'box_difficult',
                         'orig_size', 'image_id', 'mask', 'class_id', 'object_mask'}
  assert merged['object_mask'].dtype == np.uint8
  assert merged['object_mask'].shape == (4, SIZE, SIZE)
  assert set(np.unique(merged['object_mask']).tolist()) == {0, 1}
  assert merged['class_id'].dtype == np.int32
  np.testing.assert_array_equal(merged['mask'], [1, 1, 1, 0])
  np.testing.assert_array_equal(merged['image_id'], [0, 1, 2, -1])
  for i, (height, width, label, box) in enumerate(FAKES['test']):
    assert merged['class_id'][i] == label and merged['box_labels'][i].tolist() == [label]
    np.testing.assert_array_equal(merged['orig_size'][i], [height, width])
    np.testing.assert_allclose(merged['boxes'][i, 0], _package_box(height, width, box),
                               atol=1e-6)
    want = _nearest((_mask(height, width, box) >= 128).astype(np.uint8), SIZE)
    np.testing.assert_array_equal(merged['object_mask'][i], want)
    np.testing.assert_array_equal(want, _box_at_input(height, width, box))
  # The padding row: mask 0, its object mask all background, labels -1.
  assert not merged['object_mask'][3].any() and not merged['image'][3].any()
  assert merged['class_id'][3] == -1 and merged['box_labels'][3].tolist() == [-1]


def test_mask_threshold_and_nearest_resize():
  """128 and above is object; rows and columns are read at floor(o * H / size)."""
  mask = np.array([[0, 127, 128, 255], [10, 20, 200, 0], [255, 0, 0, 0]], np.uint8)
  got = _object_mask(mask, 2)
  np.testing.assert_array_equal(got, [[0, 1], [0, 1]])  # Rows 0, 1 (floor(1 * 3 / 2)); cols 0, 2.
  got = _object_mask(mask, 6)
  np.testing.assert_array_equal(got, _nearest((mask >= 128).astype(np.uint8), 6))


def _object_mask(mask, size):
  return preprocess.object_mask(tf.constant(_png(mask)), size).numpy()


# ----------------------------------------------------------------------------------------------
# Scores: the WSOL benchmark's Scorer on those batches.


def test_scorer_on_literal_maps(tmp_path):
  """Maps 1 on the box and 0 elsewhere, the ground-truth class's, predicted right for images 0
  and 1, wrong for image 2. By hand: the mask's object pixels are the box's at SIZE x SIZE, so
  every object pixel scores 1 and every background pixel 0: PxAP = 1. The map's box at 224 is the
  box's (x / sx .. (x + w) / sx - 1 at SIZE, upscaled) against wsolevaluation's x .. x + w: IoU
  >= 0.95 for each image at the middle thresholds, so MaxBoxAcc = 1 at 30, 50 and 70%:
  MaxBoxAccV2 = GT-known Loc = 1; Top-1 Loc = top-1 accuracy = 2/3."""
  config = _config(tmp_path)
  batches = _eval_batches(config)
  scorer = evaluator.make_scorer(cub_tfds.CLASS_NAMES, dataset='caltech_birds2011',
                                 eval_config=config.eval)
  assert isinstance(scorer, wsol_benchmark.Scorer)
  fakes = FAKES['test'] + [None]
  for b, batch in enumerate(batches):
    maps = np.zeros((2, SIZE, SIZE, 200), np.float32)
    logits = np.zeros((2, 200), np.float32)
    for row in range(2):
      fake = fakes[2 * b + row]
      if fake is None:
        maps[row] = np.nan  # Padding: never looked at.
        continue
      height, width, label, box = fake
      maps[row, ..., label] = _box_at_input(height, width, box)
      logits[row, label if 2 * b + row < 2 else (label + 1) % 200] = 1.0
    scorer.add(batch, logits, maps)
  got = scorer.compute()
  assert got['num_examples'] == 3
  assert got['pxap'] == pytest.approx(1.0)
  assert got['maxboxaccv2'] == pytest.approx(1.0)
  assert got['maxboxaccv2_per_iou'] == pytest.approx([1.0, 1.0, 1.0])
  assert got['gt_known_loc'] == pytest.approx(1.0)
  assert got['top1_loc'] == pytest.approx(2 / 3)
  assert got['top1_accuracy'] == pytest.approx(2 / 3)


def test_a_misplaced_map_loses_the_boxes_and_the_masks(tmp_path):
  """The same maps shifted to the image's far corner: no box overlaps, PxAP at chance level."""
  config = _config(tmp_path)
  batches = _eval_batches(config)
  scorer = evaluator.make_scorer(cub_tfds.CLASS_NAMES, dataset='caltech_birds2011',
                                 eval_config=config.eval)
  for b, batch in enumerate(batches):
    maps = np.zeros((2, SIZE, SIZE, 200), np.float32)
    for row, c in enumerate(batch['class_id']):
      if c >= 0:
        maps[row, -4:, -4:, c] = 1.0  # Outside every test box.
    scorer.add(batch, np.zeros((2, 200), np.float32), maps)
  got = scorer.compute()
  assert got['maxboxaccv2'] < 0.5 and got['gt_known_loc'] == 0.0 and got['pxap'] < 0.5


# ----------------------------------------------------------------------------------------------
# Set-up errors, the table and the config.


def test_unprepared_data_is_one_sentence(tmp_path):
  config = _config(tmp_path)
  for call in (pipeline.dataset_info, lambda c: next(pipeline.train_batches(c)),
               lambda c: next(pipeline.eval_batches(c))):
    with pytest.raises(UserError) as error:
      call(config)
    message = str(error.value)
    directory = str(tmp_path / 'tfds')
    assert message == (
        f'caltech_birds2011 is not prepared in {directory}: run python -m excam_jax.data.prepare '
        f'--dataset=caltech_birds2011 --data_dir={directory} (it downloads CUB-200-2011, about '
        '1.2 GB), or set config.data.data_dir to the TFDS folder that holds it.')
    assert '\n' not in message and message.count('. ') == 0


def test_prepare_command_download_failure_is_one_line(tmp_path, capsys):
  builder_cls = tfds.builder_cls('caltech_birds2011')
  with mock.patch.object(builder_cls, 'download_and_prepare',
                         side_effect=OSError('Connection refused\nmore detail')) as download:
    with pytest.raises(UserError) as error:
      prepare.prepare('caltech_birds2011', data_dir=str(tmp_path / 'tfds'))
  download.assert_called_once_with()  # TFDS downloads: no manual dir.
  assert str(error.value) == ('Downloading caltech_birds2011 failed (Connection refused); check '
                              'the network connection and rerun the command.')
  assert 'Downloading and preparing caltech_birds2011' in capsys.readouterr().out


def test_the_table_marks_the_single_label_sets():
  assert sources.is_benchmark('caltech_birds2011') and sources.is_benchmark('wsol/cub')
  assert not sources.is_benchmark('voc/2007') and not sources.is_benchmark('parts')
  assert not sources.is_benchmark('coco') and not sources.is_benchmark(None)
  assert sources.BENCHMARKS == ('wsol/cub', 'wsol/ilsvrc', 'wsol/openimages', 'caltech_birds2011')
  assert isinstance(evaluator.make_scorer(('a', 'b'), dataset='voc/2007'), evaluator.Evaluator)


def test_config_validates_and_trains_with_softmax():
  config = cub_tfds_config.get_config()
  config_schema.validate(config)
  assert (config.data.dataset, config.data.train_split, config.data.eval_split) == (
      'caltech_birds2011', 'train', 'test')
  assert (config.model.head, config.model.depth, config.optim.loss) == ('cam', 50, 'softmax')
  for split in ('val', 'train_rest'):
    config.data.eval_split = split
    config_schema.validate(config)
  config.data.eval_split = 'validation'
  with pytest.raises(Exception, match='data.eval_split'):
    config_schema.validate(config)

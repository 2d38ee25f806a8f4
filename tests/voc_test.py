"""Tests of the VOC path: mocked TFDS data, the real builder on a generated VOCdevkit, set-up errors."""

import io
import os
import subprocess
import sys
from unittest import mock

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums

from configs import voc07
import cli_util
from excam_jax.data import pipeline
from excam_jax.data import voc
from excam_jax.evaluation import boxes
from excam_jax.errors import UserError


def _jpeg(height, width, colour):
  buffer = io.BytesIO()
  Image.new('RGB', (width, height), colour).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _config(tmp_path, **overrides):
  config = voc07.get_config()
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.manual_dir = str(tmp_path / 'manual')
  config.data.image_size = 16
  config.train.batch_size = 4
  config.eval.batch_size = 4
  config.data.shuffle_buffer = 16
  for key, value in overrides.items():  # 'train_batch_size' -> config.train.batch_size.
    section, name = key.split('_', 1)
    config[section][name] = value
  return config


# ----------------------------------------------------------------------------------------------
# tfds.testing.mock_data with consistent fakes (its default fakes give objects/* fields of
# different lengths within one example).

# Per split: (height, width, [(label, (ymin, xmin, ymax, xmax), difficult), ...]).
FAKES = {
    'train': [(20, 30, [(14, (0.1, 0.2, 0.6, 0.9), False), (14, (0.0, 0.0, 0.5, 0.5), True)]),
              (24, 24, [(3, (0.2, 0.2, 0.8, 0.8), True)])],
    'validation': [(30, 20, [(19, (0.0, 0.1, 1.0, 0.3), False), (0, (0.5, 0.5, 0.6, 0.6), False),
                             (19, (0.3, 0.3, 0.4, 0.4), True)])],
    'test': [(18, 26, [(7, (0.25, 0.0, 0.75, 0.5), False)]),
             (26, 18, [(7, (0.0, 0.0, 1.0, 1.0), True), (8, (0.1, 0.1, 0.2, 0.2), True)]),
             (16, 16, [(11, (0.5, 0.25, 1.0, 0.75), False)])],
}


def _zero_based(height, width, bbox):
  """TFDS stores VOC minima as 1-based pixel indices / size; the pipeline moves them to 0-based."""
  ymin, xmin, ymax, xmax = bbox
  return (max(ymin - 1 / height, 0.0), max(xmin - 1 / width, 0.0), ymax, xmax)


def _fake_example(height, width, objects, index):
  n = len(objects)
  return {
      'image': _jpeg(height, width, (40 * index % 256, 90, 200)),
      'image/filename': f'{index:06d}.jpg',
      'objects': {
          'label': np.array([o[0] for o in objects], np.int64),
          'bbox': np.array([o[1] for o in objects], np.float32).reshape(n, 4),
          'pose': np.zeros(n, np.int64),
          'is_truncated': np.zeros(n, bool),
          'is_difficult': np.array([o[2] for o in objects], bool),
      },
      'labels': np.array(sorted({o[0] for o in objects}), np.int64),
      'labels_no_difficult': np.array(sorted({o[0] for o in objects if not o[2]}), np.int64),
  }


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
  del self, read_config, shuffle_files
  # The pipeline must not decode images it may skip: it asks TFDS for the encoded bytes.
  assert isinstance(decoders['image'], tfds.decode.SkipDecoding)
  examples = [_fake_example(*fake, i) for s in str(split).split('+') for i, fake in
              enumerate(FAKES[s])]
  spec = {
      'image': tf.TensorSpec((), tf.string), 'image/filename': tf.TensorSpec((), tf.string),
      'objects': {'label': tf.TensorSpec((None,), tf.int64),
                  'bbox': tf.TensorSpec((None, 4), tf.float32),
                  'pose': tf.TensorSpec((None,), tf.int64),
                  'is_truncated': tf.TensorSpec((None,), tf.bool),
                  'is_difficult': tf.TensorSpec((None,), tf.bool)},
      'labels': tf.TensorSpec((None,), tf.int64),
      'labels_no_difficult': tf.TensorSpec((None,), tf.int64)}
  return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=spec)


def _check_against_fakes(batches, fakes, size):
  merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  n = len(fakes)
  np.testing.assert_array_equal(merged['mask'][:n], 1)
  np.testing.assert_array_equal(merged['mask'][n:], 0)
  np.testing.assert_array_equal(merged['image_id'][:n], np.arange(n))
  assert merged['image'].shape[1:] == (size, size, 3)
  for i, (height, width, objects) in enumerate(fakes):
    np.testing.assert_array_equal(merged['orig_size'][i], [height, width])
    k = len(objects)
    np.testing.assert_array_equal(merged['box_labels'][i, :k], [o[0] for o in objects])
    np.testing.assert_array_equal(merged['box_labels'][i, k:], -1)
    np.testing.assert_allclose(merged['boxes'][i, :k],
                               [_zero_based(height, width, o[1]) for o in objects], atol=1e-6)
    np.testing.assert_array_equal(merged['box_difficult'][i, :k], [o[2] for o in objects])
    label = np.zeros(20)
    label[[o[0] for o in objects]] = 1
    np.testing.assert_array_equal(merged['label'][i], label)
    only_difficult = {o[0] for o in objects} - {o[0] for o in objects if not o[2]}
    np.testing.assert_array_equal(np.flatnonzero(merged['ignore'][i]), sorted(only_difficult))
  return merged


def test_pipeline_on_mock_data(tmp_path):
  config = _config(tmp_path)
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset), \
      mock.patch.object(voc, 'is_prepared', lambda builder: True):
    eval_batches = list(pipeline.eval_batches(config))
    info = pipeline.dataset_info(config)
  assert len(eval_batches) == 1  # 3 test images in one global batch of 4.
  merged = _check_against_fakes(eval_batches, FAKES['test'], 16)
  # A uniform JPEG decodes to (nearly) its colour; normalised with ImageNet statistics.
  want = (np.array([0, 90, 200]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
  np.testing.assert_allclose(merged['image'][0].mean((0, 1)), want, atol=0.05)
  # VOC 2007 trains on trainval = TFDS train + validation: 3 images.
  assert info == pipeline.DatasetInfo('voc/2007', 20, voc.CLASS_NAMES, 3, 3)


def test_train_epoch_on_mock_trainval(tmp_path):
  """The first batch of 3 is the first epoch of trainval: every image once."""
  config = _config(tmp_path, train_batch_size=3)
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset), \
      mock.patch.object(voc, 'is_prepared', lambda builder: True):
    batch = next(pipeline.train_batches(config))
  assert sorted(batch['image_id'].tolist()) == [0, 1, 2]
  fakes = FAKES['train'] + FAKES['validation']
  for i, image_id in enumerate(batch['image_id']):
    height, width, objects = fakes[image_id]
    np.testing.assert_array_equal(batch['orig_size'][i], [height, width])
    np.testing.assert_array_equal(batch['box_labels'][i, :len(objects)], [o[0] for o in objects])


# ----------------------------------------------------------------------------------------------
# The real TFDS builder on a generated VOCdevkit tree.

DEVKIT = {  # image id -> (split file, height, width, [(name, difficult, xmin, ymin, xmax, ymax)]).
    '000001': ('train', 30, 40, [('dog', False, 5, 3, 20, 25), ('person', True, 22, 1, 39, 29)]),
    '000002': ('train', 36, 24, [('cat', True, 2, 2, 20, 30)]),
    '000003': ('val', 24, 24, [('car', False, 1, 1, 24, 24), ('car', False, 3, 4, 9, 12)]),
    '000004': ('test', 32, 48, [('sheep', False, 10, 8, 40, 30)]),
    '000005': ('test', 40, 30, [('bird', True, 4, 4, 8, 8), ('tvmonitor', False, 2, 2, 28, 38)]),
}


def _annotation(height, width, objects):
  xml = [f'<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth>'
         '</size>']
  for name, difficult, xmin, ymin, xmax, ymax in objects:
    xml.append(f'<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>'
               f'<difficult>{int(difficult)}</difficult><bndbox><xmin>{xmin}</xmin>'
               f'<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>')
  return ''.join(xml) + '</annotation>'


def _write_devkit(root):
  base = root / 'VOCdevkit' / 'VOC2007'
  for folder in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
    (base / folder).mkdir(parents=True)
  for image_id, (split, height, width, objects) in DEVKIT.items():
    (base / 'JPEGImages' / f'{image_id}.jpg').write_bytes(_jpeg(height, width, (10, 200, 30)))
    (base / 'Annotations' / f'{image_id}.xml').write_text(_annotation(height, width, objects))
  for split in ('train', 'val', 'test'):
    ids = [i for i, v in DEVKIT.items() if v[0] == split]
    (base / 'ImageSets' / 'Main' / f'{split}.txt').write_text('\n'.join(ids) + '\n')


def test_real_builder_on_generated_devkit(tmp_path):
  _write_devkit(tmp_path / 'devkit')
  config = _config(tmp_path, eval_batch_size=2)
  extracted = {'trainval': str(tmp_path / 'devkit'), 'test': str(tmp_path / 'devkit')}
  with mock.patch.object(tfds.download.DownloadManager, 'download_and_extract',
                         return_value=extracted) as download, \
      mock.patch.object(voc, 'check_tars'):  # The genuine tars are not needed: nothing is read.
    batches = list(pipeline.eval_batches(config))
    assert download.call_count == 1
    train = next(pipeline.train_batches(config, process_index=1, process_count=2))
    info = pipeline.dataset_info(config)
    assert download.call_count == 1  # Prepared once; later calls read the prepared data.
  assert info.num_train == 3 and info.num_eval == 2
  tests = [(h, w, [(voc.CLASS_NAMES.index(o[0]), (o[3] / h, o[2] / w, o[5] / h, o[4] / w), o[1])
                   for o in objects])
           for split, h, w, objects in DEVKIT.values() if split == 'test']
  assert len(batches) == 1
  merged = _check_against_fakes(batches, tests, 16)
  # At the metric edge, the XML's 1-based inclusive corners come back as 0-based pixels.
  for i, (_, h, w, objects) in enumerate(v for v in DEVKIT.values() if v[0] == 'test'):
    pixels = boxes.normalized_to_pixels(merged['boxes'][i, :len(objects)], h, w)
    np.testing.assert_array_equal(pixels, [(o[2] - 1, o[3] - 1, o[4] - 1, o[5] - 1)
                                           for o in objects])
  assert train['image'].shape == (2, 16, 16, 3)
  assert set(train['image_id'].tolist()) <= {0, 1, 2}


# ----------------------------------------------------------------------------------------------
# Set-up errors.


def test_missing_data_message_names_the_tars(tmp_path):
  config = _config(tmp_path)
  with pytest.raises(UserError) as error:
    pipeline.train_batches(config)
  message = str(error.value)
  assert 'VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar' in message
  assert str(tmp_path / 'manual') in message
  assert '\n' not in message


def test_prepare_command_exits_with_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'excam_jax.data.prepare', '--dataset=voc/2012',
       f'--manual_dir={tmp_path}', f'--data_dir={tmp_path / "tfds"}'], cwd=cli_util.REPO,
      env=cli_util.command_env(CUDA_VISIBLE_DEVICES=''), capture_output=True, text=True,
      timeout=120)
  lines = cli_util.program_lines(result.stderr)
  assert result.returncode == 1
  assert lines == [voc.missing_data_message('voc/2012', str(tmp_path)).join(['error: ', ''])]
  # Nothing else either: TFDS's warning about the empty folder it looked in is not shown (the
  # program-lines filter would hide it, so the raw stream is checked).
  assert 'dataset_info.json' not in result.stderr and 'file_utils' not in result.stderr
  assert 'VOCtrainval_11-May-2012.tar and VOC2012test.tar' in lines[0]


def _fake_tars(tmp_path, size_of):
  manual = tmp_path / 'manual'
  manual.mkdir()
  for name in voc.TARS['voc/2007']:
    (manual / name).write_bytes(b'not a tar')
  builder = tfds.builder('voc/2007', data_dir=str(tmp_path / 'tfds'))
  infos = {url: checksums.UrlInfo(size=size_of(info), checksum='0' * 64, filename=info.filename)
           for url, info in builder.url_infos.items()}
  return builder, manual, infos


def test_tar_with_wrong_size_is_named(tmp_path):
  builder, manual, _ = _fake_tars(tmp_path, lambda info: info.size)
  with pytest.raises(UserError, match='VOCtrainval_06-Nov-2007.tar is not the genuine'):
    voc.prepare(builder, str(manual))


def test_tar_with_wrong_checksum_is_named(tmp_path):
  builder, manual, infos = _fake_tars(tmp_path, lambda info: len(b'not a tar'))
  with mock.patch.object(type(builder), 'url_infos', infos):
    with pytest.raises(UserError, match='does not have the checksum') as error:
      voc.prepare(builder, str(manual))
  assert any(name in str(error.value) for name in voc.TARS['voc/2007'])

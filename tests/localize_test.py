"""Tests of `python -m excam_jax.localize`: image reading, boxes.json by hand, the command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from excam_jax import localize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TestLoadImage:

  def test_grayscale_and_rgba(self, tmp_path):
    Image.fromarray(np.full((3, 5), 7, np.uint8), 'L').save(tmp_path / 'g.png')
    rgba = np.zeros((3, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # Fully transparent red: alpha is dropped.
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    gray = localize.load_image(tmp_path / 'g.png')
    assert gray.shape == (3, 5, 3) and np.all(gray == 7)
    np.testing.assert_array_equal(localize.load_image(tmp_path / 'a.png')[0, 0], [200, 0, 0])

  def test_sixteen_bit(self, tmp_path):
    data = np.array([[0, 257, 65535]], np.uint16)
    Image.fromarray(data).save(tmp_path / 'd.png')
    got = localize.load_image(tmp_path / 'd.png')
    np.testing.assert_array_equal(got[..., 0], [[0, 1, 255]])
    assert got.dtype == np.uint8

  def test_exif_rotation(self, tmp_path):
    image = np.zeros((10, 20, 3), np.uint8)
    image[0, 0] = 255  # Top-left marker.
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    Image.fromarray(image).save(tmp_path / 'r.jpg', exif=exif, quality=100)
    got = localize.load_image(tmp_path / 'r.jpg')
    assert got.shape == (20, 10, 3)
    assert got[0, -1].mean() > 200  # The marker moved to the top-right corner.

  def test_collect_files(self, tmp_path):
    for name in ('b.PNG', 'a.jpg', 'notes.txt'):
      (tmp_path / name).write_bytes(b'x')
    got = localize.collect_files([str(tmp_path), 'x.png'])
    assert got == [str(tmp_path / 'a.jpg'), str(tmp_path / 'b.PNG'), 'x.png']


def _fake_predict(images):
  """Class 1 fills the right half of any image; class 0 is not predicted."""
  assert images.shape == (1, 8, 8, 3)
  maps = np.full((1, 2, 2, 2), -5.0, np.float32)
  maps[0, :, 1, 1] = 5.0
  return np.array([[-2.0, 1.0]], np.float32), maps


def test_boxes_json_by_hand_and_failures(tmp_path, capsys):
  Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / 'ok.png')
  (tmp_path / 'broken.png').write_bytes(b'not an image')
  paths = [str(tmp_path / 'ok.png'), str(tmp_path / 'broken.png'), str(tmp_path / 'missing.jpg')]
  failed = localize.localize_files(_fake_predict, paths, ['a', 'b'], 8, str(tmp_path / 'out'))
  assert failed == 2
  err = capsys.readouterr().err
  assert 'broken.png' in err and 'missing.jpg' in err
  with open(tmp_path / 'out' / 'boxes.json') as f:
    result = json.load(f)
  assert list(result) == [paths[0]]
  entry = result[paths[0]]
  assert (entry['width'], entry['height']) == (8, 4)
  # Upsampled to 4 x 8, z > 0 on columns 4..7 (see evaluate_test): one box.
  assert entry['detections'] == [{'class': 'b', 'score': pytest.approx(1 / (1 + np.exp(-1.0))),
                                  'box': [4, 0, 7, 3]}]
  overlay = np.asarray(Image.open(tmp_path / 'out' / entry['overlay']))
  np.testing.assert_array_equal(overlay[0, 4], [0, 255, 0])


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, write_tiny_checkpoint):
  """A run directory holding an untrained tiny model's checkpoint."""
  path = str(tmp_path_factory.mktemp('run'))
  write_tiny_checkpoint(path, 1)
  return path


def test_command_end_to_end(workdir, tmp_path):
  Image.fromarray(np.full((30, 50), 90, np.uint8), 'L').save(tmp_path / 'gray.png')
  rgb = np.random.default_rng(0).integers(0, 255, (41, 23, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'photo.jpg')
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, '-m', 'excam_jax.localize', f'--workdir={workdir}', f'--output={out}',
       '--score_threshold=0', str(tmp_path), str(tmp_path / 'nope.png')],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 1, proc.stderr
  assert 'nope.png' in proc.stderr
  with open(out / 'boxes.json') as f:
    result = json.load(f)
  assert sorted(os.path.basename(p) for p in result) == ['gray.png', 'photo.jpg']
  photo = result[str(tmp_path / 'photo.jpg')]
  assert (photo['width'], photo['height']) == (23, 41) and len(photo['scores']) == 3
  for det in photo['detections']:  # Every class is boxed at threshold 0; boxes lie inside.
    x1, y1, x2, y2 = det['box']
    assert 0 <= x1 <= x2 < 23 and 0 <= y1 <= y2 < 41
  assert Image.open(out / photo['overlay']).size == (23, 41)


def test_command_without_checkpoint(tmp_path):
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'x.png')
  proc = subprocess.run(
      [sys.executable, '-m', 'excam_jax.localize', f'--workdir={tmp_path}',
       f'--output={tmp_path / "o"}', str(tmp_path / 'x.png')],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 1
  assert proc.stderr.strip().count('\n') == 0 and 'no checkpoints' in proc.stderr

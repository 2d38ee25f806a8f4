"""Tests of `python -m excam_jax.localize`: image reading, bad input, boxes.json, the command."""

import errno
import json
import logging
import os
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, features

import cli_util
from excam_jax.runtime import cli
from excam_jax import localize
from excam_jax.data import image_files
from excam_jax.data import image_ops
from excam_jax.errors import UserError

HUGE = 20000  # A HUGE x HUGE image is 400M pixels, over Pillow's limit of ~89M.


@pytest.fixture(name='info_lines')
def fixture_info_lines():
  """The messages cli.LOGGER emits during the test."""
  messages = []
  handler = logging.Handler()
  handler.emit = lambda record: messages.append(record.getMessage())
  old_level = cli.LOGGER.level
  cli.LOGGER.addHandler(handler)
  cli.LOGGER.setLevel(logging.INFO)
  yield messages
  cli.LOGGER.removeHandler(handler)
  cli.LOGGER.setLevel(old_level)


@pytest.fixture(name='huge_png', scope='module')
def fixture_huge_png(tmp_path_factory):
  """A 20000 x 20000 1-bit PNG: a few tens of KB on disk, 400M pixels decoded."""
  path = tmp_path_factory.mktemp('huge') / 'huge.png'
  Image.new('1', (HUGE, HUGE)).save(path)
  assert os.path.getsize(path) < 200_000
  return str(path)


def _write_png16_rgb(path, array):
  """Writes a 16-bit-per-channel RGB PNG by hand (Pillow cannot write one)."""
  height, width, _ = array.shape
  raw = b''.join(b'\x00' + array[y].astype('>u2').tobytes() for y in range(height))

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

  header = struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0)
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(raw))
            + chunk(b'IEND', b''))


def _write_palette_png(path):
  img = Image.new('P', (3, 2), 1)
  img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
  img.info['transparency'] = 1  # Palette entry 1 is transparent: its colour is kept.
  img.save(path)


def _write_animated_gif(path):
  frames = [Image.new('RGB', (5, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
  frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _write_truncated_jpeg(path):
  rgb = np.random.default_rng(0).integers(0, 255, (64, 96, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(path, quality=90)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


# (file name, writer, Pillow's mode of the file, the expected RGB of pixel (0, 0), shape (H, W)).
_FORMATS = [
    ('cmyk.jpg', lambda p: Image.new('CMYK', (4, 3), (0, 0, 0, 0)).save(p), 'CMYK',
     (255, 255, 255), (3, 4)),
    ('cmyk.tif', lambda p: Image.new('CMYK', (4, 3), (255, 0, 0, 0)).save(p), 'CMYK',
     (0, 255, 255), (3, 4)),
    ('la.png', lambda p: Image.new('LA', (3, 2), (100, 50)).save(p), 'LA', (100, 100, 100),
     (2, 3)),
    ('palette.png', _write_palette_png, 'P', (10, 20, 30), (2, 3)),
    ('animated.gif', _write_animated_gif, 'P', (255, 0, 0), (4, 5)),  # First frame: red.
    ('one_bit.bmp', lambda p: Image.new('1', (3, 2), 1).save(p), '1', (255, 255, 255), (2, 3)),
    ('rgb.bmp', lambda p: Image.new('RGB', (3, 2), (1, 2, 3)).save(p), 'RGB', (1, 2, 3), (2, 3)),
    ('gray16.tif', lambda p: Image.fromarray(np.array([[65535, 0]], np.uint16)).save(p), 'I;16',
     (255, 255, 255), (1, 2)),
    ('rgb16.png', lambda p: _write_png16_rgb(p, np.array([[[0, 2570, 65535]] * 2], np.uint16)),
     'RGB', (0, 10, 255), (1, 2)),
    ('rgba.tiff', lambda p: Image.new('RGBA', (2, 2), (9, 8, 7, 0)).save(p), 'RGBA', (9, 8, 7),
     (2, 2)),
    ('one_pixel.png', lambda p: Image.new('RGB', (1, 1), (4, 5, 6)).save(p), 'RGB', (4, 5, 6),
     (1, 1)),
]
if features.check('webp'):
  _FORMATS.append(('lossless.webp', lambda p: Image.new('RGB', (3, 2), (1, 2, 3)).save(
      p, lossless=True), 'RGB', (1, 2, 3), (2, 3)))


class TestLoadImage:

  def test_grayscale_and_rgba(self, tmp_path):
    Image.fromarray(np.full((3, 5), 7, np.uint8), 'L').save(tmp_path / 'g.png')
    rgba = np.zeros((3, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # Fully transparent red: alpha is dropped.
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    gray = image_files.load_image(tmp_path / 'g.png')
    assert gray.shape == (3, 5, 3) and np.all(gray == 7)
    np.testing.assert_array_equal(image_files.load_image(tmp_path / 'a.png')[0, 0], [200, 0, 0])

  def test_sixteen_bit(self, tmp_path):
    data = np.array([[0, 257, 65535]], np.uint16)
    Image.fromarray(data).save(tmp_path / 'd.png')
    got = image_files.load_image(tmp_path / 'd.png')
    np.testing.assert_array_equal(got[..., 0], [[0, 1, 255]])
    assert got.dtype == np.uint8

  def test_exif_rotation(self, tmp_path):
    image = np.zeros((10, 20, 3), np.uint8)
    image[0, 0] = 255  # Top-left marker.
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
    Image.fromarray(image).save(tmp_path / 'r.jpg', exif=exif, quality=100)
    got = image_files.load_image(tmp_path / 'r.jpg')
    assert got.shape == (20, 10, 3)
    assert got[0, -1].mean() > 200  # The marker moved to the top-right corner.

  def test_damaged_exif_is_read_without_warnings(self, tmp_path):
    # EXIF with one Orientation tag whose data lies past the end: Pillow warns and skips it.
    tiff = (b'II*\x00' + struct.pack('<IH', 8, 1) + struct.pack('<HHII', 0x0112, 3, 10**6, 99)
            + b'\x00' * 4)
    Image.new('RGB', (4, 3), (0, 0, 200)).save(tmp_path / 'e.jpg', exif=b'Exif\x00\x00' + tiff)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      with Image.open(tmp_path / 'e.jpg') as img:
        img.getexif()
      assert caught, 'the file should make Pillow warn'
      del caught[:]
      got = image_files.load_image(tmp_path / 'e.jpg')
    assert got.shape == (3, 4, 3) and not caught  # Read, and no warning reaches the user.

  @pytest.mark.parametrize('name, write, mode, rgb, shape', _FORMATS,
                           ids=[f[0] for f in _FORMATS])
  def test_formats_and_modes(self, tmp_path, name, write, mode, rgb, shape):
    path = tmp_path / name
    write(path)
    with Image.open(path) as img:
      assert img.mode == mode  # The file really is of that mode.
    got = image_files.load_image(path)
    assert got.dtype == np.uint8 and got.shape == (*shape, 3)
    np.testing.assert_allclose(got[0, 0], rgb, atol=2 if name.endswith('.jpg') else 0)

  @pytest.mark.parametrize('kind, reason', [
      ('missing', 'no such file'),
      ('empty', 'empty (0 bytes)'),
      ('truncated', 'truncated'),
      ('text', 'not a JPEG, PNG, GIF, BMP, TIFF or WebP image'),
      ('other_format', 'not a JPEG, PNG, GIF, BMP, TIFF or WebP image'),
      ('folder', 'it is a folder'),
      ('fifo', 'not a regular file'),
  ])
  def test_bad_files(self, tmp_path, kind, reason):
    path = tmp_path / 'x.jpg'
    if kind == 'empty':
      path.write_bytes(b'')
    elif kind == 'truncated':
      _write_truncated_jpeg(path)
    elif kind == 'text':
      path.write_text('these are notes, not pixels\n')
    elif kind == 'other_format':  # A PPM file: Pillow reads it, the command does not.
      Image.new('RGB', (2, 2)).save(path, format='PPM')
    elif kind == 'folder':
      path.mkdir()
    elif kind == 'fifo':  # Opening it for reading would block forever.
      os.mkfifo(path)
    outcome = []

    def read():
      try:
        image_files.load_image(path)
      except image_files.UnreadableImage as err:
        outcome.append(err)

    reader = threading.Thread(target=read, daemon=True)  # A hang fails the test, not the suite.
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), f'load_image({kind}) hangs'
    assert len(outcome) == 1, 'no UnreadableImage raised'
    message = str(outcome[0])
    assert message.startswith(f'cannot read {path}: ') and reason in message, message
    assert '\n' not in message

  def test_huge_image_refused_before_decoding(self, huge_png, monkeypatch):
    def no_decoding(self):
      raise AssertionError('pixels were decoded')
    monkeypatch.setattr(ImageFile.ImageFile, 'load', no_decoding)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      with pytest.raises(image_files.UnreadableImage) as refused:
        image_files.load_image(huge_png)
    assert time.monotonic() - start < 5
    message = str(refused.value)
    assert f'{HUGE} x {HUGE} = 400,000,000 pixels' in message, message
    assert f'{Image.MAX_IMAGE_PIXELS:,} pixels' in message and 'downscale' in message
    assert not caught  # Neither Pillow's DecompressionBombWarning nor any other.

  def test_pixel_limit_also_where_pillow_only_warns(self, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    Image.new('RGB', (15, 10)).save(tmp_path / 'over.png')  # 1.5 x the limit: a Pillow warning.
    Image.new('RGB', (10, 10)).save(tmp_path / 'at.png')
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      with pytest.raises(image_files.UnreadableImage, match='15 x 10 = 150 pixels, over the limit '
                         'of 100 pixels'):
        image_files.load_image(tmp_path / 'over.png')
      assert image_files.load_image(tmp_path / 'at.png').shape == (10, 10, 3)
    assert not caught
    assert Image.MAX_IMAGE_PIXELS == 100  # The limit is the user's again.


def test_collect_files(tmp_path, info_lines):
  photos, other = tmp_path / 'photos', tmp_path / 'other'
  photos.mkdir()
  other.mkdir()
  names = ['b.PNG', 'a.jpg', 'c.TIFF', 'd.webp', 'e.gif', 'f.bmp', 'g.jpeg', 'h.tif',
           'notes.txt', '.hidden.jpg']
  for name in names:
    (photos / name).write_bytes(b'x')
  (photos / 'sub').mkdir()
  (other / 'z.png').write_bytes(b'x')
  (other / 'readme.md').write_bytes(b'x')
  got = image_files.collect_files([str(photos), 'x.png', str(other), 'x.png'])
  images = ['a.jpg', 'b.PNG', 'c.TIFF', 'd.webp', 'e.gif', 'f.bmp', 'g.jpeg', 'h.tif']
  assert got == [str(photos / n) for n in images] + ['x.png', str(other / 'z.png')]
  assert info_lines == [
      f'skipped 3 files in {photos} that are not images (.hidden.jpg, notes.txt, sub/); '
      'subfolders are not searched.',
      f'skipped 1 file in {other} that is not an image (readme.md).']


def _fake_predict(images):
  """Class 1 fills the right half of any image; class 0 is not predicted."""
  assert images.shape == (1, 8, 8, 3)
  maps = np.full((1, 2, 2, 2), -5.0, np.float32)
  maps[0, :, 1, 1] = 5.0
  return np.array([[-2.0, 1.0]], np.float32), maps


def _error_lines(err):
  return [line for line in err.splitlines() if line.strip()]


def test_boxes_json_by_hand_and_failures(tmp_path, capsys):
  Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / 'ok.png')
  (tmp_path / 'broken.png').write_bytes(b'not an image')
  paths = [str(tmp_path / 'ok.png'), str(tmp_path / 'broken.png'), str(tmp_path / 'missing.jpg')]
  failed = localize.localize_files(_fake_predict, paths, ['a', 'b'], 8, str(tmp_path / 'out'))
  assert failed == 2
  lines = _error_lines(capsys.readouterr().err)
  assert len(lines) == 2
  assert lines[0].startswith(f'error: cannot read {paths[1]}: not a JPEG')
  assert lines[1].startswith(f'error: cannot read {paths[2]}: no such file')
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


def test_model_input_is_image_ops_resize(tmp_path):
  image = np.random.default_rng(1).integers(0, 255, (5, 11, 3)).astype(np.uint8)
  seen = []

  def predict(images):
    seen.append(images)
    return _fake_predict(images)

  localize.localize_image(predict, image, ['a', 'b'], 8)
  np.testing.assert_array_equal(seen[0], image_ops.to_model_input(image, 8)[None])
  assert seen[0].dtype == np.float32


def test_nan_scores_stop_with_one_message(tmp_path):
  Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')

  def diverged(images):
    _, maps = _fake_predict(images)
    return np.full((1, 2), np.nan, np.float32), maps

  with pytest.raises(UserError, match='NaN or infinite class scores'):
    localize.localize_files(diverged, [str(tmp_path / 'a.png')], ['a', 'b'], 8,
                            str(tmp_path / 'out'))
  assert not (tmp_path / 'out' / 'boxes.json').exists()


def test_bad_files_do_not_stop_the_batch(tmp_path, huge_png, capsys):
  good = {'ok.png': (6, 4), 'one_pixel.png': (1, 1), 'my photo é.png': (5, 3),
          '写真.jpg': (9, 7)}
  for name, (width, height) in good.items():
    Image.new('RGB', (width, height), (90, 60, 30)).save(tmp_path / name)
  (tmp_path / 'empty.jpg').write_bytes(b'')
  _write_truncated_jpeg(tmp_path / 'half.jpg')
  (tmp_path / 'text.jpg').write_text('not an image')
  (tmp_path / 'folder.jpg').mkdir()
  bad = [str(tmp_path / n) for n in ('empty.jpg', 'half.jpg', 'text.jpg', 'folder.jpg',
                                     'missing.png')] + [huge_png]
  paths = [str(tmp_path / n) for n in good] + bad
  paths = paths[::2] + paths[1::2]  # Good and bad files interleaved.
  out = tmp_path / 'out'
  failed = localize.localize_files(_fake_predict, paths, ['a', 'b'], 8, str(out))
  assert failed == len(bad)
  lines = _error_lines(capsys.readouterr().err)
  assert len(lines) == len(bad), lines
  for path, line in zip([p for p in paths if p in bad], lines):  # One line each, in order.
    assert line.startswith(f'error: cannot read {path}: '), (path, line)
  with open(out / 'boxes.json', encoding='utf-8') as f:
    result = json.load(f)
  assert list(result) == [p for p in paths if p not in bad]  # In the order given.
  for path, entry in result.items():
    width, height = good[os.path.basename(path)]
    assert (entry['width'], entry['height']) == (width, height)
    with Image.open(out / entry['overlay']) as overlay:
      assert overlay.size == (width, height)
  one_pixel = result[str(tmp_path / 'one_pixel.png')]
  assert len(one_pixel['scores']) == 2
  assert all(d['box'] == [0, 0, 0, 0] for d in one_pixel['detections'])


def test_overlay_names_unique_and_valid(tmp_path):
  names = ['a.png', 'sub/a.jpg', 'other/A.png', 'my photo é.png', '写真.jpg', 'two\nlines.png',
           'colon:star*.png', '.hidden.png', 'é' * 120 + '.png']
  paths = []
  for name in names:
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    Image.new('RGB', (3, 3)).save(path, format='PNG')
    paths.append(str(path))
  raw = os.path.join(os.fsencode(tmp_path), b'latin1 caf\xe9.png')  # Not UTF-8.
  try:
    Image.new('RGB', (3, 3)).save(os.fsdecode(raw), format='PNG')
    paths.append(os.fsdecode(raw))
  except (OSError, UnicodeError):  # A file system that insists on UTF-8 names.
    pass
  out = tmp_path / 'out'
  assert localize.localize_files(_fake_predict, paths, ['a', 'b'], 8, str(out)) == 0
  with open(out / 'boxes.json', encoding='utf-8') as f:
    result = json.load(f)
  assert list(result) == paths  # Every name, undecodable bytes included, reads back as given.
  overlays = [entry['overlay'] for entry in result.values()]
  assert len({o.casefold() for o in overlays}) == len(paths)
  assert overlays[:5] == ['a.png', 'a_1.png', 'A_2.png', 'my photo é.png', '写真.png']
  for overlay in overlays:
    assert overlay.endswith('.png') and not overlay.startswith('.')
    assert not any(c in overlay for c in '\n\x00<>:"/\\|?*\udce9')
    assert len(overlay.encode('utf-8')) <= 255
    assert (out / overlay).is_file()
  assert sorted(os.listdir(out)) == sorted(overlays + ['boxes.json'])  # No temporary files.


def test_inputs_in_the_output_folder_are_not_overwritten(tmp_path):
  Image.new('RGB', (4, 4), (1, 2, 3)).save(tmp_path / 'a.png')
  before = (tmp_path / 'a.png').read_bytes()
  localize.localize_files(_fake_predict, [str(tmp_path / 'a.png')], ['a', 'b'], 8,
                          str(tmp_path))
  assert (tmp_path / 'a.png').read_bytes() == before
  with open(tmp_path / 'boxes.json') as f:
    assert json.load(f)[str(tmp_path / 'a.png')]['overlay'] == 'a_1.png'


@pytest.mark.parametrize('fail_at', [1, 2], ids=['overlay', 'boxes_json'])
def test_failed_write_keeps_the_earlier_output(tmp_path, monkeypatch, fail_at):
  Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
  (tmp_path / 'new').mkdir()
  Image.new('RGB', (6, 6), (255, 255, 255)).save(tmp_path / 'new' / 'a.png')
  out = tmp_path / 'out'
  localize.localize_files(_fake_predict, [str(tmp_path / 'a.png')], ['a', 'b'], 8, str(out))
  before = {name: (out / name).read_bytes() for name in os.listdir(out)}
  assert sorted(before) == ['a.png', 'boxes.json']
  calls, fsync = [], os.fsync

  def full_disk(fd):
    calls.append(fd)
    if len(calls) == fail_at:  # The first write is the new overlay a.png, the second boxes.json.
      raise OSError(errno.ENOSPC, 'No space left on device')
    fsync(fd)

  monkeypatch.setattr(os, 'fsync', full_disk)
  with pytest.raises(UserError) as caught:
    localize.localize_files(_fake_predict, [str(tmp_path / 'new' / 'a.png')], ['a', 'b'], 8,
                            str(out))
  monkeypatch.undo()
  message = str(caught.value)
  target = out / ('a.png' if fail_at == 1 else 'boxes.json')
  assert message.startswith(f'cannot write {target} (No space left on device); '), message
  assert 'choose a writable --output' in message and '\n' not in message
  after = {name: (out / name).read_bytes() for name in os.listdir(out)}
  assert sorted(after) == ['a.png', 'boxes.json']  # No temporary file left.
  assert after['boxes.json'] == before['boxes.json']  # The earlier boxes.json, whole.
  if fail_at == 1:
    assert after['a.png'] == before['a.png']  # The earlier overlay, whole.
  else:  # The new overlay was complete before boxes.json failed.
    with Image.open(out / 'a.png') as overlay:
      assert overlay.size == (6, 6)


def test_boxes_json_that_is_a_folder(tmp_path):
  Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
  (tmp_path / 'out' / 'boxes.json').mkdir(parents=True)
  with pytest.raises(UserError, match='cannot write .*boxes.json'):
    localize.localize_files(_fake_predict, [str(tmp_path / 'a.png')], ['a', 'b'], 8,
                            str(tmp_path / 'out'))
  assert sorted(os.listdir(tmp_path / 'out')) == ['a.png', 'boxes.json']


def test_webp_is_read_or_named_never_skipped(tmp_path, monkeypatch, capsys, info_lines):
  """A .webp file is localized where Pillow has WebP, and named as failed where it has not."""
  path = tmp_path / 'photos' / 'w.webp'
  path.parent.mkdir()
  if features.check('webp'):
    Image.new('RGB', (3, 2), (1, 2, 3)).save(path, lossless=True)
    assert image_files.load_image(path).shape == (2, 3, 3)
  else:
    path.write_bytes(b'RIFF\x0c\x00\x00\x00WEBPVP8L\x00\x00\x00\x00')
  monkeypatch.delitem(Image.OPEN, 'WEBP', raising=False)  # A Pillow built without libwebp.
  files = image_files.collect_files([str(path.parent)])
  assert files == [str(path)] and not info_lines
  assert localize.localize_files(_fake_predict, files, ['a', 'b'], 8, str(tmp_path / 'o')) == 1
  assert _error_lines(capsys.readouterr().err) == [
      f'error: cannot read {path}: not a JPEG, PNG, GIF, BMP, TIFF or WebP image; convert it to '
      'PNG or JPEG.']


# ---------------------------------------------------------------------------------------------
# The command, in subprocesses.

@pytest.fixture(scope='module')
def workdir(tmp_path_factory, write_tiny_checkpoint):
  """A run directory holding an untrained tiny model's checkpoint."""
  path = str(tmp_path_factory.mktemp('run'))
  write_tiny_checkpoint(path, 1)
  return path


@pytest.fixture(name='no_jax_env', scope='module')
def fixture_no_jax_env(tmp_path_factory):
  """An environment in which importing JAX or TensorFlow fails: checks must come before both."""
  poison = tmp_path_factory.mktemp('poison')
  for name in ('jax', 'tensorflow'):
    (poison / name).mkdir()
    (poison / name / '__init__.py').write_text(
        f'raise SystemExit("error: {name} was imported before the arguments were checked")\n')
  return cli_util.command_env(
      PYTHONPATH=os.pathsep.join([str(poison), cli_util.REPO, os.environ.get('PYTHONPATH', '')]))


@pytest.mark.parametrize('case, fragments', [
    ('no_flags', ['--workdir=DIR', '--output=OUT', 'required']),
    ('threshold_nan', ['--score_threshold=nan is invalid', '[0, 1]']),
    ('threshold_negative', ['--score_threshold=-5.0 is invalid', '[0, 1]']),
    ('threshold_two', ['--score_threshold=2.0 is invalid', '[0, 1]']),
    ('threshold_text', ['--score_threshold=abc', 'see --help']),
    ('negative_step', ['--step=-1 is invalid']),
    ('missing_workdir', ['--workdir=', 'does not exist', 'training run']),
    ('output_is_a_file', ['is a file, not a directory', 'choose a directory']),
    ('output_under_a_file', ['cannot create --output=', 'is a file, not a directory']),
    ('no_images', ['no images to localize', 'JPEG, PNG']),
    ('folder_without_images', ['no images to localize', 'notes.txt']),
    ('all_missing', ['none of the given images exists', 'a.png, ', 'b.jpg)', 'check the path']),
])
def test_command_refuses_bad_arguments_in_one_line(workdir, tmp_path, no_jax_env, case,
                                                   fragments):
  notes = tmp_path / 'notes'
  notes.mkdir()
  (notes / 'notes.txt').write_text('x')
  Image.new('RGB', (4, 4)).save(tmp_path / 'ok.png')
  (tmp_path / 'file').write_text('keep me')
  out = tmp_path / 'out'
  args = {
      'no_flags': [str(tmp_path / 'ok.png')],
      'threshold_nan': [f'--workdir={workdir}', f'--output={out}', '--score_threshold=nan'],
      'threshold_negative': [f'--workdir={workdir}', f'--output={out}', '--score_threshold=-5'],
      'threshold_two': [f'--workdir={workdir}', f'--output={out}', '--score_threshold=2'],
      'threshold_text': [f'--workdir={workdir}', f'--output={out}', '--score_threshold=abc'],
      'negative_step': [f'--workdir={workdir}', f'--output={out}', '--step=-1'],
      'missing_workdir': [f'--workdir={tmp_path / "norun"}', f'--output={out}'],
      'output_is_a_file': [f'--workdir={workdir}', f'--output={tmp_path / "file"}'],
      'output_under_a_file': [f'--workdir={workdir}', f'--output={tmp_path / "file" / "out"}'],
      'no_images': [f'--workdir={workdir}', f'--output={out}'],
      'folder_without_images': [f'--workdir={workdir}', f'--output={out}', str(notes)],
      'all_missing': [f'--workdir={workdir}', f'--output={out}', str(tmp_path / 'a.png'),
                      str(tmp_path / 'b.jpg')],
  }[case]
  if case not in ('no_images', 'folder_without_images', 'all_missing'):
    args.append(str(tmp_path / 'ok.png'))
  code, stdout, lines = cli_util.run_command('excam_jax.localize', *args, env=no_jax_env,
                                             timeout=60)
  cli_util.assert_one_error_line(code, lines, *fragments)
  assert code == 1 and not stdout
  assert not out.exists()  # Nothing was written.
  assert (tmp_path / 'file').read_text() == 'keep me'


def test_command_mixed_good_and_bad_files(workdir, tmp_path, huge_png):
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray(np.full((30, 50), 90, np.uint8), 'L').save(photos / 'gray.png')
  rgb = np.random.default_rng(0).integers(0, 255, (41, 23, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(photos / 'photo.jpg')
  Image.new('RGB', (7, 5), (200, 10, 10)).save(photos / 'my photo é.png')
  (photos / 'notes.txt').write_text('not an image')
  Image.new('RGB', (1, 1), (5, 5, 5)).save(tmp_path / '写真.jpg')
  (tmp_path / 'empty.jpg').write_bytes(b'')
  _write_truncated_jpeg(tmp_path / 'half.jpg')
  (tmp_path / 'text.jpg').write_text('not an image')
  bad = [str(tmp_path / n) for n in ('empty.jpg', 'half.jpg', 'text.jpg', 'nope.png')]
  bad.append(huge_png)
  out = tmp_path / 'out'
  code, stdout, lines = cli_util.run_command(
      'excam_jax.localize', f'--workdir={workdir}', f'--output={out}', '--score_threshold=0',
      str(photos), str(tmp_path / '写真.jpg'), *bad)
  assert code == 1, lines
  errors = [line for line in lines if line.startswith('error: ')]
  assert len(errors) == len(bad), lines
  for path, line in zip(bad, errors):
    assert line.startswith(f'error: cannot read {path}: '), (path, line)
  assert f'{HUGE} x {HUGE}' in errors[-1]
  assert [line for line in lines if line not in errors] == [
      f'skipped 1 file in {photos} that is not an image (notes.txt).']
  with open(out / 'boxes.json', encoding='utf-8') as f:
    result = json.load(f)
  good = [str(photos / n) for n in ('gray.png', 'my photo é.png', 'photo.jpg')]
  assert list(result) == good + [str(tmp_path / '写真.jpg')]
  photo = result[str(photos / 'photo.jpg')]
  assert (photo['width'], photo['height']) == (23, 41) and len(photo['scores']) == 3
  for entry in result.values():  # Every class is boxed at threshold 0; boxes lie inside.
    for det in entry['detections']:
      x1, y1, x2, y2 = det['box']
      assert 0 <= x1 <= x2 < entry['width'] and 0 <= y1 <= y2 < entry['height']
    with Image.open(out / entry['overlay']) as overlay:
      assert overlay.size == (entry['width'], entry['height'])
  detections = sum(len(e['detections']) for e in result.values())
  assert stdout.splitlines()[-1] == (
      f'wrote {out / "boxes.json"} (4 images, {detections} detections) and 4 overlays; '
      '5 files could not be read (named above).')


def test_command_good_images_exit_zero_without_tensorflow(workdir, tmp_path):
  """The real command, run as __main__ by a runner that says at exit whether TF was loaded."""
  runner = tmp_path / 'runner'
  runner.mkdir()
  (runner / 'localize_runner.py').write_text(
      'import atexit, runpy, sys\n'
      "atexit.register(lambda: print('tensorflow loaded:', 'tensorflow' in sys.modules))\n"
      "runpy.run_module('excam_jax.localize', run_name='__main__', alter_sys=True)\n")
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.new('RGB', (12, 9), (30, 60, 90)).save(photos / 'a.png')
  (photos / 'notes.txt').write_text('x')
  out = tmp_path / 'out'
  env = cli_util.command_env(PYTHONPATH=os.pathsep.join([str(runner), cli_util.REPO]))
  code, stdout, lines = cli_util.run_command(
      'localize_runner', f'--workdir={workdir}', f'--output={out}', str(photos), env=env)
  assert code == 0, lines
  assert lines == [f'skipped 1 file in {photos} that is not an image (notes.txt).']
  wrote, loaded = stdout.splitlines()[-2:]
  assert wrote.startswith(f'wrote {out / "boxes.json"} (1 image, ') and wrote.endswith(
      ' and 1 overlay.')
  assert loaded == 'tensorflow loaded: False'
  with open(out / 'boxes.json') as f:
    assert list(json.load(f)) == [str(photos / 'a.png')]


def test_command_without_checkpoint(tmp_path):
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'x.png')
  (tmp_path / 'notes.txt').write_text('x')  # Its "skipped" line would be a second line.
  code, stdout, lines = cli_util.run_command(
      'excam_jax.localize', f'--workdir={tmp_path}', f'--output={tmp_path / "o"}', str(tmp_path))
  cli_util.assert_one_error_line(code, lines, 'no checkpoints', 'training run')
  assert not stdout and not (tmp_path / 'o').exists()

r"""Localizes objects in your own images with a trained model.

  python -m excam_jax.localize --workdir=runs/voc12 --output=out photo.jpg more_photos/

Reads JPEG, PNG, GIF (the first frame), BMP, TIFF and WebP files of any mode (grayscale, palette,
RGBA, LA, CMYK, 16-bit; EXIF rotation applied); a folder stands for the files with those
extensions in it (not its subfolders; the rest is skipped with one info line). Each image is
resized as in evaluation and every class with sigma(s_c) > --score_threshold is localized: its
class map is upsampled to the original size and each 8-connected component of sigma(z_c) > 0.5
gives a box. Writes OUT/boxes.json (per image: size, class scores and detections with inclusive
pixel boxes (x1, y1, x2, y2), and the overlay's name) and OUT/<name>.png, the image with its boxes
in green; every file is written to a temporary name first and then renamed, so an interrupted or
failed run leaves the earlier files whole. Ends with one line on stdout saying what it wrote.

A file that cannot be read (missing, empty, truncated, not an image, over Pillow's
Image.MAX_IMAGE_PIXELS limit) is named on stderr as `error: cannot read PATH: REASON` and the
others go on; the exit status is 1 if any file failed. A bad flag or an unusable --output or
--workdir is one `error: ...` line before any model is loaded. TensorFlow is not loaded.
"""

import collections
import contextlib
import json
import math
import os
import re
import stat
import sys
import warnings

from absl import flags
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from excam_jax import cli
from excam_jax import files as file_io  # `files` names file lists here.
from excam_jax.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'The --workdir of a training run.')
_OUTPUT = flags.DEFINE_string('output', None, 'Directory for boxes.json and the overlays.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; the latest if unset.')
_SCORE = flags.DEFINE_float('score_threshold', 0.5,
                            'Classes with sigma(s_c) above it (in [0, 1]) are boxed.')

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp', '.tif', '.tiff', '.webp')
# Pillow's format names of those files (MPO: the multi-picture JPEGs of many cameras). Other
# formats Pillow knows (EPS, which runs Ghostscript, PSD, ICO, ...) are refused by name.
_FORMATS = ('JPEG', 'MPO', 'PNG', 'GIF', 'BMP', 'DIB', 'TIFF', 'WEBP')
FORMAT_NAMES = 'JPEG, PNG, GIF, BMP, TIFF or WebP'
BOXES_FILE = 'boxes.json'
# An overlay's name keeps at most this many bytes of the input's name (file systems allow 255).
_MAX_STEM_BYTES = 200
_LISTED = 5  # Names listed in a "skipped" line.


class UnreadableImage(UserError):
  """An input file that cannot be read as an image; the message is `cannot read PATH: REASON`."""

  def __init__(self, path, reason):
    super().__init__(f'cannot read {shown(path)}: {reason}')
    self.path = path
    self.reason = reason


def shown(path):
  """A path as one printable line: undecodable bytes and control characters escaped."""
  text = os.fsencode(path).decode('utf-8', 'backslashreplace')
  return re.sub(r'[\x00-\x1f\x7f]', lambda m: f'\\x{ord(m.group()):02x}', text)


# ---------------------------------------------------------------------------------------------
# Reading images.

@contextlib.contextmanager
def _header_only_size_check():
  """Lets Image.open read a header without Pillow's decompression-bomb warning or error.

  load_image compares the size with Image.MAX_IMAGE_PIXELS itself, before any pixel is decoded,
  and names the size and the limit in its message.
  """
  limit = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = None
  try:
    yield limit
  finally:
    Image.MAX_IMAGE_PIXELS = limit


def _sixteen_bit_to_rgb(img):
  """16- or 32-bit integer grayscale as RGB uint8 (16-bit samples scaled by 257)."""
  data = np.asarray(img, np.float64)
  scale = 257.0 if img.mode.startswith('I;16') or data.max(initial=0) > 255 else 1.0
  gray = np.clip(np.round(data / scale), 0, 255).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1)


def _to_rgb(img):
  """A loaded Pillow image of any mode as RGB uint8 (H, W, 3)."""
  if img.mode.startswith('I'):  # I;16, I;16B, I;16L, I;16N, I.
    return _sixteen_bit_to_rgb(img)
  if img.mode == 'F':  # Floating-point TIFF: [0, 1] if it fits, else [0, 255].
    data = np.nan_to_num(np.asarray(img, np.float64))
    scale = 255.0 if data.max(initial=0) <= 1.0 else 1.0
    gray = np.clip(np.round(data * scale), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  # RGB, RGBA/LA/PA (alpha dropped), L, 1, P (palette), CMYK, YCbCr, ...
  return np.ascontiguousarray(np.asarray(img.convert('RGB'), np.uint8))


def _formats():
  """The names in _FORMATS that this Pillow can open (WebP needs libwebp)."""
  Image.init()  # Registers every plugin; Image.open(formats=...) looks only at registered ones.
  return [name for name in _FORMATS if name in Image.OPEN]


def _decode(path):
  with _header_only_size_check() as limit:
    img = Image.open(path, formats=_formats())
  with img:
    width, height = img.size
    if limit and width * height > limit:
      raise UnreadableImage(
          path, f'the image is {width} x {height} = {width * height:,} pixels, over the limit of '
          f'{int(limit):,} pixels (PIL.Image.MAX_IMAGE_PIXELS) that guards against decompression '
          'bombs; downscale it first.')
    if width < 1 or height < 1:
      raise UnreadableImage(path, f'the image is {width} x {height} pixels (empty).')
    upright = ImageOps.exif_transpose(img)  # The first frame of an animation; a new image.
    upright.load()
    return _to_rgb(upright)


def _file_problem(path):
  """Why `path` cannot be opened as an image file, or None if it is a non-empty regular file."""
  try:
    info = os.stat(path)
  except (FileNotFoundError, NotADirectoryError):
    return 'no such file; check the path.'
  except OSError as err:
    return f'{err.strerror or err}; check the path and its permissions.'
  if stat.S_ISDIR(info.st_mode):
    return 'it is a folder, not an image file; pass the folder itself to read the images in it.'
  if not stat.S_ISREG(info.st_mode):  # A pipe or device would block or never end.
    return 'not a regular file (a pipe, socket or device); pass an image file.'
  if info.st_size == 0:
    return 'the file is empty (0 bytes); copy the image again.'
  return None


def load_image(path):
  """Reads an image file as RGB uint8 (H, W, 3), upright.

  EXIF orientation is applied; grayscale is replicated to three channels; an alpha channel is
  dropped; palette and CMYK images are converted; 16-bit samples are scaled to 8 bits (by 257,
  so 65535 maps to 255); an animated GIF, WebP or PNG gives its first frame. Images over
  Image.MAX_IMAGE_PIXELS pixels are refused before their pixels are decoded.

  Raises:
    UnreadableImage (a UserError): the file is missing, empty, not a file, not a JPEG, PNG, GIF,
      BMP, TIFF or WebP image, truncated or damaged, or too large; the message names the file
      and the reason.
  """
  path = os.fspath(path)
  problem = _file_problem(path)
  if problem:
    raise UnreadableImage(path, problem)
  with warnings.catch_warnings():  # Pillow's warnings about odd files: the result is checked.
    warnings.simplefilter('ignore')
    try:
      return _decode(path)
    except UnreadableImage:
      raise
    except UnidentifiedImageError as err:
      raise UnreadableImage(path, f'not a {FORMAT_NAMES} image; convert it to PNG or JPEG.'
                            ) from err
    except MemoryError as err:
      raise UnreadableImage(path, 'not enough memory to decode it; downscale it first.') from err
    except OSError as err:
      reason = ' '.join(str(err.strerror or err).split())
      if 'truncated' in reason or 'broken' in reason or 'decoder' in reason:
        reason = f'the file is truncated or damaged ({reason}); copy or export it again.'
      else:
        reason = f'{reason}; check the file.'
      raise UnreadableImage(path, reason) from err
    except Exception as err:  # pylint: disable=broad-except  # Decoders raise many types.
      detail = ' '.join(str(err).split())[:160]
      raise UnreadableImage(path, f'the file is damaged or an unsupported variant of its format '
                            f'({type(err).__name__}: {detail}); convert it to PNG.') from err


def _collect(arguments):
  """Expands folders; returns (files, info lines, unlistable (folder, reason) pairs)."""
  files, seen, notes, unlistable = [], set(), [], []

  def add(path):
    key = os.path.normpath(path)
    if key not in seen:
      seen.add(key)
      files.append(path)

  for arg in arguments:
    arg = os.fspath(arg)
    if not os.path.isdir(arg):
      add(arg)
      continue
    try:
      names = sorted(os.listdir(arg))
    except OSError as err:
      unlistable.append((arg, f'cannot list the folder ({err.strerror or err}).'))
      continue
    skipped, found = [], 0
    for name in names:
      full = os.path.join(arg, name)
      if os.path.isdir(full):
        skipped.append(name + '/')
      elif name.lower().endswith(EXTENSIONS) and not name.startswith('.'):
        add(full)
        found += 1
      else:
        skipped.append(name)
    if skipped:
      n = len(skipped)
      listed = ', '.join(shown(s) for s in skipped[:_LISTED]) + (', ...' if n > _LISTED else '')
      what = 'file in {} that is not an image' if n == 1 else 'files in {} that are not images'
      note = f'skipped {n} {what.format(shown(arg))} ({listed})'
      if any(s.endswith('/') for s in skipped):
        note += '; subfolders are not searched'
      notes.append(note + '.')
    elif not found:
      notes.append(f'{shown(arg)} holds no files.')
  return files, notes, unlistable


def collect_files(arguments):
  """Expands folders to their image files (sorted), files kept as given, duplicates dropped.

  A folder's files with the extensions in EXTENSIONS (any case; not hidden ones) are taken; what
  else it holds is skipped, with one info line per folder on cli.LOGGER.
  """
  files, notes, unlistable = _collect(arguments)
  for note in notes:
    cli.LOGGER.info('%s', note)
  for folder, reason in unlistable:
    cli.LOGGER.warning('%s', UnreadableImage(folder, reason))
  return files


# ---------------------------------------------------------------------------------------------
# Localizing.

def localize_image(predict_fn, image, class_names, size, score_threshold=0.5, threshold=0.0):
  """Detections of one RGB uint8 image (H, W, 3): class scores and boxes in original pixels.

  Boxes come from boxes.map_to_boxes, the path the metrics score: the class map at the original
  size, z > threshold (the run's config.eval.threshold; 0 is sigma(z) > 0.5), components.
  """
  from excam_jax.data import image_ops  # pylint: disable=g-import-not-at-top
  from excam_jax.evaluation import boxes as boxlib  # pylint: disable=g-import-not-at-top
  logits, class_maps = predict_fn(image_ops.to_model_input(image, size)[None])
  logits = np.asarray(logits, np.float64)
  if not np.all(np.isfinite(logits)):
    raise UserError('the model gives NaN or infinite class scores: the checkpoint is damaged or '
                    'its training diverged; pass another --step or --workdir.')
  scores = 1.0 / (1.0 + np.exp(-logits[0]))
  height, width = image.shape[:2]
  detections = []
  for c in np.flatnonzero(scores > score_threshold):
    for box in boxlib.map_to_boxes(class_maps[0, :, :, c], height, width, threshold):
      detections.append({'class': class_names[c], 'score': float(scores[c]),
                         'box': [int(v) for v in box]})
  return {'width': width, 'height': height,
          'scores': {name: float(s) for name, s in zip(class_names, scores)},
          'detections': detections}


def _overlay_name(path, used, out_dir=None, protected=frozenset()):
  """A PNG name for an input file: unique within one run (ignoring case), a valid file name.

  Control characters, undecodable bytes and <>:"/\\|?* become '_', leading dots are dropped, long
  names are shortened; a name that is one of the run's input files (`protected`, real paths) or
  a folder in out_dir is not used.
  """
  stem = os.path.splitext(os.path.basename(os.path.normpath(os.fspath(path))))[0]
  # Undecodable bytes and characters that some file systems refuse (FAT, SMB) become '_'.
  stem = os.fsencode(stem).decode('utf-8', 'replace')
  stem = re.sub(r'[\x00-\x1f\x7f<>:"/\\|?*\ufffd]', '_', stem).lstrip('.')
  raw = stem.encode('utf-8')
  if len(raw) > _MAX_STEM_BYTES:
    stem = raw[:_MAX_STEM_BYTES].decode('utf-8', 'ignore')
  stem = stem.rstrip(' ') or 'image'

  def taken(name):
    if name.casefold() in used:
      return True
    if out_dir is None:
      return False
    target = os.path.join(out_dir, name)
    return os.path.isdir(target) or os.path.realpath(target) in protected

  name, k = f'{stem}.png', 1
  while taken(name):
    name, k = f'{stem}_{k}.png', k + 1
  used.add(name.casefold())
  return name


def _output_error(out_dir, target, err):
  reason = getattr(err, 'strerror', None) or str(err)
  return UserError(f'cannot write {shown(target)} ({reason}); free disk space or choose a '
                   f'writable --output (not {shown(out_dir)}); the files written there before '
                   'are unchanged.')


def _write_atomically(out_dir, name, write):
  """Writes out_dir/name through write(binary file) with file_io.write_atomically.

  Raises:
    UserError: the file cannot be written (disk full, permissions); a file of that name from
      before is left as it was and the temporary file is removed.
  """
  target = os.path.join(out_dir, name)
  try:
    file_io.write_atomically(target, write)
  except OSError as err:
    raise _output_error(out_dir, target, err) from err


def _make_output(out_dir):
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as err:
    raise UserError(f'cannot create --output={shown(out_dir)} ({err.strerror or err}); choose a '
                    'directory that can be created and written.') from err
  if not os.path.isdir(out_dir):
    raise UserError(f'--output={shown(out_dir)} is a file, not a directory; choose a directory '
                    '(it is created if missing).')


Summary = collections.namedtuple('Summary', 'failed images detections boxes_path')


def _localize(predict_fn, paths, class_names, size, out_dir, score_threshold=0.5,
              threshold=0.0):
  """localize_files, returning a Summary (for the command's last line)."""
  from excam_jax import visualize  # pylint: disable=g-import-not-at-top
  _make_output(out_dir)
  protected = {os.path.realpath(os.fspath(p)) for p in paths}
  results, failed, used, detections = {}, 0, set(), 0
  for path in paths:
    try:
      image = load_image(path)
      try:
        result = localize_image(predict_fn, image, class_names, size, score_threshold,
                                threshold)
        overlay = visualize.overlay_boxes(image,
                                          pred_boxes=[d['box'] for d in result['detections']])
      except MemoryError as err:
        raise UnreadableImage(path, f'not enough memory for its {image.shape[1]} x '
                              f'{image.shape[0]} pixels; downscale it first.') from err
    except UnreadableImage as err:
      print(f'error: {err}', file=sys.stderr, flush=True)
      failed += 1
      continue
    del image
    name = _overlay_name(path, used, out_dir, protected)
    _write_atomically(out_dir, name, lambda f, a=overlay: Image.fromarray(a).save(f, 'PNG'))
    result['overlay'] = name
    results[os.fspath(path)] = result
    detections += len(result['detections'])
  # Non-ASCII names stay readable; an undecodable byte of a file name is kept as a \udcXX escape.
  text = json.dumps(results, indent=2, ensure_ascii=False) + '\n'
  _write_atomically(out_dir, BOXES_FILE,
                    lambda f: f.write(text.encode('utf-8', 'backslashreplace')))
  return Summary(failed, len(results), detections, os.path.join(out_dir, BOXES_FILE))


def localize_files(predict_fn, paths, class_names, size, out_dir, score_threshold=0.5):
  """Localizes every file, writes boxes.json and one overlay PNG per image.

  A file that cannot be read is named on stderr (`error: cannot read PATH: REASON`) and the
  others go on. Every output file is written atomically.

  Returns:
    The number of files that could not be read.

  Raises:
    UserError: out_dir cannot be created or written, or the model gives NaN scores.
  """
  return _localize(predict_fn, paths, class_names, size, out_dir, score_threshold).failed


def class_names_of(config):
  """Class names of a run's data set, without reading the data."""
  from excam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return list(pipeline.class_names(config))


# ---------------------------------------------------------------------------------------------
# The command.

def _check_output(output):
  """UserError unless `output` is, or can be created as, a writable directory (nothing made)."""
  if os.path.lexists(output) and not os.path.isdir(output):
    raise UserError(f'--output={shown(output)} is a file, not a directory; choose a directory '
                    '(it is created if missing).')
  parent = os.path.abspath(output)
  while not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f'cannot create --output={shown(output)}: {shown(parent)} is a file, not a '
                    'directory; choose another --output.')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise UserError(f'cannot create or write --output={shown(output)}: {shown(parent)} is not '
                    'writable (permission denied); choose a writable --output.')


def check_arguments(workdir, output, step=None, score_threshold=0.5):
  """The checks of the command line that need no model: UserError naming the fix."""
  if not workdir or not output:
    raise UserError('--workdir=DIR (a training run) and --output=OUT (a folder for boxes.json '
                    'and the overlays) are both required.')
  if (isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float))
      or not math.isfinite(score_threshold) or not 0 <= score_threshold <= 1):
    raise UserError(f'--score_threshold={score_threshold} is invalid: give a number in [0, 1] '
                    '(classes with sigma(s_c) above it are boxed; the default is 0.5).')
  if step is not None and step < 0:
    raise UserError(f'--step={step} is invalid: give a checkpoint step (>= 0), or leave it out '
                    'for the latest.')
  if not os.path.isdir(workdir):
    what = 'is not a folder' if os.path.lexists(workdir) else 'does not exist'
    raise UserError(f'--workdir={shown(workdir)} {what}; pass the --workdir of a training run.')
  _check_output(output)


def _images_to_read(paths):
  """(files, info lines, unlistable folders); UserError when no file is given or none exists."""
  files, notes, unlistable = _collect(paths)
  problems = [f'{shown(folder)}: {reason.rstrip(".")}' for folder, reason in unlistable]
  if not files:
    said = ' '.join(notes + problems)
    raise UserError(f'no images to localize: pass {FORMAT_NAMES} files, or folders that hold '
                    f'some{" (" + said.rstrip(".") + ")" if said else ""}.')
  if not any(os.path.lexists(f) for f in files):
    listed = ', '.join(shown(f) for f in files[:_LISTED]) + (', ...' if len(files) > _LISTED
                                                               else '')
    raise UserError(f'none of the given images exists ({listed}); check the paths.')
  return files, notes, unlistable


def _run(workdir, output, paths, step=None, score_threshold=0.5):
  check_arguments(workdir, output, step, score_threshold)
  files, notes, unlistable = _images_to_read(paths)
  # Imported only now: a bad command line is answered before JAX loads.
  from excam_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from excam_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
  from excam_jax.models import network  # pylint: disable=g-import-not-at-top
  config, variables, _ = checkpoints.restore(workdir, step)
  names = class_names_of(config)
  model = network.create_model(config.model, len(names))
  from excam_jax.models import expansion  # pylint: disable=g-import-not-at-top
  predict_fn = runner.make_predict_fn(
      model, variables, expansion.from_config(runner.map_expansion_fields(config, None)))
  # Said only now, so that a command that fails before this point prints its one error line only.
  for note in notes:
    cli.LOGGER.info('%s', note)
  for folder, reason in unlistable:
    print(f'error: {UnreadableImage(folder, reason)}', file=sys.stderr, flush=True)
  threshold = (config.get('eval') or {}).get('threshold', 0.0)  # The metrics' box threshold.
  summary = _localize(predict_fn, files, names, config.data.image_size, output, score_threshold,
                     threshold)
  return summary._replace(failed=summary.failed + len(unlistable))


def run(workdir, output, paths, step=None, score_threshold=0.5):
  """Restores the run in `workdir` and localizes `paths`; returns the number of failed files.

  Raises:
    UserError: a bad argument, no images, no usable checkpoint, or an unwritable output.
  """
  return _run(workdir, output, paths, step, score_threshold).failed


def _plural(n, word):
  return f'{n} {word}' + ('' if n == 1 else 's')


def main(argv):
  summary = _run(_WORKDIR.value, _OUTPUT.value, argv[1:], _STEP.value, _SCORE.value)
  line = (f'wrote {shown(summary.boxes_path)} ({_plural(summary.images, "image")}, '
          f'{_plural(summary.detections, "detection")}) and '
          f'{_plural(summary.images, "overlay")}')
  if summary.failed:
    line += f'; {_plural(summary.failed, "file")} could not be read (named above)'
  print(line + '.', flush=True)
  return 1 if summary.failed else 0


def console_main():
  """The excam-localize console script (`run` is the library entry above)."""
  cli.run(main)


if __name__ == '__main__':
  console_main()

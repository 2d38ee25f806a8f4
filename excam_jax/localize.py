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
import json
import math
import os
import re
import sys

from absl import flags
import numpy as np
from PIL import Image

from excam_jax.runtime import cli
from excam_jax.runtime import files as file_io  # `files` names file lists here.
from excam_jax.data.image_files import FORMAT_NAMES, LISTED, UnreadableImage, load_image, shown
from excam_jax.data import image_files
from excam_jax.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'The --workdir of a training run.')
_OUTPUT = flags.DEFINE_string('output', None, 'Directory for boxes.json and the overlays.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; the latest if unset.')
_SCORE = flags.DEFINE_float('score_threshold', 0.5,
                            'Classes with sigma(s_c) above it (in [0, 1]) are boxed.')

BOXES_FILE = 'boxes.json'
# An overlay's name keeps at most this many bytes of the input's name (file systems allow 255).
_MAX_STEM_BYTES = 200


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
  files, notes, unlistable = image_files.expand(paths)
  problems = [f'{shown(folder)}: {reason.rstrip(".")}' for folder, reason in unlistable]
  if not files:
    said = ' '.join(notes + problems)
    raise UserError(f'no images to localize: pass {FORMAT_NAMES} files, or folders that hold '
                    f'some{" (" + said.rstrip(".") + ")" if said else ""}.')
  if not any(os.path.lexists(f) for f in files):
    listed = ', '.join(shown(f) for f in files[:LISTED]) + (', ...' if len(files) > LISTED
                                                               else '')
    raise UserError(f'none of the given images exists ({listed}); check the paths.')
  return files, notes, unlistable


def _run(workdir, output, paths, step=None, score_threshold=0.5):
  check_arguments(workdir, output, step, score_threshold)
  files, notes, unlistable = _images_to_read(paths)
  # Imported only now: a bad command line is answered before JAX loads.
  from excam_jax import inference  # pylint: disable=g-import-not-at-top
  predictor = inference.load(workdir, step)
  config = predictor.config
  names = inference.class_names(config)
  # Said only now, so that a command that fails before this point prints its one error line only.
  for note in notes:
    cli.LOGGER.info('%s', note)
  for folder, reason in unlistable:
    print(f'error: {UnreadableImage(folder, reason)}', file=sys.stderr, flush=True)
  threshold = (config.get('eval') or {}).get('threshold', 0.0)  # The metrics' box threshold.
  summary = _localize(predictor, files, names, config.data.image_size, output, score_threshold,
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

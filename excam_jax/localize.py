r"""Localizes objects in your own images with a trained model.

  python -m excam_jax.localize --workdir=runs/voc12 --output=out photo.jpg more_photos/

Each JPEG or PNG (any size; grayscale, RGBA, 16-bit and EXIF-rotated files are handled) is resized
as in evaluation, and every class with sigma(s_c) > --score_threshold is localized: its class map
is upsampled to the original size and each 8-connected component of sigma(z_c) > 0.5 gives a box.
Writes OUT/boxes.json (per image: size, class scores and detections with inclusive pixel boxes
(x1, y1, x2, y2)) and OUT/<name>.png, the image with its boxes in green. A missing or unreadable
file is named on stderr and the others go on; the exit status is 1 if any file failed.
"""

import json
import os
import sys

from absl import app
from absl import flags
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from excam_jax.errors import UserError, exit_with

_WORKDIR = flags.DEFINE_string('workdir', None, 'The --workdir of a training run.')
_OUTPUT = flags.DEFINE_string('output', None, 'Directory for boxes.json and the overlays.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; the latest if unset.')
_SCORE = flags.DEFINE_float('score_threshold', 0.5, 'Classes with sigma(s_c) above it are boxed.')

EXTENSIONS = ('.jpg', '.jpeg', '.png')


def load_image(path):
  """Reads an image file as RGB uint8 (H, W, 3), upright.

  EXIF orientation is applied; grayscale is replicated to three channels; an alpha channel is
  dropped; 16-bit samples are scaled to 8 bits (by 257, so 65535 maps to 255).

  Raises:
    OSError or PIL.UnidentifiedImageError for a missing or unreadable file.
  """
  with Image.open(path) as img:
    img = ImageOps.exif_transpose(img)
    img.load()
    if img.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
      # 16-bit grayscale: PIL keeps the samples as integers; bring them to 8 bits ourselves.
      data = np.asarray(img, np.float64)
      scale = 257.0 if img.mode.startswith('I;16') or data.max() > 255 else 1.0
      gray = np.clip(np.round(data / scale), 0, 255).astype(np.uint8)
      return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(img.convert('RGB'), np.uint8)


def collect_files(arguments):
  """Expands directories to their JPEG/PNG files (sorted); files are kept as given."""
  files = []
  for arg in arguments:
    if os.path.isdir(arg):
      files += sorted(os.path.join(arg, f) for f in os.listdir(arg)
                      if f.lower().endswith(EXTENSIONS))
    else:
      files.append(arg)
  return files


def localize_image(predict_fn, image, class_names, size, score_threshold=0.5):
  """Detections of one RGB uint8 image (H, W, 3): class scores and boxes in original pixels."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from excam_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  from excam_jax.evaluation import boxes as boxlib  # pylint: disable=g-import-not-at-top
  resized = preprocess.resize({'image': tf.convert_to_tensor(image)}, size)['image']
  logits, class_maps = predict_fn(preprocess.normalize(resized.numpy())[None])
  scores = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64)))
  height, width = image.shape[:2]
  detections = []
  for c in np.flatnonzero(scores > score_threshold):
    cam = boxlib.upsample(class_maps[0, :, :, c], height, width)
    for box in boxlib.cam_to_boxes(cam, 0.0):  # z > 0 is sigma(z) > 0.5.
      detections.append({'class': class_names[c], 'score': float(scores[c]), 'box': list(box)})
  return {'width': width, 'height': height,
          'scores': {name: float(s) for name, s in zip(class_names, scores)},
          'detections': detections}


def _overlay_name(path, used):
  """A PNG name for an input file, unique within one run."""
  stem = os.path.splitext(os.path.basename(path))[0] or 'image'
  name, k = f'{stem}.png', 1
  while name in used or name == 'boxes.json':
    name, k = f'{stem}_{k}.png', k + 1
  used.add(name)
  return name


def localize_files(predict_fn, paths, class_names, size, out_dir, score_threshold=0.5):
  """Localizes every file, writes boxes.json and one overlay PNG per image.

  Returns:
    The number of files that could not be read (each is named on stderr).
  """
  from excam_jax import visualize  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  results, failed, used = {}, 0, set()
  for path in paths:
    try:
      image = load_image(path)
    except (OSError, UnidentifiedImageError, ValueError) as err:
      print(f'error: cannot read {path}: {err}', file=sys.stderr)
      failed += 1
      continue
    result = localize_image(predict_fn, image, class_names, size, score_threshold)
    result['overlay'] = _overlay_name(path, used)
    overlay = visualize.overlay_boxes(image, pred_boxes=[d['box'] for d in result['detections']])
    Image.fromarray(overlay).save(os.path.join(out_dir, result['overlay']))
    results[path] = result
  with open(os.path.join(out_dir, 'boxes.json'), 'w') as f:
    json.dump(results, f, indent=2)
  return failed


def class_names_of(config):
  """Class names of a run's data set, without reading the data."""
  from excam_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from excam_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  if config.dataset == 'parts':
    return list(synthetic.class_names(config.parts.num_classes))
  return list(evaluate.VOC_CLASSES)


def run(workdir, output, paths, step=None, score_threshold=0.5):
  """Restores the run in `workdir` and localizes `paths`; returns the number of failed files."""
  from excam_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from excam_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from excam_jax.models import network  # pylint: disable=g-import-not-at-top
  files = collect_files(paths)
  if not files:
    raise UserError('no images given: pass JPEG/PNG files or directories that hold some.')
  config, variables, _ = checkpoints.restore(workdir, step)
  names = class_names_of(config)
  model = network.create_model(config.model, len(names))
  predict_fn = evaluate.make_predict_fn(model, variables)
  return localize_files(predict_fn, files, names, config.image_size, output, score_threshold)


def main(argv):
  if not _WORKDIR.value or not _OUTPUT.value:
    exit_with(UserError('--workdir=DIR (a training run) and --output=OUT are required.'))
  try:
    failed = run(_WORKDIR.value, _OUTPUT.value, argv[1:], _STEP.value, _SCORE.value)
  except UserError as err:
    exit_with(err)
  print(f'wrote {os.path.join(_OUTPUT.value, "boxes.json")}')
  sys.exit(1 if failed else 0)


if __name__ == '__main__':
  app.run(main, argv=sys.argv)

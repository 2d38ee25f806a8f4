"""Reading users' image files: folders expanded to their images, any file decoded to RGB or
refused with one line naming it (what `localize` reads).

Reads JPEG, PNG, GIF (the first frame), BMP, TIFF and WebP files of any mode (grayscale, palette,
RGBA, LA, CMYK, 16-bit; EXIF rotation applied). A file that cannot be read (missing, empty,
truncated, not an image, over Pillow's Image.MAX_IMAGE_PIXELS limit) raises UnreadableImage,
`cannot read PATH: REASON`.
"""

import contextlib
import os
import re
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from excam_jax.errors import UserError
from excam_jax.runtime import cli

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp', '.tif', '.tiff', '.webp')
# Pillow's format names of those files (MPO: the multi-picture JPEGs of many cameras). Other
# formats Pillow knows (EPS, which runs Ghostscript, PSD, ICO, ...) are refused by name.
_FORMATS = ('JPEG', 'MPO', 'PNG', 'GIF', 'BMP', 'DIB', 'TIFF', 'WEBP')
FORMAT_NAMES = 'JPEG, PNG, GIF, BMP, TIFF or WebP'
LISTED = 5  # Names listed in a "skipped" line.


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


def expand(arguments):
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
      listed = ', '.join(shown(s) for s in skipped[:LISTED]) + (', ...' if n > LISTED else '')
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
  files, notes, unlistable = expand(arguments)
  for note in notes:
    cli.LOGGER.info('%s', note)
  for folder, reason in unlistable:
    cli.LOGGER.warning('%s', UnreadableImage(folder, reason))
  return files

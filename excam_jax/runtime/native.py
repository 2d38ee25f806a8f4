"""Loading native libraries quietly: TensorFlow's load-time banners kept off the terminal.

On some CPUs (AVX-512/AMX) TensorFlow's native layer writes banners straight to file descriptor 2
when it loads, around Python's sys.stderr, and no environment variable silences them; only the
descriptor itself catches them. Used by the commands (excam_jax/runtime/cli.py) and by the VOC pipeline.
"""

import contextlib
import os
import re
import sys
import tempfile

# Lines that native libraries write on file descriptor 2 while they load, and which say nothing
# the user can act on: glog/absl INFO and WARNING lines ("I0000 00:00:... port.cc:153] ...") and
# their fixed companions. Errors (E.../F... lines) are kept.
_NATIVE_NOISE = re.compile(
    r'^(WARNING: All log messages before absl::InitializeLog\(\) is called'
    r'|[IW]\d{4} [\d:.]+\s+\d+ [\w.\-]+:\d+\]'
    r'|To enable the following instructions:'
    r'|oneDNN custom operations are on)')


def native_noise(line):
  """Whether a stderr line is a native library's load-time banner (see _NATIVE_NOISE)."""
  return bool(_NATIVE_NOISE.match(line))


@contextlib.contextmanager
def filtered_native_stderr():
  """Points file descriptor 2 at a temporary file for the body, then replays what is not noise.

  Native libraries write their banners to fd 2 directly, around Python's sys.stderr; nothing
  but the descriptor itself catches them. Every other line, real errors included, is written to
  the real stderr when the body ends (also when it raises).
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = capture.read().decode('utf-8', errors='replace')
      kept = [line for line in text.splitlines() if line.strip() and not native_noise(line)]
      if kept:
        sys.stderr.write('\n'.join(kept) + '\n')
        sys.stderr.flush()


def import_tensorflow():
  """Imports TensorFlow (and TFDS) quietly and keeps it off the accelerators JAX owns."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with filtered_native_stderr():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import
  try:
    tf.config.set_visible_devices([], 'GPU')
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(1)
  except RuntimeError:  # Already initialised by the caller: keep its settings.
    pass
  return tf


@contextlib.contextmanager
def quiet_absl_warnings():
  """absl WARNING lines off for the body (errors kept): TFDS notes, as warnings, folders it scans
  and finds empty, which says nothing to a user who has not prepared the data yet."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  saved = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(saved)

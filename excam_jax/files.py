"""Small file-system guards shared by the commands: a writable folder, an atomic write."""

import os

from excam_jax.errors import UserError


def check_writable(directory, problem, tag=''):
  """Creates `directory` if needed and writes a probe file in it.

  Args:
    directory: the folder.
    problem: the error message before the reason, e.g. "cannot write to workdir 'x'"; the
      UserError reads "<problem> (<reason>); <fix>" with the fix after a ';' in `problem`.
    tag: makes the probe's name unique among processes sharing the folder.

  Raises:
    UserError: the folder cannot be created or written.
  """
  head, _, fix = problem.partition('; ')
  try:
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f'.write_test.{tag}{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as err:
    raise UserError(f'{head} ({err.strerror or err}); {fix}') from err


def write_text(path, text):
  """Writes a text file atomically: a failed write leaves any earlier version whole."""
  tmp = f'{path}.tmp.{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)

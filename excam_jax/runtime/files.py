"""Small file-system guards shared by the commands: a writable folder, an atomic write."""

import contextlib
import os
import tempfile

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


def _umask():
  """The process's umask (read once: os.umask can only be read by setting it)."""
  if _UMASK[0] is None:
    _UMASK[0] = os.umask(0o022)
    os.umask(_UMASK[0])
  return _UMASK[0]


_UMASK = [None]


def write_atomically(path, write):
  """Writes `path` through write(binary file): a temporary file beside it, then os.replace.

  A failed write (disk full, permissions) leaves any earlier file of that name whole and removes
  the temporary file; the OSError passes to the caller.
  """
  directory, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open would honour umask.
    os.replace(tmp, path)
    tmp = None
  finally:
    if tmp is not None:
      with contextlib.suppress(OSError):
        os.unlink(tmp)


def write_text(path, text):
  """Writes a UTF-8 text file atomically (see write_atomically)."""
  write_atomically(path, lambda f: f.write(text.encode('utf-8')))

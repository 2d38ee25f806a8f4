"""One training run per workdir: an advisory lock file holding the owner's pid and host.

The lock is an flock on <workdir>/.lock, which the kernel releases when its process dies, however
it dies; the file's text only says who held it. A lock file left with text by a process that no
longer holds it (killed with SIGKILL, or a machine that rebooted) is stale and is taken over with
a warning.
"""

import fcntl
import logging
import os
import socket
import time

from excam_jax.errors import UserError

LOCK_FILE = '.lock'
_LOG = logging.getLogger('excam_jax')


class WorkdirLock:
  """Holds the lock of `workdir` from `acquire()` to `release()` (or the process's end)."""

  def __init__(self, workdir):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def acquire(self):
    """Takes the lock, or raises UserError naming the process that holds it."""
    try:
      f = open(self.path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with
    except OSError as err:
      raise UserError(f'cannot create the lock file {self.path} ({err.strerror}); choose a '
                      'writable --workdir.') from err
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
      f.seek(0)
      owner = f.read().strip() or 'another process'
      f.close()
      raise UserError(f'workdir {os.path.dirname(self.path)} is in use by {owner}; wait for '
                      'that run to end (or stop it) or choose another --workdir.') from err
    f.seek(0)
    previous = f.read().strip()
    if previous:
      _LOG.warning('warning: took over the stale lock of %s (it no longer runs).', previous)
    f.seek(0)
    f.truncate()
    f.write(f'process {os.getpid()} on {socket.gethostname()} '
            f'(since {time.strftime("%Y-%m-%d %H:%M:%S")})\n')
    f.flush()
    self._file = f
    return self

  def release(self):
    """Empties the lock file (a clean end leaves no stale owner) and unlocks it."""
    if self._file is None:
      return
    try:
      self._file.seek(0)
      self._file.truncate()
      self._file.flush()
    except OSError:
      pass  # A full disk must not turn a clean stop into a crash; the flock still goes.
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()
    self._file = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()

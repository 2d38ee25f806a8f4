"""The loop's monitor: metric windows and the non-finite stop, the progress bar, TensorBoard
scalars, log lines, and the signals that ask the loop to stop."""

import logging
import os
import signal
import sys
import threading
import time

import jax
import numpy as np
import tqdm

from excam_jax.errors import UserError
from excam_jax.training import summary

_LOG = logging.getLogger('excam_jax.train')  # The loop's log lines keep their logger name.
_IMPORT_TIME = time.time()


class NonFiniteLoss(UserError):
  """The loss, the gradients or the parameters became NaN or infinite; training stopped with
  the last good checkpoint kept."""


class Monitor:
  """Host-side metric windows, the progress bar, TensorBoard and log lines (process 0 writes)."""

  def __init__(self, workdir, start, total, global_batch, schedules):
    self.main = jax.process_index() == 0
    self.writer = summary.ScalarWriter(workdir) if self.main else None
    # Redraw often on a terminal, rarely into a log file.
    self.bar = tqdm.tqdm(total=total, initial=start, desc='train', unit='step',
                         disable=not self.main, dynamic_ncols=True,
                         mininterval=0.5 if sys.stderr.isatty() else 30)
    self.schedules, self.global_batch = schedules, global_batch
    self.window, self.window_start, self.clock = [], start, time.perf_counter()
    self.train_history, self.eval_history = [], []

  def step(self, metrics):
    self.window.append(metrics)
    self.bar.update(1)

  def flush(self, step, ckpt):
    """Averages the window (the one host sync of a log step); stops on a non-finite value.

    Every step's loss, gradient norm and parameter norm are checked, so no checkpoint is
    written after a step that produced NaN or infinite parameters.
    """
    if not self.window:
      return
    values = jax.device_get({k: [m[k] for m in self.window] for k in self.window[0]})
    bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
    means = {k: float(np.mean(v)) for k, v in values.items()}
    if bad:
      last = ckpt.latest_step()
      kept = (f'the last good checkpoint (step {last}) is kept' if last is not None
              else 'no checkpoint saved')
      raise NonFiniteLoss(f'the {", ".join(bad)} became non-finite between steps '
                          f'{self.window_start + 1} and {step}; training stopped and {kept}; '
                          'lower the learning rates or check the data.')
    now = time.perf_counter()
    means['images_per_second'] = (step - self.window_start) * self.global_batch / (now - self.clock)
    for group, schedule in self.schedules.items():
      means[f'learning_rate_{group}'] = float(schedule(step - 1))
    self.window, self.window_start, self.clock = [], step, now
    self.train_history.append((step, means))
    if self.main:
      self.bar.set_postfix(loss=f'{means["loss"]:.4f}', lr=f'{means["learning_rate_head"]:.3g}',
                           img_s=f'{means["images_per_second"]:.1f}')
      _LOG.info('step %d: %s', step, ', '.join(f'{k}={v:.5g}' for k, v in means.items()))
      for key, value in means.items():
        self.writer.scalar(f'train/{key}', value, step)

  def eval_result(self, step, result):
    scalars = {k: float(v) for k, v in result.items() if np.isscalar(v)}
    self.eval_history.append((step, scalars))
    if self.main:
      _LOG.info('eval at step %d: %s', step, ', '.join(f'{k}={v:.4f}' for k, v in scalars.items()))
      for key, value in scalars.items():
        self.writer.scalar(f'eval/{key}', value, step)
      self.writer.flush()
    self.clock = time.perf_counter()  # Evaluation time is not training throughput.

  def close(self):
    self.bar.close()
    if self.writer:
      self.writer.close()


class StopRequests:
  """SIGINT and SIGTERM ask the loop to stop after the current step (a second SIGINT aborts).

  Installed only in the main thread (signal handlers can live nowhere else).
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    _LOG.warning('%s received: stopping after this step and saving a checkpoint '
                 '(Ctrl-C again aborts).', signal.Signals(signum).name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def process_start_time():
  """Wall-clock time at which this process started (Linux /proc; the import time elsewhere)."""
  try:
    with open('/proc/self/stat') as f:
      ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/stat') as f:
      boot = next(int(line.split()[1]) for line in f if line.startswith('btime'))
    return boot + ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError, StopIteration):
    return _IMPORT_TIME

"""Faults a training run must survive: signals, damaged checkpoints, a held workdir, a full disk.

The end-to-end tests run `python -m excam_jax.main` on the tiny config (12 steps, a checkpoint
every 2) in subprocesses sharing a persistent compilation cache, and compare final states with an
uninterrupted reference run bit for bit.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import cli_util
from configs import tiny
from excam_jax.training import checkpoints
from excam_jax.runtime import cli
from excam_jax.training import monitor
from excam_jax.runtime import workdir_lock
from excam_jax.errors import UserError

ARGS = ['--config=configs/tiny.py', '--config.train.num_epochs=3', '--config.train.eval_every_steps=100',
        '--config.eval.localization=False', '--config.train.keep_checkpoints=3']
LAST = 12  # 3 epochs of 32 images at batch 8.
# As root, chmod does not stop our own writes: drop the capabilities that bypass it.
NO_ROOT_BYPASS = (['setpriv', '--bounding-set=-dac_override,-dac_read_search,-fowner']
                  if os.geteuid() == 0 else [])


def _main(workdir, env, *extra, prefix=()):
  return cli_util.run_command('excam_jax.main', *ARGS, *extra, f'--workdir={workdir}', env=env,
                              prefix=prefix)


def _state(workdir, step=LAST):
  ckpt = checkpoints.Checkpoints(str(workdir), async_save=False)
  try:
    return ckpt.restore_numpy(step)
  finally:
    ckpt.close()


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run and the environment (shared compilation cache) of every run here."""
  base = tmp_path_factory.mktemp('faults')
  env = cli_util.training_env(str(base / 'cache'))
  code, stdout, lines = _main(base / 'reference', env)
  assert code == 0, lines[-5:]
  return {'dir': base / 'reference', 'env': env, 'base': base, 'lines': lines, 'stdout': stdout}


def _copy(reference, name):
  target = reference['base'] / name
  shutil.copytree(reference['dir'], target)
  return target


def test_normal_run_ends_with_one_line_naming_what_it_wrote(reference):
  assert reference['lines'][-1].startswith('wrote ') and 'checkpoints' in reference['lines'][-1]
  assert not any('Traceback' in line or 'orbax' in line.lower() for line in reference['lines'])
  assert not any(line.startswith(('I0000', 'W0000')) for line in reference['lines'])


@pytest.mark.parametrize('signum, code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_the_current_step_and_resume_is_exact(reference, signum, code):
  workdir = reference['base'] / f'stopped_{signum}'
  args = [sys.executable, '-m', 'excam_jax.main', *ARGS, f'--workdir={workdir}']
  proc = subprocess.Popen(args, cwd=cli_util.REPO, env=reference['env'], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  seen, deadline = '', time.time() + 240
  while 'step 5: ' not in seen and time.time() < deadline and proc.poll() is None:
    seen += proc.stderr.readline()
  proc.send_signal(signum)
  _, rest = proc.communicate(timeout=120)
  lines = cli_util.program_lines(seen + rest)
  assert proc.returncode == code, lines[-5:]
  assert lines[-1].startswith(f'stopped: {signal.Signals(signum).name} at step ')
  assert 'run the same command to resume' in lines[-1]
  stopped_at = int(lines[-1].split(' at step ')[1].split(':')[0])
  assert 5 <= stopped_at < LAST
  assert checkpoints.Checkpoints(str(workdir), async_save=False).latest_step() == stopped_at
  resumed, _, lines = _main(workdir, reference['env'])
  assert resumed == 0, lines[-5:]
  assert any(f'Starting from checkpoint at step {stopped_at}' in line for line in lines)
  assert cli_util.same_arrays(_state(workdir), _state(reference['dir']))


def _truncate_state(workdir, step):
  for root, _, files in os.walk(workdir / checkpoints.CHECKPOINT_DIR / str(step) / 'state'):
    for name in files:
      if name != 'commit_success.txt':
        with open(os.path.join(root, name), 'r+b') as f:
          f.truncate(3)


def test_truncated_latest_checkpoint_falls_back_and_resume_is_exact(reference):
  workdir = _copy(reference, 'truncated')
  _truncate_state(workdir, LAST)
  code, _, lines = _main(workdir, reference['env'])
  assert code == 0, lines[-5:]
  warnings = [line for line in lines if line.startswith('warning:')]
  assert len(warnings) == 1 and f'checkpoint step {LAST}' in warnings[0]
  assert 'damaged_checkpoints' in warnings[0]
  assert any('Starting from checkpoint at step 10' in line for line in lines)
  moved = os.listdir(workdir / checkpoints.DAMAGED_DIR)
  assert len(moved) == 1 and moved[0].startswith(f'{LAST}.')  # Set aside, not deleted.
  assert cli_util.same_arrays(_state(workdir), _state(reference['dir']))


def test_only_checkpoint_truncated_is_one_line_naming_it(reference):
  workdir = _copy(reference, 'all_truncated')
  for step in (8, 10):
    shutil.rmtree(workdir / checkpoints.CHECKPOINT_DIR / str(step))
  _truncate_state(workdir, LAST)
  before = sorted(os.listdir(workdir / checkpoints.CHECKPOINT_DIR))
  code, _, lines = _main(workdir, reference['env'])
  cli_util.assert_one_error_line(code, lines, f'checkpoint step {LAST}', 'unreadable or truncated',
                                 'No earlier checkpoint is left')
  assert sorted(os.listdir(workdir / checkpoints.CHECKPOINT_DIR)) == before
  # evaluate says the same in one line.
  code, _, lines = cli_util.run_command('excam_jax.evaluate', f'--workdir={workdir}',
                                        env=reference['env'])
  cli_util.assert_one_error_line(code, lines, 'unreadable or truncated')


def test_evaluate_uses_the_step_before_a_damaged_latest(reference):
  workdir = _copy(reference, 'eval_truncated')
  _truncate_state(workdir, LAST)
  config, _, step = checkpoints.restore(str(workdir))
  assert step == 10 and config.model.num_maps == tiny.get_config().model.num_maps
  assert os.path.isdir(workdir / checkpoints.CHECKPOINT_DIR / str(LAST))  # Left in place.


def test_changed_schedule_is_refused_or_allowed_explicitly(reference):
  workdir = _copy(reference, 'schedule')
  before = sorted(os.listdir(workdir / checkpoints.CHECKPOINT_DIR))
  code, _, lines = _main(workdir, reference['env'], '--config.train.num_epochs=4',
                         '--config.optim.head_learning_rate=0.01')
  cli_util.assert_one_error_line(code, lines, 'num_epochs (3 in the checkpoint, 4 now)',
                                 'head_learning_rate', '--allow_schedule_change')
  assert sorted(os.listdir(workdir / checkpoints.CHECKPOINT_DIR)) == before
  code, _, lines = _main(workdir, reference['env'], '--config.train.num_epochs=2',
                         '--allow_schedule_change')
  assert lines[0].startswith('warning: resuming step 12 with a changed schedule')  # Allowed...
  cli_util.assert_one_error_line(code, lines[1:], f'step {LAST} is past the last step 8')
  code, _, lines = _main(workdir, reference['env'], '--config.train.num_epochs=4',
                         '--allow_schedule_change')
  assert code == 0, lines[-5:]
  assert any(line.startswith('warning: resuming step 12 with a changed schedule') and
             'num_epochs (3 in the checkpoint, 4 now)' in line for line in lines)
  assert checkpoints.Checkpoints(str(workdir), async_save=False).latest_step() == 16


def test_second_run_on_a_held_workdir_refuses(reference):
  workdir = _copy(reference, 'held')
  lock = workdir_lock.WorkdirLock(str(workdir)).acquire()
  try:
    before = sorted(os.listdir(workdir / checkpoints.CHECKPOINT_DIR))
    code, _, lines = _main(workdir, reference['env'], '--config.train.num_epochs=4',
                           '--allow_schedule_change')
    cli_util.assert_one_error_line(code, lines, 'is in use by process', str(os.getpid()))
    assert sorted(os.listdir(workdir / checkpoints.CHECKPOINT_DIR)) == before
  finally:
    lock.release()


def test_unwritable_checkpoints_mid_run_is_one_line_and_keeps_the_last(reference):
  workdir = reference['base'] / 'unwritable'
  args = [*NO_ROOT_BYPASS, sys.executable, '-m', 'excam_jax.main', *ARGS, f'--workdir={workdir}']
  proc = subprocess.Popen(args, cwd=cli_util.REPO, env=reference['env'],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  first = workdir / checkpoints.CHECKPOINT_DIR / '2'
  deadline = time.time() + 240
  while not first.is_dir() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  os.chmod(workdir / checkpoints.CHECKPOINT_DIR, 0o555)
  try:
    _, stderr = proc.communicate(timeout=180)  # Never hangs on Orbax's background threads.
  finally:
    os.chmod(workdir / checkpoints.CHECKPOINT_DIR, 0o755)
  lines = [line for line in cli_util.program_lines(stderr) if not line.startswith('train:')]
  assert proc.returncode == 1
  errors = [line for line in lines if line.startswith('error:')]
  assert len(errors) == 1 and 'cannot write checkpoint step' in errors[0], lines[-5:]
  assert 'is intact' in errors[0] and 'Permission denied' in errors[0]
  assert not any('Traceback' in line for line in lines)
  restored = _state(workdir, checkpoints.Checkpoints(str(workdir), async_save=False).latest_step())
  assert int(restored['step']) >= 2


def test_full_disk_is_one_line_and_keeps_the_last(reference, tmp_path):
  mount = tmp_path / 'small'
  mount.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(mount)],
                    capture_output=True, check=False).returncode != 0:
    pytest.skip('mounting a 2 MB tmpfs needs root; TestFreeSpace covers the check in-process')
  try:
    code, _, lines = _main(mount / 'run', reference['env'])
    errors = [line for line in lines if line.startswith('error:')]
    assert code == 1 and len(errors) == 1 and 'disk full' in errors[0], lines[-5:]
    assert 'the last completed checkpoint (step 2) is intact' in errors[0]
    assert not any('Traceback' in line for line in lines)
    assert int(_state(mount / 'run', 2)['step']) == 2
  finally:
    subprocess.run(['umount', str(mount)], check=False)


# ---------------------------------------------------------------------------------------------
# In-process checks of the same mechanisms.

class TestFreeSpace:

  def test_a_save_that_cannot_fit_is_refused_before_writing(self, tmp_path, monkeypatch):
    ckpt = checkpoints.Checkpoints(str(tmp_path))
    state = {'w': np.zeros((1024, 256), np.float32)}  # 1 MiB.
    monkeypatch.setattr(shutil, 'disk_usage', lambda _: shutil._ntuple_diskusage(10, 10, 2**19))
    with pytest.raises(UserError, match=r'cannot write checkpoint step 3 .*disk full: 1\.1 MiB '
                                        r'needed, 0\.5 MiB free.*no checkpoint was completed'):
      ckpt.save(3, state, tiny.get_config())
    ckpt.close()
    assert ckpt.latest_step() is None


class TestWorkdirLock:

  def test_held_lock_names_its_owner_and_release_empties_it(self, tmp_path):
    lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    with open(tmp_path / workdir_lock.LOCK_FILE) as f:
      assert f.read().startswith(f'process {os.getpid()} on ')
    runner = ('import sys; from excam_jax.runtime import workdir_lock\n'
              'try:\n  workdir_lock.WorkdirLock(sys.argv[1]).acquire()\n'
              'except Exception as e:\n  print(e)\n')
    other = subprocess.run([sys.executable, '-c', runner, str(tmp_path)], capture_output=True,
                           text=True, env=cli_util.command_env(), check=True)
    assert f'is in use by process {os.getpid()}' in other.stdout
    lock.release()
    assert (tmp_path / workdir_lock.LOCK_FILE).read_text() == ''

  def test_stale_lock_is_taken_over_with_a_warning(self, tmp_path, caplog):
    (tmp_path / workdir_lock.LOCK_FILE).write_text('process 999999 on gone (since 2026-01-01)\n')
    with workdir_lock.WorkdirLock(str(tmp_path)):
      pass
    assert 'took over the stale lock of process 999999 on gone' in caplog.text


class TestNonFinite:

  def test_non_finite_parameters_stop_before_a_save(self):
    log = monitor.Monitor.__new__(monitor.Monitor)  # pylint: disable=protected-access
    log.window, log.window_start = [], 4
    log.step = lambda m: log.window.append(m)
    log.step({'loss': jnp.array(0.5), 'grad_norm': jnp.array(1.0),
              'param_norm': jnp.array(np.inf)})

    class Ckpt:
      def latest_step(self):
        return 4

    with pytest.raises(monitor.NonFiniteLoss, match=r'the param_norm became non-finite between '
                                                  r'steps 5 and 5.*checkpoint \(step 4\) is kept'):
      monitor.Monitor.flush(log, 5, Ckpt())  # pylint: disable=protected-access


def test_describe_os_error():
  full = OSError(errno.ENOSPC, 'No space left on device', '/x/y')
  assert cli.describe_os_error(full).startswith('the disk is full (writing /x/y)')
  denied = OSError(errno.EACCES, 'Permission denied', '/x')
  assert 'permission denied writing /x' in cli.describe_os_error(denied)


def test_soak_two_kills_resume_bitwise(tmp_path):
  """experiments/soak.py: two SIGKILLs (start-up, after a step), resumes, bitwise equal."""
  result = subprocess.run([sys.executable, 'experiments/soak.py', f'--workdir={tmp_path}',
                           '--kills=2', '--seed=3', '--epochs=3'], cwd=cli_util.REPO, capture_output=True,
                          text=True, env=cli_util.command_env(), timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  assert figures['kills'] == 2 and figures['bitwise_equal'] and figures['leaves'] > 50
  assert figures['starts'] == 3

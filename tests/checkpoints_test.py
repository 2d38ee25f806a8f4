"""Checkpoint tests: save/restore, compatibility checks, and an exact resume after SIGKILL.

The end-to-end tests run `python -m excam_jax.main` on the tiny config in subprocesses that share
a persistent compilation cache (the second and third runs skip compilation).
"""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import save_file

from configs import tiny
from excam_jax.training import checkpoints
from excam_jax.runtime import workdir_lock
from excam_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 8  # configs/tiny.py: ResNet-18 at stem width 8.
# Two epochs of 4 steps, a checkpoint every 2 steps, two kept; classification-only evals.
TRAIN_ARGS = ['--config=configs/tiny.py', '--config.train.num_epochs=2', '--config.train.eval_every_steps=8',
              '--config.train.keep_checkpoints=2', '--config.eval.localization=False']
KILLED_RUNNER = """
import sys, time
from excam_jax.runtime import cli
from excam_jax import main
from excam_jax.data import pipeline

_batches = pipeline.train_batches

def stalling_batches(config, start_step=0, **kwargs):
  # Stalls before batch 6: steps 1-5 run, step 4 is checkpointed, step 5 is not.
  for index, batch in enumerate(_batches(config, start_step=start_step, **kwargs), start_step):
    if index == 6:
      time.sleep(600)
    yield batch

pipeline.train_batches = stalling_batches
cli.run(main.main, flags_parser=main.parse_flags)
"""


# ---------------------------------------------------------------------------------------------
# Unit tests.

def _state(value):
  params = {'trunk': {'w': jnp.full((3, 2), value)}, 'head': {'b': jnp.arange(3.0) + value}}
  return {'step': jnp.array(2), 'params': params, 'batch_stats': {'trunk': {'m': jnp.zeros(2)}},
          'rng': jax.random.PRNGKey(0)}


class TestCheckpoints:

  def test_save_keeps_last_k_and_restores_exactly(self, tmp_path):
    ckpt = checkpoints.Checkpoints(str(tmp_path), max_to_keep=2)
    config = tiny.get_config()
    for step in (2, 4, 6):
      ckpt.save(step, _state(float(step)), config)
    ckpt.wait()
    assert ckpt.manager.all_steps() == [4, 6]
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            _state(0.0))
    restored = ckpt.restore_state(4, abstract)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(_state(4.0))):
      np.testing.assert_array_equal(got, want)
    ckpt.close()
    saved_config, variables, step = checkpoints.restore(str(tmp_path))
    assert step == 6 and isinstance(saved_config, ml_collections.ConfigDict)
    assert saved_config.model.num_maps == config.model.num_maps
    np.testing.assert_array_equal(variables['params']['head']['b'], [6.0, 7.0, 8.0])
    assert isinstance(variables['params']['head']['b'], np.ndarray)

  def test_incompatible_config_names_the_field(self, tmp_path):
    ckpt = checkpoints.Checkpoints(str(tmp_path))
    ckpt.save(2, _state(1.0), tiny.get_config())
    ckpt.wait()
    other = tiny.get_config()
    other.train.eval_every_steps = 3  # Book-keeping and compute-only fields may change on resume.
    other.model.dtype = 'bfloat16'
    ckpt.check_compatible(other)
    other.optim.head_learning_rate = 0.5  # The schedule only with the caller's consent.
    with pytest.raises(UserError, match=r'another schedule: optim\.head_learning_rate \(0\.05 in the '
                                        r'checkpoint, 0\.5 now\).*--allow_schedule_change'):
      ckpt.check_compatible(other)
    ckpt.check_compatible(other, allow_schedule_change=True)
    augmented = tiny.get_config()
    augmented.train.augment = 'cutmix'  # The training recipe: as the schedule.
    with pytest.raises(UserError, match=r"another schedule: train\.augment \('none' in the "
                                        r"checkpoint, 'cutmix' now\)"):
      ckpt.check_compatible(augmented)
    other.model.num_maps = 3
    with pytest.raises(UserError, match=r'model\.num_maps \(2 in the checkpoint, 3 now\)'):
      ckpt.check_compatible(other)
    reshuffled = tiny.get_config()
    reshuffled.data.shuffle_buffer = 7  # Changes the data order an exact resume replays.
    with pytest.raises(UserError, match=r'data\.shuffle_buffer \(64 in the checkpoint, 7 now\)'):
      ckpt.check_compatible(reshuffled)
    ckpt.close()

  def test_fields_added_later_default_for_older_checkpoints(self):
    saved = checkpoints.config_to_dict(tiny.get_config())
    for section, name in (('model', 'acol_head'), ('model', 'acol_threshold'),
                          ('model', 'acol_fusion'), ('model', 'class_pooling'),
                          ('optim', 'optimizer'), ('optim', 'area_weight'), ('model', 'dilate'),
                          ('optim', 'loss'), ('optim', 'nesterov'), ('optim', 'decay_every_epochs'),
                          ('optim', 'head_rate_stages'), ('model', 'map_generator'),
                          ('optim', 'background_weight'), ('optim', 'background_detach')):
      del saved[section][name]
    del saved['data']['parts']['body_cue']
    fields = checkpoints.COMPATIBILITY_FIELDS + checkpoints.SCHEDULE_FIELDS
    assert checkpoints.incompatible_fields(saved, checkpoints.config_to_dict(tiny.get_config()),
                                           fields) == []
    changed = tiny.get_config()
    changed.model.acol_head, changed.optim.optimizer = 'excam', 'adamw'
    changed.model.dilate, changed.optim.head_rate_stages = False, (4,)
    assert checkpoints.incompatible_fields(saved, checkpoints.config_to_dict(changed), fields) == [
        "model.acol_head ('wildcat' in the checkpoint, 'excam' now)",
        "model.dilate (True in the checkpoint, False now)",
        "optim.head_rate_stages ([] in the checkpoint, [4] now)",
        "optim.optimizer ('sgd' in the checkpoint, 'adamw' now)"]

  def test_only_damage_sets_a_checkpoint_aside(self, tmp_path):
    """A refusal for another reason passes through, whatever the workdir's name says."""
    workdir = tmp_path / 'unreadable or truncated'
    ckpt = checkpoints.Checkpoints(str(workdir))
    ckpt.save(2, _state(1.0), tiny.get_config())
    ckpt.save(4, _state(2.0), tiny.get_config())
    ckpt.wait()

    def refuse(step):
      raise UserError(f'checkpoint {step} in {workdir}: another config')

    with pytest.raises(UserError, match='another config'):
      ckpt.restore_latest(_state(0.0), check=refuse)
    assert ckpt.manager.all_steps() == [2, 4]
    assert not (workdir / checkpoints.DAMAGED_DIR).exists()
    ckpt.close()

  def test_missing_and_truncated_checkpoints(self, tmp_path):
    with pytest.raises(UserError, match='no checkpoints in'):
      checkpoints.restore(str(tmp_path / 'empty'))
    ckpt = checkpoints.Checkpoints(str(tmp_path))
    ckpt.save(2, _state(1.0), tiny.get_config())
    ckpt.close()
    with pytest.raises(UserError, match='no checkpoint at step 3'):
      checkpoints.restore(str(tmp_path), step=3)
    state_dir = tmp_path / checkpoints.CHECKPOINT_DIR / '2' / 'state'
    for root, _, files in os.walk(state_dir):
      for name in files:
        if name != 'commit_success.txt':
          with open(os.path.join(root, name), 'r+b') as f:
            f.truncate(3)
    with pytest.raises(UserError, match='unreadable or truncated'):
      checkpoints.restore(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# End to end: pretrained start, SIGKILL mid-run, exact resume, incompatible config.

def _resnet18_state_dict(seed=0):
  """Random torchvision-named ResNet-18 weights at stem width 8 (OIHW kernels)."""
  rng = np.random.default_rng(seed)
  state = {}

  def conv(name, out, inp, k):
    state[name] = rng.normal(0, np.sqrt(2 / (inp * k * k)), (out, inp, k, k))

  def bn(name, c):
    state.update({f'{name}.weight': rng.uniform(0.5, 1.5, c), f'{name}.bias': rng.normal(0, .1, c),
                  f'{name}.running_mean': rng.normal(0, .1, c),
                  f'{name}.running_var': rng.uniform(0.5, 1.5, c)})

  conv('conv1.weight', WIDTH, 3, 7)
  bn('bn1', WIDTH)
  inp = WIDTH
  for stage in range(1, 5):
    out = WIDTH * 2 ** (stage - 1)
    for i in range(2):
      p = f'layer{stage}.{i}'
      conv(f'{p}.conv1.weight', out, inp if i == 0 else out, 3)
      bn(f'{p}.bn1', out)
      conv(f'{p}.conv2.weight', out, out, 3)
      bn(f'{p}.bn2', out)
      if i == 0 and stage > 1:
        conv(f'{p}.downsample.0.weight', out, inp, 1)
        bn(f'{p}.downsample.1', out)
    inp = out
  return {k: v.astype(np.float32) for k, v in state.items()}


def _env(cache):
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
             # Unoptimised XLA:CPU code: the same numbers in every run, far less compile time.
             XLA_FLAGS='--xla_backend_optimization_level=0', TF_CPP_MIN_LOG_LEVEL='2')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


def _main(args, env, timeout=300):
  return subprocess.run([sys.executable, '-m', 'excam_jax.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _snapshot(directory):
  return sorted((os.path.relpath(os.path.join(root, f), directory),
                 os.stat(os.path.join(root, f)).st_mtime_ns, os.stat(os.path.join(root, f)).st_size)
                for root, _, files in os.walk(directory) for f in files
                if f != workdir_lock.LOCK_FILE)  # The lock is bookkeeping, not the run's data.


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """An uninterrupted run, and a run killed after its step-4 checkpoint then restarted."""
  base = tmp_path_factory.mktemp('resume')
  env = _env(str(base / 'cache'))
  weights = str(base / 'resnet18.safetensors')
  save_file(_resnet18_state_dict(), weights)
  args = TRAIN_ARGS + [f'--config.model.pretrained={weights}']
  full, killed = str(base / 'full'), str(base / 'killed')

  first = _main(args + [f'--workdir={full}'], env)
  assert first.returncode == 0, first.stderr[-3000:]

  proc = subprocess.Popen([sys.executable, '-c', KILLED_RUNNER, *args, f'--workdir={killed}'],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  committed = os.path.join(killed, checkpoints.CHECKPOINT_DIR, '4')
  deadline = time.time() + 240
  while not os.path.isdir(committed) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  time.sleep(1.0)  # Let step 5 run: the kill lands between checkpoints.
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert os.path.isdir(committed), 'the killed run never committed its step-4 checkpoint'
  assert not os.path.isdir(os.path.join(killed, checkpoints.CHECKPOINT_DIR, '8'))

  resumed = _main(args + [f'--workdir={killed}'], env)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  return {'full': full, 'killed': killed, 'weights': weights, 'env': env,
          'first_log': first.stderr, 'resumed_log': resumed.stderr}


class TestEndToEnd:

  def test_resume_after_sigkill_is_bitwise_exact(self, runs):
    _, want, want_step = checkpoints.restore(runs['full'])
    _, got, got_step = checkpoints.restore(runs['killed'])
    assert want_step == got_step == 8
    leaves = jax.tree_util.tree_leaves_with_path(want)
    assert len(leaves) == len(jax.tree.leaves(got)) > 50
    for (path, a), b in zip(leaves, jax.tree.leaves(got)):
      assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)

  def test_start_sources_are_logged_in_order(self, runs):
    assert 'Starting from pretrained weights' in runs['first_log']
    # The pretrained path is still set on restart: the checkpoint wins.
    assert 'Starting from checkpoint at step 4: step 4 of 8' in runs['resumed_log']

  def test_pretrained_trunk_is_loaded(self, runs):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    conv1 = load_file(runs['weights'])['conv1.weight'].transpose(2, 3, 1, 0)
    _, variables, _ = checkpoints.restore(runs['full'], step=6)
    trained = variables['params']['trunk']['conv1']['kernel']
    # Six SGD steps move the kernel a little; a fresh random init would be ~1.4x its norm away.
    assert np.linalg.norm(trained - conv1) < 0.3 * np.linalg.norm(conv1)

  def test_workdir_contents(self, runs):
    full = runs['full']
    assert sorted(os.listdir(os.path.join(full, checkpoints.CHECKPOINT_DIR))) == ['6', '8']
    assert os.path.isfile(os.path.join(full, checkpoints.CONFIG_FILE))
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(full))
    assert 'classification_map=' in runs['first_log']

  def test_incompatible_config_is_refused_and_nothing_written(self, runs):
    before = _snapshot(runs['full'])
    result = _main(TRAIN_ARGS + ['--config.model.num_maps=3', f'--workdir={runs["full"]}'],
                   runs['env'])
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'model.num_maps (2 in the checkpoint, 3 now)' in last
    assert _snapshot(runs['full']) == before

"""Tests of excam_jax/training/augment.py (HaS, CutMix) and of their use in the train step."""

import os
import shutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from excam_jax.training import checkpoints
from excam_jax import config_schema
from excam_jax.training import parallel
from excam_jax import train
from excam_jax.training import optim as optim_lib
from excam_jax.training import stages as stages_lib
from excam_jax.training import steps as steps_lib
from excam_jax.errors import ConfigError
from excam_jax.models import acol
from excam_jax.models import losses
from excam_jax.training import augment

# grid 2 on a 5 x 7 image: 3 x 4 squares, the last row and column partial (literal bounds).
ROWS_5 = ((0, 2), (2, 4), (4, 5))
COLS_7 = ((0, 2), (2, 4), (4, 6), (6, 7))


def _keys(n, seed=0):
  return jax.random.split(jax.random.PRNGKey(seed), n)


def _numbered(b, h, w, c=1):
  """Images whose every value is distinct and nonzero: 1 + its flat index."""
  return 1.0 + np.arange(b * h * w * c, dtype=np.float32).reshape(b, h, w, c)


class TestHidePatches:

  def test_each_partial_square_is_all_hidden_or_untouched(self):
    images = _numbered(16, 5, 7, 3)
    out = np.asarray(augment.hide_patches(jax.random.PRNGKey(0), images, 2, 0.5))
    hidden = 0
    for b in range(16):
      for r0, r1 in ROWS_5:
        for c0, c1 in COLS_7:
          square, original = out[b, r0:r1, c0:c1], images[b, r0:r1, c0:c1]
          assert np.all(square == 0) or np.array_equal(square, original), (b, r0, c0)
          hidden += int(np.all(square == 0))
    assert 0 < hidden < 16 * 12  # Some squares hidden, some kept: 2^-192 odds of failing.
    # Masks are drawn per image: not every image has the same squares hidden.
    assert len({tuple((out[b] == 0).ravel()) for b in range(16)}) > 1

  def test_hidden_fraction_is_the_drop_rate(self):
    images = np.ones((2000, 5, 7, 1), np.float32)
    out = np.asarray(augment.hide_patches(jax.random.PRNGKey(1), images, 2, 0.3))
    hidden = np.stack([out[:, r0, c0, 0] == 0 for r0, _ in ROWS_5 for c0, _ in COLS_7])
    n = hidden.size  # 2000 images x 12 squares, independent Bernoulli(0.3).
    assert abs(hidden.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)  # 4 sigma = 0.012.

  def test_drop_rates_zero_and_one(self):
    images = _numbered(4, 5, 7, 3)
    np.testing.assert_array_equal(augment.hide_patches(jax.random.PRNGKey(2), images, 2, 0.0),
                                  images)
    np.testing.assert_array_equal(augment.hide_patches(jax.random.PRNGKey(2), images, 2, 1.0),
                                  np.zeros_like(images))

  def test_a_grid_larger_than_the_image_is_one_square(self):
    images = _numbered(64, 5, 7)
    out = np.asarray(augment.hide_patches(jax.random.PRNGKey(3), images, 8, 0.5))
    whole = [np.all(out[b] == 0) for b in range(64)]
    assert all(w or np.array_equal(out[b], images[b]) for b, w in enumerate(whole))
    assert 0 < sum(whole) < 64


def _box_of(out, images, perm):
  """The pixels where an image shows its partner's (perm[b] != b): one mask for the batch."""
  moved = [out[b, ..., 0] != images[b, ..., 0] for b in range(len(perm)) if perm[b] != b]
  assert all(np.array_equal(m, moved[0]) for m in moved)
  return moved[0]


class TestCutmix:

  def test_box_from_the_permuted_image_and_lam_its_true_area(self):
    images = _numbered(4, 6, 9)
    labels = np.eye(4, dtype=np.float32)  # labels_b names each image's partner.
    mixed_some = 0
    for key in _keys(20):
      out, (labels_a, labels_b, lam) = augment.cutmix(key, images, labels, 1.0, 1.0)
      out, perm = np.asarray(out), np.argmax(labels_b, axis=1)
      np.testing.assert_array_equal(labels_a, labels)
      assert sorted(perm) == [0, 1, 2, 3] and np.array_equal(labels_b, labels[perm])
      if np.all(perm == np.arange(4)):
        continue
      box = _box_of(out, images, perm)
      rows, cols = np.flatnonzero(box.any(1)), np.flatnonzero(box.any(0))
      if box.any():  # A rectangle of contiguous rows and columns.
        assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
        assert np.array_equal(cols, np.arange(cols[0], cols[-1] + 1))
        assert box.sum() == len(rows) * len(cols)
        mixed_some += 1
      for b in range(4):  # Image b outside the box, image perm[b] inside.
        np.testing.assert_array_equal(out[b], np.where(box[..., None], images[perm[b]], images[b]))
      np.testing.assert_allclose(lam, 1 - box.sum() / (6 * 9), rtol=1e-6)
    assert mixed_some >= 10

  def test_mean_lam_of_the_clipped_box(self):
    # lam0 ~ Beta(1, 1) = U(0, 1); the box's side fraction s = sqrt(1 - lam0) around a uniform
    # centre keeps s - s^2 / 4 of it on average after clipping, so
    # E[lam] = 1 - E[(s - s^2/4)^2] = 1 - (1/2 - 1/5 + 1/48) = 163/240 = 0.679, not 0.5
    # (the whole-pixel box of the reference is at most 1 pixel smaller per side: ~ +0.004 here).
    images = np.zeros((2, 200, 200, 1), np.float32)
    labels = np.eye(2, dtype=np.float32)
    lams = jax.jit(jax.vmap(lambda k: augment.cutmix(k, images, labels, 1.0, 1.0)[1][2]))(
        _keys(4000))
    assert abs(float(lams.mean()) - 163 / 240) < 0.015  # 5 standard errors (0.003 each).
    assert float(lams.min()) < 0.1 and float(lams.max()) > 0.99

  def test_prob_zero_leaves_the_batch_unchanged(self):
    images, labels = _numbered(4, 6, 9), np.eye(4, dtype=np.float32)
    for key in _keys(5):
      out, (_, _, lam) = augment.cutmix(key, images, labels, 1.0, 0.0)
      np.testing.assert_array_equal(out, images)
      assert float(lam) == 1.0

  def test_one_draw_per_batch_with_probability_prob(self):
    images, labels = np.zeros((8, 32, 32, 1), np.float32), np.eye(8, dtype=np.float32)
    lams = jax.jit(jax.vmap(lambda k: augment.cutmix(k, images, labels, 1.0, 0.3)[1][2]))(
        _keys(2000, 1))
    mixed = float(np.mean(np.asarray(lams) < 1))  # A tiny lam0 rounds to no box: ~0.1% of draws.
    assert abs(mixed - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)

  def test_loss_mixes_the_two_label_sets_by_hand(self):
    # sigmoid(ln 3) = 3/4: BCE is ln(4/3) for a positive, ln 4 for a negative; z = 0: ln 2.
    logits = jnp.array([[np.log(3.0), 0.0], [0.0, np.log(3.0)]])
    labels_a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    labels_b = labels_a[::-1]  # The partners' labels.
    loss_a = (np.log(4 / 3) + np.log(2)) / 2  # Each example: mean over its 2 classes.
    loss_b = (np.log(4) + np.log(2)) / 2
    got = losses.bce_loss(logits, augment.soft_labels(labels_a, labels_b, 0.75))
    np.testing.assert_allclose(got, 0.75 * loss_a + 0.25 * loss_b, rtol=1e-6)  # 0.627741
    np.testing.assert_allclose(got, 0.6277411, rtol=1e-6)


class MeanNet(nn.Module):
  """logits = Dense(spatial mean of the images): no BatchNorm or dropout, so its logits are
  a function of the (augmented) images alone."""

  @nn.compact
  def __call__(self, images, train=False):
    logits = nn.Dense(3, name='head')(images.mean(axis=(1, 2)))
    return logits, {'class_maps': logits[:, None, None],
                    'maps': jnp.stack([logits, -logits], axis=-1)[:, None, None]}


def _train_config(**fields):
  return ml_collections.ConfigDict(fields)


def _optim():
  return ml_collections.ConfigDict({
      'trunk_learning_rate': 0.1, 'head_learning_rate': 0.5, 'momentum': 0.9,
      'weight_decay': 0.0, 'schedule': 'constant', 'warmup_steps': 0,
      'diversity_loss': 'none', 'diversity_weight': 0.0})


def _batch(seed, size=8):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(8, size, size, 3)).astype(np.float32),
          'label': (rng.random((8, 3)) < 0.5).astype(np.float32),
          'mask': np.ones(8, np.float32)}


def _state(model, tx, size=8):
  state = steps_lib.create_state(jax.random.PRNGKey(0), model=model, tx=tx, image_size=size)
  return jax.device_put(state, parallel.replicated(parallel.data_mesh()))


def _bce(logits, labels):
  logits = np.asarray(logits, np.float64)
  return float((np.logaddexp(0, logits) - labels * logits).mean())


class TestTrainStep:

  def test_from_config_defaults_for_older_configs(self):
    assert augment.from_config(_train_config()) is None  # No field: 'none'.
    assert augment.from_config(_train_config(augment='none')) is None
    images, labels = _numbered(2, 5, 7), np.eye(2, dtype=np.float32)
    has = augment.from_config(_train_config(augment='has'))  # grid 4, drop rate 0.5.
    out, same = has(jax.random.PRNGKey(0), images, labels)
    np.testing.assert_array_equal(out, augment.hide_patches(jax.random.PRNGKey(0), images, 4, 0.5))
    np.testing.assert_array_equal(same, labels)

  def test_cutmix_step_trains_on_lam_la_plus_1_minus_lam_lb(self):
    model = MeanNet()
    tx, _ = optim_lib.create_optimizer(_optim(), total_steps=10)
    state, batch = _state(model, tx), _batch(0)
    params, rng = jax.device_get((state.params, state.rng))  # The step donates the state.
    step = steps_lib.make_train_step(_optim(), model, tx, parallel.data_mesh(),
                                 augment=augment.from_config(_train_config(augment='cutmix')))
    _, metrics = step(state, batch)
    # The step's key: fold_in(fold_in(state.rng, step 0), AUGMENT_STREAM).
    key = jax.random.fold_in(jax.random.fold_in(rng, 0), steps_lib.AUGMENT_STREAM)
    mixed, (labels_a, labels_b, lam) = augment.cutmix(key, batch['image'], batch['label'], 1.0, 1.0)
    assert 0 < float(lam) < 1
    logits, _ = model.apply({'params': params}, mixed)
    want = float(lam) * _bce(logits, labels_a) + (1 - float(lam)) * _bce(logits, labels_b)
    np.testing.assert_allclose(metrics['bce_loss'], want, rtol=1e-5)

  def test_cutmix_softmax_step_trains_on_lam_ce_a_plus_1_minus_lam_ce_b(self):
    # Single-label data (optim.loss 'softmax'): cross-entropy with CutMix's soft one-hot labels.
    model, optim = MeanNet(), _optim()
    optim.loss = 'softmax'
    tx, _ = optim_lib.create_optimizer(optim, total_steps=10)
    state, batch = _state(model, tx), _batch(0)
    batch['label'] = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 0, 1]]
    params, rng = jax.device_get((state.params, state.rng))
    step = steps_lib.make_train_step(optim, model, tx, parallel.data_mesh(),
                                 augment=augment.from_config(_train_config(augment='cutmix')))
    _, metrics = step(state, batch)
    key = jax.random.fold_in(jax.random.fold_in(rng, 0), steps_lib.AUGMENT_STREAM)
    mixed, (labels_a, labels_b, lam) = augment.cutmix(key, batch['image'], batch['label'], 1.0, 1.0)
    assert 0 < float(lam) < 1 and not np.array_equal(labels_a, labels_b)
    z = np.asarray(model.apply({'params': params}, mixed)[0], np.float64)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce = lambda y: float(-(np.asarray(y) * log_p).sum(axis=1).mean())
    want = float(lam) * ce(labels_a) + (1 - float(lam)) * ce(labels_b)
    np.testing.assert_allclose(metrics['softmax_loss'], want, rtol=1e-5)

  def test_has_step_trains_on_the_hidden_images(self):
    model = MeanNet()
    tx, _ = optim_lib.create_optimizer(_optim(), total_steps=10)
    state, batch = _state(model, tx), _batch(1)
    params, rng = jax.device_get((state.params, state.rng))  # The step donates the state.
    step = steps_lib.make_train_step(_optim(), model, tx, parallel.data_mesh(), augment=(
        augment.from_config(_train_config(augment='has', has_grid=2, has_drop_rate=0.5))))
    _, metrics = step(state, batch)
    key = jax.random.fold_in(jax.random.fold_in(rng, 0), steps_lib.AUGMENT_STREAM)
    hidden = augment.hide_patches(key, batch['image'], 2, 0.5)
    logits, _ = model.apply({'params': params}, hidden)
    np.testing.assert_allclose(metrics['bce_loss'], _bce(logits, batch['label']), rtol=1e-5)
    plain, _ = model.apply({'params': params}, batch['image'])
    assert abs(_bce(plain, batch['label']) - float(metrics['bce_loss'])) > 1e-4

  @pytest.mark.parametrize('kind', ['has', 'cutmix'])
  def test_traced_once_and_a_function_of_seed_and_step(self, kind, monkeypatch):
    model = MeanNet()
    tx, _ = optim_lib.create_optimizer(_optim(), total_steps=10)
    chex.clear_trace_counter()  # The count is train_step's, over both parameters.
    monkeypatch.setattr(steps_lib, 'train_step', chex.assert_max_traces(steps_lib.train_step, n=1))
    step = steps_lib.make_train_step(_optim(), model, tx, parallel.data_mesh(),
                                 augment=augment.from_config(_train_config(augment=kind)))
    runs = []
    for _ in range(2):  # Two runs from the same seed over the same batches.
      state, run = _state(model, tx), []
      for i in range(3):
        state, metrics = step(state, _batch(0))  # One batch: only the step's key differs.
        run.append(float(metrics['bce_loss']))
      runs.append((run, jax.device_get(state.params)))
    assert runs[0][0] == runs[1][0]
    for x, y in zip(jax.tree.leaves(runs[0][1]), jax.tree.leaves(runs[1][1])):
      np.testing.assert_array_equal(x, y)
    # The same parameters and batch at step 5: another key, another augmentation, another loss.
    state = _state(model, tx)
    _, metrics = step(state.replace(step=state.step + 5), _batch(0))
    assert abs(float(metrics['bce_loss']) - runs[0][0][0]) > 1e-5

  @pytest.mark.parametrize('kind', ['has', 'cutmix'])
  def test_acol_stages_train_on_augmented_batches(self, kind):
    # Both stages augment; stage b erases for the soft labels' positive classes (both images').
    model = acol.ACoLNet(a=MeanNet(), b=MeanNet())
    tx, _ = stages_lib.create_staged_optimizer(_optim(), stage_steps=2)
    state = _state(model, tx)
    aug = augment.from_config(_train_config(augment=kind))
    for stage in acol.STAGES:
      step = steps_lib.make_train_step(_optim(), model, tx, parallel.data_mesh(), stage=stage,
                                   augment=aug)
      state, metrics = step(state, _batch(2))
      assert np.isfinite(float(metrics['loss']))


class TestConfig:

  @pytest.mark.parametrize('field, value, allowed', [
      ('augment', 'mixup', r"allowed one of \('none', 'has', 'cutmix'\)"),
      ('has_grid', 0, r'allowed an int >= 1'),
      ('has_drop_rate', 1.5, r'allowed a float in \[0, 1\]'),
      ('cutmix_beta', 0.0, r'allowed a finite float > 0'),
      ('cutmix_prob', -0.1, r'allowed a float in \[0, 1\]'),
  ])
  def test_bad_values_name_the_field_and_the_allowed(self, field, value, allowed):
    config = tiny.get_config()
    config.train[field] = value
    with pytest.raises(ConfigError, match=rf'config\.train\.{field}=.* is invalid: {allowed}'):
      config_schema.validate(config)

  def test_absent_fields_are_the_defaults(self):
    config = tiny.get_config()
    for field in config_schema.AUGMENT_DEFAULTS:
      assert config.train[field] == config_schema.AUGMENT_DEFAULTS[field]
      del config.train[field]
    config_schema.validate(config)


@pytest.mark.parametrize('kind', ['has', 'cutmix'])
def test_tiny_training_resumes_bitwise(kind, tmp_path):
  config = tiny.get_config()  # 4 steps, checkpoints at 2 and 4.
  config.train.augment = kind
  config.train.has_grid = 8
  config.eval.localization = False
  full = str(tmp_path / 'full')
  result = train.train_and_evaluate(config, full)
  assert result['final_step'] == 4 and all(np.isfinite(m['loss']) for _, m in result['train'])
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(full, resumed)
  shutil.rmtree(os.path.join(resumed, checkpoints.CHECKPOINT_DIR, '4'))
  assert train.train_and_evaluate(config, resumed)['source'] == 'checkpoint at step 2'
  _, want, _ = checkpoints.restore(full)
  _, got, _ = checkpoints.restore(resumed)
  for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_array_equal(x, y)

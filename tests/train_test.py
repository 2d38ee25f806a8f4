"""Tests of the training pieces: schedules, the optimizer, the jitted step, logging, evaluation.

The step is exercised on PooledNet, a model small enough to differentiate by hand; the ResNet
path runs end to end in checkpoints_test.py.
"""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from excam_jax import config_schema
from excam_jax.training import parallel
from excam_jax.training import monitor
from excam_jax.training import optim as optim_lib
from excam_jax.training import steps as steps_lib
from excam_jax.errors import ConfigError, UserError


class PooledNet(nn.Module):
  """trunk: spatial mean -> BatchNorm; head: (dropout ->) dense. Returns (logits, aux)."""
  num_classes: int = 3
  dropout: float = 0.0

  @nn.compact
  def __call__(self, images, train=False):
    pooled = images.mean(axis=(1, 2))
    features = nn.BatchNorm(use_running_average=not train, momentum=0.9, name='trunk')(pooled)
    if self.dropout:
      features = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, name='head')(features)
    maps = jnp.stack([logits, -logits], axis=-1)[:, None, None]  # (B, 1, 1, C, 2)
    return logits, {'class_maps': logits[:, None, None], 'maps': maps}


class GeneratorNet(PooledNet):
  """PooledNet with a generator's maps: class_maps l / 2, activation_maps l (one cell)."""

  def __call__(self, images, train=False):
    logits, aux = super().__call__(images, train)
    return logits, dict(aux, class_maps=aux['class_maps'] / 2, activation_maps=aux['class_maps'])


def step_config(**overrides):
  config = ml_collections.ConfigDict({
      'trunk_learning_rate': 0.1, 'head_learning_rate': 0.5, 'momentum': 0.9,
      'weight_decay': 0.01, 'schedule': 'constant', 'warmup_steps': 0,
      'diversity_loss': 'none', 'diversity_weight': 0.0})
  config.update(overrides)
  return config


def random_batch(seed, batch=8, size=4, classes=3):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(batch, size, size, 3)).astype(np.float32),
          'label': (rng.random((batch, classes)) < 0.5).astype(np.float32),
          'mask': np.ones(batch, np.float32)}


def new_state(model, tx, seed=0):
  """A fresh state, replicated over the mesh as the trainer makes it (its steps return it so)."""
  state = steps_lib.create_state(jax.random.PRNGKey(seed), model=model, tx=tx, image_size=4)
  return jax.device_put(state, parallel.replicated(parallel.data_mesh()))


def one_step(model, config, batch):
  """(the logits the step trains on, its metrics) of one jitted train step from a fresh state."""
  tx, _ = optim_lib.create_optimizer(config, total_steps=10)
  step = steps_lib.make_train_step(config, model, tx, parallel.data_mesh())
  state = new_state(model, tx)
  logits, _ = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                          batch['image'], train=True, mutable=['batch_stats'])[0]
  return logits, step(state, batch)[1]


class TestLearningRateSchedule:

  def test_constant_with_warmup(self):
    schedule = optim_lib.learning_rate_schedule(step_config(warmup_steps=4), 0.1, 20)
    np.testing.assert_allclose([schedule(s) for s in (0, 2, 4, 19)], [0, 0.05, 0.1, 0.1],
                               rtol=1e-6)

  def test_cosine_with_and_without_warmup(self):
    schedule = optim_lib.learning_rate_schedule(step_config(schedule='cosine'), 0.1, 10)
    np.testing.assert_allclose([schedule(s) for s in (0, 5, 10)], [0.1, 0.05, 0.0], atol=1e-7)
    schedule = optim_lib.learning_rate_schedule(
        step_config(schedule='cosine', warmup_steps=2), 0.1, 10)
    # Warm-up to 0.1 at step 2, then half a cosine over the 8 remaining steps.
    np.testing.assert_allclose([schedule(s) for s in (1, 2, 6)],
                               [0.05, 0.1, 0.05 * (1 + math.cos(math.pi * 4 / 8))], atol=1e-7)


class TestStepSchedule:

  def test_wsolevaluation_decay_by_hand(self):
    # 10 steps an epoch, x0.1 from epoch 15 (1-based; their adjust_learning_rate before each
    # epoch): steps 0-139 are epochs 1-14, step 140 starts epoch 15, 290 epoch 30, 440 epoch 45.
    optim = step_config(schedule='step', decay_every_epochs=15)
    schedule = optim_lib.learning_rate_schedule(optim, 0.2, 500, steps_per_epoch=10)
    np.testing.assert_allclose([schedule(s) for s in (0, 139, 140, 289, 290, 439, 440)],
                               [0.2, 0.2, 0.02, 0.02, 0.002, 0.002, 0.0002], rtol=1e-6)
    schedule = optim_lib.learning_rate_schedule(step_config(schedule='step', decay_every_epochs=3),
                                            1.0, 100, steps_per_epoch=4)
    np.testing.assert_allclose([schedule(s) for s in (7, 8, 19, 20)], [1, 0.1, 0.1, 0.01],
                               rtol=1e-6)  # Epochs 2, 3, 5, 6.


class TestOptimizer:

  def test_pytorch_sgd_with_trunk_and_head_rates(self):
    config = step_config()
    tx, _ = optim_lib.create_optimizer(config, total_steps=10)
    params = {'trunk': {'w': jnp.array([1.0, -2.0])}, 'head': {'b': jnp.array([3.0])}}
    grads = [{'trunk': {'w': jnp.array([0.5, 0.1])}, 'head': {'b': jnp.array([-1.0])}},
             {'trunk': {'w': jnp.array([-0.2, 0.3])}, 'head': {'b': jnp.array([2.0])}}]
    opt_state = tx.init(params)
    p = {k: np.asarray(v[next(iter(v))]) for k, v in params.items()}
    buf = {'trunk': 0.0, 'head': 0.0}
    lr = {'trunk': 0.1, 'head': 0.5}
    for g in grads:
      updates, opt_state = tx.update(g, opt_state, params)
      params = jax.tree.map(lambda a, u: a + u, params, updates)
      for group in ('trunk', 'head'):  # torch.optim.SGD(momentum=0.9, weight_decay=0.01).
        d = np.asarray(g[group][next(iter(g[group]))]) + 0.01 * p[group]
        buf[group] = 0.9 * buf[group] + d
        p[group] = p[group] - lr[group] * buf[group]
    np.testing.assert_allclose(params['trunk']['w'], p['trunk'], rtol=1e-6)
    np.testing.assert_allclose(params['head']['b'], p['head'], rtol=1e-6)

  def test_nesterov_sgd_as_pytorch(self):
    config = step_config(nesterov=True)
    tx, _ = optim_lib.create_optimizer(config, total_steps=10)
    params = {'trunk': {'w': jnp.array([1.0, -2.0])}}
    grads = [jnp.array([0.5, 0.1]), jnp.array([-0.2, 0.3]), jnp.array([0.4, -0.6])]
    opt_state, p, buf = tx.init(params), np.array([1.0, -2.0]), 0.0
    for g in grads:  # torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True).
      updates, opt_state = tx.update({'trunk': {'w': g}}, opt_state, params)
      params = jax.tree.map(lambda a, u: a + u, params, updates)
      d = np.asarray(g) + 0.01 * p
      buf = 0.9 * buf + d
      p = p - 0.1 * (d + 0.9 * buf)
    np.testing.assert_allclose(params['trunk']['w'], p, rtol=1e-6)

  def test_adamw_first_update_by_hand(self):
    # Step 1 of Adam: m_hat = g, v_hat = g^2, so the update is -lr (sign(g) + wd * p) per group.
    config = step_config(optimizer='adamw', momentum=0.9)
    tx, _ = optim_lib.create_optimizer(config, total_steps=10)
    params = {'trunk': {'w': jnp.array([1.0, -2.0])}, 'head': {'b': jnp.array([0.5])}}
    grads = {'trunk': {'w': jnp.array([0.1, -0.3])}, 'head': {'b': jnp.array([2.0])}}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates['trunk']['w'], [-0.1 * 1.01, 0.1 * 1.02], rtol=2e-5)
    np.testing.assert_allclose(updates['head']['b'], [-0.5 * 1.005], rtol=2e-5)

  def test_param_groups(self):
    groups = optim_lib.param_groups({'trunk': {'a': {'k': 0}}, 'head': {'b': 0, 'c': {'d': 0}}})
    assert groups == {'trunk': {'a': {'k': 'trunk'}}, 'head': {'b': 'head', 'c': {'d': 'head'}}}

  def test_head_rate_stages_train_at_the_heads_rate(self):
    # wsolevaluation's ResNet50: layer4 with the fc at 10x (head_rate_stages (4,)).
    params = {'trunk': {'conv1': {'kernel': 0}, 'layer3_5': {'bn1': {'scale': 0}},
                        'layer4_0': {'conv2': {'kernel': 0}}, 'layer4_2': {'bn3': {'bias': 0}}},
              'head': {'classifier': {'kernel': 0}}}
    groups = optim_lib.param_groups(params, head_rate_stages=(4,))
    assert groups == {'trunk': {'conv1': {'kernel': 'trunk'},
                                'layer3_5': {'bn1': {'scale': 'trunk'}},
                                'layer4_0': {'conv2': {'kernel': 'head'}},
                                'layer4_2': {'bn3': {'bias': 'head'}}},
                      'head': {'classifier': {'kernel': 'head'}}}
    assert optim_lib.param_groups(params, (3, 4))['trunk']['layer3_5']['bn1']['scale'] == 'head'
    tx, _ = optim_lib.create_optimizer(step_config(head_rate_stages=(4,), momentum=0.0,
                                               weight_decay=0.0), total_steps=10)
    ones = jax.tree.map(lambda _: jnp.ones(()), params)
    updates, _ = tx.update(ones, tx.init(ones), ones)
    assert updates['trunk']['conv1']['kernel'] == -0.1  # trunk_learning_rate
    assert updates['trunk']['layer4_0']['conv2']['kernel'] == -0.5  # head_learning_rate


class TestTrainStep:

  def test_first_step_matches_hand_computation(self):
    model = PooledNet()
    config = step_config(weight_decay=0.0, momentum=0.0)
    tx, _ = optim_lib.create_optimizer(config, total_steps=10)
    state = new_state(model, tx)
    w = np.asarray(state.params['head']['kernel'], np.float64)
    b = np.asarray(state.params['head']['bias'], np.float64)
    batch = random_batch(1)
    batch['mask'][-2:] = 0  # Padding rows count in BatchNorm statistics, not in the loss.
    step = steps_lib.make_train_step(config, model, tx, parallel.data_mesh())
    new, metrics = step(state, batch)

    pooled = batch['image'].astype(np.float64).mean(axis=(1, 2))
    mu, var = pooled.mean(0), pooled.var(0)
    xhat = (pooled - mu) / np.sqrt(var + 1e-5)
    logits = xhat @ w + b
    y, m = batch['label'], batch['mask']
    per_example = (np.logaddexp(0, logits) - y * logits).mean(axis=1)
    np.testing.assert_allclose(metrics['loss'], (per_example * m).sum() / m.sum(), rtol=1e-5)
    dlogits = (1 / (1 + np.exp(-logits)) - y) / y.shape[1] * m[:, None] / m.sum()
    np.testing.assert_allclose(new.params['head']['bias'], b - 0.5 * dlogits.sum(0), rtol=1e-5)
    dscale = ((dlogits @ w.T) * xhat).sum(0)
    np.testing.assert_allclose(new.params['trunk']['scale'], 1 - 0.1 * dscale, rtol=1e-5)
    np.testing.assert_allclose(new.batch_stats['trunk']['mean'], 0.1 * mu, rtol=1e-5)
    np.testing.assert_allclose(new.batch_stats['trunk']['var'], 0.9 + 0.1 * var, rtol=1e-5)
    assert int(new.step) == 1
    # The norms the host checks before a save: every gradient, every updated parameter.
    dfeatures = dlogits @ w.T
    grads = [xhat.T @ dlogits, dlogits.sum(0), (dfeatures * xhat).sum(0), dfeatures.sum(0)]
    np.testing.assert_allclose(metrics['grad_norm'],
                               np.sqrt(sum((g ** 2).sum() for g in grads)), rtol=1e-5)
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(new.params)]
    np.testing.assert_allclose(metrics['param_norm'],
                               np.sqrt(sum((x ** 2).sum() for x in leaves)), rtol=1e-5)

  def test_traced_once_and_state_donated(self, monkeypatch):
    model = PooledNet(dropout=0.5)
    config = step_config()
    tx, _ = optim_lib.create_optimizer(config, total_steps=10)
    monkeypatch.setattr(steps_lib, 'train_step', chex.assert_max_traces(steps_lib.train_step, n=1))
    step = steps_lib.make_train_step(config, model, tx, parallel.data_mesh())
    state = new_state(model, tx)
    losses = []
    for i in range(3):
      old = state
      state, metrics = step(state, random_batch(i))
      losses.append(float(metrics['loss']))
      assert old.params['head']['kernel'].is_deleted()
    assert int(state.step) == 3 and all(np.isfinite(losses))

  def test_diversity_term_is_added(self):
    model = PooledNet()
    config = step_config(diversity_loss='cosine', diversity_weight=0.25)
    tx, _ = optim_lib.create_optimizer(config, total_steps=10)
    step = steps_lib.make_train_step(config, model, tx, parallel.data_mesh())
    _, metrics = step(new_state(model, tx), random_batch(0))
    # PooledNet's two maps per class are l and -l: their cosine is exactly -1.
    np.testing.assert_allclose(metrics['diversity_loss'], -1.0, rtol=1e-6)
    np.testing.assert_allclose(metrics['loss'], metrics['bce_loss'] - 0.25, rtol=1e-6)

  def test_area_term_is_added(self):
    batch = random_batch(0)
    logits, metrics = one_step(PooledNet(), step_config(area_weight=0.5), batch)
    # PooledNet's class map is its logit on one cell: the area is sigmoid(logit) of positives.
    s, y = 1 / (1 + np.exp(-np.asarray(logits, np.float64))), batch['label']
    np.testing.assert_allclose(metrics['area_loss'], (s * y).sum() / y.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics['loss'], metrics['bce_loss'] + 0.5 * metrics['area_loss'],
                               rtol=1e-6)

  def test_background_term_is_added(self):
    batch = random_batch(0)
    logits, metrics = one_step(GeneratorNet(), step_config(area_weight=0.5, background_weight=2.0),
                               batch)
    # One cell: activation relu(l), foreground sigmoid(l / 2) (the generator's map).
    z, y = np.asarray(logits, np.float64), batch['label']
    a, m = np.maximum(z, 0), 1 / (1 + np.exp(-z / 2))
    ratio = (1 - m) * a / (a + 0.01)
    np.testing.assert_allclose(metrics['background_loss'], (ratio * y).sum() / y.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics['area_loss'], (m * y).sum() / y.sum(), rtol=1e-5)
    np.testing.assert_allclose(
        metrics['loss'],
        metrics['bce_loss'] + 0.5 * metrics['area_loss'] + 2.0 * metrics['background_loss'],
        rtol=1e-6)

  def test_background_detach_reaches_the_loss(self):
    model, batch, results = GeneratorNet(), random_batch(0), []
    for detach in (False, True):
      config = step_config(area_weight=0.5, background_weight=2.0, background_detach=detach)
      tx, _ = optim_lib.create_optimizer(config, total_steps=10)
      step = steps_lib.make_train_step(config, model, tx, parallel.data_mesh())
      results.append(step(new_state(model, tx), batch))
    (plain, plain_metrics), (detached, detached_metrics) = results
    # The same loss, another gradient: the ratio no longer pulls the activation (the logits).
    np.testing.assert_allclose(detached_metrics['loss'], plain_metrics['loss'], rtol=1e-6)
    assert not np.allclose(detached.params['head']['kernel'], plain.params['head']['kernel'])

  def test_softmax_loss_by_hand(self):
    batch = random_batch(0)
    batch['label'] = np.eye(3, dtype=np.float32)[np.arange(8) % 3]  # One class per image.
    batch['mask'][-1] = 0
    logits, metrics = one_step(PooledNet(), step_config(loss='softmax'), batch)
    z = np.asarray(logits, np.float64)
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(8), np.arange(8) % 3]  # -log softmax_c
    np.testing.assert_allclose(metrics['softmax_loss'], ce[:7].mean(), rtol=1e-5)
    assert 'bce_loss' not in metrics and metrics['loss'] == metrics['softmax_loss']

  def test_eval_step_returns_logits_and_class_maps(self):
    model = PooledNet()
    tx, _ = optim_lib.create_optimizer(step_config(), total_steps=10)
    state = new_state(model, tx)
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    logits, maps = steps_lib.make_eval_step(model, parallel.data_mesh())(
        variables, random_batch(0)['image'])
    assert logits.shape == (8, 3) and maps.shape == (8, 1, 1, 3)
    np.testing.assert_array_equal(maps[:, 0, 0], logits)


class TestConfigChecks:

  @pytest.mark.parametrize('field, value, message', [
      ('optim.schedule', 'linear', r"config\.optim\.schedule='linear' is invalid"),
      ('train.batch_size', 0, r'config\.train\.batch_size=0 is invalid: allowed an int >= 1'),
      ('optim.head_learning_rate', float('nan'), r'config\.optim\.head_learning_rate=nan'),
      ('optim.momentum', 1.0, r'config\.optim\.momentum=1\.0'),
      ('eval.batch_size', 0, r'config\.eval\.batch_size=0'),
      ('eval.maxboxacc', 'cubic', r"config\.eval\.maxboxacc='cubic'"),
      ('optim.loss', 'hinge', r"config\.optim\.loss='hinge' is invalid: allowed one of"),
      ('optim.loss', 'softmax', r"config\.optim\.loss='softmax' is invalid: allowed 'bce' on "
                                r"multi-label data \('softmax' needs one class per image"),
      ('optim.decay_every_epochs', 0, r'config\.optim\.decay_every_epochs=0'),
      ('optim.head_rate_stages', (5,), r'config\.optim\.head_rate_stages=\(5,\) is invalid'),
      ('optim.head_rate_stages', (4, 4), r'config\.optim\.head_rate_stages=\(4, 4\)'),
      ('eval.cam_curve_interval', 0.0, r'config\.eval\.cam_curve_interval=0\.0'),
      ('eval.iou_threshold_list', (0.5,), r'config\.eval\.iou_threshold_list=\(0\.5,\) is '
                                          r'invalid: allowed a non-empty tuple of IoU thresholds '
                                          r'in percent'),
      ('eval.iou_threshold_list', (), r'config\.eval\.iou_threshold_list=\(\)'),
  ])
  def test_bad_training_field(self, field, value, message):
    config = tiny.get_config()
    section, name = field.split('.')
    config[section][name] = value
    with pytest.raises(ConfigError, match=message):
      config_schema.validate(config)

  def test_bad_model_field(self):
    config = tiny.get_config()
    config.model.head = 'gradcam'
    with pytest.raises(ConfigError, match=r'config\.model\.head'):
      config_schema.validate(config)

  def test_tiny_config_is_valid(self):
    config_schema.validate(tiny.get_config())


class _FakeCheckpoints:

  def latest_step(self):
    return 4


class TestLogger:

  def test_non_finite_loss_stops_with_the_checkpoint_named(self, tmp_path):
    schedules = {'trunk': lambda s: 0.1, 'head': lambda s: 0.2}
    log = monitor.Monitor(str(tmp_path), 4, 10, 8, schedules)
    log.step({'loss': jnp.array(0.5)})
    log.flush(5, _FakeCheckpoints())
    assert log.train_history[-1][1]['loss'] == 0.5
    assert log.train_history[-1][1]['learning_rate_head'] == 0.2
    log.step({'loss': jnp.array(0.5)})
    log.step({'loss': jnp.array(np.nan)})
    with pytest.raises(monitor.NonFiniteLoss,
                       match=r'between steps 6 and 7.*last good checkpoint \(step 4\) is kept'):
      log.flush(7, _FakeCheckpoints())
    assert issubclass(monitor.NonFiniteLoss, UserError)
    log.close()

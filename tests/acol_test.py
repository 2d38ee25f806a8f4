"""ACoL (models/acol.py and its two training stages in train.py): maths on literal inputs, the
staged optimizer, and a two-stage run that evaluates and resumes in either stage."""

import json
import os
import shutil

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
from excam_jax import checkpoint_eval
from excam_jax import inference
from excam_jax.errors import UserError
from excam_jax.models import acol
from excam_jax.models import network


def _norm(x):
  """Min-max over axes 1, 2 in float64: the reference for normalise_maps."""
  x = np.asarray(x, np.float64)
  low, high = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
  span = high - low
  return np.where(span > 0, (x - low) / np.where(span > 0, span, 1), 0.0)


class TestMaths:

  def test_normalise_maps_by_hand(self):
    maps = np.array([[[1.0, 3.0], [5.0, 2.0]], [[4.0, 4.0], [4.0, 4.0]]])  # (class, h, w)
    maps = maps.transpose(1, 2, 0)[None]  # (1, 2, 2, 2)
    got = np.asarray(acol.normalise_maps(jnp.asarray(maps)))
    np.testing.assert_allclose(got[0, :, :, 0], [[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_array_equal(got[0, :, :, 1], np.zeros((2, 2)))  # Constant map -> zeros.

  def test_erase_mask_keeps_selected_classes_only(self):
    # Class 0 peaks on the left column, class 1 on the bottom row; normalised values by hand.
    c0 = np.array([[10.0, 0.0, 0.0], [7.0, 0.0, 0.0], [5.0, 0.0, 1.0]])  # /10: 1, .7, .5, .1
    c1 = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 2.0, 1.0]])  # /2: 1, 1, .5
    maps = jnp.asarray(np.stack([c0, c1], -1)[None])
    only0 = np.asarray(acol.erase_mask(maps, jnp.array([[1.0, 0.0]]), (3, 3), 0.6))[0, :, :, 0]
    np.testing.assert_array_equal(only0, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])
    both = np.asarray(acol.erase_mask(maps, jnp.array([[1.0, 1.0]]), (3, 3), 0.6))[0, :, :, 0]
    np.testing.assert_array_equal(both, [[1, 0, 0], [1, 0, 0], [1, 1, 0]])
    none = np.asarray(acol.erase_mask(maps, jnp.array([[0.0, 0.0]]), (3, 3), 0.6))
    assert none.sum() == 0
    # A lower threshold takes in class 0's 0.5 cell too.
    low = np.asarray(acol.erase_mask(maps, jnp.array([[1.0, 0.0]]), (3, 3), 0.5))[0, :, :, 0]
    np.testing.assert_array_equal(low, [[1, 0, 0], [1, 0, 0], [1, 0, 0]])

  def test_erase_mask_upsamples_bilinearly(self):
    maps = jnp.asarray(np.array([[0.0, 1.0]])[None, :, :, None])  # (1, 1, 2, 1): left 0, right 1
    mask = np.asarray(acol.erase_mask(maps, jnp.ones((1, 1)), (1, 4), 0.6))[0, 0, :, 0]
    # Half-pixel bilinear from 2 to 4 columns: 0, 0.25, 0.75, 1.
    np.testing.assert_array_equal(mask, [0, 0, 1, 1])

  def test_fuse_maps(self):
    a = jnp.asarray(np.array([[0.0, 2.0], [4.0, 4.0]])[None, :, :, None])
    b = jnp.asarray(np.array([[3.0, 1.0], [1.0, 1.0]])[None, :, :, None])
    np.testing.assert_allclose(np.asarray(acol.fuse_maps(a, b))[0, :, :, 0],
                               [[0.0, -0.25], [0.0, 0.0]])  # (0 + 1)/2, (.5 + 0)/2, ... - 0.5
    b = jnp.asarray(np.array([[0.0, 1.0], [3.0, 1.0]])[None, :, :, None])
    np.testing.assert_allclose(np.asarray(acol.fuse_maps(a, b))[0, :, :, 0],
                               [[-0.5, -0.5 + (0.5 + 1 / 3) / 2], [0.5, -0.5 + (1 + 1 / 3) / 2]],
                               rtol=1e-6)

  def test_fuse_maps_logits(self):
    a = jnp.asarray(np.array([[0.0, 2.0], [4.0, -4.0]])[None, :, :, None])
    b = jnp.asarray(np.array([[3.0, 1.0], [-1.0, 1.0]])[None, :, :, None])
    # The mean of the raw maps, on the logit scale: z > 0 <=> sigmoid(z) > 0.5.
    np.testing.assert_array_equal(np.asarray(acol.fuse_maps(a, b, 'logits'))[0, :, :, 0],
                                  [[1.5, 1.5], [1.5, -1.5]])
    np.testing.assert_array_equal(acol.fuse_maps(a, b), acol.fuse_maps(a, b, 'normalised'))
    with pytest.raises(ValueError, match="'normalised' or 'logits'"):
      acol.fuse_maps(a, b, 'max')


class ChannelNet(nn.Module):
  """A stand-in classifier: fixed logits; class map c = input channel c (so erasing shows)."""
  logits: tuple = (1.0, -1.0)

  @nn.compact
  def __call__(self, images, train=False):
    del train
    logits = jnp.broadcast_to(jnp.asarray(self.logits), (images.shape[0], len(self.logits)))
    return logits, {'class_maps': images[..., :len(self.logits)]}


class TestACoLNet:

  def test_test_time_model_by_hand(self):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    net = acol.ACoLNet(a=ChannelNet(), b=ChannelNet(), threshold=0.6)
    logits, aux = net.apply({}, jnp.asarray(images))
    np.testing.assert_array_equal(np.asarray(logits), [[1.0, -1.0]] * 2)  # A's scores.
    maps_a = images[..., :2]
    # Predicted classes: class 0 only (logit > 0); erase where its normalised map >= 0.6.
    mask = (_norm(maps_a)[..., :1] >= 0.6).astype(np.float32)
    maps_b = (images * (1 - mask))[..., :2]
    np.testing.assert_allclose(np.asarray(aux['erased']), mask)
    np.testing.assert_allclose(np.asarray(aux['maps_b']), maps_b, rtol=1e-6)
    want = 0.5 * (_norm(maps_a) + _norm(maps_b)) - 0.5
    np.testing.assert_allclose(np.asarray(aux['class_maps']), want, rtol=1e-5, atol=1e-6)

  def test_logits_fusion_changes_only_the_map(self):
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32))
    normalised = acol.ACoLNet(a=ChannelNet(), b=ChannelNet()).apply({}, images)
    logits, aux = acol.ACoLNet(a=ChannelNet(), b=ChannelNet(), fusion='logits').apply({}, images)
    np.testing.assert_array_equal(logits, normalised[0])  # Scores: A's, unchanged.
    np.testing.assert_array_equal(aux['erased'], normalised[1]['erased'])
    np.testing.assert_allclose(aux['class_maps'], 0.5 * (aux['maps_a'] + aux['maps_b']),
                               rtol=1e-6)
    assert not np.allclose(aux['class_maps'], normalised[1]['class_maps'])

  def test_stage_b_erases_with_the_given_labels(self):
    images = jnp.asarray(np.random.default_rng(1).normal(size=(1, 4, 4, 3)).astype(np.float32))
    net = acol.ACoLNet(a=ChannelNet(), b=ChannelNet(), threshold=0.6)
    labels = jnp.array([[0.0, 1.0]])  # Class 1, not the predicted class 0.
    _, aux = net.apply({}, images, labels, method='stage_b')
    mask = (_norm(np.asarray(images)[..., 1:2]) >= 0.6).astype(np.float32)
    np.testing.assert_allclose(np.asarray(aux['class_maps']),
                               (np.asarray(images) * (1 - mask))[..., :2], rtol=1e-6)
    _, aux_a = net.apply({}, images, method='stage_a')
    np.testing.assert_array_equal(np.asarray(aux_a['class_maps']), np.asarray(images)[..., :2])

  def test_network_builds_two_classifiers_of_the_configured_kind(self):
    config = tiny.get_config()
    config.model.head = 'acol'
    config.model.acol_head = 'excam'
    model = network.create_model(config.model, 3)
    assert isinstance(model, acol.ACoLNet) and model.threshold == 0.6
    assert model.fusion == 'normalised'
    config.model.acol_fusion = 'logits'
    assert network.create_model(config.model, 3).fusion == 'logits'
    del config.model['acol_fusion']  # A config saved before the field existed.
    assert network.create_model(config.model, 3).fusion == 'normalised'
    assert model.a.head.transform is not None and model.b.head.transform is not None
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x),
                            jnp.zeros((1, 64, 64, 3)))
    assert sorted(shapes['params']) == ['a', 'b']
    assert sorted(shapes['params']['a']) == sorted(shapes['params']['b']) == ['head', 'trunk']

  @pytest.mark.parametrize('field, value', [('acol_head', 'acol'), ('acol_head', 'vgg'),
                                            ('acol_threshold', 1.0), ('acol_threshold', 0),
                                            ('acol_fusion', 'max')])
  def test_bad_fields_are_refused(self, field, value):
    config = tiny.get_config()
    config.model.head = 'acol'
    config.model[field] = value
    with pytest.raises(ConfigError, match=f'model.{field}'):
      config_schema.validate(config)


class PooledNet(nn.Module):
  """Spatial mean -> BatchNorm (trunk) -> dense (head); class maps are the logits at 1 x 1."""

  @nn.compact
  def __call__(self, images, train=False):
    pooled = images.mean(axis=(1, 2))
    features = nn.BatchNorm(use_running_average=not train, momentum=0.9, name='trunk')(pooled)
    logits = nn.Dense(3, name='head')(features)
    return logits, {'class_maps': logits[:, None, None]}


def _optim(warmup_steps=2):
  return ml_collections.ConfigDict({
      'trunk_learning_rate': 0.1, 'head_learning_rate': 0.5, 'momentum': 0.9,
      'weight_decay': 0.01, 'schedule': 'cosine', 'warmup_steps': warmup_steps,
      'diversity_loss': 'none', 'diversity_weight': 0.0})


def _changed(before, after):
  return [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after))]


class TestStages:

  def test_stage_of(self):
    assert [stages_lib.stage_of(s, 4, acol.STAGES) for s in range(1, 9)] == ['a'] * 4 + ['b'] * 4
    assert stages_lib.stage_of(3, 10, (None,)) is None

  def test_each_stage_has_its_own_schedule(self):
    _, schedules = stages_lib.create_staged_optimizer(_optim(), stage_steps=5)
    _, single = optim_lib.create_optimizer(_optim(), total_steps=5)
    for step in range(5):  # Stage b's schedule restarts at its first step (global count 5).
      for group in ('trunk', 'head'):
        assert float(schedules[group](step)) == float(schedules[group](step + 5)) == float(
            single[group](step))
    assert float(schedules['head'](0)) == 0.0 and float(schedules['head'](2)) == 0.5

  def test_a_stage_trains_only_its_classifier(self):
    model = acol.ACoLNet(a=PooledNet(), b=PooledNet())
    tx, _ = stages_lib.create_staged_optimizer(_optim(warmup_steps=0), stage_steps=4)
    state = steps_lib.create_state(jax.random.PRNGKey(0), model=model, tx=tx, image_size=4)
    state = jax.device_put(state, parallel.replicated(parallel.data_mesh()))
    rng = np.random.default_rng(0)
    batch = {'image': rng.normal(size=(8, 4, 4, 3)).astype(np.float32),
             'label': (rng.random((8, 3)) < 0.5).astype(np.float32),
             'mask': np.ones(8, np.float32)}
    steps = {s: steps_lib.make_train_step(_optim(warmup_steps=0), model, tx, parallel.data_mesh(), stage=s)
             for s in acol.STAGES}
    before = jax.device_get(state)
    after_a, metrics = steps['a'](state, batch)
    after_a = jax.device_get(after_a)
    assert np.isfinite(float(metrics['loss'])) and int(after_a.step) == 1
    for tree in ('params', 'batch_stats', 'opt_state'):
      assert any(_changed(getattr(before, tree)['a'], getattr(after_a, tree)['a'])), tree
      assert not any(_changed(getattr(before, tree)['b'], getattr(after_a, tree)['b'])), tree
    after_b, _ = steps['b'](jax.device_put(after_a, parallel.replicated(parallel.data_mesh())),
                            batch)
    after_b = jax.device_get(after_b)
    for tree in ('params', 'batch_stats', 'opt_state'):
      assert not any(_changed(getattr(after_a, tree)['a'], getattr(after_b, tree)['a'])), tree
      assert any(_changed(getattr(after_a, tree)['b'], getattr(after_b, tree)['b'])), tree


@pytest.fixture(scope='module')
def acol_run(tmp_path_factory):
  """A tiny two-stage ACoL run (4 + 4 steps, checkpoints at 4, 6, 8)."""
  base = tmp_path_factory.mktemp('acol')
  config = tiny.get_config()
  config.model.head = 'acol'
  workdir = str(base / 'full')
  result = train.train_and_evaluate(config, workdir)
  return {'config': config, 'workdir': workdir, 'base': base, 'result': result}


class TestTwoStageRun:

  @pytest.mark.parametrize('kind', ['cluster', 'affinity'])
  def test_feature_transforms_are_refused_on_acol(self, acol_run, kind):
    with pytest.raises(UserError, match=f"'{kind}' reads the trunk's features"):
      inference.load(acol_run['workdir'], transform=kind)

  def test_both_stages_ran_and_were_evaluated(self, acol_run):
    result = acol_run['result']
    assert result['final_step'] == 8
    assert [step for step, _ in result['eval']] == [4, 8]
    assert sorted(os.listdir(os.path.join(acol_run['workdir'], checkpoints.CHECKPOINT_DIR))) == [
        '4', '6', '8']
    _, variables, _ = checkpoints.restore(acol_run['workdir'], step=4)
    _, final, _ = checkpoints.restore(acol_run['workdir'])
    # Stage b leaves classifier A exactly as stage a ended.
    for x, y in zip(jax.tree.leaves(variables['params']['a']), jax.tree.leaves(final['params']['a'])):
      np.testing.assert_array_equal(x, y)
    assert any(_changed(variables['params']['b'], final['params']['b']))

  @pytest.mark.parametrize('keep', [4, 6])
  def test_resume_in_either_stage_is_exact(self, acol_run, keep):
    workdir = str(acol_run['base'] / f'resumed_from_{keep}')
    shutil.copytree(acol_run['workdir'], workdir)
    for step in (6, 8):
      if step > keep:
        shutil.rmtree(os.path.join(workdir, checkpoints.CHECKPOINT_DIR, str(step)))
    result = train.train_and_evaluate(acol_run['config'], workdir)
    assert result['source'] == f'checkpoint at step {keep}'
    _, want, _ = checkpoints.restore(acol_run['workdir'])
    _, got, _ = checkpoints.restore(workdir)
    for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(x, y)

  def test_evaluate_scores_the_fused_maps(self, acol_run, tmp_path):
    out = checkpoint_eval.evaluate_checkpoint(acol_run['workdir'], output=str(tmp_path / 'eval'), figures=2)
    assert os.path.isfile(os.path.join(out, 'metrics.json'))
    config, variables, _ = checkpoints.restore(acol_run['workdir'])
    model = network.create_model(config.model, 3)
    predict = inference.make_predict_fn(model, variables)
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    logits, class_maps = predict(images)
    # The fused map is a mean of two [0, 1] maps minus 0.5; the scores are classifier A's.
    assert class_maps.shape == (2, 8, 8, 3) and class_maps.min() >= -0.5 and class_maps.max() <= 0.5
    a_logits, _ = model.apply(variables, images, train=False, method='stage_a')
    np.testing.assert_allclose(logits, np.asarray(a_logits), rtol=1e-5, atol=1e-6)

  def test_evaluate_overrides_the_fusion(self, acol_run, tmp_path):
    """One checkpoint scored both ways: the maps differ, the scores do not."""
    results = {}
    for fusion in ('normalised', 'logits'):
      out = checkpoint_eval.evaluate_checkpoint(acol_run['workdir'], output=str(tmp_path / fusion),
                                       figures=0, model_overrides={'acol_fusion': fusion})
      with open(os.path.join(out, 'metrics.json')) as f:
        results[fusion] = json.load(f)
      assert results[fusion]['protocol']['acol_fusion'] == fusion
    assert (results['logits']['classification_map'] ==
            results['normalised']['classification_map'])
    config, variables, _ = checkpoints.restore(acol_run['workdir'])
    assert config.model.acol_fusion == 'normalised'  # The checkpoint's config is untouched.
    model = network.create_model(inference.model_fields(config, {'acol_fusion': 'logits'}), 3)
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    _, aux = model.apply(variables, images, train=False)
    np.testing.assert_allclose(aux['class_maps'], 0.5 * (aux['maps_a'] + aux['maps_b']),
                               rtol=1e-6)

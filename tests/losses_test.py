"""The loss terms on literal inputs with hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from excam_jax.models import losses

LN2 = np.log(2.0)


class TestBceLoss:

  LOGITS = jnp.array([[0.0, 2.0], [-1.0, 0.0]])
  LABELS = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  # BCE(z, y) = log(1 + e^z) - y z: example 0 gives (ln 2, ln(1 + e^2)), example 1
  # (ln(1 + e^-1), ln 2); each is averaged over its two classes.
  PER_EXAMPLE = np.array([(LN2 + np.log1p(np.exp(2.0))) / 2, (np.log1p(np.exp(-1.0)) + LN2) / 2])

  def test_mean_over_classes_and_examples(self):
    np.testing.assert_allclose(losses.bce_loss(self.LOGITS, self.LABELS),
                               self.PER_EXAMPLE.mean(), rtol=1e-6)

  def test_mask_averages_over_valid_examples_only(self):
    np.testing.assert_allclose(losses.bce_loss(self.LOGITS, self.LABELS, jnp.array([1.0, 0.0])),
                               self.PER_EXAMPLE[0], rtol=1e-6)
    np.testing.assert_allclose(losses.bce_loss(self.LOGITS, self.LABELS, jnp.array([0.0, 1.0])),
                               self.PER_EXAMPLE[1], rtol=1e-6)

  def test_all_masked_batch_gives_zero_not_nan(self):
    # The denominator is max(sum mask, 1): a batch of padding contributes 0.
    assert float(losses.bce_loss(self.LOGITS, self.LABELS, jnp.zeros(2))) == 0.0

  def test_gradient_is_sigmoid_minus_label_over_count(self):
    grad = jax.grad(lambda z: losses.bce_loss(z, self.LABELS))(self.LOGITS)
    expected = (jax.nn.sigmoid(self.LOGITS) - self.LABELS) / 4  # 2 examples x 2 classes.
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


class TestSoftmaxLoss:

  # softmax(0, ln 3) = (1/4, 3/4): CE is ln 4 for class 0, ln(4/3) for class 1.
  LOGITS = jnp.array([[0.0, np.log(3.0)], [np.log(3.0), 0.0]])
  LABELS = jnp.array([[0.0, 1.0], [0.0, 1.0]])

  def test_mean_over_valid_examples_by_hand(self):
    np.testing.assert_allclose(losses.softmax_loss(self.LOGITS, self.LABELS),
                               (np.log(4 / 3) + np.log(4)) / 2, rtol=1e-6)
    np.testing.assert_allclose(losses.softmax_loss(self.LOGITS, self.LABELS, jnp.array([0., 1.])),
                               np.log(4), rtol=1e-6)
    assert float(losses.softmax_loss(self.LOGITS, self.LABELS, jnp.zeros(2))) == 0.0

  def test_cutmix_soft_labels_mix_the_two_losses_by_hand(self):
    # Image 0 keeps lam = 0.75 of class 1 and takes 0.25 of its partner's class 0:
    # 0.75 ln(4/3) + 0.25 ln 4 = 0.5623 (both images mix the same way, as a CutMix batch).
    soft = jnp.array([[0.25, 0.75], [0.75, 0.25]])
    want = 0.75 * np.log(4 / 3) + 0.25 * np.log(4)
    np.testing.assert_allclose(losses.softmax_loss(self.LOGITS, soft), want, rtol=1e-6)
    np.testing.assert_allclose(want, 0.5623351, rtol=1e-6)

  def test_gradient_is_softmax_minus_label_over_count(self):
    grad = jax.grad(lambda z: losses.softmax_loss(z, self.LABELS))(self.LOGITS)
    np.testing.assert_allclose(grad, (jax.nn.softmax(self.LOGITS) - self.LABELS) / 2, rtol=1e-6)


class TestDiversityLoss:

  # One image, one class, 2 cells, M = 2: F1 = (1, 0), F2 = (0, 1).
  ORTHOGONAL = jnp.array([[1., 0.], [0., 1.]]).reshape(1, 1, 2, 1, 2)

  def test_pairwise_l2_literal(self):
    # Ordered pairs (1,2) and (2,1): ||F1 - F2||^2 = 2 each; the term is subtracted.
    np.testing.assert_allclose(losses.diversity_loss(self.ORTHOGONAL, 'pairwise_l2'), -4.0)
    # M = 3, one cell: F = (1, 2, 4). Unordered squared gaps 1, 9, 4; ordered: twice 14.
    three = jnp.array([1., 2., 4.]).reshape(1, 1, 1, 1, 3)
    np.testing.assert_allclose(losses.diversity_loss(three, 'pairwise_l2'), -28.0)

  def test_pairwise_l2_mean_over_batch_and_classes(self):
    # Two classes: the orthogonal pair (-4) and a zero pair (0); mean -2. Batch of two copies.
    maps = jnp.concatenate([self.ORTHOGONAL, jnp.zeros_like(self.ORTHOGONAL)], axis=3)
    maps = jnp.concatenate([maps, maps], axis=0)
    np.testing.assert_allclose(losses.diversity_loss(maps, 'pairwise_l2'), -2.0)

  def test_cosine_literal(self):
    np.testing.assert_allclose(losses.diversity_loss(self.ORTHOGONAL, 'cosine'), 0.0, atol=1e-7)
    same = jnp.array([[1., 1.], [2., 2.]]).reshape(1, 1, 2, 1, 2)
    np.testing.assert_allclose(losses.diversity_loss(same, 'cosine'), 1.0, rtol=1e-6)
    # M = 3 with F3 = -F1: cosines (0, -1, 0) over the three pairs i < j.
    three = jnp.array([[1., 0., -1.], [0., 1., 0.]]).reshape(1, 1, 2, 1, 3)
    np.testing.assert_allclose(losses.diversity_loss(three, 'cosine'), -1 / 3, rtol=1e-6)

  def test_cosine_of_a_zero_map_is_zero_not_nan(self):
    maps = jnp.array([[1., 0.], [1., 0.]]).reshape(1, 1, 2, 1, 2)  # F2 = 0.
    assert float(losses.diversity_loss(maps, 'cosine')) == 0.0

  def test_unknown_kind_names_the_choices(self):
    with pytest.raises(ValueError, match=r"one of \('pairwise_l2', 'cosine'\), got 'l1'"):
      losses.diversity_loss(self.ORTHOGONAL, 'l1')


class TestAreaLoss:
  # Image 0, class 0: z = (0, ln 3) -> sigmoid (1/2, 3/4), mean 5/8. Image 1, class 1:
  # z = (-ln 3, 0) -> (1/4, 1/2), mean 3/8. The other two (image, class) pairs are negatives.
  LN3 = np.log(3.0)
  MAPS = jnp.array([[[[0.0, 9.0], [LN3, 9.0]]], [[[9.0, -LN3], [9.0, 0.0]]]])  # (2, 1, 2, 2)
  LABELS = jnp.array([[1.0, 0.0], [0.0, 1.0]])

  def test_mean_sigmoid_over_positive_pairs(self):
    np.testing.assert_allclose(losses.area_loss(self.MAPS, self.LABELS), (5 / 8 + 3 / 8) / 2,
                               rtol=1e-6)

  def test_mask_leaves_padding_out(self):
    np.testing.assert_allclose(losses.area_loss(self.MAPS, self.LABELS, jnp.array([1.0, 0.0])),
                               5 / 8, rtol=1e-6)

  def test_no_positive_gives_zero_not_nan(self):
    assert float(losses.area_loss(self.MAPS, jnp.zeros((2, 2)))) == 0.0

  def test_gradient_is_sigmoid_slope_over_cells_and_pairs(self):
    grad = jax.grad(lambda m: losses.area_loss(m, self.LABELS))(self.MAPS)
    # d/dz mean sigmoid = s (1 - s) / cells, over 2 positive pairs; negatives get none.
    want = np.zeros((2, 1, 2, 2))
    want[0, 0, :, 0] = [0.5 * 0.5 / 2 / 2, 0.75 * 0.25 / 2 / 2]
    want[1, 0, :, 1] = [0.25 * 0.75 / 2 / 2, 0.5 * 0.5 / 2 / 2]
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-8)


class TestBackgroundLoss:
  # Two cells, two classes. Image 0, class 0: activation relu(2, -1) = (2, 0), foreground
  # sigmoid(0, ln 3) = (1/2, 3/4): outside (1/2, 1/4), mean((1 - m) a) = 1/2, mean(a) = 1, ratio 1/2.
  # Image 1, class 1: a = (1, 3), m = (3/4, 1/2): mean((1 - m) a) = (1/4 + 3/2) / 2 = 7/8,
  # mean(a) = 2, ratio 7/16. The other two pairs are negatives (their values must not count).
  LN3 = np.log(3.0)
  ACTIVATION = jnp.array([[[[2.0, 5.0], [-1.0, 5.0]]], [[[5.0, 1.0], [5.0, 3.0]]]])
  FOREGROUND = jnp.array([[[[0.0, -9.0], [LN3, -9.0]]], [[[-9.0, LN3], [-9.0, 0.0]]]])
  LABELS = jnp.array([[1.0, 0.0], [0.0, 1.0]])

  def test_share_of_activation_outside_the_foreground(self):
    got = losses.background_loss(self.ACTIVATION, self.FOREGROUND, self.LABELS, eps=0.0)
    np.testing.assert_allclose(got, (1 / 2 + 7 / 16) / 2, rtol=1e-6)
    got = losses.background_loss(self.ACTIVATION, self.FOREGROUND, self.LABELS)
    np.testing.assert_allclose(got, (0.5 / 1.01 + 0.875 / 2.01) / 2, rtol=1e-6)

  def test_mask_leaves_padding_out_and_no_positive_gives_zero(self):
    got = losses.background_loss(self.ACTIVATION, self.FOREGROUND, self.LABELS,
                                 jnp.array([0.0, 1.0]), eps=0.0)
    np.testing.assert_allclose(got, 7 / 16, rtol=1e-6)
    assert float(losses.background_loss(self.ACTIVATION, self.FOREGROUND,
                                        jnp.zeros((2, 2)))) == 0.0

  def test_gradient_grows_the_foreground_on_activation_and_moves_activation_into_it(self):
    grad_g, grad_z = jax.grad(
        lambda g, z: losses.background_loss(z, g, self.LABELS, eps=0.0),
        argnums=(0, 1))(self.FOREGROUND, self.ACTIVATION)
    # d ratio / d g_i = -s_i (1 - s_i) a_i / sum(a), halved over the two pairs: image 0's first
    # cell (a = 2, s = 1/2): -1/4 * 2 / 2 / 2; its second cell has no activation: 0.
    np.testing.assert_allclose(grad_g[0, 0, :, 0], [-0.125, 0.0], atol=1e-7)
    # d ratio / d a_i = ((1 - m_i) - ratio) / sum(a), halved: image 1 (ratio 7/16, sum 4):
    # (1/4 - 7/16) / 4 / 2 < 0 (inside, pulled up), (1/2 - 7/16) / 4 / 2 > 0 (outside, pushed down).
    np.testing.assert_allclose(grad_z[1, 0, :, 1], [-3 / 128, 1 / 128], rtol=1e-5)
    assert float(grad_z[0, 0, 1, 0]) == 0.0  # relu: no gradient below zero.
    assert not np.asarray(grad_g)[..., 1][0].any() and not np.asarray(grad_z)[0, ..., 1].any()

  def test_detach_keeps_the_gradient_from_the_activation_only(self):
    loss = lambda g, z, detach: losses.background_loss(z, g, self.LABELS, eps=0.0, detach=detach)
    grad_g, grad_z = jax.grad(loss, argnums=(0, 1))(self.FOREGROUND, self.ACTIVATION, True)
    want_g, _ = jax.grad(loss, argnums=(0, 1))(self.FOREGROUND, self.ACTIVATION, False)
    np.testing.assert_allclose(grad_g, want_g, rtol=1e-6)
    assert not np.asarray(grad_z).any()
    np.testing.assert_allclose(loss(self.FOREGROUND, self.ACTIVATION, True), (1 / 2 + 7 / 16) / 2,
                               rtol=1e-6)

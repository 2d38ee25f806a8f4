r"""ex-CAM on the built-in synthetic "parts" data set: the default run, on CPU.

Command:
  python -m excam_jax.main --config=configs/synthetic.py --workdir=runs/synthetic

A small ResNet-18 (stem width 8, output stride 8: 16x16 maps) trained from scratch on 128-px
images of the 'main' preset (large striped bodies, small class-specific parts) with body_cue 1
(every body tinted with its class's hue: the whole object is evidence), 500 steps at batch 32.
Pooling is k-max (kmax 0.3, alpha 0): WILDCAT's bottom-k term with alpha > 0 lifts the whole map
of a present class above zero, and boxes at z > 0 then spill over the background
(experiments/results/localization_sweep.md). Hardware: 2 CPU cores, about 2 min 10 s.
The evaluation report: python -m excam_jax.evaluate --workdir=runs/synthetic.

This run uses self_drop=False and M = 2: with the literal self_drop=True every map after the
first is <= 0, the class map is positive only where the first map is, and localization collapses
(pointwise AP 0.34 at M = 4); M = 1 collapses too and M = 8 is worse than M = 2 or 4 (see
experiments/results/). experiments/ablate.py reruns these comparisons.

Expected at the end (seed 0; runs repeat exactly on one machine; python -m excam_jax.evaluate,
exact protocol, non-difficult objects): classification mAP 0.987, pointwise localization AP
0.987, CorLoc 0.691, MaxBoxAcc 0.857 (0.867 under --maxboxacc=wsolevaluation), MaxBoxAccV2
0.734, localization AP 0.545, body coverage 0.89 with background activation 0.34.
"""

from configs import voc12


def get_config():
  """Returns the synthetic configuration."""
  config = voc12.get_config()
  config.data.dataset = 'parts'
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.image_size = 128
  config.data.parts.update({'preset': 'main', 'num_classes': 6, 'image_size': 128, 'num_train': 4000,
                       'num_eval': 400, 'body_cue': 1.0})

  config.model.depth = 18
  config.model.width = 8
  config.model.output_stride = 8
  config.model.num_maps = 2  # The best M in experiments/results/synthetic_num_maps.md.
  config.model.self_drop = False
  config.model.alpha = 0.0  # k-max pooling: no bottom-k term lifting the background (see above).
  config.model.kmax = 0.3

  config.train.batch_size = 32
  config.eval.batch_size = 64
  config.train.num_epochs = 4
  config.optim.head_learning_rate = 0.05
  config.optim.trunk_learning_rate = 0.05
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 50
  config.train.log_every_steps = 25
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500
  return config

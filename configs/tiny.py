r"""A tiny configuration for tests: ResNet-18 at stem width 8, 64-px synthetic images.

Command (seconds on CPU):
  python -m excam_jax.main --config=configs/tiny.py --workdir=/tmp/excam_tiny
"""

from configs import synthetic


def get_config():
  """Returns the tiny test configuration."""
  config = synthetic.get_config()
  config.data.image_size = 64
  config.data.parts.update({'num_classes': 3, 'num_train': 32, 'num_eval': 12, 'image_size': 96,
                           'body_cue': 0.0})
  config.model.width = 8
  config.model.num_maps = 2
  config.train.batch_size = 8
  config.eval.batch_size = 8
  config.train.num_epochs = 1
  config.optim.warmup_steps = 0
  config.train.log_every_steps = 1
  config.train.eval_every_steps = 4
  config.train.checkpoint_every_steps = 2
  config.data.shuffle_buffer = 64
  return config

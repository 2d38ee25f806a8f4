r"""ex-CAM on the built-in synthetic "parts" data set: the default run, on CPU.

Command:
  python -m excam_jax.main --config=configs/synthetic.py --workdir=runs/synthetic

A small ResNet-18 (stem width 16, output stride 8) trained from scratch on 128-px images
of the 'main' preset. Hardware: 2 CPU cores, about 10 minutes.
"""

from configs import voc12


def get_config():
  """Returns the synthetic configuration."""
  config = voc12.get_config()
  config.dataset = 'parts'
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.image_size = 128
  config.parts.update({'preset': 'main', 'num_classes': 6, 'num_train': 4000, 'num_eval': 400})

  config.model.depth = 18
  config.model.width = 16
  config.model.output_stride = 8
  config.model.num_maps = 4

  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_epochs = 12
  config.head_learning_rate = 0.05
  config.trunk_learning_rate = 0.05
  config.schedule = 'cosine'
  config.warmup_steps = 100
  config.log_every_steps = 25
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config

r"""CAM on ResNet-50, CUB-200-2011 through TFDS (caltech_birds2011): configs/cub.py's setting.

Commands:
  python -m excam_jax.data.prepare --dataset=caltech_birds2011 [--data_dir=TFDS_DIR]
  python -m excam_jax.main --config=configs/cub_tfds.py --workdir=runs/cub_tfds \
      --config.model.pretrained=/path/to/resnet50_tv_in1k.safetensors \
      [--config.data.data_dir=TFDS_DIR]
  python -m excam_jax.evaluate --workdir=runs/cub_tfds --split=test

The data (excam_jax/data/cub_tfds.py): TFDS downloads CUB-200-2011 with its boxes and
segmentation masks (about 1.2 GB) at the prepare command; runs read config.data.data_dir (default
~/tensorflow_datasets) and never download. Trains on train (5,994 images) and evaluates test
(5,794 images, the same as wsolevaluation's CUB test): MaxBoxAccV2 from the boxes, PxAP from the
masks, GT-known and Top-1 Loc, top-1 accuracy (evaluation/wsol_benchmark.py).

Choices (learning rate, epochs, CAM settings, checkpoints) belong on val, never on test: set
--config.data.train_split=train_rest --config.data.eval_split=val (val is the first 1,000
training images, train_rest the other 4,994, disjoint), choose there, then train on train and
report test once.

The model, optimiser, schedule and scoring are configs/cub.py's (wsolevaluation's resnet50 + cam:
28 x 28 maps at 224, softmax cross-entropy, SGD Nesterov, lr 2.3222617e-4 and 10x on layer4 and
the fc, x0.1 every 15 epochs, 50 epochs at batch 32). The differences from configs/cub.py are the
data's: no CUBV2 val (val comes from train), and preprocessing is the TFDS path's (data/
preprocess.py: train images resized to 224 x 224 with a random flip, no 256 resize and random
crop; evaluation resized to 224).

Hardware: one GPU, 9,400 steps at batch 32 (not measured here). Expected: not yet measured; the
published CAM ResNet-50 MaxBoxAccV2 on CUB test (wsolevaluation README) is 63.0.
"""

from configs import cub


def get_config():
  """Returns the CUB-through-TFDS configuration."""
  config = cub.get_config()
  config.data.dataset = 'caltech_birds2011'
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.image_size = 224
  return config

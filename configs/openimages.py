r"""CAM on ResNet-50, OpenImages30k: wsolevaluation's CAM baseline (Choe et al., CVPR 2020).

Command:
  python -m excam_jax.main --config=configs/openimages.py --workdir=runs/openimages \
      --config.data.wsol.data_root=/path/to/dataset \
      --config.data.wsol.metadata_root=/path/to/wsolevaluation/metadata \
      --config.data.wsol.mask_root=/path/to/dataset \
      --config.model.pretrained=/path/to/resnet50_tv_in1k.safetensors
  python -m excam_jax.evaluate --workdir=runs/openimages --split=test

Data in wsolevaluation's layout (excam_jax/data/wsol.py): <data_root>/OpenImages/ holds the
images and <mask_root>/OpenImages/ the masks (their dataset/prepare_openimages.sh puts both under
dataset/). Trains on train (29,819 images), evaluates val (2,500 images, masks: every choice is
made there); the number to report is PxAP of the last checkpoint on test (5,000 images), once.

wsolevaluation's resnet50 + cam setting, as configs/cub.py's but: lr 1.07117324e-3 (x10 on
layer4 and the fc), x0.1 at epochs 3, 6, 9 (lr_decay_frequency 3), 10 epochs at batch 32, no
large_feature_map (layer4 at stride 1, not dilated: 14 x 14 maps at 224). Values from their
hyperparameter sheet as copied in finallyupper/dual-cam scripts/run_train.sh; check them against
the sheet before reporting.

Hardware: one GPU, 9,320 steps at batch 32 (not measured here).
Expected: PxAP about 0.58 on test. Published (wsolevaluation README main table, test, CAM, PxAP
%): ResNet50 58.5; VGG16 58.3, InceptionV3 63.2; mean of the three 60.0.
"""

from configs import cub


def get_config():
  """Returns the OpenImages configuration."""
  config = cub.get_config()
  config.data.dataset = 'wsol/openimages'
  config.model.output_stride = 16  # No large_feature_map: 14 x 14 maps.
  config.optim.trunk_learning_rate = 1.07117324e-3
  config.optim.head_learning_rate = 1.07117324e-2
  config.optim.decay_every_epochs = 3
  config.train.num_epochs = 10
  return config

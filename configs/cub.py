r"""CAM on ResNet-50, CUB-200-2011: wsolevaluation's CAM baseline (Choe et al., CVPR 2020).

Command:
  python -m excam_jax.main --config=configs/cub.py --workdir=runs/cub \
      --config.data.wsol.data_root=/path/to/dataset \
      --config.data.wsol.metadata_root=/path/to/wsolevaluation/metadata \
      --config.model.pretrained=/path/to/resnet50_tv_in1k.safetensors
  python -m excam_jax.evaluate --workdir=runs/cub --split=test

Data in wsolevaluation's layout (excam_jax/data/wsol.py): <data_root>/CUB/ holds CUB-200-2011's
images and CUBV2's (their dataset/prepare_cub.sh), metadata_root is their metadata/ folder. Trains
on train (5,994 images), evaluates val (CUBV2, 1,000 images: every choice is made there); the
number to report is the last checkpoint's on test (5,794 images), once. The weights are
torchvision's ImageNet ResNet-50 (timm resnet50.tv_in1k; wsolevaluation's resnet50-19c8e357.pth).

wsolevaluation's resnet50 + cam setting: ResNetCam with large_feature_map (layer3 and layer4 at
stride 1, not dilated: 28 x 28 maps at 224), GAP -> fc, softmax cross-entropy; SGD with Nesterov
momentum 0.9, weight decay 1e-4 on every parameter, lr 2.3222617e-4 on conv1..layer3 and 10x on
layer4 and the fc (their _FEATURE_PARAM_LAYER_PATTERNS: head_rate_stages (4,)), x0.1 at epochs
15, 30, 45 (lr_decay_frequency 15), 50 epochs at batch 32; train images resized to 256, random
224 crop and flip, evaluation at 224; scores as their evaluation (evaluation/wsol_benchmark.py:
cam_curve_interval 0.001, IoU 30/50/70, every contour). The per-run values (lr, batch,
large_feature_map) are those of their published hyperparameter sheet as copied in
finallyupper/dual-cam scripts/run_train.sh; check them against the sheet (wsolevaluation README,
section 5) before reporting. Known differences: their fc starts from N(0, 0.01), ours from Flax's
LeCun normal.

Hardware: one GPU, 9,400 steps at batch 32 (not measured here; layer3 and layer4 at 28 x 28 take
about 2.5x the activation memory of a standard ResNet-50, by count of activations).
Expected: MaxBoxAccV2 about 0.63 on test. Published (wsolevaluation README main table, test, CAM,
MaxBoxAccV2 %): ResNet50 63.0; VGG16 63.7, InceptionV3 56.7; mean of the three 61.1.
"""

from configs import voc12


def get_config():
  """Returns the CUB configuration."""
  config = voc12.get_config()
  config.data.dataset = 'wsol/cub'
  config.data.train_split = 'train'
  config.data.eval_split = 'val'
  config.data.image_size = 224  # Their crop_size; evaluation resizes to it.
  config.data.wsol.resize_size = 256

  config.model.head = 'cam'
  config.model.depth = 50
  config.model.output_stride = 8  # large_feature_map: 28 x 28 maps.
  config.model.dilate = False

  config.optim.loss = 'softmax'
  config.optim.nesterov = True
  config.optim.weight_decay = 1e-4
  config.optim.trunk_learning_rate = 2.3222617e-4
  config.optim.head_learning_rate = 2.3222617e-3  # lr_classifier_ratio 10.
  config.optim.head_rate_stages = (4,)
  config.optim.schedule = 'step'
  config.optim.decay_every_epochs = 15

  config.train.batch_size = 32
  config.train.num_epochs = 50
  config.train.log_every_steps = 50
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 1000
  config.eval.batch_size = 32
  config.eval.cam_curve_interval = 0.001
  config.eval.iou_threshold_list = (30, 50, 70)
  config.eval.multi_contour_eval = True
  return config

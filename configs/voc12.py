r"""ex-CAM (WILDCAT + intra-class sequential dropout), ResNet-101, PASCAL VOC 2012.

Command:
  python -m excam_jax.main --config=configs/voc12.py --workdir=runs/voc12 \
      --config.pretrained=/path/to/resnet101_tv_in1k.safetensors

Trains on voc/2012 train and evaluates on validation (the 2012 test annotations are private).
Hardware: one GPU with >= 24 GB at batch 16, 224 px; several GPUs split the global batch.
The data must be prepared first: python -m excam_jax.data.prepare --dataset=voc/2012 --manual_dir=DIR.
Reference (thesis Table 1, localization mAP on VOC 2012): ex-CAM 0.70, WILDCAT 0.53.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config():
  """Returns the VOC 2012 configuration (WILDCAT schedule, the defaults of docs/method.md)."""
  config = ml_collections.ConfigDict()

  # Data.
  config.dataset = 'voc/2012'
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.data_dir = ''  # TFDS data dir; '' = TFDS default (~/tensorflow_datasets).
  config.manual_dir = ''  # Where the VOC tars lie; '' = <data_dir>/downloads/manual.
  config.image_size = 224  # S: images are resized to S x S (448 is the other usual choice).
  config.shuffle_buffer = 2048
  config.parts = ml_collections.ConfigDict({  # Only read when dataset == 'parts'.
      'preset': 'main', 'num_classes': 6, 'image_size': 128, 'num_train': 4000, 'num_eval': 500,
      'seed': 0})

  # Model.
  config.model = ml_collections.ConfigDict()
  config.model.head = 'excam'  # 'excam' | 'wildcat' | 'cam' | 'adl'
  config.model.depth = 101
  config.model.width = 64  # Channels of the stem; 64 is the standard ResNet.
  config.model.output_stride = 32  # 32, 16 or 8 (dilation replaces the last strides).
  config.model.num_maps = 8  # M maps per class.
  config.model.kmax = 0.2  # Fraction of cells (0 < k < 1) or a count (k >= 1).
  config.model.kmin = 0.2
  config.model.alpha = 0.6
  config.model.drop_threshold = 0.5  # delta: a cell is important where sigmoid(F) > delta.
  config.model.self_drop = True
  config.model.straight_through = True
  config.model.temperature = 1.0
  config.model.learn_threshold = 'none'  # 'none' | 'scalar' | 'per_class'
  config.model.adl_gamma = 0.9
  config.model.adl_drop_rate = 0.75
  config.model.dtype = 'float32'  # Compute dtype: 'float32' | 'bfloat16'; parameters stay float32.
  config.model.freeze_bn = False  # Use running statistics in training (tiny per-device batches).
  config.model.remat = False  # Rematerialise trunk stages to save memory.

  # Optimisation (WILDCAT's schedule; the thesis states none).
  config.batch_size = 16  # Global batch over all devices and processes.
  config.eval_batch_size = 32
  config.num_epochs = 20
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.head_learning_rate = 0.01
  config.trunk_learning_rate = 0.001
  config.schedule = 'constant'  # 'constant' | 'cosine'
  config.warmup_steps = 0
  config.diversity_loss = 'none'  # 'none' | 'pairwise_l2' | 'cosine'
  config.diversity_weight = 0.0
  config.pretrained = ''  # ImageNet ResNet weights (.safetensors or .npz, torchvision names).
  config.seed = 0

  # Book-keeping.
  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.eval_localization = True  # Box and point metrics in training evals (False: mAP only).
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3

  # How the localization metrics are scored (written to metrics.json as "protocol").
  config.eval = ml_collections.ConfigDict({
      'threshold': 0.0,  # Boxes from z > threshold (0 is sigma(z) > 0.5).
      'box_grid': placeholder(int),  # None: boxes at the original image size; N: an N x N grid.
      'maxboxacc': 'exact',  # 'exact' (ours) | 'wsolevaluation' (clovaai/wsolevaluation's rules).
      'sweep_grid': placeholder(int),  # 'exact' MaxBoxAcc sweep: None = original size.
      'sweep_step': 0.01,  # 'exact' MaxBoxAcc: spacing of the relative thresholds.
      'pointwise_tolerance': 18,  # Pixels (Oquab et al. 2015).
      'train_box_grid': 128,  # Cheap grids for the evaluations during training (not the last).
      'train_sweep_grid': 32,
  })

  # Multi-host (jax.distributed.initialize); off for one process.
  config.distributed = ml_collections.ConfigDict({
      'enabled': False, 'coordinator_address': '', 'num_processes': 1, 'process_id': 0})
  return config

r"""ex-CAM (WILDCAT + intra-class sequential dropout), ResNet-101, PASCAL VOC 2012.

Command:
  python -m excam_jax.main --config=configs/voc12.py --workdir=runs/voc12 \
      --config.model.pretrained=/path/to/resnet101_tv_in1k.safetensors

Trains on voc/2012 train and evaluates on validation (the 2012 test annotations are private).
Hardware: one GPU with >= 24 GB at batch 16, 224 px; several GPUs split the global batch.
The data must be prepared first: python -m excam_jax.data.prepare --dataset=voc/2012 --manual_dir=DIR.
Reference (thesis Table 1, localization mAP on VOC 2012, split and protocol not stated): ex-CAM
0.70, WILDCAT 0.53.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config():
  """Returns the VOC 2012 configuration (WILDCAT schedule, the defaults of docs/method.md)."""
  config = ml_collections.ConfigDict()

  config.data = ml_collections.ConfigDict()
  # 'voc/2007' | 'voc/2012' | 'caltech_birds2011' | 'parts' | 'wsol/cub' | 'wsol/ilsvrc' |
  # 'wsol/openimages'
  config.data.dataset = 'voc/2012'
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.data_dir = ''  # TFDS data dir; '' = TFDS default (~/tensorflow_datasets).
  config.data.manual_dir = ''  # Where the VOC tars lie; '' = <data_dir>/downloads/manual.
  config.data.image_size = 224  # S: images are resized to S x S (448 is the other usual choice).
  config.data.shuffle_buffer = 2048
  config.data.parts = ml_collections.ConfigDict({  # Only read when dataset == 'parts'.
      'preset': 'main', 'num_classes': 6, 'image_size': 128, 'num_train': 4000, 'num_eval': 500,
      'seed': 0,
      'body_cue': 0.0,  # c in [0, 1]: how often a body's tint names its class (data/synthetic.py).
      'difficult_objects': False,  # Also draw tiny and truncated objects (robustness runs).
      'probe': 'none'})  # 'none' | 'body_only' (parts painted over) | 'part_only' (no bodies).
  config.data.wsol = ml_collections.ConfigDict({  # Only read for 'wsol/...' (data/wsol.py).
      'data_root': '',  # Holds <CUB|ILSVRC|OpenImages>/<image_id> (wsolevaluation's --data_root).
      'metadata_root': '',  # wsolevaluation's metadata/: CUB/train/image_ids.txt, ...
      'mask_root': '',  # Holds OpenImages/<mask png> (wsolevaluation's --mask_root).
      'resize_size': 256})  # Training: resize to this square, then a random image_size crop.

  config.model = ml_collections.ConfigDict()
  config.model.head = 'excam'  # 'excam' | 'wildcat' | 'cam' | 'adl' | 'acol'
  config.model.depth = 101
  config.model.width = 64  # Channels of the stem; 64 is the standard ResNet.
  config.model.output_stride = 32  # 32, 16 or 8: the last stages run at stride 1 ...
  config.model.dilate = True  # ... dilated (torchvision) or not (False: wsolevaluation's ResNet50).
  config.model.num_maps = 8  # M maps per class.
  config.model.kmax = 0.2  # Fraction of cells (0 < k < 1) or a count (k >= 1).
  config.model.kmin = 0.2
  config.model.alpha = 0.6
  # How a class's M maps make its class map: 'mean' (WILDCAT) | 'max' (the wildcat_max control).
  config.model.class_pooling = 'mean'
  # How a class map becomes its score: 'wildcat' (kmax/kmin/alpha below) | 'gap' (its mean over
  # every cell: a CAM base; with head 'excam', ex-CAM on CAM as the thesis's section 3.7 suggests).
  config.model.spatial_pooling = 'wildcat'
  config.model.drop_threshold = 0.5  # delta: a cell is important where sigmoid(F) > delta.
  config.model.self_drop = True
  config.model.straight_through = True
  config.model.temperature = 1.0
  config.model.learn_threshold = 'none'  # 'none' | 'scalar' | 'per_class'
  config.model.adl_gamma = 0.9
  config.model.adl_drop_rate = 0.75
  # ACoL (two classifiers trained one after the other, models/acol.py): their kind, and where
  # classifier B's images are erased (A's min-max normalised class map >= threshold).
  config.model.acol_head = 'wildcat'  # 'wildcat' | 'excam' | 'adl' | 'cam'
  config.model.acol_threshold = 0.6
  # ACoL's test-time map: 'normalised' (mean of A's and B's min-max normalised maps - 0.5: boxes
  # keep the cells above half the range) | 'logits' (mean of their maps z: boxes at sigma(z) > 0.5).
  config.model.acol_fusion = 'normalised'
  # A foreground generator after BAS on a WILDCAT-family head: a second 1x1 conv whose maps
  # localize (the classifier's only classify), trained by optim.background_weight and
  # optim.area_weight.
  config.model.map_generator = False
  # The trunk stage it reads (1-4, at the maps' resolution; 4: the trunk's output, as the
  # classifier; BAS reads the stage before the last).
  config.model.map_generator_stage = 4
  config.model.dtype = 'float32'  # Compute dtype: 'float32' | 'bfloat16'; parameters stay float32.
  config.model.freeze_bn = False  # Use running statistics in training (tiny per-device batches).
  config.model.remat = False  # Rematerialise trunk stages to save memory.
  # Convolutions: 'auto' (1x1 as matmuls on CPU, XLA's elsewhere) | 'xla' | 'dot1x1' | 'matmul'
  # | 'onednn' (k x k through oneDNN on CPU, built on first use; models/onednn.py).
  config.model.conv_impl = 'auto'
  # BatchNorm: 'flax' (flax.linen.BatchNorm) | 'fused' (statistics and gradients in two passes
  # each; models/batchnorm.py). The same parameters either way.
  config.model.norm_impl = 'flax'
  config.model.pretrained = ''  # ImageNet ResNet weights (.safetensors or .npz, torchvision names).

  # WILDCAT's schedule; the thesis states none.
  config.optim = ml_collections.ConfigDict()
  config.optim.optimizer = 'sgd'  # 'sgd' (PyTorch-style, WILDCAT's) | 'adamw' (b1 = momentum)
  config.optim.loss = 'bce'  # 'bce' (multi-label) | 'softmax' (cross-entropy, single-label data)
  config.optim.momentum = 0.9
  config.optim.nesterov = False  # Nesterov momentum ('sgd'; wsolevaluation's).
  config.optim.weight_decay = 1e-4
  config.optim.head_learning_rate = 0.01
  config.optim.trunk_learning_rate = 0.001
  # Trunk stages trained at the head's rate (wsolevaluation's ResNet50: layer4 with the fc, (4,)).
  config.optim.head_rate_stages = ()
  # 'constant' | 'cosine' | 'step' (x0.1 from every epoch that is a multiple of decay_every_epochs).
  config.optim.schedule = 'constant'
  config.optim.decay_every_epochs = 30  # 'step' only (wsolevaluation's lr_decay_frequency).
  config.optim.warmup_steps = 0
  config.optim.diversity_loss = 'none'  # 'none' | 'pairwise_l2' | 'cosine'
  config.optim.diversity_weight = 0.0
  # Map-area penalty (models/losses.py area_loss): weight of the mean sigmoid(z) of the positive
  # classes' maps; 0 is off.
  config.optim.area_weight = 0.0
  # BAS's background-activation ratio (models/losses.py background_loss): the share of a positive
  # class's activation outside its generator's foreground; > 0 exactly with model.map_generator.
  config.optim.background_weight = 0.0
  # Whether that ratio trains the generator only (True: the classifier's activation is a fixed
  # target) or the classifier too (False, BAS's).
  config.optim.background_detach = False

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16  # Global batch over all devices and processes.
  config.train.num_epochs = 20
  config.train.seed = 0
  config.train.log_every_steps = 50
  config.train.eval_every_steps = 1000
  config.train.checkpoint_every_steps = 1000
  config.train.keep_checkpoints = 3
  # Input augmentation in training, any head (excam_jax/training/augment.py; wsolevaluation's
  # defaults): 'none' | 'has' (Hide-and-Seek: has_grid-pixel squares hidden with probability
  # has_drop_rate) | 'cutmix' (with probability cutmix_prob, a box of area about (1 - lam),
  # lam ~ Beta(cutmix_beta, cutmix_beta), pasted from another image of the batch).
  config.train.augment = 'none'
  config.train.has_grid = 4
  config.train.has_drop_rate = 0.5
  config.train.cutmix_beta = 1.0
  config.train.cutmix_prob = 1.0
  # Multi-host (jax.distributed.initialize); off for one process.
  config.train.distributed = ml_collections.ConfigDict({
      'enabled': False, 'coordinator_address': '', 'num_processes': 1, 'process_id': 0})

  # Evaluation, and how the localization metrics are scored (metrics.json's "protocol").
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.localization = True  # Box and point metrics in training evals (False: mAP only).
  config.eval.threshold = 0.0  # Boxes from z > threshold (0 is sigma(z) > 0.5).
  config.eval.box_grid = placeholder(int)  # None: boxes at the original image size; N: N x N grid.
  config.eval.maxboxacc = 'exact'  # 'exact' (ours) | 'wsolevaluation' (clovaai's rules exactly).
  config.eval.sweep_grid = placeholder(int)  # 'exact' MaxBoxAcc sweep: None = original size.
  config.eval.sweep_step = 0.01  # 'exact' MaxBoxAcc: spacing of the relative thresholds.
  config.eval.pointwise_tolerance = 18  # Pixels (Oquab et al. 2015).
  # The WSOL benchmark's sets ('wsol/...') are scored as wsolevaluation does, with its flags
  # (evaluation/wsol_benchmark.py): CAM thresholds every cam_curve_interval, MaxBoxAccV2's IoU
  # thresholds in percent, boxes from every contour (False: the largest only).
  config.eval.cam_curve_interval = 0.001
  config.eval.iou_threshold_list = (30, 50, 70)
  config.eval.multi_contour_eval = True
  # Map transform (models/map_transforms.py) in evaluate and localize: 'none' | 'relative' (boxes
  # keep the cells above map_expansion_threshold of each map's range) | 'erase' (test-time
  # erasing) | 'advcam' (adversarial climbing) | 'cluster' (re-activation by the trunk's features)
  # | 'affinity' (a random walk along the trunk's feature affinities) | 'guided' (the image's
  # guided filter on the upsampled maps) | 'erase+relative' | 'advcam+relative'.
  config.eval.map_expansion = 'none'
  config.eval.map_expansion_steps = 2  # 'erase': erasing passes after the first.
  # 'erase': erase where a pass's normalised map is >= this; 'relative': the boxes' level;
  # 'advcam': tau, the region held at its first value (cells above this fraction of the
  # accumulated map's maximum).
  config.eval.map_expansion_threshold = 0.5
  config.eval.map_expansion_step_size = 0.08  # 'advcam': xi, the climbing step.
  config.eval.map_expansion_weight = 7.0  # 'advcam': lambda, the restriction's weight.
  # 'advcam': T, the maps summed (the image's and T - 1 climbed ones; AdvCAM's adv_iter).
  config.eval.map_expansion_climb_steps = 27
  # 'advcam': the most classes climbed per image (its top-scoring predicted ones).
  config.eval.map_expansion_climb_classes = 2
  # 'cluster': kappa, the scale of the features' cosine difference (map_expansion_steps steps).
  config.eval.map_expansion_temperature = 10.0
  # 'affinity': beta, the power of the trunk features' cosine affinities (map_expansion_steps
  # random-walk steps).
  config.eval.map_expansion_affinity_power = 8.0
  # 'guided': the colour guided filter's window radius (px) and ridge on the image's colours.
  config.eval.map_expansion_radius = 8
  config.eval.map_expansion_eps = 0.01
  config.eval.train_box_grid = 128  # Cheap grids for the evaluations during training (not the
  config.eval.train_sweep_grid = 32  # last one, which scores as the evaluate command does).
  return config

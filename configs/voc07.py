r"""ex-CAM, ResNet-101, PASCAL VOC 2007: train on trainval, evaluate on test.

Command:
  python -m excam_jax.main --config=configs/voc07.py --workdir=runs/voc07 \
      --config.model.pretrained=/path/to/resnet101_tv_in1k.safetensors

Hardware: one GPU with >= 24 GB at batch 16, 224 px.
The data must be prepared first: python -m excam_jax.data.prepare --dataset=voc/2007 --manual_dir=DIR.
Reference (thesis Table 2, localization mAP on VOC 2007, split and protocol not stated): ex-CAM
0.69, WILDCAT 0.27.
"""

from configs import voc12


def get_config():
  """Returns the VOC 2007 configuration: VOC 2012's with the 2007 splits."""
  config = voc12.get_config()
  config.data.dataset = 'voc/2007'
  config.data.train_split = 'trainval'
  config.data.eval_split = 'test'
  return config

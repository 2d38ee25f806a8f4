"""PASCAL VOC constants: class names, tars, splits. Importable without TensorFlow."""

CLASS_NAMES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
    'tvmonitor')
TARS = {
    'voc/2007': ('VOCtrainval_06-Nov-2007.tar', 'VOCtest_06-Nov-2007.tar'),
    'voc/2012': ('VOCtrainval_11-May-2012.tar', 'VOC2012test.tar'),
}
# VOC 2007 trainval is TFDS's train + validation; VOC 2012 has no public test annotations.
SPLITS = {
    'voc/2007': {'trainval': 'train+validation', 'train': 'train', 'validation': 'validation',
                 'val': 'validation', 'test': 'test'},
    'voc/2012': {'trainval': 'train+validation', 'train': 'train', 'validation': 'validation',
                 'val': 'validation'},
}
MAX_BOXES = 64  # The most objects in one image: 42 in VOC 2007, 56 in VOC 2012.

"""Input pipelines: VOC through TFDS and the built-in synthetic "parts" data set.

Every pipeline yields batches as dicts of numpy arrays in one format, whatever the source:

  image          float32 (B, S, S, 3)  RGB, resized to S x S, ImageNet-normalised.
  label          float32 (B, C)        multi-hot; a class present only as "difficult" counts 1.
  ignore         bool    (B, C)        True where the image's only instances of c are difficult
                                       (skipped for class c in classification AP).
  boxes          float32 (B, N, 4)     ground truth, TFDS-normalised [ymin, xmin, ymax, xmax], padded.
  box_labels     int32   (B, N)        class index of each box, -1 for padding.
  box_difficult  bool    (B, N)        difficult flag of each box.
  orig_size      int32   (B, 2)        (height, width) of the original image in pixels.
  image_id       int32   (B,)          index of the example in its split (stable across runs).
  mask           float32 (B,)          1 for real examples, 0 for padding of the last eval batch.

Train batches carry at least image, label and mask.
"""

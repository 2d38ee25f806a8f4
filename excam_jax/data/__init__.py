"""Input pipelines: VOC and CUB-200-2011 ('caltech_birds2011') through TFDS, the built-in synthetic
"parts" data set and the WSOL benchmark's CUB, ILSVRC and OpenImages (wsolevaluation's metadata).

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
  class_id       int32   (B,)          single-label sets only (WSOL, caltech_birds2011): the single
                                       class (label is its one-hot); -1 in padding rows.
  object_mask    uint8   (B, S, S)     evaluation of WSOL OpenImages (1 object, 0 background, 255
                                       ignore: wsolevaluation's get_mask at S x S) and of
                                       caltech_birds2011 (1 object, 0 background; padding 0).

Train batches carry at least image, label and mask; VOC's, caltech_birds2011's and parts' carry
every field (boxes flipped with their image), WSOL's the weak labels only (image, label, ignore,
class_id, image_id, mask). N is 64 for VOC (the most objects in one image: 42 in 2007, 56 in
2012), 1 for caltech_birds2011 and 3 for parts. Padded eval examples have mask 0, box_labels -1, image_id -1 and zero images.

Modules: pipeline.py (train_batches, eval_batches, dataset_info), preprocess.py (dict -> dict ops),
voc.py (TFDS builder, offline preparation from the tars), cub_tfds.py (CUB-200-2011 through TFDS),
tfds_pipeline.py (the tf.data batches of every TFDS spec), synthetic.py (the parts data set),
wsol.py (the WSOL benchmark's data sets, read from wsolevaluation's metadata),
prepare.py (python -m excam_jax.data.prepare --dataset=voc/2007 --manual_dir=DIR, or
--dataset=caltech_birds2011).

The parts data set is rendered in memory on demand (`synthetic.Split`: an example the first time
a batch needs it, about 2.5 ms per 96-px image on one core) and kept for the process: the first
step does not wait for the whole split (about 11 s for the default 4,000 + 400 images), and the
later epochs read what the first rendered (the default run reads each image 12 times). A TFDS
builder would add a preparation step and files for no gain,
since every example is a pure function of (seed, split, index) and `synthetic.render` regenerates
any one of them with its body and part masks.
"""

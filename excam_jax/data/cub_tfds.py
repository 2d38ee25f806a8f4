r"""CUB-200-2011 through TFDS (`caltech_birds2011`, version 0.2.0): boxes and segmentation masks.

config.data.dataset = 'caltech_birds2011'. TFDS downloads the data at preparation (about 1.2 GB
from data.caltech.edu; no manual dir) into config.data.data_dir (default ~/tensorflow_datasets):

  python -m excam_jax.data.prepare --dataset=caltech_birds2011 [--data_dir=TFDS_DIR]

A run never downloads: data that is not prepared is one UserError naming that command.

Splits (config names -> TFDS splits):
  train       'train'         CUB's 5,994 training images;
  test        'test'          its 5,794 test images (report once);
  val         'train[:1000]'  the first 1,000 training images in TFDS's order, to choose settings;
  train_rest  'train[1000:]'  the other 4,994: train on train_rest when you choose on val, so
                              that no choice sees its own training images.
TFDS reads its files in a fixed order (shuffle_files=False), so val and train_rest are disjoint and
together are train; image_id is the index within the config split (train_rest's 0 is train's
1,000).

Each raw example (the format of excam_jax.data.preprocess, for data/tfds_pipeline.py) keeps the
image and the segmentation mask encoded, with one box whose label is the image's class:
  boxes          TFDS's bbox, (y/H, x/W, (y+h)/H, (x+w)/W) of bounding_boxes.txt; the pipeline adds
                 one pixel to the maxima (preprocess.from_inclusive_maxima): the box that
                 wsolevaluation's metadata lists as x0 = x, x1 = x + w inclusive.
  class_id       the label, 0..199: CUB's folder number - 1, the class ids of 'wsol/cub'.
Batches carry class_id and, in evaluation, object_mask uint8 (S, S): 1 where the mask is
>= preprocess.MASK_THRESHOLD (128), 0 elsewhere, resized nearest-neighbour. They are scored as the
WSOL benchmark's (evaluation/wsol_benchmark.py): MaxBoxAccV2 from the boxes, PxAP from the masks,
GT-known and Top-1 Loc, top-1 accuracy.

Importable without TensorFlow (constants, class names); the functions that read data load it.
"""

import os

from excam_jax.errors import UserError
from excam_jax.runtime import native

NAME = 'caltech_birds2011'
NUM_CLASSES = 200
VAL_SIZE = 1000  # The first VAL_SIZE training images are 'val'; the rest 'train_rest'.
SPLITS = ('train', 'train_rest', 'val', 'test')
# CUB-200-2011's classes.txt: the image folders, in label order (TFDS's label is the number - 1).
CLASS_NAMES = tuple('''
001.Black_footed_Albatross 002.Laysan_Albatross 003.Sooty_Albatross 004.Groove_billed_Ani
005.Crested_Auklet 006.Least_Auklet 007.Parakeet_Auklet 008.Rhinoceros_Auklet
009.Brewer_Blackbird 010.Red_winged_Blackbird 011.Rusty_Blackbird 012.Yellow_headed_Blackbird
013.Bobolink 014.Indigo_Bunting 015.Lazuli_Bunting 016.Painted_Bunting 017.Cardinal
018.Spotted_Catbird 019.Gray_Catbird 020.Yellow_breasted_Chat 021.Eastern_Towhee
022.Chuck_will_Widow 023.Brandt_Cormorant 024.Red_faced_Cormorant 025.Pelagic_Cormorant
026.Bronzed_Cowbird 027.Shiny_Cowbird 028.Brown_Creeper 029.American_Crow 030.Fish_Crow
031.Black_billed_Cuckoo 032.Mangrove_Cuckoo 033.Yellow_billed_Cuckoo 034.Gray_crowned_Rosy_Finch
035.Purple_Finch 036.Northern_Flicker 037.Acadian_Flycatcher 038.Great_Crested_Flycatcher
039.Least_Flycatcher 040.Olive_sided_Flycatcher 041.Scissor_tailed_Flycatcher
042.Vermilion_Flycatcher 043.Yellow_bellied_Flycatcher 044.Frigatebird 045.Northern_Fulmar
046.Gadwall 047.American_Goldfinch 048.European_Goldfinch 049.Boat_tailed_Grackle 050.Eared_Grebe
051.Horned_Grebe 052.Pied_billed_Grebe 053.Western_Grebe 054.Blue_Grosbeak 055.Evening_Grosbeak
056.Pine_Grosbeak 057.Rose_breasted_Grosbeak 058.Pigeon_Guillemot 059.California_Gull
060.Glaucous_winged_Gull 061.Heermann_Gull 062.Herring_Gull 063.Ivory_Gull 064.Ring_billed_Gull
065.Slaty_backed_Gull 066.Western_Gull 067.Anna_Hummingbird 068.Ruby_throated_Hummingbird
069.Rufous_Hummingbird 070.Green_Violetear 071.Long_tailed_Jaeger 072.Pomarine_Jaeger
073.Blue_Jay 074.Florida_Jay 075.Green_Jay 076.Dark_eyed_Junco 077.Tropical_Kingbird
078.Gray_Kingbird 079.Belted_Kingfisher 080.Green_Kingfisher 081.Pied_Kingfisher
082.Ringed_Kingfisher 083.White_breasted_Kingfisher 084.Red_legged_Kittiwake 085.Horned_Lark
086.Pacific_Loon 087.Mallard 088.Western_Meadowlark 089.Hooded_Merganser
090.Red_breasted_Merganser 091.Mockingbird 092.Nighthawk 093.Clark_Nutcracker
094.White_breasted_Nuthatch 095.Baltimore_Oriole 096.Hooded_Oriole 097.Orchard_Oriole
098.Scott_Oriole 099.Ovenbird 100.Brown_Pelican 101.White_Pelican 102.Western_Wood_Pewee
103.Sayornis 104.American_Pipit 105.Whip_poor_Will 106.Horned_Puffin 107.Common_Raven
108.White_necked_Raven 109.American_Redstart 110.Geococcyx 111.Loggerhead_Shrike
112.Great_Grey_Shrike 113.Baird_Sparrow 114.Black_throated_Sparrow 115.Brewer_Sparrow
116.Chipping_Sparrow 117.Clay_colored_Sparrow 118.House_Sparrow 119.Field_Sparrow
120.Fox_Sparrow 121.Grasshopper_Sparrow 122.Harris_Sparrow 123.Henslow_Sparrow
124.Le_Conte_Sparrow 125.Lincoln_Sparrow 126.Nelson_Sharp_tailed_Sparrow 127.Savannah_Sparrow
128.Seaside_Sparrow 129.Song_Sparrow 130.Tree_Sparrow 131.Vesper_Sparrow
132.White_crowned_Sparrow 133.White_throated_Sparrow 134.Cape_Glossy_Starling 135.Bank_Swallow
136.Barn_Swallow 137.Cliff_Swallow 138.Tree_Swallow 139.Scarlet_Tanager 140.Summer_Tanager
141.Artic_Tern 142.Black_Tern 143.Caspian_Tern 144.Common_Tern 145.Elegant_Tern
146.Forsters_Tern 147.Least_Tern 148.Green_tailed_Towhee 149.Brown_Thrasher 150.Sage_Thrasher
151.Black_capped_Vireo 152.Blue_headed_Vireo 153.Philadelphia_Vireo 154.Red_eyed_Vireo
155.Warbling_Vireo 156.White_eyed_Vireo 157.Yellow_throated_Vireo 158.Bay_breasted_Warbler
159.Black_and_white_Warbler 160.Black_throated_Blue_Warbler 161.Blue_winged_Warbler
162.Canada_Warbler 163.Cape_May_Warbler 164.Cerulean_Warbler 165.Chestnut_sided_Warbler
166.Golden_winged_Warbler 167.Hooded_Warbler 168.Kentucky_Warbler 169.Magnolia_Warbler
170.Mourning_Warbler 171.Myrtle_Warbler 172.Nashville_Warbler 173.Orange_crowned_Warbler
174.Palm_Warbler 175.Pine_Warbler 176.Prairie_Warbler 177.Prothonotary_Warbler
178.Swainson_Warbler 179.Tennessee_Warbler 180.Wilson_Warbler 181.Worm_eating_Warbler
182.Yellow_Warbler 183.Northern_Waterthrush 184.Louisiana_Waterthrush 185.Bohemian_Waxwing
186.Cedar_Waxwing 187.American_Three_toed_Woodpecker 188.Pileated_Woodpecker
189.Red_bellied_Woodpecker 190.Red_cockaded_Woodpecker 191.Red_headed_Woodpecker
192.Downy_Woodpecker 193.Bewick_Wren 194.Cactus_Wren 195.Carolina_Wren 196.House_Wren
197.Marsh_Wren 198.Rock_Wren 199.Winter_Wren 200.Common_Yellowthroat
'''.split())
# preprocess.prepare_example's options for these streams (data/tfds_pipeline.py).
STREAM = {'num_classes': NUM_CLASSES, 'max_boxes': 1, 'encoded': True, 'inclusive_maxima': True}
PREPARE_COMMAND = f'python -m excam_jax.data.prepare --dataset={NAME}'


def tfds_split(split):
  """The TFDS split of a config split name (module docstring)."""
  table = {'train': 'train', 'test': 'test', 'val': f'train[:{VAL_SIZE}]',
           'train_rest': f'train[{VAL_SIZE}:]'}
  if split not in table:
    raise UserError(f'{NAME} has splits {sorted(SPLITS)}; set config.data.train_split / '
                    f'config.data.eval_split to one of them, not {split!r}.')
  return table[split]


def data_dir(config):
  """The TFDS data dir of the config ('' means the TFDS default, ~/tensorflow_datasets)."""
  if config.data.data_dir:
    return os.path.expanduser(config.data.data_dir)
  native.import_tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.core.constants.DATA_DIR


def is_prepared(builder):
  """Whether the TFDS builder's prepared files exist (a seam for tests on mocked data)."""
  return builder.is_prepared()


def missing_data_message(directory, data_dir_flag=''):
  """The one sentence that names the fix when the data is not prepared in `directory`."""
  flag = f' --data_dir={data_dir_flag}' if data_dir_flag else ''
  return (f'{NAME} is not prepared in {directory}: run {PREPARE_COMMAND}{flag} (it downloads '
          'CUB-200-2011, about 1.2 GB), or set config.data.data_dir to the TFDS folder that '
          'holds it.')


def load_builder(config):
  """The prepared TFDS builder of CUB-200-2011 in config.data.data_dir.

  Raises:
    UserError: one sentence naming the prepare command when the data is not prepared.
  """
  native.import_tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with native.quiet_absl_warnings():  # TFDS's note on the empty folder it looked in.
    builder = tfds.builder(NAME, data_dir=os.path.expanduser(config.data.data_dir) or None)
    prepared = is_prepared(builder)
  if not prepared:
    raise UserError(missing_data_message(data_dir(config), config.data.data_dir))
  return builder


def _to_raw(index, example):
  """Keeps what the pipeline needs, in the raw format of `excam_jax.data.preprocess`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  label = tf.cast(example['label'], tf.int32)
  return {
      'image': example['image'],
      'segmentation_mask': example['segmentation_mask'],
      'boxes': tf.reshape(tf.cast(example['bbox'], tf.float32), [1, 4]),
      'box_labels': label[None],
      'box_difficult': tf.zeros([1], tf.bool),
      'class_id': label,
      'image_id': tf.cast(index, tf.int32),
  }


def raw_dataset(builder, split):
  """Examples of a TFDS split in a fixed order, image and mask still encoded, image_id = index.

  Returns:
    (dataset, num_examples).
  """
  native.import_tensorflow()
  from excam_jax.data import tfds_pipeline  # pylint: disable=g-import-not-at-top
  return tfds_pipeline.ordered_stream(builder, split, _to_raw, ('image', 'segmentation_mask'))


def raw_split(config, split):
  """(raw examples, count) of the config split `split` (module docstring)."""
  split = tfds_split(split)
  return raw_dataset(load_builder(config), split)


def class_names(config=None):
  """CUB's 200 class names (its image folders), without reading any data."""
  del config
  return CLASS_NAMES

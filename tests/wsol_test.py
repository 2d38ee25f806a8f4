"""Tests of the WSOL benchmark's data sets (excam_jax/data/wsol.py) on tiny generated trees in
wsolevaluation's exact layout: records, batches, OpenImages masks, bad metadata, a training run."""

import importlib
import itertools
import json
import os
import subprocess
import sys

import cv2
import numpy as np
from PIL import Image
import pytest

import cli_util
from configs import tiny
from excam_jax.training import checkpoints
from excam_jax import config_schema
from excam_jax.data import image_ops
from excam_jax.data import pipeline
from excam_jax.data import wsol
from excam_jax.errors import ConfigError, UserError
from excam_jax.evaluation import boxes as boxlib

CUB_CLASSES = ('001.Black_footed_Albatross', '002.Laysan_Albatross', '003.Sooty_Albatross')
MIDS = ('01226z', '021mn', '07j87')


def _jpeg(path, width, height, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
  Image.fromarray(pixels).save(path, quality=95)


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8) * 255).save(path)


def _write(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))  # No final newline, as wsolevaluation's files.


def _meta(root, folder, split, name):
  return os.path.join(root, 'metadata', folder, split, name)


def _box_tree(root, folder, image_id, counts):
  """CUB or ILSVRC: image i of a split is (40 + 7i) x (30 + 5i), class i % 3, box
  (4 + i, 3 + i, 19 + i, 14 + i) and, for ILSVRC's odd i, a second box (0, 0, 9, 4)."""
  for split, count in counts.items():
    ids, labels, sizes, loc = [], [], [], []
    for i in range(count):
      path, (w, h) = image_id(split, i), (40 + 7 * i, 30 + 5 * i)
      _jpeg(os.path.join(root, 'data', folder, path), w, h, seed=hash((split, i)) % 1000)
      ids.append(path)
      labels.append(f'{path},{i % 3}')
      sizes.append(f'{path},{w},{h}')
      loc.append(f'{path},{4 + i},{3 + i},{19 + i},{14 + i}')
      if folder == 'ILSVRC' and i % 2:
        loc.append(f'{path},0,0,9,4')
    for name, lines in (('image_ids', ids), ('class_labels', labels), ('image_sizes', sizes),
                        ('localization', loc)):
      _write(_meta(root, folder, split, f'{name}.txt'), lines)


def cub_tree(root, counts=(('train', 6), ('val', 3), ('test', 4))):
  _box_tree(root, 'CUB', lambda split, i: f'{CUB_CLASSES[i % 3]}/{split}_{i}.jpg', dict(counts))


def ilsvrc_tree(root):
  def image_id(split, i):
    wnid = f'n0144076{i % 3}'
    return {'train': f'train/{wnid}/{wnid}_{i}.JPEG', 'val': f'val2/{i % 3}/{i}.jpeg',
            'test': f'val/ILSVRC2012_val_{i + 1:08d}.JPEG'}[split]
  _box_tree(root, 'ILSVRC', image_id, {'train': 5, 'val': 4, 'test': 3})


# OpenImages val image 0 is 8 x 4 with two instance masks and an ignore mask (literal answers).
MASK_A = np.zeros((4, 8), bool)
MASK_A[0, :2] = True
MASK_B = np.zeros((4, 8), bool)
MASK_B[3, 7] = True
IGNORE = np.zeros((4, 8), bool)
IGNORE[:2, :4] = True
OBJECT_MASK = np.array([[1, 1, 255, 255, 0, 0, 0, 0],
                        [255, 255, 255, 255, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0, 0, 1]], np.uint8)


def openimages_tree(root):
  """Train: 4 images, labels only; val: the 8 x 4 image above and a 13 x 9 one; test: 2."""
  for split, count in (('train', 4), ('val', 2), ('test', 2)):
    ids, labels, loc = [], [], []
    for i in range(count):
      mid = MIDS[i % 3]
      path = f'{split}/{mid}/{i:016x}.jpg'
      w, h = ((8, 4) if i == 0 else (13, 9)) if split != 'train' else (30 + i, 20)
      _jpeg(os.path.join(root, 'data', 'OpenImages', path), w, h, seed=i)
      ids.append(path)
      labels.append(f'{path},{i % 3}')
      if split == 'train':
        continue
      stem = path[:-4]
      if i == 0:
        masks = [(f'{stem}_m{mid}_a.png', MASK_A), (f'{stem}_m{mid}_b.png', MASK_B)]
        ignore = IGNORE
      else:
        rng = np.random.default_rng(i)
        masks = [(f'{stem}_m{mid}_a.png', rng.random((h, w)) < 0.3)]
        ignore = rng.random((h, w)) < 0.5
      _png(os.path.join(root, 'masks', 'OpenImages', f'{stem}_ignore.png'), ignore)
      for k, (name, mask) in enumerate(masks):
        _png(os.path.join(root, 'masks', 'OpenImages', name), mask)
        loc.append(f'{path},{name},{stem + "_ignore.png" if k == 0 else ""}')
    for name, lines in (('image_ids', ids), ('class_labels', labels), ('image_sizes', []),
                        ('localization', loc)):
      _write(_meta(root, 'OpenImages', split, f'{name}.txt'), lines)


TREES = {'wsol/cub': cub_tree, 'wsol/ilsvrc': ilsvrc_tree, 'wsol/openimages': openimages_tree}


def _config(root, dataset='wsol/cub', size=32, resize=40, batch=4):
  config = tiny.get_config()
  config.data.dataset = dataset
  config.data.train_split, config.data.eval_split = 'train', 'val'
  config.data.image_size = size
  config.data.wsol.update({'data_root': str(root / 'data'), 'metadata_root': str(root / 'metadata'),
                           'mask_root': str(root / 'masks'), 'resize_size': resize})
  config.train.batch_size = config.eval.batch_size = batch
  return config


@pytest.fixture(name='tree')
def fixture_tree(tmp_path):
  """f(dataset) -> a config reading a fresh tree of that data set."""
  def make(dataset='wsol/cub', **kwargs):
    TREES[dataset](tmp_path)
    return _config(tmp_path, dataset, **kwargs)
  return make


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _same(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class TestRecords:

  def test_cub_val_records_and_the_box_conversion_by_hand(self, tree):
    config = tree()
    split = wsol.split_of(config, 'val')
    assert split.paths == [f'{CUB_CLASSES[i]}/val_{i}.jpg' for i in range(3)]
    np.testing.assert_array_equal(split.labels, [0, 1, 2])
    np.testing.assert_array_equal(split.sizes, [[30, 40], [35, 47], [40, 54]])  # (height, width)
    # Image 0 is 40 x 30, box x0,y0,x1,y1 = 4,3,19,14 (inclusive): [3/30, 4/40, 15/30, 20/40].
    np.testing.assert_allclose(split.boxes[0], [[0.1, 0.1, 0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(split.boxes[1], [[4 / 35, 5 / 47, 16 / 35, 21 / 47]], rtol=1e-6)
    # The evaluator's conversion back gives the metadata's integers.
    np.testing.assert_array_equal(boxlib.normalized_to_pixels(split.boxes[2], 40, 54),
                                  [[6, 5, 21, 16]])
    assert split.masks is None and split.max_boxes == 1

  def test_train_split_reads_weak_labels_only(self, tree):
    split = wsol.split_of(tree(), 'train')
    assert len(split.paths) == 6 and split.sizes is None and split.boxes is None
    np.testing.assert_array_equal(split.labels, [0, 1, 2, 0, 1, 2])

  def test_ilsvrc_several_boxes_per_image(self, tree):
    split = wsol.split_of(tree('wsol/ilsvrc'), 'val')
    assert [len(b) for b in split.boxes] == [1, 2, 1, 2] and split.max_boxes == 2
    np.testing.assert_allclose(split.boxes[1][1], [0, 0, 5 / 35, 10 / 47], rtol=1e-6)

  def test_openimages_mask_records(self, tree):
    split = wsol.split_of(tree('wsol/openimages'), 'val')
    stem = 'val/01226z/0000000000000000'
    assert split.masks[0] == ([(f'{stem}_m01226z_a.png', 1), (f'{stem}_m01226z_b.png', 2)],
                              (f'{stem}_ignore.png', 1))
    assert split.sizes is None and split.boxes is None

  def test_dataset_info(self, tree):
    info = pipeline.dataset_info(tree())
    assert info[:2] + info[3:] == ('wsol/cub', 200, 6, 3)
    # 3 of the 200 classes have training images here: the names fall back to class_XXX.
    assert info.class_names[:2] == ('class_000', 'class_001') and len(info.class_names) == 200

  @pytest.mark.parametrize('dataset, names', [
      ('wsol/cub', CUB_CLASSES), ('wsol/ilsvrc', ('n01440760', 'n01440761', 'n01440762')),
      ('wsol/openimages', MIDS)])
  def test_classes_are_named_by_their_training_folders(self, tmp_path, monkeypatch, dataset,
                                                       names):
    monkeypatch.setitem(wsol.DATASETS, dataset, wsol.DATASETS[dataset]._replace(num_classes=3))
    TREES[dataset](tmp_path)
    assert wsol.class_names(_config(tmp_path, dataset)) == names


class TestBatches:

  def test_train_batch_format(self, tree):
    batch = next(pipeline.train_batches(tree()))
    shapes = {k: (v.shape, v.dtype) for k, v in batch.items()}
    assert shapes == {
        'image': ((4, 32, 32, 3), np.float32), 'label': ((4, 200), np.float32),
        'ignore': ((4, 200), bool), 'class_id': ((4,), np.int32), 'image_id': ((4,), np.int32),
        'mask': ((4,), np.float32)}
    np.testing.assert_array_equal(batch['label'].argmax(1), batch['class_id'])
    np.testing.assert_array_equal(batch['label'].sum(1), 1.0)
    np.testing.assert_array_equal(batch['class_id'], batch['image_id'] % 3)

  def test_train_image_is_a_crop_of_the_resized_image_maybe_mirrored(self, tree):
    config = tree()
    batch = next(pipeline.train_batches(config))
    split = wsol.split_of(config, 'train')
    for image, i in zip(batch['image'], batch['image_id']):
      with Image.open(os.path.join(split.image_dir, split.paths[i])) as file:
        resized = np.asarray(file.convert('RGB').resize((40, 40), Image.BILINEAR))
      full = image_ops.normalize(resized / np.float32(255)).astype(np.float32)
      crops = [full[t:t + 32, l:l + 32] for t in range(9) for l in range(9)]
      assert any(np.array_equal(image, c) or np.array_equal(image, c[:, ::-1]) for c in crops)

  def test_train_batches_are_deterministic_and_resume_exactly(self, tree):
    config = tree()
    first = _take(pipeline.train_batches(config), 5)  # 6 images: the epochs' boundaries inside.
    assert all(_same(a, b) for a, b in zip(first, _take(pipeline.train_batches(config), 5)))
    assert _same(next(pipeline.train_batches(config, start_step=3)), first[3])
    halves = [next(pipeline.train_batches(config, start_step=3, process_index=p, process_count=2))
              for p in range(2)]
    assert _same({k: np.concatenate([h[k] for h in halves]) for k in halves[0]}, first[3])
    epoch = np.concatenate([b['image_id'] for b in first])[:6]
    assert sorted(epoch) == list(range(6))
    config.train.seed = 1
    assert not _same(next(pipeline.train_batches(config)), first[0])

  @pytest.mark.parametrize('dataset', sorted(TREES))
  def test_eval_batches_cover_every_example_once_with_padding_masked(self, tree, dataset):
    config = tree(dataset)
    split = wsol.split_of(config, 'val')
    n = len(split.paths)
    for process_count in (1, 2):
      batches = [list(pipeline.eval_batches(config, 'val', process_index=p,
                                            process_count=process_count))
                 for p in range(process_count)]
      rows = {k: np.concatenate([b[k] for p in batches for b in p]) for k in batches[0][0]}
      real = rows['mask'] == 1
      assert sorted(rows['image_id'][real]) == list(range(n)) and len(real) == 4
      assert (rows['image_id'][~real] == -1).all() and (rows['box_labels'][~real] == -1).all()
      assert (rows['image'][~real] == 0).all()
    batch = next(pipeline.eval_batches(config, 'val'))
    for row in range(n):
      with Image.open(os.path.join(split.image_dir, split.paths[row])) as file:
        want = np.asarray(file.convert('RGB').resize((32, 32), Image.BILINEAR))  # As torchvision.
        size = (file.height, file.width)
      np.testing.assert_array_equal(batch['image'][row],
                                    image_ops.normalize(want / np.float32(255)).astype(np.float32))
      np.testing.assert_array_equal(batch['orig_size'][row], size)
      if split.boxes is not None:
        k = len(split.boxes[row])
        np.testing.assert_array_equal(batch['boxes'][row, :k], split.boxes[row])
        assert (batch['box_labels'][row, :k] == split.labels[row]).all()
        assert (batch['box_labels'][row, k:] == -1).all()
    assert ('object_mask' in batch) == (dataset == 'wsol/openimages')

  def test_openimages_object_mask_literal(self, tree):
    """8 x 4 masks -> 32 x 32: nearest rows o // 8 and columns o // 4 (cv2's rule)."""
    batch = next(pipeline.eval_batches(tree('wsol/openimages'), 'val'))
    want = np.repeat(np.repeat(OBJECT_MASK, 8, axis=0), 4, axis=1)
    np.testing.assert_array_equal(batch['object_mask'][0], want)
    assert batch['object_mask'].dtype == np.uint8 and (batch['object_mask'][2:] == 255).all()

  def test_openimages_object_mask_is_wsolevaluations_get_mask(self, tree, tmp_path):
    """The 13 x 9 image's masks at 32 x 32, against evaluation.get_mask's OpenCV steps."""
    batch = next(pipeline.eval_batches(tree('wsol/openimages'), 'val'))
    root = tmp_path / 'masks' / 'OpenImages' / 'val' / '021mn'

    def load(name):  # wsolevaluation's load_mask_image, then > 0.5.
      image = np.float32(cv2.imread(str(root / name), cv2.IMREAD_GRAYSCALE))
      return cv2.resize(image, (32, 32), interpolation=cv2.INTER_NEAREST) > 0.5
    objects = load('0000000000000001_m021mn_a.png')
    ignore = load('0000000000000001_ignore.png') & ~objects
    np.testing.assert_array_equal(batch['object_mask'][1], objects + 255 * ignore.astype(np.uint8))
    assert 0 < objects.sum() and 0 < ignore.sum()

  def test_wsol_batches_never_load_tensorflow(self, tree):
    config = tree('wsol/openimages')
    script = ('import sys, itertools\nfrom configs import tiny\n'
              'from excam_jax.data import pipeline\n'
              'config = tiny.get_config()\nconfig.data.update(dataset="wsol/openimages", '
              'train_split="train", eval_split="val", image_size=32)\n'
              f'config.data.wsol.update({json.dumps(dict(config.data.wsol))})\n'
              'list(itertools.islice(pipeline.train_batches(config), 2))\n'
              'list(pipeline.eval_batches(config))\n'
              'print("tensorflow loaded:", "tensorflow" in sys.modules)\n')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            cwd=cli_util.REPO, env=cli_util.command_env(), timeout=120,
                            check=False)
    assert result.stdout.strip().splitlines()[-1] == 'tensorflow loaded: False', result.stderr


def _edit(root, folder, split, name, line, text):
  """Replaces line `line` (1-based) of a metadata file by `text`; None deletes it."""
  path = _meta(root, folder, split, name)
  with open(path, encoding='utf-8') as f:
    lines = f.read().split('\n')
  lines[line - 1:line] = [] if text is None else [text]
  _write(path, lines)


CUB_VAL_1 = f'{CUB_CLASSES[1]}/val_1.jpg'
OI_VAL_0 = 'val/01226z/0000000000000000'
# (dataset, split, file, line, new text (None: delete), fragments of the one error line).
BAD_METADATA = [
    ('cub', 'val', 'class_labels.txt', 2, f'{CUB_VAL_1},1,7',
     r'val/class_labels.txt, line 2: 3 comma-separated fields where <image_id>,<class_id> has 2'),
    ('cub', 'val', 'class_labels.txt', 2, f'{CUB_VAL_1},one',
     r"class_labels.txt, line 2: the class id 'one' is not an integer"),
    ('cub', 'val', 'class_labels.txt', 2, f'{CUB_VAL_1},200',
     r'class_labels.txt, line 2: the class id 200 is outside \[0, 200\)'),
    ('cub', 'train', 'class_labels.txt', 1, f'{CUB_CLASSES[0]}/train_0.jpg,-1',
     r'train/class_labels.txt, line 1: the class id -1 is outside'),
    ('cub', 'val', 'class_labels.txt', 2, None,
     r'val/image_ids.txt, line 2: 002.Laysan_Albatross/val_1.jpg has no line in .*class_labels.txt'
     r"; the metadata is truncated"),
    ('cub', 'val', 'image_sizes.txt', 3, None,
     r'val/image_ids.txt, line 3: .*val_2.jpg has no line in .*image_sizes.txt'),
    ('cub', 'val', 'image_sizes.txt', 2, f'{CUB_VAL_1},47,0',
     r'image_sizes.txt, line 2: the height 0 is outside \[1, inf\)'),
    ('cub', 'val', 'localization.txt', 2, f'{CUB_VAL_1},5,4,47,16',
     r'localization.txt, line 2: the box x0,y0,x1,y1 = 5,4,47,16 is not inside the 47 x 35 image'),
    ('cub', 'val', 'localization.txt', 2, f'{CUB_VAL_1},20,4,5,16',
     r'localization.txt, line 2: the box x0,y0,x1,y1 = 20,4,5,16 is not inside .* x0 <= x1'),
    ('cub', 'val', 'localization.txt', 2, f'{CUB_VAL_1},5,4,21',
     r'localization.txt, line 2: 4 comma-separated fields where <image_id>,<x0>,<y0>,<x1>,<y1>'),
    ('cub', 'val', 'localization.txt', 2, None,
     r'val/image_ids.txt, line 2: .* has no line in .*localization.txt'),
    ('cub', 'val', 'image_ids.txt', 2, '', r'val/image_ids.txt, line 2: an empty image_id'),
    ('openimages', 'val', 'localization.txt', 2, f'{OI_VAL_0}.jpg,{OI_VAL_0}_m01226z_b.jpg,',
     r"val/localization.txt, line 2: '.*_b.jpg' is not a PNG mask"),
    ('openimages', 'val', 'localization.txt', 2, f'{OI_VAL_0}.jpg,{OI_VAL_0}_m01226z_c.png,',
     r'localization.txt, line 2: the mask .*masks/OpenImages/val/01226z/0000000000000000_m01226z_c'
     r'.png does not exist; set config.data.wsol.mask_root'),
    ('openimages', 'val', 'localization.txt', 1, f'{OI_VAL_0}.jpg,{OI_VAL_0}_m01226z_a.png,',
     r'localization.txt, line 1: the first line of .* names no ignore mask'),
    ('openimages', 'val', 'localization.txt', 2,
     f'{OI_VAL_0}.jpg,{OI_VAL_0}_m01226z_b.png,{OI_VAL_0}_ignore.png',
     r'localization.txt, line 2: a second ignore mask'),
    ('openimages', 'test', 'localization.txt', 3, None,
     r'test/image_ids.txt, line 2: .* has no line in .*localization.txt'),
    ('openimages', 'val', 'class_labels.txt', 1, f'{OI_VAL_0}.jpg,100',
     r'class_labels.txt, line 1: the class id 100 is outside \[0, 100\)'),
]


@pytest.mark.parametrize('dataset, split, name, line, text, match', BAD_METADATA,
                         ids=[f'{c[0]}-{c[1]}-{c[2]}-{i}' for i, c in enumerate(BAD_METADATA)])
def test_bad_metadata_is_one_line_naming_file_line_and_fix(tree, tmp_path, dataset, split, name,
                                                          line, text, match):
  config = tree(f'wsol/{dataset}')
  _edit(tmp_path, wsol.DATASETS[f'wsol/{dataset}'].folder, split, name, line, text)
  with pytest.raises(UserError, match=match) as error:
    wsol.split_of(config, split)
  assert '\n' not in str(error.value) and str(error.value).endswith('.')


def test_missing_metadata_file_names_the_root_and_layout(tree, tmp_path):
  config = tree()
  os.remove(_meta(tmp_path, 'CUB', 'val', 'image_sizes.txt'))
  with pytest.raises(UserError, match=r'val/image_sizes.txt cannot be read \(No such file or '
                     r"directory\); set config.data.wsol.metadata_root to wsolevaluation's "
                     r'metadata/ folder \(<metadata_root>/<CUB\|ILSVRC\|OpenImages>'):
    pipeline.dataset_info(config)


def test_missing_evaluation_image_is_found_at_load(tree, tmp_path):
  config = tree()
  os.remove(tmp_path / 'data' / 'CUB' / CUB_CLASSES[1] / 'test_1.jpg')
  with pytest.raises(UserError, match=r'test/image_ids.txt, line 2: the image .*CUB/'
                     '002.Laysan_Albatross/test_1.jpg does not exist; set '
                     r'config.data.wsol.data_root to the folder holding CUB/<image_id> '
                     r'\(wsolevaluation.s --data_root\) or remove the line.'):
    wsol.split_of(config, 'test')


def test_missing_training_image_is_found_at_its_first_read(tree, tmp_path):
  config = tree()
  os.remove(tmp_path / 'data' / 'CUB' / CUB_CLASSES[2] / 'train_5.jpg')
  assert len(wsol.split_of(config, 'train').paths) == 6  # Not stat-ed at load.
  with pytest.raises(UserError, match=r'train/image_ids.txt, line 6: the image .*train_5.jpg '
                     'does not exist; set config.data.wsol.data_root'):
    _take(pipeline.train_batches(config), 2)


@pytest.mark.parametrize('target, match', [
    ('data/CUB/002.Laysan_Albatross/val_1.jpg',
     r'val/image_ids.txt, line 2: the image .*val_1.jpg cannot be read \(.*\); replace the file'),
    ('masks/OpenImages/val/01226z/0000000000000000_m01226z_b.png',
     r'val/localization.txt, line 2: the mask .*_b.png cannot be read \(.*\); replace the file')])
def test_unreadable_image_or_mask_is_one_line(tree, tmp_path, target, match):
  config = tree('wsol/openimages' if target.startswith('masks') else 'wsol/cub')
  (tmp_path / target).write_bytes(b'not an image')
  with pytest.raises(UserError, match=match) as error:
    list(pipeline.eval_batches(config))
  assert '\n' not in str(error.value)


def test_a_jpeg_named_png_is_not_a_mask(tree, tmp_path):
  config = tree('wsol/openimages')
  path = tmp_path / 'masks/OpenImages/val/01226z/0000000000000000_m01226z_a.png'
  Image.fromarray(MASK_A.astype(np.uint8) * 255).save(path, format='JPEG')
  with pytest.raises(UserError, match=r'line 1: the mask .*_a.png cannot be read \(a JPEG file, '
                     'not a PNG\)'):
    next(pipeline.eval_batches(config))


def test_image_size_differing_from_its_metadata(tree, tmp_path):
  config = tree()
  _edit(tmp_path, 'CUB', 'val', 'image_sizes.txt', 2, f'{CUB_VAL_1},48,35')
  with pytest.raises(UserError, match=r'val/image_sizes.txt lists .*val_1.jpg as 48 x 35, but the '
                     'image is 47 x 35; fix its line.'):
    next(pipeline.eval_batches(config))


class TestConfig:

  def test_unset_root_names_the_field_and_the_layout(self, tmp_path):
    config = _config(tmp_path)
    config.data.wsol.data_root = ''
    with pytest.raises(ConfigError, match=r"config.data.wsol.data_root='' is invalid: allowed a "
                       r"folder laid out as wsolevaluation's: <data_root>/CUB/<image_id>"):
      config_schema.validate(config)

  def test_mask_root_is_checked_for_openimages_only(self, tree):
    config = tree('wsol/openimages')
    config_schema.validate(config)
    config.data.wsol.mask_root = '/nonexistent'
    with pytest.raises(ConfigError, match=r'data.wsol.mask_root=.* <mask_root>/OpenImages/'):
      config_schema.validate(config)
    config.data.dataset = 'wsol/ilsvrc'
    with pytest.raises(ConfigError, match=r'data.wsol.data_root=.* <data_root>/ILSVRC/<image_id>'):
      config_schema.validate(config)

  def test_splits_and_resize(self, tree):
    config = tree()
    config.data.eval_split = 'validation'
    with pytest.raises(ConfigError, match=r"data.eval_split='validation' is invalid: .*'val'"):
      config_schema.validate(config)
    config.data.eval_split = 'test'
    config.data.wsol.resize_size = 16
    with pytest.raises(ConfigError, match=r'data.wsol.resize_size=16 is invalid: allowed an int'):
      config_schema.validate(config)


def test_training_run_end_to_end(tree, tmp_path):
  """python -m excam_jax.main on a CUB-layout tree: 2 steps at batch 4, then the val evaluation."""
  config = tree(batch=4)
  args = ['--config=configs/tiny.py', f'--workdir={tmp_path / "run"}',
          '--config.data.dataset=wsol/cub', '--config.data.train_split=train',
          '--config.data.eval_split=val', '--config.data.image_size=32',
          f'--config.data.wsol.data_root={config.data.wsol.data_root}',
          f'--config.data.wsol.metadata_root={config.data.wsol.metadata_root}',
          '--config.data.wsol.resize_size=40', '--config.train.batch_size=4',
          '--config.eval.batch_size=4', '--config.train.checkpoint_every_steps=2']
  code, _, lines = cli_util.run_command('excam_jax.main', *args, timeout=600,
                                        env=cli_util.training_env(str(tmp_path / 'cache')))
  assert code == 0, lines[-20:]
  assert os.path.isdir(tmp_path / 'run' / checkpoints.CHECKPOINT_DIR / '2')


@pytest.mark.parametrize('name', ['cub', 'ilsvrc', 'openimages'])
def test_benchmark_config_trains_and_evaluates_on_a_tiny_tree(tree, tmp_path, name):
  """configs/<name>.py (wsolevaluation's CAM setting) passes the checks, trains 3 steps on a
  tiny tree with sizes overridden on the command line, and `evaluate --split=test` reports the
  benchmark's scores under wsolevaluation's protocol (evaluation/wsol_benchmark.py)."""
  module = importlib.import_module(f'configs.{name}')
  dataset = f'wsol/{name}'
  config = module.get_config()
  assert (config.data.dataset, config.model.head, config.model.depth) == (dataset, 'cam', 50)
  assert (config.optim.loss, config.model.dilate, tuple(config.optim.head_rate_stages)) == (
      'softmax', False, (4,))
  assert config.optim.head_learning_rate == pytest.approx(10 * config.optim.trunk_learning_rate)
  roots = tree(dataset).data.wsol
  config.data.wsol.update(data_root=roots.data_root, metadata_root=roots.metadata_root,
                          mask_root=roots.mask_root)
  config_schema.validate(config)
  run = tmp_path / 'run'
  args = [f'--config=configs/{name}.py', f'--workdir={run}',
          f'--config.data.wsol.data_root={roots.data_root}',
          f'--config.data.wsol.metadata_root={roots.metadata_root}',
          f'--config.data.wsol.mask_root={roots.mask_root}', '--config.data.image_size=32',
          '--config.data.wsol.resize_size=40', '--config.model.depth=18', '--config.model.width=8',
          '--config.train.batch_size=2', '--config.eval.batch_size=4',
          '--config.train.num_epochs=1', '--config.train.log_every_steps=1']
  env = cli_util.training_env(str(tmp_path / 'cache'))
  code, _, lines = cli_util.run_command('excam_jax.main', *args, timeout=600, env=env)
  assert code == 0, lines[-20:]
  last = 2 if name == 'openimages' else 3  # 4 or 5-6 training images at batch 2.
  assert os.path.isdir(run / checkpoints.CHECKPOINT_DIR / str(last))
  code, out, lines = cli_util.run_command('excam_jax.evaluate', f'--workdir={run}', '--split=test',
                                          '--figures=2', timeout=600, env=env)
  assert code == 0, lines[-20:]
  folder = run / 'eval' / str(last) / 'test'
  with open(folder / 'metrics.json') as f:
    result = json.load(f)
  assert result['protocol']['name'].startswith('wsolevaluation')
  assert result['protocol']['iou_threshold_list'] == [30, 50, 70]
  headline = 'pxap' if name == 'openimages' else 'maxboxaccv2'
  assert 0 <= result[headline] <= 1 and 0 <= result['top1_accuracy'] <= 1
  assert 'classification_map' not in result and 'localization_ap' not in result
  if name != 'openimages':
    assert result['top1_loc'] <= result['gt_known_loc'] == result['maxboxaccv2_per_iou'][1]
  tables = (folder / 'tables.md').read_text()
  assert f'| {headline} |' in tables and 'Scored with: name = wsolevaluation' in tables
  assert (folder / 'boxes.png').is_file() and not (folder / 'ap_bars.png').exists()

"""excam_jax.data.sources: one table of data sets behind one interface."""

import pytest

from configs import tiny
from excam_jax import config_schema
from excam_jax.data import cub_tfds
from excam_jax.data import pipeline
from excam_jax.data import sources
from excam_jax.data import synthetic
from excam_jax.data import voc_info
from excam_jax.data import wsol
from excam_jax.errors import UserError


def test_the_table_is_the_config_vocabulary():
  assert tuple(sources.SOURCES) == config_schema.DATASETS
  assert set(sources.SOURCES) == ({'parts', 'caltech_birds2011'} | set(voc_info.TARS) |
                                  set(wsol.DATASETS))
  assert sources.BENCHMARKS == (*wsol.DATASETS, 'caltech_birds2011')


def test_splits_and_names_without_reading_data():
  config = tiny.get_config()
  assert sources.SOURCES['voc/2007'].splits(config) == voc_info.SPLITS['voc/2007']
  assert sources.SOURCES['wsol/cub'].splits(config) == ('train', 'val', 'test')
  cub = sources.SOURCES['caltech_birds2011']
  assert cub.splits(config) == ('train', 'train_rest', 'val', 'test')
  assert cub.class_names(config) == cub_tfds.CLASS_NAMES and len(cub_tfds.CLASS_NAMES) == 200
  assert tuple(sources.SOURCES['voc/2012'].class_names(config)) == voc_info.CLASS_NAMES
  parts = sources.SOURCES['parts']
  assert parts.splits(config) == synthetic.SPLITS
  assert tuple(parts.class_names(config)) == synthetic.class_names(config.data.parts.num_classes)
  assert parts.sizes(config) == (config.data.parts.num_train, config.data.parts.num_eval)


def test_dataset_info_comes_from_the_table():
  config = tiny.get_config()
  info = pipeline.dataset_info(config)
  assert (info.name, info.num_classes, info.num_train, info.num_eval) == (
      'parts', config.data.parts.num_classes, config.data.parts.num_train,
      config.data.parts.num_eval)
  assert sources.SOURCES['parts'].batches().__name__ == 'excam_jax.data.parts_pipeline'


def test_unknown_data_set_and_split_are_one_error():
  config = tiny.get_config()
  config.data.dataset = 'coco'
  with pytest.raises(UserError, match=r"must be one of \['caltech_birds2011', 'parts'"):
    pipeline.dataset_info(config)
  config = tiny.get_config()
  config.data.eval_split = 'val'
  with pytest.raises(UserError, match='parts has splits'):
    pipeline.dataset_info(config)

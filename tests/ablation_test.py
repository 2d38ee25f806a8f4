"""Ablation grids: variant configs and the results table (no training here)."""

import pytest

from configs import voc12
from excam_jax import config_schema
from experiments import ablate
from excam_jax.models import network


def test_overrides_apply_without_touching_the_base():
  base = voc12.get_config()
  config = ablate.variant_config(base, {'model.head': 'wildcat', 'model.num_maps': 2,
                                        'train.batch_size': 4})
  assert (config.model.head, config.model.num_maps, config.train.batch_size) == ('wildcat', 2, 4)
  assert (base.model.head, base.model.num_maps, base.train.batch_size) == ('excam', 8, 16)


@pytest.mark.parametrize('grid', sorted(ablate.GRIDS))
def test_every_variant_is_a_valid_config(grid):
  for overrides in ablate.GRIDS[grid].values():
    config_schema.validate_model(ablate.variant_config(voc12.get_config(), overrides))


def test_results_table():
  results = {'wildcat': {'corloc': 0.25, 'pointwise_ap': 0.5},
             'cam': {'corloc': 0.125}}
  table = ablate.results_table(results, 'methods')
  lines = table.splitlines()
  assert lines[4] == '| variant | overrides | pointwise_ap | corloc |'
  assert lines[6] == '| wildcat | model.head=wildcat | 0.500 | 0.250 |'
  assert lines[7] == '| cam | model.head=cam | - | 0.125 |'

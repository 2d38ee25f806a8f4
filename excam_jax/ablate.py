r"""The ablate command: trains one model per variant, writes a table of their final evaluations.

  excam-ablate --config=configs/synthetic.py --workdir=runs/ablation --grid=methods
  excam-ablate --config=configs/voc12.py --workdir=runs/voc12_ablation \
      --grid=num_maps --config.model.pretrained=/path/to/resnet101_tv_in1k.safetensors

Grids (each variant is a set of config overrides on top of --config):
  methods   WILDCAT, ex-CAM with self_drop True and False, ex-CAM with hard masks, ADL, CAM.
  num_maps  ex-CAM (self_drop=False) and WILDCAT at M = 1, 2, 4, 8.
  threshold ex-CAM (self_drop=False) at delta = 0.3, 0.5, 0.7 and with a learned threshold.

Each variant trains in <workdir>/<variant> (an existing run resumes or is reused as is), its last
checkpoint is evaluated (report and figures in <workdir>/<variant>/eval/), and the metrics of
every variant are written to <workdir>/results.md and results.json. On the
synthetic data set one variant takes about 9 minutes on 2 CPU cores.

Also run as `python -m excam_jax.ablate` or `python experiments/ablate.py` (the same flags).
The grids and the table are in excam_jax/ablation.py, which defines no flags: this module
defines --config and --workdir, as excam_jax.main does, so it is imported by no other module.
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from excam_jax import ablation
from excam_jax import cli
from excam_jax import config_checks
from excam_jax import files
from excam_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base configuration file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one run per variant.')
_GRID = flags.DEFINE_enum('grid', 'methods', list(ablation.GRIDS), 'Variants.')
_ONLY = flags.DEFINE_list('only', [], 'Run only these variant names.')


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --config, --workdir and --grid.')
  if _CONFIG.value is None or not _WORKDIR.value:
    raise UserError('both --config=configs/<name>.py and --workdir=DIR are required.')
  variants = ablation.GRIDS[_GRID.value]
  unknown = set(_ONLY.value) - set(variants)
  if unknown:
    raise UserError(f'unknown variants {sorted(unknown)}; choose from {sorted(variants)}.')
  chosen = {name: overrides for name, overrides in variants.items()
            if not _ONLY.value or name in _ONLY.value}
  configs = {name: ablation.variant_config(_CONFIG.value, overrides)
             for name, overrides in chosen.items()}
  for config in configs.values():  # Every variant checked before the first one trains.
    config_checks.validate(config)
  from excam_jax import train  # pylint: disable=g-import-not-at-top  # JAX.
  results = {}
  for name, config in configs.items():
    cli.LOGGER.info('== %s: %s', name, chosen[name])
    run_dir = os.path.join(_WORKDIR.value, name)
    train.train_and_evaluate(config, run_dir)  # Resumes, or does nothing, if trained.
    results[name] = ablation.final_metrics(run_dir)
  files.write_text(os.path.join(_WORKDIR.value, 'results.json'), json.dumps(results, indent=1))
  table = ablation.results_table(results, _GRID.value)
  files.write_text(os.path.join(_WORKDIR.value, 'results.md'), table)
  print(table)
  print(f'wrote {os.path.join(_WORKDIR.value, "results.md")} and results.json')


def run():
  """The excam-ablate console script."""
  cli.run(main, flags_parser=cli.parse_config_flags)


if __name__ == '__main__':
  run()

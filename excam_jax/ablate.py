"""The ablate command (`python -m excam_jax.ablate`, `excam-ablate`): experiments/ablate.py.

Kept so that the command's module name works as before; the command and its grids live with the
study's method catalogue in experiments/.
"""

from experiments.ablate import run

if __name__ == '__main__':
  run()

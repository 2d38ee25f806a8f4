"""Ablations: `python experiments/ablate.py --config=... --workdir=... --grid=...`.

The command is excam_jax/ablate.py (installed as `excam-ablate`; flags and grids are described
there); this script runs it, with the same flags, for the package installed by
`pip install -e .`.
"""

from excam_jax import ablate

if __name__ == '__main__':
  ablate.run()

"""excam-jax: weakly supervised object localization (WILDCAT, ex-CAM and variants) in JAX.

Importing the package sets the XLA:CPU flags that were measured to help on this CPU, unless the
user set them or EXCAM_XLA_DEFAULTS=0 (see `excam_jax.xla_setup`).
"""

from excam_jax import xla_setup as _xla_setup

_xla_setup.apply_default_flags()

"""excam-jax: weakly supervised object localization (WILDCAT, ex-CAM and variants) in JAX.

Importing the package configures nothing: the commands set the XLA:CPU flags measured to help on
this CPU and the compilation cache (`excam_jax.runtime.xla.configure`, called by
`excam_jax.runtime.cli.run`); a script of your own may call it first.
"""

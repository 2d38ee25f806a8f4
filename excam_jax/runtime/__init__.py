"""Runtime plumbing: the command wrapper, quiet native imports, XLA settings, file helpers."""

"""Running the commands in a subprocess and reading what the program itself printed."""

import os
import subprocess
import sys

from excam_jax.runtime import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_env(**extra):
  """The environment of a command under test: CPU only, the repository importable."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env.update(extra)
  return env


def program_lines(stderr):
  """The stderr lines the program wrote: native libraries' load-time banners left out.

  Such banners depend on the CPU (AVX-512/AMX machines print them) and are not the program's
  output; the commands filter them too (cli.filtered_native_stderr), this only makes the tests
  independent of any banner that escapes that filter.
  """
  return [line for line in stderr.splitlines() if line.strip() and not cli.native_noise(line)]


def run_command(module, *args, env=None, timeout=300, cwd=REPO, prefix=()):
  """Runs `python -m module args...`; returns (exit status, stdout, program stderr lines)."""
  result = subprocess.run([*prefix, sys.executable, '-m', module, *args], cwd=cwd,
                          env=env or command_env(), capture_output=True, text=True,
                          timeout=timeout)
  return result.returncode, result.stdout, program_lines(result.stderr)


def assert_one_error_line(code, lines, *fragments):
  """Exit status 1 (or the given one), exactly one stderr line `error: ...` holding fragments."""
  assert code != 0, lines
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


def training_env(cache):
  """A training command's environment: a shared persistent compilation cache, and unoptimised
  XLA:CPU code (the same numbers in every run, far less compile time)."""
  return command_env(JAX_COMPILATION_CACHE_DIR=cache,
                     JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                     JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
                     XLA_FLAGS='--xla_backend_optimization_level=0')


def same_arrays(tree_a, tree_b):
  """Whether two nested dicts of arrays are equal bit for bit (structure, dtypes, values)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if jax.tree.structure(tree_a) != jax.tree.structure(tree_b):
    return False
  return all(a.dtype == b.dtype and np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))

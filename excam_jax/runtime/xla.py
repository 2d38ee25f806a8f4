"""XLA settings the package makes before JAX starts: CPU flags and the compilation cache.

Both are measured choices (experiments/PERFORMANCE.md) and both give way to the user:

* `default_cpu_flags()`: XLA:CPU flags appended to XLA_FLAGS by the commands (`configure()`, which
  `runtime.cli.run` calls; importing the package changes nothing), only for a flag the user has not set, only where it was measured to help, and only while JAX's
  backends are not yet initialised (XLA reads XLA_FLAGS once, when the first backend starts).
  EXCAM_XLA_DEFAULTS=0 turns this off. The flags affect XLA:CPU only: on a GPU host they change
  nothing on the GPU.
* `enable_compilation_cache()`: JAX's persistent compilation cache, so that a second run of the
  same model (a resumed run, an evaluation, the next seed) does not compile again. It lives in
  $EXCAM_CACHE_DIR, else $XDG_CACHE_HOME/excam_jax/xla, else ~/.cache/excam_jax/xla; a
  JAX_COMPILATION_CACHE_DIR the user set wins, EXCAM_CACHE_DIR=off turns it off, and a cache
  folder that cannot be written is skipped with a debug log, never an error.
"""

import logging
import os
import sys

_LOG = logging.getLogger(__name__)

# The YNNPACK fusion setting: on an AVX2 CPU without AVX-512, leaving single convolutions out
# of YNNPACK made the default model's train step 1.41x faster with the same first-step loss;
# on an AVX-512 CPU it did not help (PERFORMANCE.md), so it is not set there.
YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
_OFF = ('0', 'false', 'no', 'off')


def _cpu_flags():
  """The CPU's feature flags (Linux /proc/cpuinfo); an empty set where it cannot be read."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except OSError:
    pass
  return set()


def default_cpu_flags(cpu_flags=None):
  """The XLA:CPU flags that help on this CPU: a list of '--name=value' strings."""
  cpu_flags = _cpu_flags() if cpu_flags is None else cpu_flags
  if 'avx2' in cpu_flags and 'avx512f' not in cpu_flags:
    return [YNN_FLAG]
  return []


def _backends_started():
  """Whether JAX has started a backend in this process (then XLA_FLAGS is read already)."""
  bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(getattr(bridge, '_backends', None))


def apply_default_flags(environ=None, cpu_flags=None):
  """Appends `default_cpu_flags()` to environ['XLA_FLAGS'] where the user set none of them.

  Returns the flags added (an empty list when turned off, too late, or nothing applies).
  """
  environ = os.environ if environ is None else environ
  if environ.get('EXCAM_XLA_DEFAULTS', '1').strip().lower() in _OFF or _backends_started():
    return []
  current = environ.get('XLA_FLAGS', '')
  names = {part.split('=', 1)[0] for part in current.split()}
  added = [flag for flag in default_cpu_flags(cpu_flags) if flag.split('=', 1)[0] not in names]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current.strip()] + added).strip()
  return added


def cache_dir(environ=None):
  """Where the compilation cache lives, or None when it is turned off."""
  environ = os.environ if environ is None else environ
  chosen = environ.get('EXCAM_CACHE_DIR', '').strip()
  if chosen.lower() in _OFF:
    return None
  if chosen:
    return os.path.expanduser(chosen)
  base = environ.get('XDG_CACHE_HOME', '').strip() or os.path.join('~', '.cache')
  return os.path.join(os.path.expanduser(base), 'excam_jax', 'xla')


def _writable(folder):
  """Whether the cache folder can be made and written (a debug log line when not)."""
  try:
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f'.probe-{os.getpid()}')
    with open(probe, 'w', encoding='utf-8'):
      pass
    os.remove(probe)
  except OSError as err:
    _LOG.debug('compilation cache off: %s is not writable (%s).', folder, err)
    return False
  return True


def enable_compilation_cache(environ=None):
  """Turns on JAX's persistent compilation cache; returns its folder or None (off/unusable)."""
  environ = os.environ if environ is None else environ
  import jax  # pylint: disable=g-import-not-at-top
  if environ.get('JAX_COMPILATION_CACHE_DIR'):
    return environ['JAX_COMPILATION_CACHE_DIR']  # JAX reads the user's own setting.
  folder = cache_dir(environ)
  if folder is None:
    return None
  if not _writable(folder):
    return None
  jax.config.update('jax_compilation_cache_dir', folder)
  # Cache every program that took at least a second to compile, whatever its size.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return folder


def _cache_by_environment(environ):
  """enable_compilation_cache before JAX is imported: JAX reads these variables at import, so a
  command can set the cache up without loading JAX before it has checked its arguments."""
  if environ.get('JAX_COMPILATION_CACHE_DIR'):
    return environ['JAX_COMPILATION_CACHE_DIR']
  folder = cache_dir(environ)
  if folder is None or not _writable(folder):
    return None
  environ['JAX_COMPILATION_CACHE_DIR'] = folder
  environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '1.0')
  environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
  return folder


def configure(environ=None):
  """What a command does before its JAX work: the default CPU flags, then the compilation cache
  (through JAX's environment variables when JAX is not imported yet, so nothing loads JAX here).

  Returns (the flags added, the cache folder or None).
  """
  environ = os.environ if environ is None else environ
  added = apply_default_flags(environ)
  if 'jax' in sys.modules:
    return added, enable_compilation_cache(environ)
  return added, _cache_by_environment(environ)

"""What every command shares: config files, logging, quiet native imports, one-line errors.

A command's user sees its own messages only: progress, what it wrote, and on failure one line
`error: ...` with a non-zero exit status. Library logs (JAX, Orbax, absl) stay below WARNING
unless --verbosity is given; TensorFlow's import-time banners, which native code writes straight
to file descriptor 2 on some CPUs, are filtered out of what reaches the terminal.
"""

import errno
import importlib.util
import logging
import os
import re
import signal
import sys
import threading
import traceback

from absl import app
from absl import flags
from absl import logging as absl_logging

from excam_jax.runtime import native
from excam_jax.runtime import xla
from excam_jax.errors import Stopped, UserError

LOGGER = logging.getLogger('excam_jax')

# Exit statuses of a run stopped by a signal (128 + signal number), as shells report them.
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM
native_noise = native.native_noise  # The commands' names for these.
filtered_native_stderr = native.filtered_native_stderr
import_tensorflow = native.import_tensorflow


# ---------------------------------------------------------------------------------------------
# Logging.

class _TerminalHandler(logging.StreamHandler):
  """Writes the package's own messages to stderr without breaking a tqdm progress bar."""

  def emit(self, record):
    try:
      import tqdm  # pylint: disable=g-import-not-at-top  # Loaded already wherever a bar runs.
      tqdm.tqdm.write(self.format(record), file=sys.stderr)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def _library_filter(explicit):
  """Keeps checkpoint-library internals (Orbax, asyncio) off stderr unless --verbosity is set.

  Their failures reach the user as the command's own one-line error; the details are for
  --verbosity=0 (or higher).
  """
  def keep(record):
    if explicit:
      return True
    internal = '/orbax/' in record.pathname or record.name.startswith(('asyncio', 'orbax'))
    return not internal
  return keep


def _log_thread_exception(args):
  LOGGER.debug('background thread %s failed: %s', getattr(args.thread, 'name', '?'),
               ''.join(traceback.format_exception(args.exc_type, args.exc_value,
                                                  args.exc_traceback)))


def setup_logging():
  """Quiet by default: the package says INFO, libraries WARNING; --verbosity raises both."""
  explicit = flags.FLAGS['verbosity'].present
  verbosity = flags.FLAGS['verbosity'].value
  if not explicit:
    absl_logging.set_verbosity(absl_logging.WARNING)
  handler = absl_logging.get_absl_handler()
  handler.python_handler.addFilter(_library_filter(explicit))
  logging.captureWarnings(True)
  LOGGER.handlers[:] = []
  own = _TerminalHandler()
  own.setFormatter(logging.Formatter('%(message)s'))
  LOGGER.addHandler(own)
  LOGGER.propagate = False
  LOGGER.setLevel(logging.DEBUG if explicit and verbosity >= 1 else logging.INFO)
  threading.excepthook = _log_thread_exception


# ---------------------------------------------------------------------------------------------
# Config files.

def load_config_file(path):
  """Checks that `path` is a loadable config file whose get_config() returns a ConfigDict.

  Raises:
    UserError: the file is missing, has a syntax error, fails to import or has no get_config.
  """
  hint = 'pass --config=configs/<name>.py (see configs/).'
  if not os.path.isfile(path):
    raise UserError(f'config file {path} not found; {hint}')
  try:
    with open(path, 'rb') as f:
      source = f.read()
    code = compile(source, path, 'exec')
  except SyntaxError as err:
    raise UserError(f'config file {path} has a syntax error at line {err.lineno}: {err.msg}; '
                    'fix the file.') from err
  except OSError as err:
    raise UserError(f'cannot read config file {path} ({err.strerror}); {hint}') from err
  spec = importlib.util.spec_from_loader('_excam_config_check', loader=None)
  module = importlib.util.module_from_spec(spec)
  module.__file__ = path
  try:
    exec(code, module.__dict__)  # pylint: disable=exec-used
    if not callable(getattr(module, 'get_config', None)):
      raise UserError(f'config file {path} defines no get_config() function; {hint}')
    config = module.get_config()
  except UserError:
    raise
  except Exception as err:  # pylint: disable=broad-except  # Any fault of the user's file.
    where = traceback.extract_tb(err.__traceback__)[-1]
    raise UserError(f'config file {path} failed to load ({type(err).__name__}: {err}, at '
                    f'{os.path.basename(where.filename)} line {where.lineno}); fix the file.'
                    ) from err
  if not hasattr(config, 'to_dict'):
    raise UserError(f'get_config() in {path} returned {type(config).__name__}, not an '
                    f'ml_collections.ConfigDict; {hint}')
  return config


def config_path(argv):
  """The value of --config=PATH (or --config PATH) in argv, or None."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _override_named(argv, key):
  """The --config.* argument that names `key` (for the error message), or the key itself."""
  for arg in argv:
    if arg.startswith('--config.') and key in arg.split('=')[0].split('.'):
      return arg
  return key


def parse_config_flags(argv):
  """Parses a command line with --config: a bad file, flag or field is a one-line UserError."""
  path = config_path(argv)
  if path:
    load_config_file(path)
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as err:
    raise UserError(f'{" ".join(str(err).split())}; the fields and their allowed values are in '
                    'configs/voc12.py.') from err
  except (AttributeError, KeyError) as err:  # config_flags: an override of an unknown field.
    names = re.findall(r'[A-Za-z_]\w*', str(err))
    key = names[0] if names else str(err)
    hint = re.search(r'Did you mean "(\w+)"', str(err))
    hint = f' (did you mean {hint.group(1)!r}?)' if hint else ''
    raise UserError(f'unknown config field {key!r} in {_override_named(argv, key)}{hint}; '
                    'the fields are listed in configs/voc12.py.') from err
  return remaining


def parse_plain_flags(argv):
  """Parses a command line without --config; a bad flag value is a one-line UserError."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    raise UserError(f'{" ".join(str(err).split())}; see --help.') from err


# ---------------------------------------------------------------------------------------------
# Running a command.

def describe_os_error(err):
  """One sentence for an OSError that escaped (disk full, permissions, read-only file system)."""
  where = f' {err.filename}' if getattr(err, 'filename', None) else ''
  if err.errno == errno.ENOSPC:
    return (f'the disk is full (writing{where}); free some space or choose a --workdir on '
            'another disk; the last completed checkpoint is intact.')
  if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return f'permission denied writing{where} ({err.strerror}); choose a writable location.'
  return f'{err.strerror or err} ({where.strip() or "no file named"}); check that path.'


def fail(message, code=1, prefix='error'):
  """Prints `prefix: message` as one line on stderr and ends the process with `code` at once.

  os._exit, after flushing: a failed write can leave a library's background threads (Orbax's
  asynchronous checkpointing) that would otherwise keep the interpreter from exiting.
  """
  message = ' '.join(str(message).split())
  try:
    sys.stdout.flush()
    print(f'{prefix}: {message}', file=sys.stderr, flush=True)
  finally:
    os._exit(code)  # pylint: disable=protected-access


def _parser_with_errors(parser):
  def parse(argv):
    try:
      return parser(argv)
    except UserError as err:
      fail(err)
  return parse


def run(main, flags_parser=parse_plain_flags, configure_jax=True):
  """Runs `main(argv)` as a command: flags parsed, logging set, every fault one line.

  `configure_jax`: the XLA:CPU flags and the compilation cache are set first (`runtime.xla`);
  a command that runs no JAX (prepare) leaves them alone.
  """
  def wrapped(argv):
    setup_logging()
    if configure_jax:
      xla.configure()
    try:
      code = main(argv)
    except UserError as err:
      fail(err)
    except Stopped as stop:
      fail(stop, stop.exit_code, prefix='stopped')
    except KeyboardInterrupt:
      fail('interrupted; nothing was lost that the command had written.', EXIT_SIGINT)
    except OSError as err:
      if err.errno not in (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT):
        raise
      fail(describe_os_error(err))
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code or 0)
  app.run(wrapped, argv=sys.argv, flags_parser=_parser_with_errors(flags_parser))

"""The one exception type that carries a message meant for the user."""

import sys


class UserError(Exception):
  """A problem the user can fix (config, data, files); its message names the fix.

  Command-line entry points catch it, print the message on one line and exit non-zero.
  """


def exit_with(error):
  """Prints a UserError as one line on stderr and exits with status 1."""
  print(f'error: {error}', file=sys.stderr)
  sys.exit(1)


class ConfigError(UserError, ValueError):
  """An invalid configuration value; the message names the field and the allowed values."""


def check_field(ok, field, value, allowed):
  """Raises ConfigError "config.<field>=<value> is invalid: allowed <allowed>." unless ok."""
  if not ok:
    raise ConfigError(f'config.{field}={value!r} is invalid: allowed {allowed}.')


class Stopped(Exception):
  """A run stopped by a signal after saving its state; the message says how to resume."""

  def __init__(self, message, exit_code):
    super().__init__(message)
    self.exit_code = exit_code

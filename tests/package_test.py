"""The installable package: pyproject's console scripts, what a wheel holds, the installed command.

The set-up installs the checkout with `pip install -e .`; these tests fail where it was skipped.
"""

import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import cli_util

REPO = cli_util.REPO
SCRIPTS = {
    'excam-train': 'excam_jax.main:run',
    'excam-evaluate': 'excam_jax.evaluate:run',
    'excam-localize': 'excam_jax.localize:console_main',
    'excam-prepare': 'excam_jax.data.prepare:run',
    'excam-ablate': 'excam_jax.ablate:run',
}
# Files a built wheel must hold: the package, its subpackages, the configs package and the
# oneDNN extension's source (compiled on first use).
WHEEL_FILES = ('excam_jax/runtime/cli.py', 'excam_jax/models/resnet.py', 'excam_jax/data/prepare.py',
               'excam_jax/evaluation/evaluator.py', 'configs/__init__.py', 'configs/voc12.py',
               'excam_jax/models/onednn_conv.cc', 'experiments/study.py', 'experiments/grids.py')


def _pyproject():
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)


def _requirements():
  """requirements.txt without its comments and blank lines: the package's dependencies."""
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    return [line.strip() for line in f if line.strip() and not line.strip().startswith('#')]


def _normalized(requirement):
  """A pin with its project name normalized as in wheel metadata (PEP 503), marker kept."""
  pin, _, marker = requirement.partition(';')
  name, version = pin.strip().split('==')
  return re.sub(r'[-_.]+', '-', name).lower() + '==' + version + (
      '; ' + marker.strip() if marker else '')


def test_console_scripts_point_at_importable_callables():
  scripts = _pyproject()['project']['scripts']
  assert scripts == SCRIPTS
  # One process per command: each defines its own global absl flags (--workdir in several).
  for name, target in scripts.items():
    module, attr = target.split(':')
    check = (f'import importlib; f = getattr(importlib.import_module({module!r}), {attr!r}); '
             'assert callable(f), f')
    result = subprocess.run([sys.executable, '-c', check], cwd=REPO, env=cli_util.command_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (name, cli_util.program_lines(result.stderr))


def test_dependencies_are_the_pinned_requirements():
  project = _pyproject()
  assert project['project']['dynamic'] == ['dependencies']
  assert project['tool']['setuptools']['dynamic']['dependencies'] == {
      'file': ['requirements.txt']}
  # Exact pins; a platform marker only where a wheel exists for some platforms alone (oneDNN).
  assert all(re.fullmatch(r'[A-Za-z0-9_.\-]+==[\w.+]+(; [\w .="]+)?', r) for r in _requirements())


def test_wheel_holds_the_packages_and_the_commands(tmp_path):
  # Built from a copy: a build in the checkout would leave build/ there (and reuse stale files).
  source = tmp_path / 'src'
  ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
  for name in ('excam_jax', 'configs', 'experiments'):
    shutil.copytree(os.path.join(REPO, name), source / name, ignore=ignore)
  for name in ('pyproject.toml', 'requirements.txt'):
    shutil.copy(os.path.join(REPO, name), source / name)
  # The virtualenv's setuptools when it has one (no download); else pyproject's pinned one.
  isolation = ['--no-build-isolation'] if importlib.util.find_spec('setuptools') else []
  result = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps', '--disable-pip-version-check',
       *isolation, '-w', str(tmp_path / 'dist'), str(source)],
      capture_output=True, text=True, timeout=180)
  assert result.returncode == 0, result.stderr[-3000:]
  wheels = os.listdir(tmp_path / 'dist')
  assert len(wheels) == 1 and wheels[0].startswith('excam_jax-0.2.0-py3-none-any'), wheels
  with zipfile.ZipFile(tmp_path / 'dist' / wheels[0]) as wheel:
    names = set(wheel.namelist())
    for path in WHEEL_FILES:
      assert path in names, path
    assert not any(n.startswith(('tests/', 'docs/')) for n in names)
    assert not any(n.startswith('experiments/results/') for n in names)  # Only the code ships.
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read('excam_jax-0.2.0.dist-info/entry_points.txt').decode())
    metadata = wheel.read('excam_jax-0.2.0.dist-info/METADATA').decode()
  assert dict(entry_points['console_scripts']) == SCRIPTS
  required = re.findall(r'^Requires-Dist: (.*)$', metadata, re.M)
  # Sorted: setuptools lists the requirements with a marker last.
  assert sorted(map(_normalized, required)) == sorted(map(_normalized, _requirements()))


def test_installed_command_gives_one_error_line(tmp_path):
  script = os.path.join(sysconfig.get_path('scripts'), 'excam-evaluate')
  if not os.path.isfile(script):
    script = shutil.which('excam-evaluate')
  assert script, 'excam-evaluate is not installed: run `pip install -e .` (the README set-up).'
  # Outside the checkout and without PYTHONPATH: the installed package itself answers.
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['JAX_PLATFORMS'] = 'cpu'
  result = subprocess.run([script, '--workdir=/nonexistent'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
  lines = cli_util.program_lines(result.stderr)
  cli_util.assert_one_error_line(result.returncode, lines, '/nonexistent')
  assert result.returncode == 1
  assert result.stdout == ''

"""The command line: bad input gives one line on stderr that names the problem, and exit status 1."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  result = subprocess.run([sys.executable, '-m', 'excam_jax.main', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  return result.returncode, result.stderr.strip().splitlines()


@pytest.mark.parametrize('override, message', [
    ('--config.foo=3', "unknown config field 'foo' in --config.foo=3"),
    ('--config.model.nummaps=3',
     "unknown config field 'nummaps' in --config.model.nummaps=3 (did you mean 'num_maps'?)"),
    ('--config.batch_size=abc', 'flag --config.batch_size=abc: invalid literal for int()'),
])
def test_command_line_errors_are_one_line(tmp_path, override, message):
  code, lines = run_main('--config=configs/tiny.py', f'--workdir={tmp_path}', override)
  assert code == 1
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], lines


def test_missing_config_file(tmp_path):
  code, lines = run_main('--config=configs/nope.py', f'--workdir={tmp_path}')
  assert code == 1 and len(lines) == 1
  assert 'configs/nope.py' in lines[0] and 'No such file' in lines[0]


def test_invalid_value_names_the_field(tmp_path):
  code, lines = run_main('--config=configs/tiny.py', f'--workdir={tmp_path / "w"}',
                         '--config.schedule=linear')
  assert code == 1 and len(lines) == 1
  assert lines[-1].startswith('error: config.schedule=') and "'linear' is invalid" in lines[-1]
  assert not os.path.exists(tmp_path / 'w')  # Nothing written for a bad config.


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  code, lines = run_main('--config=configs/tiny.py', f'--workdir={blocker / "run"}')
  assert code == 1 and len(lines) == 1
  assert lines[-1].startswith('error: cannot write to workdir') and 'file/run' in lines[-1]

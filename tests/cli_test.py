"""Tests of excam_jax.runtime.cli: native banners filtered from fd 2, config files, one-line failures."""

import os
import subprocess
import sys

import pytest

import cli_util
from excam_jax.runtime import cli
from excam_jax.errors import UserError

# Banners seen on AVX-512/AMX and AVX2 machines when TensorFlow loads.
BANNERS = [
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',
    'I0000 00:00:1796160493.647760    2316 port.cc:153] oneDNN custom operations are on. You may '
    'see slightly different numerical results due to floating-point round-off errors.',
    'I0000 00:00:1796160493.647760    2316 cpu_feature_guard.cc:227] This TensorFlow binary is '
    'optimized to use available CPU instructions in performance-critical operations.',
    'To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow '
    'with the appropriate compiler flags.',
    'W0000 00:00:1796160493.6 17 some_file.cc:12] a native warning',
]
KEPT = ['E0000 00:00:1796160493.6 17 some_file.cc:12] a native error', 'Traceback (most recent',
        'plain text', 'ValueError: boom']


def test_native_noise_recognises_banners_only():
  assert all(cli.native_noise(line) for line in BANNERS)
  assert not any(cli.native_noise(line) for line in KEPT)


RUNNER = """
import os, sys
from excam_jax.runtime import cli
lines = sys.argv[1:]
try:
  with cli.filtered_native_stderr():
    os.write(2, ('\\n'.join(lines) + '\\n').encode())
    print('python stderr inside', file=sys.stderr)
    raise ValueError('raised inside')
except ValueError as err:
  print(f'caught {err}')
print('after', file=sys.stderr)
"""


def test_filtered_native_stderr_replays_everything_but_banners():
  """Writes on fd 2 itself (as native code does), then raises: only the banners are gone."""
  result = subprocess.run([sys.executable, '-c', RUNNER, *BANNERS, *KEPT], capture_output=True,
                          text=True, env=cli_util.command_env(), check=True)
  assert result.stdout == 'caught raised inside\n'
  assert result.stderr.splitlines() == [*KEPT, 'python stderr inside', 'after']


def test_tensorflow_loads_without_its_banners():
  """Whatever this CPU makes TensorFlow print, none of the known banners reach stderr."""
  result = subprocess.run([sys.executable, '-c', 'from excam_jax.runtime import cli; '
                           'tf = cli.import_tensorflow(); print(tf.__name__)'],
                          capture_output=True, text=True, env=cli_util.command_env(), check=True)
  assert result.stdout == 'tensorflow\n'
  assert not any(cli.native_noise(line) for line in result.stderr.splitlines()), result.stderr


class TestLoadConfigFile:

  def test_loads_a_good_file(self):
    config = cli.load_config_file('configs/tiny.py')
    assert config.data.dataset == 'parts'

  @pytest.mark.parametrize('text, message', [
      ('def get_config(:\n', 'has a syntax error at line 1'),
      ('import no_such_module_x\n', "No module named 'no_such_module_x'"),
      ('def get_config():\n  return {}["k"]\n', "failed to load (KeyError: 'k', at"),
      ('y = 2\n', 'defines no get_config() function'),
  ])
  def test_bad_files(self, tmp_path, text, message):
    path = tmp_path / 'c.py'
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace('(', r'\(').replace(')', r'\)')
                       .replace('[', r'\[').replace(']', r'\]')):
      cli.load_config_file(str(path))

  def test_missing_file(self, tmp_path):
    with pytest.raises(UserError, match='not found'):
      cli.load_config_file(str(tmp_path / 'nope.py'))


def test_config_path():
  assert cli.config_path(['prog', '--config=a.py', '--x']) == 'a.py'
  assert cli.config_path(['prog', '--config', 'b.py']) == 'b.py'
  assert cli.config_path(['prog', '--config.model.head=x']) is None


def test_fail_prints_one_line_and_exits_at_once():
  """cli.fail ends the process even when a non-daemon thread would keep it alive."""
  runner = ('import threading, time\nfrom excam_jax.runtime import cli\n'
            'threading.Thread(target=time.sleep, args=(600,)).start()\n'
            'print("partial output", end="")\n'
            'cli.fail("something went\\n wrong", 7)\n')
  result = subprocess.run([sys.executable, '-c', runner], capture_output=True, text=True,
                          env=cli_util.command_env(), timeout=60, check=False)
  assert result.returncode == 7
  assert result.stdout == 'partial output'  # Flushed before the exit.
  assert result.stderr == 'error: something went wrong\n'


def test_interrupted_command_exits_130_in_one_line(tmp_path):
  script = tmp_path / 'fake_command.py'
  script.write_text('from excam_jax.runtime import cli\n'
                    'def main(argv):\n  raise KeyboardInterrupt\n'
                    'cli.run(main)\n')
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=cli_util.command_env(), timeout=60, check=False)
  assert result.returncode == 130
  assert cli_util.program_lines(result.stderr) == [
      'error: interrupted; nothing was lost that the command had written.']


def test_disk_full_escaping_a_command_is_one_line(tmp_path):
  script = tmp_path / 'fake_command.py'
  script.write_text('import errno\nfrom excam_jax.runtime import cli\n'
                    'def main(argv):\n'
                    '  raise OSError(errno.ENOSPC, "No space left on device", "/data/x")\n'
                    'cli.run(main)\n')
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=cli_util.command_env(), timeout=60, check=False)
  assert result.returncode == 1
  lines = cli_util.program_lines(result.stderr)
  assert len(lines) == 1 and lines[0].startswith('error: the disk is full (writing /data/x)')
  assert os.path.exists(script)


def test_a_parts_run_and_its_evaluation_never_load_tensorflow(tmp_path):
  runner = ('import sys\nfrom configs import tiny\nfrom excam_jax import train\n'
            'from excam_jax import checkpoint_eval\n'
            'config = tiny.get_config()\nconfig.train.num_epochs = 1\n'
            'train.train_and_evaluate(config, sys.argv[1])\n'
            'checkpoint_eval.evaluate_checkpoint(sys.argv[1], figures=1, workers=0)\n'
            'print("tensorflow loaded:", "tensorflow" in sys.modules)\n')
  result = subprocess.run([sys.executable, '-c', runner, str(tmp_path / 'run')],
                          capture_output=True, text=True, cwd=cli_util.REPO,
                          env=cli_util.training_env(str(tmp_path / 'cache')), timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == 'tensorflow loaded: False'
  assert os.path.isfile(tmp_path / 'run' / 'eval' / '4' / 'metrics.json')

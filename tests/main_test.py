"""The train and ablate commands on bad input: one stderr line naming the fix, exit status 1,
nothing written. Each row of the README's bad-input table for these commands is a case here."""

import os

import pytest

import cli_util

CONFIG_CASES = [
    # (overrides, fragments of the one error line)
    (['--config.foo=3'], ["unknown config field 'foo' in --config.foo=3"]),
    (['--config.model.nummaps=3'],
     ["unknown config field 'nummaps' in --config.model.nummaps=3 (did you mean 'num_maps'?)"]),
    (['--config.train.batch_size=abc'], ['flag --config.train.batch_size=abc: invalid literal for int()']),
    (['--config.optim.schedule=linear'], ["config.optim.schedule='linear' is invalid", "'constant'"]),
    (['--config.model.head=gradcam'], ["config.model.head='gradcam' is invalid"]),
    (['--config.model.num_maps=0'], ['config.model.num_maps=0 is invalid: allowed an int >= 1']),
    (['--config.model.kmax=1.5'], ['config.model.kmax=1.5 is invalid', 'whole count']),
    (['--config.model.drop_threshold=1.5'], ['config.model.drop_threshold=1.5 is invalid']),
    (['--config.optim.momentum=1.0'], ['config.optim.momentum=1.0 is invalid']),
    (['--config.optim.head_learning_rate=nan'], ['config.optim.head_learning_rate=nan is invalid']),
    (['--config.data.image_size=100'], ['config.data.image_size=100 is invalid', 'multiple of 32']),
    (['--config.data.dataset=coco'], ["config.data.dataset='coco' is invalid", "'voc/2007'"]),
    (['--config.data.eval_split=val'], ["config.data.eval_split='val' is invalid", 'a split of parts']),
    (['--config.data.parts.num_train=0'], ['config.data.parts.num_train=0 is invalid']),
    (['--config.data.parts.num_eval=0'], ['config.data.parts.num_eval=0 is invalid']),
    (['--config.data.parts.preset=huge'], ["config.data.parts.preset='huge' is invalid"]),
    (['--config.model.pretrained=/no/such.safetensors'], ["config.model.pretrained='/no/such.safetensors'",
                                                    'existing .safetensors or .npz']),
    (['--config.optim.diversity_loss=cosine', '--config.model.head=cam'],
     ["config.optim.diversity_loss='cosine' is invalid"]),
    (['extra_argument'], ["unexpected arguments ['extra_argument']"]),
]


# The ablation's variant (wildcat) sets model.head itself, so those rows are for main only.
CASES = [('excam_jax.main', *case) for case in CONFIG_CASES] + [
    ('ablate', *case) for case in CONFIG_CASES if not any('model.head' in o for o in case[0])]


@pytest.mark.parametrize('command, overrides, fragments', CASES,
                         ids=[f'{c[0]} {" ".join(c[1])}' for c in CASES])
def test_bad_config_values_are_one_line_and_write_nothing(tmp_path, command, overrides,
                                                           fragments):
  workdir = tmp_path / 'run'
  args = ['--config=configs/tiny.py', f'--workdir={workdir}', *overrides]
  if command == 'ablate':
    code, _, lines = cli_util.run_command('experiments.ablate', '--grid=methods',
                                          '--only=wildcat', *args)
  else:
    code, _, lines = cli_util.run_command(command, *args)
  cli_util.assert_one_error_line(code, lines, *fragments)
  assert code == 1
  assert not os.path.exists(workdir)


BAD_FILES = {
    'syntax.py': ('def get_config(:\n', ['has a syntax error at line 1']),
    'raises.py': ('def get_config():\n  raise ValueError("boom")\n',
                  ['failed to load (ValueError: boom, at raises.py line 2)']),
    'bad_import.py': ('import no_such_module_here\n',
                      ["ModuleNotFoundError: No module named 'no_such_module_here'"]),
    'no_get_config.py': ('x = 1\n', ['defines no get_config() function']),
    'not_a_config.py': ('def get_config():\n  return 3\n', ['returned int, not an']),
}


@pytest.mark.parametrize('name', sorted(BAD_FILES))
def test_bad_config_files_are_one_line(tmp_path, name):
  text, fragments = BAD_FILES[name]
  (tmp_path / name).write_text(text)
  code, _, lines = cli_util.run_command('excam_jax.main', f'--config={tmp_path / name}',
                                        f'--workdir={tmp_path / "run"}')
  cli_util.assert_one_error_line(code, lines, f'config file {tmp_path / name}'
                                 if 'returned' not in fragments[0] else name, *fragments)
  assert not os.path.exists(tmp_path / 'run')


def test_missing_config_file_and_flags(tmp_path):
  code, _, lines = cli_util.run_command('excam_jax.main', '--config=configs/nope.py',
                                        f'--workdir={tmp_path}')
  cli_util.assert_one_error_line(code, lines, 'config file configs/nope.py not found')
  code, _, lines = cli_util.run_command('excam_jax.main', '--config=configs/tiny.py')
  cli_util.assert_one_error_line(code, lines, '--workdir=DIR are required')
  code, _, lines = cli_util.run_command('excam_jax.main', f'--workdir={tmp_path}', '--bogus=1')
  cli_util.assert_one_error_line(code, lines, 'Unknown command line flag')


def test_workdir_that_is_a_file_or_not_writable(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  code, _, lines = cli_util.run_command('excam_jax.main', '--config=configs/tiny.py',
                                        f'--workdir={blocker / "run"}')
  cli_util.assert_one_error_line(code, lines, 'cannot write to workdir', 'file/run')
  locked = tmp_path / 'readonly'
  locked.mkdir()
  os.chmod(locked, 0o555)
  prefix = (['setpriv', '--bounding-set=-dac_override,-dac_read_search,-fowner']
            if os.geteuid() == 0 else [])
  code, _, lines = cli_util.run_command('excam_jax.main', '--config=configs/tiny.py',
                                        f'--workdir={locked}', prefix=prefix)
  cli_util.assert_one_error_line(code, lines, 'cannot write to workdir', 'Permission denied')
  assert os.listdir(locked) == []


def test_batch_not_divisible_by_the_devices(tmp_path):
  env = cli_util.command_env(XLA_FLAGS='--xla_force_host_platform_device_count=3')
  code, _, lines = cli_util.run_command('excam_jax.main', '--config=configs/tiny.py',
                                        f'--workdir={tmp_path / "run"}', env=env)
  cli_util.assert_one_error_line(code, lines, 'config.train.batch_size=8 is invalid',
                                 'a multiple of the 3 devices')
  assert not os.path.exists(tmp_path / 'run')


def test_evaluate_flag_errors(tmp_path, write_tiny_checkpoint):
  write_tiny_checkpoint(tmp_path / 'run', 2)
  run = f'--workdir={tmp_path / "run"}'
  (tmp_path / 'a_file').write_text('x')
  cases = [
      ([], '--workdir=DIR (the directory of a training run) is required'),
      ([f'--workdir={tmp_path / "none"}'], 'no checkpoints in'),
      ([run, '--step=7'], 'no checkpoint at step 7'),
      ([run, '--step=-1'], '--step=-1 is invalid'),
      ([run, '--figures=-2'], '--figures=-2 is invalid'),
      ([run, '--workers=-1'], '--workers=-1 is invalid'),
      ([run, '--split=nope'], "has splits ['test', 'train', 'validation']"),
      ([run, f'--compare={tmp_path / "missing.json"}'], 'missing.json not found'),
      ([run, f'--output={tmp_path / "a_file"}'], 'is a file, not a directory'),
      ([run, f'--output={tmp_path / "a_file" / "out"}'], 'cannot write to'),
      ([run, '--step=abc'], "flag --step=abc: invalid literal"),
  ]
  for args, fragment in cases:
    code, _, lines = cli_util.run_command('excam_jax.evaluate', *args)
    cli_util.assert_one_error_line(code, lines, fragment)
  assert not os.path.exists(tmp_path / 'run' / 'eval')  # Nothing computed, nothing written.


def test_prepare_flag_errors(tmp_path):
  (tmp_path / 'a_file').write_text('x')
  cases = [
      (['--dataset=coco'],
       "--dataset must be 'voc/2007', 'voc/2012', 'caltech_birds2011' or 'parts', not 'coco'"),
      (['--dataset=voc/2007', f'--manual_dir={tmp_path / "none"}'], 'is not a folder'),
      (['--dataset=voc/2007', f'--data_dir={tmp_path / "a_file" / "tfds"}'],
       'cannot be written'),
      (['extra'], "unexpected arguments ['extra']"),
  ]
  for args, fragment in cases:
    code, _, lines = cli_util.run_command('excam_jax.data.prepare', *args)
    cli_util.assert_one_error_line(code, lines, fragment)
  code, stdout, lines = cli_util.run_command('excam_jax.data.prepare', '--dataset=parts')
  assert code == 0 and lines == [] and 'nothing to prepare' in stdout

"""experiments/diagnose_maps.py: the failure kinds and the region means on literal maps."""

import numpy as np
import pytest

from experiments import diagnose_maps

S = 32  # Side of the literal images; maps at the same size upsample to themselves.


def _example():
  """One object of class 1: body rows/cols 8..23, its part the 4x4 corner 8..11 (disjoint)."""
  body = np.zeros((1, S, S), bool)
  body[0, 8:24, 8:24] = True
  part = np.zeros((1, S, S), bool)
  part[0, 8:12, 8:12] = True
  body &= ~part
  return {'image': np.zeros((S, S, 3), np.uint8), 'labels': np.array([1], np.int32),
          'boxes': np.array([[8 / S, 8 / S, 24 / S, 24 / S]], np.float32),
          'body_masks': body, 'part_masks': part}


def _maps(positive, inside=2.0, outside=-1.0):
  """(S, S, 3) maps: class 1 `inside` on the `positive` slices, `outside` elsewhere; the absent
  classes 0 and 2 at -3."""
  maps = np.full((S, S, 3), -3.0, np.float32)
  maps[..., 1] = outside
  if positive is not None:
    maps[positive + (1,)] = inside
  return maps


@pytest.mark.parametrize('positive, kind', [
    ((slice(8, 24), slice(8, 24)), 'hit'),            # The object's own box.
    ((slice(0, S), slice(0, S)), 'too_large'),        # 1024 px against 256: 4x.
    ((slice(8, 12), slice(8, 12)), 'too_small'),      # The part only: 16 px, 1/16.
    ((slice(0, 8), slice(24, 32)), 'too_small'),      # 64 px away from it: size decides first.
    ((slice(16, 32), slice(16, 32)), 'misplaced'),    # Same size, IoU 64/448 < 0.5.
    (None, 'no_box')])
def test_each_sample_kind(positive, kind):
  z, kinds = diagnose_maps.diagnose([_example()], [_maps(positive)], num_classes=3)
  assert kinds == dict(dict.fromkeys(diagnose_maps.KINDS, 0), **{kind: 1})
  assert len(z['part']) == 1 and len(z['absent_background']) == 2


def test_region_means_by_hand():
  # Class 1 at +2 on its body's box (part included), -1 elsewhere.
  z, _ = diagnose_maps.diagnose([_example()], [_maps((slice(8, 24), slice(8, 24)))], 3)
  assert z['part'] == [pytest.approx(2.0)]
  assert z['body'] == [pytest.approx(2.0)]
  assert z['near'] == [pytest.approx(-1.0)] and z['far'] == [pytest.approx(-1.0)]
  assert z['absent_on_objects'] == [pytest.approx(-3.0)] * 2
  # A map that rises linearly along x: the part (cols 8..11) means 9.5, the body without its
  # part: rows 8..11 keep cols 12..23 (sum 210), rows 12..23 cols 8..23 (sum 248), so
  # (4 * 210 + 12 * 248) / (4 * 12 + 12 * 16) = 3816 / 240 = 15.9.
  ramp = np.broadcast_to(np.arange(S, dtype=np.float32)[None, :, None], (S, S, 3)).copy()
  z, _ = diagnose_maps.diagnose([_example()], [ramp], 3)
  assert z['part'] == [pytest.approx(9.5)]
  assert z['body'] == [pytest.approx(15.9)]


def test_table_fractions():
  results = {'m': (2, {r: [1.0, np.nan] for r in diagnose_maps.REGIONS},
                   {'hit': 3, 'too_large': 1, 'too_small': 0, 'misplaced': 0, 'no_box': 0})}
  lines = diagnose_maps.table(results).splitlines()
  assert lines[2] == '| m | 2 | 4 | 1.00 | 1.00 | 1.00 | 1.00 | 0.75 | 0.25 | 0.00 | 0.00 | 0.00 |'

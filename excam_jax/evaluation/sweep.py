"""MaxBoxAcc threshold sweeps: per (image, class) sample, the IoU at every relative threshold.

Two protocols, named in config.eval.maxboxacc and in metrics.json's "protocol":
  exact           ours: the class map upsampled bilinearly to the original image size (or, for
                  the cheap in-training evaluations, to a square working grid whose box edges
                  are mapped back to original pixels), min-max normalised, thresholded at
                  tau in {0, step, ..., < 1}, 8-connected components, boxes in original pixels.
  wsolevaluation  clovaai/wsolevaluation's rules exactly (see wsolevaluation.py): CAM resized to
                  224 x 224 (cubic), uint8 thresholds every 0.001, OpenCV contours, ground truth
                  resized to 224.
Both give (v1, v2), each (P, T): the IoU of the largest component's (contour's) box and the best
IoU over all components' boxes, at each of the T thresholds; metrics.MaxBoxAcc accumulates them.
"""

import numpy as np

from excam_jax import config_schema
from excam_jax.evaluation import boxes as boxlib
from excam_jax.evaluation import metrics
from excam_jax.evaluation import wsolevaluation

PROTOCOLS = config_schema.MAXBOXACC


def grid_maps(maps, grid, heights, widths):
  """Upsamples maps (P, h, w) for labelling: [(indices, stack)] covering the P maps.

  With a grid, one (arange(P), (P, grid, grid)) stack; with grid None, each map at its image's
  original size, maps of equally sized images stacked together (one labelling call per size).
  """
  if grid is not None:
    return [(np.arange(len(maps)), boxlib.upsample(maps, grid, grid))]
  sizes = np.stack([np.asarray(heights), np.asarray(widths)], axis=1).astype(np.int64)
  out = []
  for size in np.unique(sizes, axis=0):
    index = np.flatnonzero((sizes == size).all(axis=1))
    out.append((index, boxlib.upsample(maps[index], int(size[0]), int(size[1]))))
  return out


def pair_iou(pred, truth_boxes, truth_valid):
  """IoU (K, N) of each predicted box (K, 4) with its truth boxes (K, N, 4); -1 where invalid."""
  iou = metrics.broadcast_iou(pred[:, None, :], truth_boxes)
  return np.where(truth_valid, iou, -1.0)


def best_iou(pred, truth_boxes, truth_valid):
  """IoU of each predicted box with its best valid truth box, 0 when it has none -> (K,)."""
  iou = pair_iou(pred, truth_boxes, truth_valid)
  return np.maximum(iou.max(axis=1), 0.0) if iou.shape[1] else np.zeros(len(pred))


def second_peak(stack):
  """Per map (P, H, W): the highest local maximum other than the first global argmax.

  A local maximum is a pixel with no strictly greater 8-neighbour. Above this level every
  superlevel set {f > tau} is one 8-connected component: from any of its pixels a path of strictly
  increasing neighbours stays in the set and can only end at the global argmax. Returns -inf for
  a map whose only local maximum is its argmax.
  """
  num, height, width = stack.shape
  padded = np.pad(stack, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  neighbours = np.full(stack.shape, -np.inf, dtype=stack.dtype)
  for dy in (0, 1, 2):
    for dx in (0, 1, 2):
      if (dy, dx) != (1, 1):
        np.maximum(neighbours, padded[:, dy:dy + height, dx:dx + width], out=neighbours)
  peaks = (stack >= neighbours).reshape(num, -1)
  peaks[np.arange(num), stack.reshape(num, -1).argmax(axis=1)] = False
  return np.where(peaks, stack.reshape(num, -1), -np.inf).max(axis=1)


def _sweep_components(stack, taus):
  """Components of {stack[p] > tau} for every (tau, p): (tau index, p, area, grid boxes).

  Slots above the map's second peak hold one component, its box is the mask's extent: only the
  other slots are labelled (exact; see second_peak).
  """
  level = second_peak(stack)
  tau_l, pair_l = np.nonzero(taus[:, None] < level[None, :])
  comps = boxlib.components(stack[pair_l] > taus[tau_l, None, None])
  tau_s, pair_s = np.nonzero(taus[:, None] >= level[None, :])
  rows = stack.max(axis=2)[pair_s] > taus[tau_s, None]
  cols = stack.max(axis=1)[pair_s] > taus[tau_s, None]
  found = rows.any(axis=1)
  rows, cols, tau_s, pair_s = rows[found], cols[found], tau_s[found], pair_s[found]
  last_row, last_col = rows.shape[1] - 1, cols.shape[1] - 1
  single = np.stack([cols.argmax(axis=1), rows.argmax(axis=1),
                     last_col - cols[:, ::-1].argmax(axis=1),
                     last_row - rows[:, ::-1].argmax(axis=1)], axis=1)
  return (np.concatenate([tau_l[comps.map_index], tau_s]),
          np.concatenate([pair_l[comps.map_index], pair_s]),
          np.concatenate([comps.area, np.ones(len(tau_s), np.int64)]),
          np.concatenate([comps.boxes, single]).reshape(-1, 4))


def exact_ious(maps, heights, widths, gt, valid, taus, grid):
  """IoUs of the MaxBoxAcc sweep for P maps (P, h, w) of (image, ground-truth class) samples.

  Args:
    maps: (P, h, w) class maps; heights, widths: (P,) original image sizes.
    gt, valid: (P, N, 4) pixel boxes of each sample's class and their validity.
    taus: (T,) relative thresholds; grid: working grid side (None: original size).

  Returns:
    (v1, v2), each (P, T): the IoU of the largest component's box (v1) and the best IoU over
    all components' boxes (v2) at each tau; 0 where no component exists.
  """
  num_pairs, num_taus = len(maps), len(taus)
  parts = []
  for index, stack in grid_maps(maps, grid, heights, widths):
    tau, pair, area, boxes = _sweep_components(boxlib.normalize_minmax(stack), taus)
    pair = index[pair]
    pix = boxlib.grid_boxes_to_pixels(boxes, stack.shape[1], stack.shape[2], heights[pair],
                                      widths[pair]).reshape(-1, 4)
    parts.append((tau, pair, area, pix))
  tau, pair, area, pix = (np.concatenate(x) for x in zip(*parts))
  iou = best_iou(pix, gt[pair], valid[pair])
  v2 = np.zeros((num_taus, num_pairs))
  np.maximum.at(v2, (tau, pair), iou)
  # The largest component of each (tau, pair) slot: sort by slot, then by area descending.
  slot = tau * num_pairs + pair
  order = np.lexsort((np.arange(len(area)), -area, slot))
  first = np.ones(len(order), dtype=bool)
  first[1:] = slot[order][1:] != slot[order][:-1]
  v1 = np.zeros(num_taus * num_pairs)
  v1[slot[order][first]] = iou[order][first]
  return v1.reshape(num_taus, num_pairs).T, v2.T




def wsolevaluation_ious(maps, heights, widths, gt, valid, taus):
  """The same (v1, v2) under clovaai/wsolevaluation's rules (taus: its CAM thresholds)."""
  v1 = np.zeros((len(maps), len(taus)))
  v2 = np.zeros((len(maps), len(taus)))
  for p, (cam, height, width) in enumerate(zip(maps, heights, widths)):
    scoremap = wsolevaluation.resize_and_normalize(np.asarray(cam, np.float64))
    truth = wsolevaluation.resize_gt_boxes(gt[p][valid[p]] + [0, 0, 1, 1],
                                           (int(width), int(height)))
    v1[p] = wsolevaluation.best_iou_per_threshold(scoremap, truth, taus, multi_contour=False)
    v2[p] = wsolevaluation.best_iou_per_threshold(scoremap, truth, taus, multi_contour=True)
  return v1, v2


def sample_ious(protocol, maps, heights, widths, gt, valid, taus, grid):
  """(v1, v2) of P samples under `protocol` ('exact' or 'wsolevaluation')."""
  if protocol == 'wsolevaluation':
    return wsolevaluation_ious(maps, heights, widths, gt, valid, taus)
  return exact_ious(maps, heights, widths, gt, valid, taus, grid)

"""The evaluation report: what each metric's protocol is, reference numbers, markdown tables.

Every table names how its numbers were scored (the Protocol of evaluator.py, also written to
metrics.json as "protocol"); reference numbers carry their source, split and protocol, so a
number measured on one split or protocol is never shown as if comparable with another.
"""

import json
import math
import os

import numpy as np

from excam_jax.data import voc_info
from excam_jax.errors import UserError
from excam_jax.evaluation.evaluator import nanmean

METRICS = {
    'classification_map': 'VOC classification AP (non-interpolated; difficult-only images '
                          'skipped per class), mean over classes',
    'localization_ap': 'VOC detection AP, all-point (VOC 2010+): components of z_c > threshold '
                       'for predicted classes, score sigma(s_c), IoU > 0.5 (+1 pixels), difficult '
                       'ignored, duplicates false positives',
    'localization_ap_07': 'the same detections, VOC 2007 11-point AP',
    'pointwise_ap': 'pointwise localization AP (Oquab et al. 2015): argmax of the upsampled map '
                    'inside a box of the class enlarged by the tolerance',
    'corloc': 'CorLoc: largest component of z_c > threshold, IoU >= 0.5, over the images '
              'holding a non-difficult object of the class',
    'maxboxacc': 'MaxBoxAcc (Choe et al. 2020): min-max normalised map, largest component, '
                 'IoU >= 0.5, best threshold; protocol "exact" or "wsolevaluation"',
    'maxboxaccv2': 'MaxBoxAccV2: all components (contours under wsolevaluation), IoU >= {0.3, '
                   '0.5, 0.7} averaged, best threshold per IoU',
    'expansion': 'area(largest box) / area(best-overlapping ground-truth box) for correctly '
                 'classified positives',
    'parts_body_coverage': 'parts data set: fraction of body pixels where z_c > 0',
    'parts_part_coverage': 'parts data set: fraction of part pixels where z_c > 0',
    'parts_background_activation': 'parts data set: fraction of background pixels where z_c > 0',
    'parts_map_precision': 'parts data set: fraction of pixels with z_c > 0 on objects of class c',
    'pxap': 'PxAP (Choe et al. 2020, wsolevaluation MaskEvaluator): raw map resized to the image '
            'with cv2 INTER_CUBIC, min-max normalised, area under the pixel precision-recall '
            'curve over thresholds in steps of 0.001, pixels of all (image, class) samples '
            'pooled; parts data set: object = body and part of the class, difficult objects '
            "ignored; OpenImages: the ground-truth class's map, wsolevaluation's masks",
    'mean_class_pxap': 'PxAP within each class (the same rule), mean over classes',
    'top1_loc': "Top-1 Loc: top-1 class right and the ground-truth class map's box with IoU >= "
                "0.5 at GT-known Loc's best threshold",
    'gt_known_loc': "GT-known Loc: the ground-truth class map's box with IoU >= 0.5 at the best "
                    'threshold (MaxBoxAcc at IoU 0.5 with the same boxes)',
    'top1_accuracy': "top-1 classification accuracy: the largest logit is the image's class",
}
# The WSOL benchmark's published numbers: clovaai/wsolevaluation's README main table (Choe et
# al., "Evaluating WSOL Right", its latest arXiv version): test split, percent, the last
# checkpoint of runs whose hyperparameters were tuned on the val split (train-fullsup).
_CAM = 'wsolevaluation README main table, test split, CAM: '
VOC_CLASSES = voc_info.CLASS_NAMES

# Per-class reference values in VOC class order: metric -> {column name: values}.
PER_CLASS_REFERENCES = {
    'voc/2012': {
        'localization_ap': {
            'ex-CAM (thesis T1, protocol not stated)': [0.8, 0.81, 0.74, 0.7, 0.27, 0.76, 0.44, 0.84, 0.46, 0.65, 0.88,
                                   0.73, 0.81, 0.9, 0.71, 0.58, 0.32, 0.77, 0.49, 0.5],
            'WILDCAT (thesis T1, protocol not stated)': [0.61, 0.45, 0.16, 0.59, 0.29, 0.75, 0.28, 0.52, 0.76, 0.59,
                                    0.63, 0.77, 0.62, 0.56, 0.59, 0.29, 0.55, 0.55, 0.77, 0.28]},
        'pointwise_ap': {
            'ex-CAM (thesis T3, VOC 2012 val)': [1.0, 0.89, 0.87, 0.88, 0.58, 0.76, 0.73, 0.89, 0.87, 0.89, 0.89,
                                   0.75, 0.9, 0.95, 0.98, 0.78, 0.92, 0.83, 0.96, 0.6]}},
    'voc/2007': {
        'localization_ap_07': {
            'ex-CAM (thesis T2, protocol not stated)': [0.79, 0.82, 0.74, 0.57, 0.26, 0.72, 0.67, 0.84, 0.52, 0.68, 0.81,
                                   0.76, 0.9, 0.84, 0.68, 0.49, 0.61, 0.83, 0.82, 0.47],
            'WILDCAT (thesis T2, protocol not stated)': [0.18, 0.36, 0.3, 0.05, 0.16, 0.25, 0.55, 0.29, 0.34, 0.03, 0.16,
                                    0.41, 0.3, 0.4, 0.72, 0.2, 0.07, 0.27, 0.12, 0.3]}},
}

SUMMARY_REFERENCES = {
    'voc/2012': {
        'classification_map': 'WILDCAT paper (ResNet-101, multi-scale), VOC 2012 test: 93.4',
        'localization_ap': 'thesis Table 1, split and protocol not stated: ex-CAM 0.70 (its '
                           'per-class values average 0.658), WILDCAT 0.53; above every published '
                           'weakly supervised detector under the VOC detection protocol (best '
                           'about 0.585 mAP), so not that protocol',
        'pointwise_ap': 'thesis Table 4, VOC 2012 validation (pointwise protocol of Oquab et al.): '
                        'Deep MIL 74.5, ProNet 77.7, WS Localization 79.7, WILDCAT 82.9, ex-CAM '
                        '85 (Table 3 averages 0.846)'},
    'voc/2007': {
        'classification_map': 'WILDCAT paper (ResNet-101, multi-scale), VOC 2007 test: 95.0',
        'localization_ap_07': 'thesis Table 2, split and protocol not stated: ex-CAM 0.69, '
                              'WILDCAT 0.27',
        'corloc': 'weakly supervised detection, VOC 2007 trainval (not test): OICR (VGG16) '
                  '60.6, PCL 67.2'},
    'wsol/cub': {'maxboxaccv2': _CAM + 'ResNet50 63.0, VGG16 63.7, InceptionV3 56.7 (mean 61.1)'},
    'wsol/ilsvrc': {'maxboxaccv2': _CAM + 'ResNet50 63.7, VGG16 60.0, InceptionV3 63.4 '
                                          '(mean 62.4)'},
    'wsol/openimages': {'pxap': _CAM + 'ResNet50 58.5, VGG16 58.3, InceptionV3 63.2 (mean 60.0)'},
    # CUB through TFDS: its test split is the same 5,794 images as wsolevaluation's CUB test.
    'caltech_birds2011': {'maxboxaccv2': _CAM + 'ResNet50 63.0, VGG16 63.7, InceptionV3 56.7 '
                                                '(mean 61.1; their CUB test, the same images)'},
}


def _cell(value, digits=3):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return 'n/a'
  return f'{value:.{digits}f}'


def protocol_line(protocol):
  """The scoring settings of a result as one sentence (metrics.json "protocol")."""
  return 'Scored with: ' + '; '.join(f'{k} = {v}' for k, v in protocol.items()) + '.'


def markdown_report(result, class_names, dataset, split, step):
  """Markdown tables of an evaluation result: a summary and a per-class table.

  Every table states its protocol (result['protocol'] when present); for VOC the thesis's and
  WILDCAT's reference figures stand beside ours, labelled with their split and protocol. Other
  data sets have no reference figures.
  """
  refs = SUMMARY_REFERENCES.get(dataset, {})
  lines = [f'# Evaluation: {dataset}, split {split!r}, step {step}', '',
           f'{result["num_examples"]} examples. Values are fractions (references as published).']
  if 'protocol' in result:
    lines += ['', protocol_line(result['protocol'])]
  lines += ['', '## Summary', '', '| metric | protocol | ours | reference |',
            '| --- | --- | --- | --- |']
  for key, protocol in METRICS.items():
    if key in result:
      lines.append(f'| {key} | {protocol} | {_cell(result[key])} | {refs.get(key, "-")} |')
  if 'maxboxacc_threshold' in result:
    lines += ['', f'Best relative thresholds: MaxBoxAcc {result["maxboxacc_threshold"]:.2f}; '
              f'MaxBoxAccV2 {", ".join(f"{t:.2f}" for t in result["maxboxaccv2_thresholds"])}.']
  if 'loc_threshold' in result:  # The WSOL benchmark (evaluation/wsol_benchmark.py).
    ious = result.get('protocol', {}).get('iou_threshold_list', ())
    name, label = (('maxboxaccv2', 'MaxBoxAccV2') if 'maxboxaccv2' in result else
                   ('maxboxacc', 'MaxBoxAcc'))
    at = zip(ious, result[f'{name}_per_iou'], result[f'{name}_thresholds'])
    lines += ['', f'{label} at IoU ' + ', '.join(
        f'{d}%: {_cell(a)} (CAM threshold {t:.3f})' for d, a, t in at) +
              f'; GT-known and Top-1 Loc at CAM threshold {result["loc_threshold"]:.3f}.']
  per_class = dict(result['per_class'])
  if 'per_class_pxap' in result:
    per_class['pxap'] = result['per_class_pxap']
  columns = list(per_class)
  references = PER_CLASS_REFERENCES.get(dataset, {})
  extra = [(metric, name, values) for metric, named in references.items()
           for name, values in named.items() if metric in per_class]
  named = {**METRICS, 'classification_ap': METRICS['classification_map'],
           'pxap': METRICS['mean_class_pxap']}
  lines += ['', '## Per class', '', 'Protocols: ' + '; '.join(
      f'{k}: {named.get(k, k)}' for k in columns) + '.', '']
  header = ['class'] + columns + [f'{name} [{metric}]' for metric, name, _ in extra]
  lines += ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  for c, name in enumerate(class_names):
    row = [name] + [_cell(per_class[k][c]) for k in columns]
    row += [_cell(values[c], 2) for _, _, values in extra]
    lines.append('| ' + ' | '.join(row) + ' |')
  means = ['mean of classes'] + [_cell(nanmean(per_class[k])) for k in columns]
  means += [_cell(float(np.mean(values)), 3) for _, _, values in extra]
  lines.append('| ' + ' | '.join(means) + ' |')
  return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------
# Restore and evaluate (the body of `python -m excam_jax.evaluate`).

def jsonable(value):
  """Converts numpy values to Python ones and NaN to None (JSON has no NaN)."""
  if isinstance(value, dict):
    return {k: jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [jsonable(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return None if math.isnan(value) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def bar_metric(dataset):
  """The per-class metric of the AP bar figure and of --compare: VOC 2007 reports the 11-point
  AP; the WSOL benchmark's sets GT-known Loc (boxes) or PxAP (OpenImages)."""
  return {'voc/2007': 'localization_ap_07', 'wsol/cub': 'gt_known_loc',
          'wsol/ilsvrc': 'gt_known_loc', 'wsol/openimages': 'pxap',
          'caltech_birds2011': 'gt_known_loc'}.get(dataset, 'localization_ap')


def load_compare(path, num_classes, metric='localization_ap'):
  """(run name, per-class `metric` values) from another run's metrics.json."""
  try:
    with open(path) as f:
      values = json.load(f)['per_class'][metric]
  except (OSError, ValueError, KeyError, TypeError) as err:
    raise UserError(f'--compare={path} is not a readable metrics.json ({err}); pass the '
                    'metrics.json that `python -m excam_jax.evaluate` wrote for the other run.'
                   ) from err
  if len(values) != num_classes:
    raise UserError(f'--compare={path} has {len(values)} classes and this run {num_classes}: '
                    'compare runs on the same data set.')
  # <workdir>/eval/<step>/metrics.json is named after its workdir.
  parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
  name = parts[-4] if len(parts) >= 4 and parts[-3] == 'eval' else path
  return name, [float('nan') if v is None else float(v) for v in values]



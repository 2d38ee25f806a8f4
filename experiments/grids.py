"""The one catalogue of methods: what each is (config overrides), what it searches when tuned,
which it controls or inherits from, and the ablation grids of `experiments/ablate.py`.

Used by the study (experiments/study.py: cells, tuning, the report's comparisons), the claim
(experiments/claim.py) and the ablate command; nothing here runs anything.
"""

_EXCAM = {'model.head': 'excam', 'model.self_drop': False}
# name -> config overrides (field -> value).
METHODS = {
    'cam': {'model.head': 'cam'},
    'wildcat': {'model.head': 'wildcat'},
    # Control: the class-wise max over the M maps instead of the mean. With M = 2, delta = 0.5
    # and self_drop=False ex-CAM's class map is positive exactly where max(F1, F2) is.
    'wildcat_max': {'model.head': 'wildcat', 'model.class_pooling': 'max'},
    'excam': dict(_EXCAM),
    # Controls of ex-CAM's mechanism: hard masks (no straight-through gradient), delta 0.7
    # (the max identity no longer holds), more maps (a sequential mechanism covers more).
    'excam_hard': dict(_EXCAM, **{'model.straight_through': False}),
    'excam_d07': dict(_EXCAM, **{'model.drop_threshold': 0.7}),
    'excam_m4': dict(_EXCAM, **{'model.num_maps': 4}),
    'excam_m8': dict(_EXCAM, **{'model.num_maps': 8}),
    'excam_selfdrop': {'model.head': 'excam', 'model.self_drop': True},
    # ex-CAM on a CAM base (the thesis's section 3.7): each class map's global average as its
    # score (model.spatial_pooling='gap'), no pooling knob.
    'excam_gap': dict(_EXCAM, **{'model.spatial_pooling': 'gap'}),
    # Candidate: ex-CAM with four maps and the bounded (cosine) form of the thesis's map diversity
    # loss (section 3.8.1), which pushes a class's maps apart.
    'excam_m4_div': dict(_EXCAM, **{'model.num_maps': 4, 'optim.diversity_loss': 'cosine'}),
    # Candidate: ex-CAM whose threshold is learned per class (initialised at logit(delta)).
    'excam_learned': dict(_EXCAM, **{'model.learn_threshold': 'per_class'}),
    # Candidate: WILDCAT with BAS's foreground generator (Wu, Zhai and Cao, CVPR 2022): a second
    # 1x1 conv, on the trunk's stage before the last as BAS's, whose maps localize, trained to
    # hold the classifier's activation (background ratio, weight 1 as BAS's) in the smallest
    # area (area weight tuned).
    'wildcat_bas': {'model.head': 'wildcat', 'model.map_generator': True,
                    'model.map_generator_stage': 3, 'optim.background_weight': 1.0},
    # The same with the ratio's gradient kept from the classifier: WILDCAT's training stays
    # WILDCAT's and the generator learns to hold its activation (top-k pooling leaves nothing
    # to stop the classifier from shrinking its activation into a collapsed foreground).
    'wildcat_bas_detached': {'model.head': 'wildcat', 'model.map_generator': True,
                             'model.map_generator_stage': 3, 'optim.background_weight': 1.0,
                             'optim.background_detach': True},
    'adl': {'model.head': 'adl'},
    'acol': {'model.head': 'acol'},
    # ACoL's training, its fused map on the logit scale (mean of A's and B's z): boxes at z > 0
    # instead of its relative rule.
    'acol_zero': {'model.head': 'acol', 'model.acol_fusion': 'logits'},
    'acol_excam': {'model.head': 'acol', 'model.acol_head': 'excam', 'model.self_drop': False},
    'wildcat_erase': {'model.head': 'wildcat', 'eval.map_expansion': 'erase'},
    # WILDCAT's maps boxed by ACoL's relative rule (above half of each map's range).
    'wildcat_relative': {'model.head': 'wildcat', 'eval.map_expansion': 'relative'},
    # Adversarial climbing as published (AdvCAM) on WILDCAT's trainings; then the relative rule.
    'wildcat_advcam': {'model.head': 'wildcat', 'eval.map_expansion': 'advcam'},
    'wildcat_advcam_relative': {'model.head': 'wildcat', 'eval.map_expansion': 'advcam+relative'},
    'excam_erase': dict(_EXCAM, **{'eval.map_expansion': 'erase'}),
    # Re-activation by the trunk's features (map_transforms 'cluster', after CREAM) on WILDCAT's
    # and ex-CAM's trainings: a candidate that needs no training of its own.
    'wildcat_cluster': {'model.head': 'wildcat', 'eval.map_expansion': 'cluster'},
    'excam_cluster': dict(_EXCAM, **{'eval.map_expansion': 'cluster'}),
    # Propagation of the class maps along the trunk's feature affinities (map_transforms
    # 'affinity', a training-free random walk after PSA and SEAM's PCM): another such candidate.
    'wildcat_affinity': {'model.head': 'wildcat', 'eval.map_expansion': 'affinity'},
    'excam_affinity': dict(_EXCAM, **{'eval.map_expansion': 'affinity'}),
    # The maps snapped to the image's colour edges (map_transforms 'guided', the colour guided
    # filter of the image on the upsampled maps): a third such candidate.
    'wildcat_guided': {'model.head': 'wildcat', 'eval.map_expansion': 'guided'},
    'excam_guided': dict(_EXCAM, **{'eval.map_expansion': 'guided'}),
    # Hide-and-Seek and CutMix (wsolevaluation's two input-level methods), on CAM as there, and
    # on WILDCAT and ex-CAM (excam_jax/training/augment.py).
    'cam_has': {'model.head': 'cam', 'train.augment': 'has'},
    'wildcat_has': {'model.head': 'wildcat', 'train.augment': 'has'},
    'excam_has': dict(_EXCAM, **{'train.augment': 'has'}),
    'cam_cutmix': {'model.head': 'cam', 'train.augment': 'cutmix'},
    'wildcat_cutmix': {'model.head': 'wildcat', 'train.augment': 'cutmix'},
    'excam_cutmix': dict(_EXCAM, **{'train.augment': 'cutmix'}),
    'body_only': {'model.head': 'wildcat', 'data.parts.probe': 'body_only'},
    'part_only': {'model.head': 'wildcat', 'data.parts.probe': 'part_only'},
}
BASELINE = 'wildcat'  # The baseline of untuned tables when no other baseline ran.
# The baselines a method of this project must beat (the best of those present at a level).
BASELINES = ('cam', 'wildcat', 'wildcat_max', 'wildcat_relative', 'wildcat_advcam',
             'wildcat_advcam_relative', 'adl', 'acol', 'acol_zero', 'cam_has', 'wildcat_has',
             'cam_cutmix', 'wildcat_cutmix')
# Methods that differ from another only at inference: they evaluate that method's training.
TRAINED_AS = {'wildcat_erase': 'wildcat', 'wildcat_relative': 'wildcat', 'wildcat_advcam': 'wildcat',
              'wildcat_advcam_relative': 'wildcat', 'excam_erase': 'excam', 'acol_zero': 'acol',
              'wildcat_cluster': 'wildcat', 'excam_cluster': 'excam',
              'wildcat_affinity': 'wildcat', 'excam_affinity': 'excam',
              'wildcat_guided': 'wildcat', 'excam_guided': 'excam'}
# Model fields that change only inference: set on the restored model at evaluation.
INFERENCE_MODEL_FIELDS = ('model.acol_fusion',)

# The search spaces (field -> values; every combination is a setting), run with --tune.
KMAX_GRID = (0.015, 0.05, 0.1, 0.2, 0.3)
_KMAX = {'model.kmax': KMAX_GRID}
GRIDS = {
    'cam': {},  # Global average pooling: no pooling knob; its boxes keep z > 0 like the others'.
    'excam_gap': {},
    'wildcat': _KMAX, 'wildcat_max': _KMAX, 'excam': _KMAX, 'excam_selfdrop': _KMAX,
    'excam_learned': _KMAX,
    'adl': dict(_KMAX, **{'model.adl_gamma': (0.8, 0.9)}),
    'excam_m4_div': dict(_KMAX, **{'optim.diversity_weight': (0.1, 1.0)}),
    # The area weight over the background ratio's 1: a cell joins the foreground where its
    # activation exceeds that ratio times the map's mean activation.
    'wildcat_bas': dict(_KMAX, **{'optim.area_weight': (0.5, 2.0)}),
    'wildcat_bas_detached': dict(_KMAX, **{'optim.area_weight': (0.5, 2.0)}),
    'acol': dict(_KMAX, **{'model.acol_threshold': (0.5, 0.7)}),
    'acol_excam': dict(_KMAX, **{'model.acol_threshold': (0.5, 0.7)}),
    'body_only': {}, 'part_only': {},
}
# HaS's square side on the 128-px images (its 4-px default hides texture, not object parts) and
# CutMix's mixing probability; their other knobs stay at wsolevaluation's defaults.
_HAS = {'train.has_grid': (8, 16, 32)}
_CUTMIX = {'train.cutmix_prob': (0.5, 1.0)}
GRIDS.update({'cam_has': _HAS, 'wildcat_has': dict(_KMAX, **_HAS), 'excam_has': dict(_KMAX, **_HAS),
              'cam_cutmix': _CUTMIX, 'wildcat_cutmix': dict(_KMAX, **_CUTMIX),
              'excam_cutmix': dict(_KMAX, **_CUTMIX)})
# Controls take the setting chosen for the method they control; so does AdvCAM, whose own knobs
# stay at the published values: it climbs the tuned WILDCAT (27 climbing passes per class make
# its evaluation about 360x WILDCAT's, too costly to repeat over the pooling grid).
INHERITS = {'excam_hard': 'excam', 'excam_d07': 'excam', 'excam_m4': 'excam', 'excam_m8': 'excam',
            'wildcat_advcam': 'wildcat', 'wildcat_advcam_relative': 'wildcat'}
for _variant, _base in TRAINED_AS.items():  # An inference variant searches its training's space.
  if _variant not in INHERITS:
    GRIDS[_variant] = GRIDS[_base]
# The re-activation's own knob, on top of its training's pooling.
_CLUSTER = {'eval.map_expansion_temperature': (5.0, 10.0, 20.0)}
GRIDS.update({'wildcat_cluster': dict(_KMAX, **_CLUSTER), 'excam_cluster': dict(_KMAX, **_CLUSTER)})
# The affinity walk's power beta (2 steps): from a walk across most of the map to one that joins
# only near-identical features.
_AFFINITY = {'eval.map_expansion_affinity_power': (4.0, 16.0, 64.0)}
GRIDS.update({'wildcat_affinity': dict(_KMAX, **_AFFINITY),
              'excam_affinity': dict(_KMAX, **_AFFINITY)})
# The guided filter's window radius in pixels on the 128-px images (eps 0.01 on colours in [0, 1]).
_GUIDED = {'eval.map_expansion_radius': (4, 8, 16)}
GRIDS.update({'wildcat_guided': dict(_KMAX, **_GUIDED), 'excam_guided': dict(_KMAX, **_GUIDED)})

# The ablate command's grids (experiments/ablate.py --grid=NAME): variant -> config overrides on
# top of any --config (VOC, the WSOL benchmark, parts), built from the methods above. The variant
# names are the run folders' names, kept from the first ablations so old workdirs still resume.
_EXCAM_M = lambda **extra: dict(METHODS['excam'], **extra)
ABLATIONS = {
    'methods': {
        'wildcat': METHODS['wildcat'],
        'excam_selfdrop': METHODS['excam_selfdrop'],
        'excam_noselfdrop': METHODS['excam'],
        'excam_noselfdrop_hard': METHODS['excam_hard'],
        'adl': METHODS['adl'],
        'cam': METHODS['cam'],
    },
    'num_maps': {
        f'{head}_m{m}': dict(METHODS[head], **{'model.self_drop': False, 'model.num_maps': m})
        for head in ('excam', 'wildcat') for m in (1, 2, 4, 8)
    },
    'threshold': {
        **{f'delta{d}': _EXCAM_M(**{'model.drop_threshold': d}) for d in (0.3, 0.5, 0.7)},
        'learned': _EXCAM_M(**{'model.learn_threshold': 'per_class'}),
    },
}

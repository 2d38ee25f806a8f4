"""Training code: the pieces of the train step (augment.py: HaS and CutMix)."""

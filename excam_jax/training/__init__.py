"""What train.py's loop is made of: optim.py (schedules, parameter groups), stages.py (ACoL's two
stages behind one list), steps.py (TrainState, the jitted train and eval steps), start.py
(checkpoint > pretrained > scratch), monitor.py (metric windows, the non-finite stop, progress,
signals), summary.py (TensorBoard scalars), checkpoints.py, pretrained.py, parallel.py (the device
mesh) and augment.py (HaS and CutMix inside the step)."""

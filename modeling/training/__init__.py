"""Training: one task per model behind `base.Task` (open_clip's task pattern), augmentation, sampler, EMA and
checkpoints; `train.py` wires them to Accelerate."""

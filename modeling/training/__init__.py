"""Training: one task per model behind `base.Task` (open_clip's task pattern), registered in `tasks.TASKS`; the
Accelerate loop (`loop.training_function`), augmentation (`augment`), the grouped sampler (`sampler`), the weight
EMA (`ema`) and checkpoints (`checkpoints`). `train.py` is the command line around them.

    base          the Task protocol: defaults, flags, construction from its own settings, step/validate/save, hooks
    tasks         TASKS = {"dual-encoder", "vae", "clip-lora", "composed"}: adding a model is a module and a line
    dual_encoder, vae, clip_lora, composed    one task per module
    common        item texts, labels and retrieval validation shared by the tasks
"""

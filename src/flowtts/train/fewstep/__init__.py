"""Few-step distillation methods as pure functions: progressive, consistency, adversarial, distribution matching.

Each module holds one method's objective and its settings; :mod:`~flowtts.train.fewstep.velocity` holds what
they share (velocities, step maps, re-noising, the data prediction, the re-noising multistep sampler, the
adapter that turns a ``CFM``-like model into a step map). None of them runs a training loop: a step of
:mod:`flowtts.train.loop` calls them with the model's step maps, and the known-answer tests call them with
the exact maps of a Gaussian problem. ``docs/few_step_methods.md`` describes each method.
"""

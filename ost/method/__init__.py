"""The method: one simulated optimizer step per sample and the validation loss it saves (`one_step`),
the step's settings (`step.Step`), per-sample gradients (`per_sample`), resumable pool scoring (`score`)
and the top-k / toxic selection (`select`). Imports `ost.models` and below.
"""

"""Integrations with other RLHF libraries: the workbook's worlds and metrics inside their trainers.

* ``integrations.trl`` — TRL 1.x: a world's reward as a TRL reward function, preference data in
  TRL's text form, a ``TrainerCallback`` that logs the workbook's sampled metrics and draws
  ``LiveCurves``, and the training arguments every trainer here starts from;
* ``integrations.text_eval`` — the sampled metrics for a model with its own tokenizer (a hub
  model), which a world's ``SampledEvaluator`` cannot read.

Nothing here is imported by ``rlhf_lab`` itself: TRL is imported only when these modules are.
Introduced in chapter 11.
"""

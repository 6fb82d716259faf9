"""Command-line training scripts, runnable with ``python -m`` or under ``accelerate launch``.

* ``rlhf_lab.scripts.grpo`` — TRL's GRPOTrainer on a workbook world, one CPU to many GPUs;
* ``configs/`` — ``accelerate`` configs (DeepSpeed ZeRO-2 on several GPUs).

Introduced in chapter 11.
"""

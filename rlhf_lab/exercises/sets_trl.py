"""Practice set for chapter 11 (TRL, accelerate, DeepSpeed). Every answer is a formula evaluated
here."""

from __future__ import annotations

import math

from rlhf_lab.exercises.questions import choice, numeric

# ZeRO (Rajbhandari et al., 2020): mixed-precision Adam keeps 2 + 2 + 12 bytes per parameter
# (bf16 weights, bf16 gradients, fp32 master weights + momentum + variance)
_PARAMS, _GPUS = 135e6, 8
_ZERO2_GB = _PARAMS * (2 + (2 + 12) / _GPUS) / 1e9
_DDP_GB = _PARAMS * 16 / 1e9

SETS = {
    "11": ("Real models and many GPUs with TRL", (
        numeric("q1", "GRPOTrainer with per_device_train_batch_size=64 and num_generations=8, "
                "launched on 4 GPUs: how many distinct prompts does one optimizer step learn "
                "from?", 64 * 4 / 8, 0, "completions per step = per-device batch × processes; "
                "each prompt contributes G of them.",
                "64 · 4 = 256 completions per step, in groups of G = 8: 256 / 8 = 32 prompts.",
                traps=((8.0, "that is one GPU's share: every process draws its own prompts."),)),
        numeric("q2", "Mixed-precision Adam keeps 16 bytes per parameter: 2 (bf16 weights) + 2 "
                "(gradients) + 12 (fp32 master weights, momentum, variance). With ZeRO-2 on 8 "
                "GPUs, how many GB of these model states does each GPU hold for a 135M-parameter "
                "model (1 GB = 1e9 bytes)?", _ZERO2_GB, 0.01,
                "ZeRO-2 shards the gradients and the optimizer states over the GPUs; every GPU "
                "keeps all the weights.",
                f"135e6 · (2 + (2 + 12)/8) bytes = 135e6 · 3.75 = {_ZERO2_GB:.3f} GB, against "
                f"{_DDP_GB:.2f} GB per GPU with plain data parallelism.",
                traps=((_DDP_GB, "that is plain data parallelism: nothing is sharded."),
                       (_PARAMS * 16 / _GPUS / 1e9, "that is ZeRO-3: the weights are not "
                        "sharded in ZeRO-2."))),
        numeric("q3", "A callback's sampled KL over M = 256 completions has a sample standard "
                "deviation of 1.2 nats. What is its standard error, in nats?",
                1.2 / math.sqrt(256), 1e-3, "SE = std / √M.", "1.2 / √256 = 1.2 / 16 = 0.075.",
                traps=((1.2 / 256, "divide by √M, not M."),)),
        choice("q4", "You want PPO with a learned critic on a 7B model across many GPUs. Which "
               "fits TRL 1.16?",
               ("TRL's PPOTrainer with a ZeRO-3 config",
                "TRL 1.x has no PPOTrainer: use OpenRLHF or verl, which place actor, critic, "
                "reference and reward models on GPU groups and generate with vLLM",
                "GRPOTrainer with num_generations=1 is PPO",
                "DPOTrainer with a value head"), "b",
               "which trainers does TRL 1.16 ship for online RL?",
               "TRL 1.x keeps GRPO and RLOO (critic-free) and dropped PPOTrainer. PPO needs a "
               "critic and four models in memory; OpenRLHF (Ray + vLLM + DeepSpeed) and verl "
               "(HybridFlow) are built for that. GRPO with G = 1 has no baseline at all."),
    )),
}

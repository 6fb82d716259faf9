"""Cross-check rlhf_lab.algos against TRL's own loss code, on the same tensors, with no hub.

Tested against TRL 1.16.0 (the version pinned in pyproject's [dev] extra). TRL's losses live
inside trainer methods that expect a model and a constructed trainer; here each method is called
unbound on a ``types.SimpleNamespace`` that carries only the attributes it reads, with a stub
model that returns the per-token log-probs we choose. So TRL's own arithmetic runs, not a copy:

* ``trl.DPOTrainer._compute_loss`` (trl/trainer/dpo_trainer.py, lines 1285–1612 in 1.16.0):
  sigmoid, hinge, ipo, robust losses and the logged rewards/* and logps/* metrics.
* ``trl.experimental.cpo.CPOTrainer.cpo_loss`` (trl/experimental/cpo/cpo_trainer.py,
  lines 678–749): the SimPO loss and the conservative-DPO (label-smoothed sigmoid) form.
* ``trl.GRPOTrainer._compute_loss`` (trl/trainer/grpo_trainer.py, lines 3020–3290): the clipped
  per-token loss, the k3 term, the grpo/bnpo/dr_grpo/dapo aggregations, clip_ratio/* and kl.

The group advantages are computed inside ``GRPOTrainer._generate_and_score_completions``
(lines 2761–2788), which needs generation and reward functions, and RLOO's inside
``RLOOTrainer._generate_and_score_completions`` (lines 1675–1699). For those the test copies
TRL's lines, calls TRL's own ``trl.trainer.utils.nanstd``, and first asserts that the copied
lines are still in TRL's source, so a change in TRL fails the test instead of going unnoticed.

Conventions that differ from TRL 1.16 (each pinned by a test below):

1. ``dpo_loss(kind="sigmoid", label_smoothing=ε)`` is conservative DPO,
   −(1 − ε) log σ(βΔ) − ε log σ(−βΔ). TRL 1.16's DPOTrainer ignores ε for sigmoid (its
   ``label_smoothing`` is only read by robust, exo_pair and aot); TRL's CPOTrainer and
   TRL < 1.0's DPOTrainer apply it as we do. At ε = 0 they agree.
2. ``dpo_loss`` raises on ε > 0 with hinge or ipo, where TRL silently ignores it.
3. IPO: TRL divides each summed log-ratio by the completion length inside the loss; our
   ``dpo_loss(kind="ipo")`` takes length-averaged log-probs from the caller. Same loss; but our
   rewards/* stats are then on averaged log-probs, TRL logs them on summed ones.
4. SimPO: our γ is TRL's CPOTrainer ``simpo_gamma`` unchanged (TRL divides it by β and then
   multiplies the logits by β). The SimPO reference code's ``gamma_beta_ratio`` is γ/β. TRL's
   CPOTrainer adds ``cpo_alpha``·NLL(chosen) (default 1.0); pure SimPO is ``cpo_alpha=0``.
5. GRPO: TRL divides the loss by the gradient-accumulation steps, and its dapo normalises by the
   token count of the whole accumulated generation batch; with one batch, one process and no
   accumulation (as here) the numbers agree exactly. TRL multiplies by the mask, so a padded
   nan or inf leaks into its loss; ours selects padding out.
6. TRL's ``nanstd`` computes Bessel's factor n/(n − 1) in float32 even for float64 rewards, so
   ``group_advantages`` agrees with TRL to float32 precision (about 1e-8 relative), not exactly.
7. TRL 1.16 ships no PPO trainer, so ``ppo_policy_loss`` and ``value_loss`` have no TRL code to
   check against; tests/test_losses.py pins them on hand-computed numbers.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")

from trl import DPOTrainer, GRPOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.trainer.rloo_trainer import RLOOTrainer  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

from rlhf_lab.algos.dpo import dpo_loss, simpo_loss  # noqa: E402
from rlhf_lab.algos.grpo import group_advantages, grpo_loss, rloo_advantages  # noqa: E402

TRL_VERSION_TESTED = "1.16.0"


def test_trl_version_is_the_one_read():
    # The line references and conventions above were read from this version's source.
    assert trl.__version__ == TRL_VERSION_TESTED


class _Accelerator:
    """The accelerator TRL's loss code talks to, for one process: every collective is identity."""

    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather

    @staticmethod
    def reduce(x, reduction="sum"):
        return x


def _metrics() -> dict:
    return {"train": defaultdict(list), "eval": defaultdict(list)}


# ---------------------------------------------------------------- DPO


def _preference_batch(seed: int, batch: int = 4, length: int = 6):
    """Per-token policy log-probs of B chosen then B rejected completions of different lengths."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (2 * batch,), generator=gen)
    # completion_mask over input_ids (length + 1): position 0 is the prompt, then the completion
    completion_mask = torch.zeros(2 * batch, length + 1, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        completion_mask[i, 1 : 1 + n] = 1
    shifted = completion_mask[:, 1:].double()
    # a fused LM head with labels −100 returns 0 outside the completion
    uniform = torch.rand(2 * batch, length, generator=gen, dtype=torch.float64)
    per_token_logps = -3 * uniform * shifted
    ref_logps = per_token_logps.sum(1) + torch.randn(2 * batch, generator=gen, dtype=torch.float64)
    return per_token_logps, ref_logps, completion_mask, lengths.double()


def _trl_dpo(loss_type: str, beta: float, label_smoothing: float, seed: int):
    per_token_logps, ref_logps, completion_mask, _ = _preference_batch(seed)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics=_metrics(),
        _total_train_tokens=0,
        _tp_size=1,
        args=SimpleNamespace(),
    )
    zeros = torch.zeros_like(per_token_logps)

    def model(**kwargs):
        return SimpleNamespace(
            log_probs=per_token_logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool()
        )

    inputs = {
        "input_ids": torch.zeros_like(completion_mask),
        "attention_mask": torch.ones_like(completion_mask),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def _ours_dpo(kind: str, beta: float, label_smoothing: float, seed: int, average: bool = False):
    per_token_logps, ref_logps, _, lengths = _preference_batch(seed)
    logps = per_token_logps.sum(1)
    if average:
        logps, ref_logps = logps / lengths, ref_logps / lengths
    chosen, rejected = logps.chunk(2)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    return dpo_loss(
        chosen, rejected, ref_chosen, ref_rejected, beta, kind=kind, label_smoothing=label_smoothing
    )


STAT_KEYS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


@pytest.mark.parametrize(
    ("kind", "beta", "label_smoothing"),
    [
        ("sigmoid", 0.1, 0.0),
        ("sigmoid", 2.0, 0.0),
        ("hinge", 0.5, 0.0),
        ("robust", 0.1, 0.0),
        ("robust", 0.3, 0.2),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_dpo_loss_matches_trl_dpo_trainer(kind, beta, label_smoothing, seed):
    trl_loss, trl_stats = _trl_dpo(kind, beta, label_smoothing, seed)
    loss, stats = _ours_dpo(kind, beta, label_smoothing, seed)
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-9)
    for key in STAT_KEYS:
        assert stats[key] == pytest.approx(trl_stats[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("seed", [0, 1])
def test_ipo_on_length_averaged_logps_matches_trl(seed):
    # TRL length-normalises inside the IPO loss; we take averaged log-probs (difference 3).
    trl_loss, trl_stats = _trl_dpo("ipo", 0.1, 0.0, seed)
    loss, stats = _ours_dpo("ipo", 0.1, 0.0, seed, average=True)
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-9)
    summed_loss, summed_stats = _ours_dpo("ipo", 0.1, 0.0, seed)
    assert summed_loss.item() != pytest.approx(trl_loss.item(), rel=1e-3)
    # TRL logs its rewards on the summed log-probs
    assert summed_stats["rewards/margins"] == pytest.approx(trl_stats["rewards/margins"], rel=1e-9)


def test_trl_dpo_sigmoid_ignores_label_smoothing_ours_is_conservative_dpo():
    # Difference 1: TRL 1.16's sigmoid loss is the same for ε = 0.2 and ε = 0 …
    trl_smoothed, _ = _trl_dpo("sigmoid", 0.1, 0.2, seed=0)
    trl_plain, _ = _trl_dpo("sigmoid", 0.1, 0.0, seed=0)
    assert trl_smoothed.item() == pytest.approx(trl_plain.item(), rel=1e-12)
    # … ours is cDPO, which differs; it matches TRL's CPOTrainer sigmoid branch below
    ours, _ = _ours_dpo("sigmoid", 0.1, 0.2, seed=0)
    assert ours.item() != pytest.approx(trl_plain.item(), rel=1e-3)


def _trl_cpo(loss_type, chosen, rejected, beta, label_smoothing=0.0, simpo_gamma=0.5):
    trainer = SimpleNamespace(
        alpha=0.0,
        accelerator=_Accelerator(),
        loss_type=loss_type,
        beta=beta,
        label_smoothing=label_smoothing,
        simpo_gamma=simpo_gamma,
    )
    return CPOTrainer.cpo_loss(trainer, chosen, rejected)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_conservative_dpo_matches_trl_cpo_sigmoid(label_smoothing):
    per_token_logps, ref_logps, _, _ = _preference_batch(seed=3)
    chosen, rejected = per_token_logps.sum(1).chunk(2)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    # CPO's sigmoid branch on the policy/reference log-ratios is cDPO
    chosen_logratio, rejected_logratio = chosen - ref_chosen, rejected - ref_rejected
    losses, _, _ = _trl_cpo("sigmoid", chosen_logratio, rejected_logratio, 0.1, label_smoothing)
    loss, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, 0.1, "sigmoid", label_smoothing)
    assert loss.item() == pytest.approx(losses.mean().item(), rel=1e-9)


@pytest.mark.parametrize(("beta", "gamma"), [(2.0, 0.5), (2.5, 1.5), (0.1, 0.0), (10.0, 3.0)])
def test_simpo_gamma_is_trl_simpo_gamma(beta, gamma):
    per_token_logps, _, completion_mask, lengths = _preference_batch(seed=4)
    avg_chosen, avg_rejected = (per_token_logps.sum(1) / lengths).chunk(2)
    losses, chosen_rewards, rejected_rewards = _trl_cpo(
        "simpo", avg_chosen, avg_rejected, beta, simpo_gamma=gamma
    )
    loss, stats = simpo_loss(avg_chosen, avg_rejected, beta, gamma)
    assert loss.item() == pytest.approx(losses.mean().item(), rel=1e-9)
    assert stats["rewards/chosen"] == pytest.approx(chosen_rewards.mean().item(), rel=1e-9)
    assert stats["rewards/rejected"] == pytest.approx(rejected_rewards.mean().item(), rel=1e-9)
    # the SimPO reference code's gamma_beta_ratio = γ/β is a different number for the same loss
    if gamma > 0 and beta != 1.0:
        other, _ = simpo_loss(avg_chosen, avg_rejected, beta, gamma / beta)
        assert other.item() != pytest.approx(loss.item(), rel=1e-6)


# ---------------------------------------------------------------- GRPO advantages (copied lines)

# trl/trainer/grpo_trainer.py 1.16.0, lines 2761–2788 (sum_then_normalize, all rewards scorable)
GRPO_ADVANTAGE_LINES = (
    "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
    "mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)",
    "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
    "std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)",
    "std_rewards = nanstd(rewards).expand_as(rewards)",
    "advantages = rewards - mean_grouped_rewards",
    'if self.scale_rewards != "none":',
    "advantages = advantages / (std_rewards + 1e-4)",
)


def _trl_group_advantages(rewards_2d: torch.Tensor, scale_rewards: str) -> torch.Tensor:
    """TRL's lines, verbatim but for indentation; ``nanstd`` is TRL's own function."""
    num_generations = rewards_2d.shape[1]
    rewards = rewards_2d.flatten()
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    else:
        std_rewards = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return advantages.view_as(rewards_2d)


# trl/trainer/rloo_trainer.py 1.16.0, lines 1682–1690 (all rewards scorable, no normalisation)
RLOO_ADVANTAGE_LINES = (
    "grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)",
    "baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)",
    "advantages = rewards - baselines",
)


def _trl_rloo_advantages(grouped_rewards: torch.Tensor) -> torch.Tensor:
    rewards = grouped_rewards.flatten()
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    baselines = baselines.view(-1)
    advantages = rewards - baselines
    return advantages.view_as(grouped_rewards)


@pytest.mark.parametrize(
    ("method", "lines"),
    [
        (GRPOTrainer._generate_and_score_completions, GRPO_ADVANTAGE_LINES),
        (RLOOTrainer._generate_and_score_completions, RLOO_ADVANTAGE_LINES),
    ],
)
def test_copied_advantage_lines_are_still_trls(method, lines):
    source = inspect.getsource(method)
    for line in lines:
        assert line in source, f"TRL changed: {line!r} is no longer in {method.__qualname__}"


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_group_advantages_match_trl(scale, group_size):
    # float32 as in training: TRL's nanstd computes Bessel's n/(n − 1) in float32 whatever the
    # rewards' dtype, so the two agree to float32 precision only
    gen = torch.Generator().manual_seed(group_size)
    rewards = torch.randn(5, group_size, generator=gen)
    rewards[0] = 1.0  # a zero-variance group
    rewards[1] = (torch.rand(group_size, generator=gen) < 0.5).float()  # verifiable 0/1 rewards
    expected = _trl_group_advantages(rewards, scale)
    assert torch.allclose(group_advantages(rewards, scale), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("group_size", [2, 3, 8])
def test_rloo_advantages_match_trl(group_size):
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(4, group_size, generator=gen, dtype=torch.float64)
    expected = _trl_rloo_advantages(rewards)
    assert torch.allclose(rloo_advantages(rewards), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- GRPO loss (TRL's own method)


def _grpo_batch(seed: int, batch: int = 4, length: int = 7):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, length, 3, 5][:batch])
    mask = (torch.arange(length) < lengths.unsqueeze(1)).long()  # (B, T), right-padded
    logp_old = -torch.rand(batch, length, generator=gen, dtype=torch.float64) * 2
    # ratios spread well beyond 1 ± 0.28 so that both clips fire
    logp = logp_old + torch.randn(batch, length, generator=gen, dtype=torch.float64) * 0.4
    logp_ref = logp_old + torch.randn(batch, length, generator=gen, dtype=torch.float64) * 0.3
    adv = torch.tensor([1.5, 0.7, -0.4, -1.2], dtype=torch.float64)[:batch]
    return logp, logp_old, logp_ref, adv, mask


def _trl_grpo(
    logp, logp_old, logp_ref, adv, mask, *, loss_type, eps_low, eps_high, beta, max_tokens
):
    batch, length = mask.shape
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0,
        aux_loss_enabled=False,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_tokens,
        accelerator=_Accelerator(),
        _entropy_bonus_enabled=False,
        _metrics=_metrics(),
    )
    inputs = {
        "prompt_ids": torch.zeros(batch, 1, dtype=torch.long),
        "prompt_mask": torch.ones(batch, 1, dtype=torch.long),
        "completion_ids": torch.zeros(batch, length, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": logp_old,
        "ref_per_token_logps": logp_ref,
        "num_items_in_batch": mask.sum(),
    }
    loss = GRPOTrainer._compute_loss(trainer, None, inputs)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize(
    ("eps_low", "eps_high", "beta"), [(0.2, 0.2, 0.0), (0.2, 0.28, 0.04), (0.1, 0.5, 0.5)]
)
def test_grpo_loss_matches_trl_grpo_trainer(loss_type, eps_low, eps_high, beta):
    logp, logp_old, logp_ref, adv, mask = _grpo_batch(seed=0)
    max_tokens = 10
    kwargs = dict(
        loss_type=loss_type, eps_low=eps_low, eps_high=eps_high, beta=beta, max_tokens=max_tokens
    )

    trl_logp = logp.clone().requires_grad_()
    trl_loss, trl_stats = _trl_grpo(trl_logp, logp_old, logp_ref, adv, mask, **kwargs)
    trl_loss.backward()
    ours_logp = logp.clone().requires_grad_()
    loss, stats = grpo_loss(ours_logp, logp_old, logp_ref, adv, mask, **kwargs)
    loss.backward()

    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-9)
    assert torch.allclose(ours_logp.grad, trl_logp.grad, rtol=1e-9, atol=1e-12)
    keys = ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"]
    keys += ["kl"] if beta > 0 else []
    assert sorted(stats) == sorted(keys)
    for key in keys:
        assert stats[key] == pytest.approx(trl_stats[key], rel=1e-9, abs=1e-12), key
    # the batch was chosen so that both clips fire: the comparison is not vacuous
    assert stats["clip_ratio/low_mean"] > 0 and stats["clip_ratio/high_mean"] > 0


def test_grpo_loss_types_give_different_numbers_in_trl_too():
    logp, logp_old, logp_ref, adv, mask = _grpo_batch(seed=1)
    kwargs = dict(eps_low=0.2, eps_high=0.2, beta=0.0, max_tokens=10)
    losses = {}
    for loss_type in ("grpo", "bnpo", "dr_grpo"):
        trl_loss, _ = _trl_grpo(logp, logp_old, logp_ref, adv, mask, loss_type=loss_type, **kwargs)
        losses[loss_type] = trl_loss.item()
    assert len({round(v, 9) for v in losses.values()}) == 3, losses

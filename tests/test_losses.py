"""Unit tests of the pure loss and estimator functions in rlhf_lab.algos.

Every expected number is worked out by hand in a comment next to it, from the formula in the
module's docstring, on tensors small enough to check on paper.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_lab.algos.best_of_n import bon_kl_bound, bon_win_rate, exact_best_of_n
from rlhf_lab.algos.dpo import dpo_loss, simpo_loss
from rlhf_lab.algos.grpo import group_advantages, grpo_loss, rloo_advantages
from rlhf_lab.algos.ppo import ppo_policy_loss, value_loss
from rlhf_lab.algos.reinforce import reinforce_loss

T = torch.tensor


def approx(x: float, rel: float = 1e-6, abs: float = 1e-7):  # noqa: A002 - mirrors pytest.approx
    return pytest.approx(x, rel=rel, abs=abs)


def assert_stats_are_floats(stats: dict) -> None:
    assert stats and all(type(v) is float for v in stats.values()), stats


# ---------------------------------------------------------------- REINFORCE (chapter 02)


@pytest.mark.parametrize(
    ("baseline", "expected_loss", "expected_adv"),
    [
        # R = (1, 3), log π = (−1, −2)
        ("none", 3.5, [1.0, 3.0]),  # −((1)(−1) + (3)(−2)) / 2 = 3.5
        ("mean", 0.5, [-1.0, 1.0]),  # b = 2: −((−1)(−1) + (1)(−2)) / 2 = 0.5
        (1.0, 2.0, [0.0, 2.0]),  # b = 1: −(0 + (2)(−2)) / 2 = 2
        (T([1.0, 2.0]), 1.0, [0.0, 1.0]),  # b = (1, 2): −(0 + (1)(−2)) / 2 = 1
    ],
)
def test_reinforce_loss_value_and_gradient(baseline, expected_loss, expected_adv):
    seq_logp = T([-1.0, -2.0], requires_grad=True)
    rewards = T([1.0, 3.0], requires_grad=True)
    loss, stats = reinforce_loss(seq_logp, rewards, baseline)
    assert loss.item() == approx(expected_loss)
    loss.backward()
    # ∂L/∂log π_i = −(R_i − b)/B; the reward (and the baseline) get no gradient
    assert seq_logp.grad.tolist() == approx([-a / 2 for a in expected_adv])
    assert rewards.grad is None
    assert_stats_are_floats(stats)
    assert stats["reward_mean"] == approx(2.0)


def test_reinforce_stats():
    _, stats = reinforce_loss(T([-1.0, -2.0]), T([1.0, 3.0]), "mean")
    # b = 2, R − b = (−1, 1): population std 1
    assert stats == {"reward_mean": approx(2.0), "baseline": approx(2.0), "adv_std": approx(1.0)}
    _, stats = reinforce_loss(T([-1.0]), T([5.0]), "mean")
    assert stats["adv_std"] == 0.0  # B = 1 is not NaN


def test_reinforce_tensor_baseline_is_detached():
    baseline = T([1.0, 2.0], requires_grad=True)
    loss, _ = reinforce_loss(T([-1.0, -2.0], requires_grad=True), T([1.0, 3.0]), baseline)
    loss.backward()
    assert baseline.grad is None


# ---------------------------------------------------------------- PPO (chapter 04)

CLIP = 0.2
# (ρ, A) per token; row 1's last entry is padding holding a huge ratio and advantage
PPO_RATIOS = [[1.5, 0.5, 0.5], [1.1, 1.5, 100.0]]
PPO_ADV = [[1.0, -1.0, 2.0], [-1.0, -1.0, 7.0]]
PPO_MASK = [[1, 1, 1], [1, 1, 0]]
# token by token, −min(ρA, clip(ρ, 0.8, 1.2)A):
#   ρ=1.5, A=+1: min(1.5, 1.2)    → −1.2   clipped (ρ > 1+ε, A > 0)
#   ρ=0.5, A=−1: min(−0.5, −0.8)  → +0.8   clipped (ρ < 1−ε, A < 0)
#   ρ=0.5, A=+2: min(1.0, 1.6)    → −1.0   NOT clipped (ρ < 1−ε but A > 0)
#   ρ=1.1, A=−1: min(−1.1, −1.1)  → +1.1   inside the clip range
#   ρ=1.5, A=−1: min(−1.5, −1.2)  → +1.5   NOT clipped (ρ > 1+ε but A < 0)
PPO_LOSS = (-1.2 + 0.8 - 1.0 + 1.1 + 1.5) / 5  # 0.24
PPO_CLIPFRAC = 2 / 5
# (ρ − 1) − log ρ per valid token, averaged
PPO_APPROX_KL = (
    2 * (0.5 - math.log(1.5)) + 2 * (-0.5 - math.log(0.5)) + (0.1 - math.log(1.1))
) / 5  # ≈ 0.1160108
PPO_RATIO_MEAN = (1.5 + 0.5 + 0.5 + 1.1 + 1.5) / 5  # 1.02


def _ppo_inputs():
    logp = torch.log(T(PPO_RATIOS)).requires_grad_()
    return logp, torch.zeros(2, 3), T(PPO_ADV), T(PPO_MASK)


def test_ppo_policy_loss_hand_example():
    logp, logp_old, adv, mask = _ppo_inputs()
    loss, stats = ppo_policy_loss(logp, logp_old, adv, mask, CLIP)
    assert loss.item() == approx(PPO_LOSS)
    assert stats["clipfrac"] == approx(PPO_CLIPFRAC)
    assert stats["approx_kl"] == approx(PPO_APPROX_KL)
    assert stats["ratio_mean"] == approx(PPO_RATIO_MEAN)
    assert_stats_are_floats(stats)
    loss.backward()
    # ∂(−ρA)/∂log π = −ρA, over 5 valid tokens; a clipped token and the padding get 0
    expected = [[0.0, 0.0, -0.5 * 2 / 5], [1.1 / 5, 1.5 / 5, 0.0]]
    assert logp.grad.flatten().tolist() == approx(sum(expected, []))


def test_ppo_policy_loss_ignores_padding_even_nan():
    logp, logp_old, adv, mask = _ppo_inputs()
    logp = logp.detach().clone()
    logp[1, 2], logp_old[1, 2], adv[1, 2] = float("nan"), float("inf"), float("nan")
    logp.requires_grad_()
    loss, stats = ppo_policy_loss(logp, logp_old, adv, mask, CLIP)
    assert loss.item() == approx(PPO_LOSS)
    assert stats["clipfrac"] == approx(PPO_CLIPFRAC)
    loss.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[1, 2] == 0


def test_ppo_policy_loss_bool_mask_and_equal_ratios():
    logp, logp_old, adv, mask = _ppo_inputs()
    loss_bool, _ = ppo_policy_loss(logp, logp_old, adv, mask.bool(), CLIP)
    assert loss_bool.item() == approx(PPO_LOSS)
    # ρ = 1 everywhere: loss = −mean(A), nothing clipped, approx_kl = 0
    loss, stats = ppo_policy_loss(logp_old, logp_old, adv, mask, CLIP)
    assert loss.item() == approx(-(1 - 1 + 2 - 1 - 1) / 5)
    assert stats["clipfrac"] == 0.0 and stats["approx_kl"] == 0.0


VALUES = [[1.0, 0.6, 0.0, 2.0, 100.0]]
VALUES_OLD = [[0.5, 0.5, 0.5, 0.5, 0.0]]
RETURNS = [[1.0, 0.0, 0.0, 0.0, -100.0]]
VALUE_MASK = [[1, 1, 1, 1, 0]]
# token by token, (V − R)² and (clip(V, V_old ± 0.2) − R)²:
#   V=1.0 → 0    ; clip 0.7 → 0.09  clipped error larger
#   V=0.6 → 0.36 ; clip 0.6 → 0.36  equal, not counted
#   V=0.0 → 0    ; clip 0.3 → 0.09  clipped error larger
#   V=2.0 → 4.0  ; clip 0.7 → 0.49  unclipped larger


def test_value_loss_unclipped_and_clipped():
    args = (T(VALUES), T(VALUES_OLD), T(RETURNS), T(VALUE_MASK))
    loss, stats = value_loss(*args)
    assert loss.item() == approx(0.5 * (0 + 0.36 + 0 + 4.0) / 4)  # 0.545
    assert stats["value_clipfrac"] == 0.0
    assert stats["value_mean"] == approx((1.0 + 0.6 + 0.0 + 2.0) / 4)
    loss, stats = value_loss(*args, clip_eps=0.2)
    assert loss.item() == approx(0.5 * (0.09 + 0.36 + 0.09 + 4.0) / 4)  # 0.5675
    assert stats["value_clipfrac"] == approx(2 / 4)
    assert_stats_are_floats(stats)


def test_value_loss_gradient_only_through_values():
    values = T(VALUES, requires_grad=True)
    values_old = T(VALUES_OLD, requires_grad=True)
    returns = T(RETURNS, requires_grad=True)
    loss, _ = value_loss(values, values_old, returns, T(VALUE_MASK), clip_eps=0.2)
    loss.backward()
    assert values_old.grad is None and returns.grad is None
    # max picks the clipped error at tokens 0 and 2: V is clamped there, so no gradient; token 1:
    # ½·2(V − R)/4 = 0.15; token 3: ½·2(2 − 0)/4 = 0.5; padding 0
    assert values.grad.flatten().tolist() == approx([0.0, 0.15, 0.0, 0.5, 0.0])


# ---------------------------------------------------------------- DPO, SimPO (chapter 07)

BETA = 0.1
# pair 0: log-ratios chosen +2 (−10 vs −12), rejected −1 (−9 vs −8): Δ = 3, βΔ = 0.3
# pair 1: log-ratios chosen −1 (−11 vs −10), rejected +1 (−7 vs −8): Δ = −2, βΔ = −0.2
CHOSEN, REJECTED = T([-10.0, -11.0]), T([-9.0, -7.0])
REF_CHOSEN, REF_REJECTED = T([-12.0, -10.0]), T([-8.0, -8.0])
DPO_ARGS = (CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, BETA)


def nll_sigmoid(x: float) -> float:
    """−log σ(x) = log(1 + e^{−x})."""
    return math.log1p(math.exp(-x))


def test_dpo_sigmoid_hand_example():
    loss, stats = dpo_loss(*DPO_ARGS)
    # (−log σ(0.3) − log σ(−0.2)) / 2 = (0.5543552 + 0.7981389) / 2 = 0.6762471
    assert loss.item() == approx((nll_sigmoid(0.3) + nll_sigmoid(-0.2)) / 2)
    assert loss.item() == approx(0.6762471, rel=1e-6)
    assert stats == {
        "rewards/chosen": approx(BETA * (2 - 1) / 2),  # 0.05
        "rewards/rejected": approx(BETA * (-1 + 1) / 2),  # 0
        "rewards/margins": approx(BETA * (3 - 2) / 2),  # 0.05
        "rewards/accuracies": 0.5,  # 0.2 > −0.1 yes; −0.1 > 0.1 no
        "logps/chosen": approx(-10.5),
        "logps/rejected": approx(-8.0),
    }


def test_dpo_at_the_reference_is_log_2_and_a_tie_is_not_accurate():
    # π_θ = π_ref: Δ = 0, −log σ(0) = log 2; equal implicit rewards do not count as correct (TRL: >)
    logp = T([-3.0, -5.0])
    loss, stats = dpo_loss(logp, logp, logp, logp, 0.5)
    assert loss.item() == approx(math.log(2))
    assert stats["rewards/accuracies"] == 0.0 and stats["rewards/margins"] == 0.0


def test_dpo_label_smoothing_is_conservative_dpo():
    eps = 0.1
    loss, _ = dpo_loss(*DPO_ARGS, label_smoothing=eps)
    # −(1 − ε) log σ(βΔ) − ε log σ(−βΔ), and −log σ(−x) = −log σ(x) + x, so this is DPO + ε·βΔ:
    # pair 0: 0.5543552 + 0.1·0.3; pair 1: 0.7981389 + 0.1·(−0.2)
    expected = ((nll_sigmoid(0.3) + eps * 0.3) + (nll_sigmoid(-0.2) - eps * 0.2)) / 2
    assert loss.item() == approx(expected)
    assert loss.item() == approx(0.6812471, rel=1e-6)


def test_dpo_robust():
    eps = 0.1
    loss, _ = dpo_loss(*DPO_ARGS, kind="robust", label_smoothing=eps)
    # ((1 − ε)(−log σ(x)) − ε(−log σ(−x))) / (1 − 2ε), x = βΔ
    def rdpo(x):
        return ((1 - eps) * nll_sigmoid(x) - eps * nll_sigmoid(-x)) / (1 - 2 * eps)

    assert loss.item() == approx((rdpo(0.3) + rdpo(-0.2)) / 2)
    # at ε = 0 robust DPO is DPO
    assert dpo_loss(*DPO_ARGS, kind="robust")[0].item() == approx(dpo_loss(*DPO_ARGS)[0].item())


def test_dpo_ipo_and_hinge():
    # IPO: (Δ − 1/(2β))² with 1/(2β) = 5: ((3 − 5)² + (−2 − 5)²)/2 = (4 + 49)/2
    assert dpo_loss(*DPO_ARGS, kind="ipo")[0].item() == approx(26.5)
    # hinge: max(0, 1 − βΔ): (0.7 + 1.2)/2
    assert dpo_loss(*DPO_ARGS, kind="hinge")[0].item() == approx(0.95)
    # a margin βΔ ≥ 1 costs nothing under the hinge: Δ = 20, β = 0.1
    zero = T([0.0])
    assert dpo_loss(T([20.0]), zero, zero, zero, 0.1, kind="hinge")[0].item() == 0.0


def test_dpo_gradient_does_not_reach_reference():
    chosen = CHOSEN.clone().requires_grad_()
    ref_chosen = REF_CHOSEN.clone().requires_grad_()
    loss, _ = dpo_loss(chosen, REJECTED, ref_chosen, REF_REJECTED, BETA)
    loss.backward()
    assert ref_chosen.grad is None
    # ∂/∂log π(y_w) of −log σ(βΔ), over B = 2 pairs: −β σ(−βΔ)/2
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert chosen.grad.tolist() == approx([-BETA * sig(-0.3) / 2, -BETA * sig(0.2) / 2])


def test_simpo_hand_example():
    # β = 2, γ = 1. pair 0: c = −0.5, r = −1: 2·0.5 − 1 = 0 → log 2
    #                pair 1: c = −1, r = −0.5: 2·(−0.5) − 1 = −2 → log(1 + e²)
    loss, stats = simpo_loss(T([-0.5, -1.0]), T([-1.0, -0.5]), beta=2.0, gamma=1.0)
    assert loss.item() == approx((math.log(2) + math.log1p(math.exp(2))) / 2)  # 1.4100379
    assert stats["rewards/chosen"] == approx(2.0 * -0.75)
    assert stats["rewards/margins"] == approx(0.0)
    assert stats["rewards/accuracies"] == 0.5
    assert_stats_are_floats(stats)
    # γ is an absolute margin: γ = 0 is −log σ(β(c − r)) = −log σ(1) for pair 0
    loss0, _ = simpo_loss(T([-0.5]), T([-1.0]), beta=2.0, gamma=0.0)
    assert loss0.item() == approx(nll_sigmoid(1.0))  # 0.3132617


# ---------------------------------------------------------------- GRPO, RLOO (chapter 08)


def test_group_advantages_one_winner_every_scale():
    rewards = T([[1.0, 0.0, 0.0, 0.0]])
    # group mean 0.25, deviations (0.75, −0.25, −0.25, −0.25);
    # Bessel std = √((0.75² + 3·0.25²)/3) = √(0.75/3) = 0.5
    centered = [0.75, -0.25, -0.25, -0.25]
    scaled = [c / (0.5 + 1e-4) for c in centered]

    def adv(scale, **kwargs):
        return group_advantages(rewards, scale, **kwargs).flatten().tolist()

    assert adv("group") == approx(scaled)
    assert adv("group") == approx([1.4997001, -0.4999000, -0.4999000, -0.4999000])
    # one group: the batch std is the group std
    assert adv("batch") == approx(scaled)
    assert adv("none") == approx(centered)
    assert adv("group", eps=0.0) == approx([1.5, -0.5, -0.5, -0.5])


def test_group_advantages_batch_scale_uses_the_std_of_all_rewards():
    rewards = T([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    # group means 0.25, 0.75; all 8 rewards: mean 0.5, every deviation ±0.5,
    # Bessel std = √(8·0.25/7) = √(2/7) = 0.5345225
    centered = [0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75]
    batch_std = math.sqrt(2 / 7)
    got = group_advantages(rewards, "batch").flatten().tolist()
    assert got == approx([c / (batch_std + 1e-4) for c in centered])
    # the group scale divides each group by its own std, 0.5 for both groups here
    got = group_advantages(rewards, "group").flatten().tolist()
    assert got == approx([c / (0.5 + 1e-4) for c in centered])


def test_group_advantages_zero_variance_group_gives_zero():
    adv = group_advantages(T([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]))
    assert adv[0].tolist() == [0.0, 0.0, 0.0]
    # group 2: mean 1, std 1 → (−1, 0, 1)/(1 + 1e-4)
    assert adv[1].tolist() == approx([-1 / 1.0001, 0.0, 1 / 1.0001])


def test_rloo_advantages():
    adv = rloo_advantages(T([[1.0, 0.0, 0.0, 0.0], [2.0, 4.0, 4.0, 6.0]]))
    # group 1: 1 − 0 = 1; 0 − 1/3 = −1/3
    assert adv[0].tolist() == approx([1.0, -1 / 3, -1 / 3, -1 / 3])
    # group 2: 2 − 14/3, 4 − 12/3, 4 − 12/3, 6 − 10/3
    assert adv[1].tolist() == approx([2 - 14 / 3, 0.0, 0.0, 6 - 10 / 3])
    # = G/(G − 1)·(r − mean)
    assert adv[1].tolist() == approx([4 / 3 * (r - 4.0) for r in (2.0, 4.0, 4.0, 6.0)])


# two sequences of lengths 1 and 3 (T = 4), ρ = 1 everywhere, A = (+1, −1): ℓ_t = −A
AGG_MASK = T([[1, 0, 0, 0], [1, 1, 1, 0]])
AGG_ADV = T([1.0, -1.0])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("grpo", (-1 / 1 + 3 / 3) / 2),  # per-sequence means (−1, 1), then their mean: 0
        ("bnpo", (-1 + 3) / 4),  # one mean over the 4 valid tokens: 0.5
        ("dapo", (-1 + 3) / 4),  # same as bnpo for a single batch
        ("dr_grpo", (-1 + 3) / (2 * 4)),  # token sum / (B · max_tokens) with max_tokens = 4: 0.25
    ],
)
def test_grpo_loss_aggregations_differ_on_unequal_lengths(loss_type, expected):
    logp = torch.zeros(2, 4)
    logp[:, -1] = float("nan")  # padding of the longer sequence, and more of the shorter
    old = torch.zeros(2, 4)
    loss, stats = grpo_loss(logp, old, None, AGG_ADV, AGG_MASK, loss_type=loss_type, max_tokens=4)
    assert loss.item() == approx(expected)
    assert "kl" not in stats and stats["clip_ratio/region_mean"] == 0.0


def test_grpo_loss_dr_grpo_scales_with_max_tokens():
    logp = torch.zeros(2, 4)
    loss, _ = grpo_loss(logp, logp, None, AGG_ADV, AGG_MASK, loss_type="dr_grpo", max_tokens=8)
    assert loss.item() == approx(2 / 16)


# asymmetric clip, ε_low = 0.2, ε_high = 0.28. seq 0 (A = +1) ratios (1.25, 1.3, 0.7);
# seq 1 (A = −1) ratios (0.7, 1.5) and one padded token.
#   ρ=1.25, A=+1: −min(1.25, 1.25) = −1.25 (would be clipped at 1.2 with a symmetric ε)
#   ρ=1.3,  A=+1: −min(1.3, 1.28)  = −1.28 high-clipped
#   ρ=0.7,  A=+1: −min(0.7, 0.8)   = −0.7
#   ρ=0.7,  A=−1: −min(−0.7, −0.8) = +0.8  low-clipped
#   ρ=1.5,  A=−1: −min(−1.5, −1.28) = +1.5
CLIP_RATIOS = T([[1.25, 1.3, 0.7], [0.7, 1.5, 1.0]])
CLIP_MASK = T([[1, 1, 1], [1, 1, 0]])
CLIP_ADV = T([1.0, -1.0])


def test_grpo_loss_asymmetric_clip_and_clip_ratios():
    logp = torch.log(CLIP_RATIOS)
    old = torch.zeros(2, 3)
    loss, stats = grpo_loss(logp, old, None, CLIP_ADV, CLIP_MASK, eps_low=0.2, eps_high=0.28)
    # grpo: mean((−1.25 − 1.28 − 0.7)/3, (0.8 + 1.5)/2) = mean(−1.0766667, 1.15)
    assert loss.item() == approx(((-1.25 - 1.28 - 0.7) / 3 + (0.8 + 1.5) / 2) / 2)
    assert stats == {
        "clip_ratio/low_mean": approx(1 / 5),
        "clip_ratio/high_mean": approx(1 / 5),
        "clip_ratio/region_mean": approx(2 / 5),
    }
    eps = dict(eps_low=0.2, eps_high=0.28)
    loss, _ = grpo_loss(logp, old, None, CLIP_ADV, CLIP_MASK, **eps, loss_type="bnpo")
    assert loss.item() == approx((-1.25 - 1.28 - 0.7 + 0.8 + 1.5) / 5)  # −0.186
    # eps_high defaults to eps_low: ρ = 1.25 is now clipped at 1.2 as well
    _, stats = grpo_loss(logp, old, None, CLIP_ADV, CLIP_MASK, eps_low=0.2)
    assert stats["clip_ratio/high_mean"] == approx(2 / 5)


def test_grpo_loss_k3_term():
    # ρ = 1 and A = 0, so only β·k3 remains. π_ref/π = 0.5 and 2:
    # k3 = (r − 1) − log r = −0.5 + log 2 = 0.1931472 and 1 − log 2 = 0.3068528; mean 0.25
    logp = torch.zeros(1, 2, requires_grad=True)
    logp_ref = torch.log(T([[0.5, 2.0]]))
    loss, stats = grpo_loss(logp, logp.detach(), logp_ref, T([0.0]), torch.ones(1, 2), beta=0.1)
    assert stats["kl"] == approx(0.25)
    assert loss.item() == approx(0.1 * 0.25)
    loss.backward()
    # ∂k3/∂log π = 1 − π_ref/π: (0.5, −1), times β, over 2 tokens
    assert logp.grad.flatten().tolist() == approx([0.1 * 0.5 / 2, 0.1 * -1.0 / 2])


def test_grpo_loss_padding_gets_no_gradient():
    logp = torch.zeros(2, 4)
    logp[0, 1:] = float("inf")
    logp.requires_grad_()
    loss, _ = grpo_loss(logp, torch.zeros(2, 4), torch.zeros(2, 4), AGG_ADV, AGG_MASK, beta=0.04)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert (logp.grad[AGG_MASK == 0] == 0).all()


# ---------------------------------------------------------------- best-of-n (chapter 06)


def test_bon_kl_bound_values():
    assert bon_kl_bound(1) == 0.0
    assert bon_kl_bound(2) == approx(math.log(2) - 0.5)  # 0.1931472
    assert bon_kl_bound(16) == approx(math.log(16) - 15 / 16)


def test_exact_best_of_n_hand_example_with_a_tie():
    # rewards (1, 1, 0): the best of 2 has reward 1 with probability 1 − 0.2² = 0.96, which the
    # tied outputs 0 and 1 share in proportion to π_ref (0.5 : 0.3): 0.6 and 0.36; output 2: 0.04
    pi = exact_best_of_n(T([0.5, 0.3, 0.2]), T([1.0, 1.0, 0.0]), 2)
    assert pi.tolist() == approx([0.6, 0.36, 0.04])
    # two equally likely outputs with equal rewards: the best of 2 is either, half the time each
    assert exact_best_of_n(T([0.5, 0.5]), T([0.0, 0.0]), 2).tolist() == approx([0.5, 0.5])


def test_exact_best_of_n_renormalises_float32_probs():
    probs = T([0.3, 0.3, 0.4000049])  # sums to 1 + 5e-6: allowed by the check, renormalised
    out = exact_best_of_n(probs, T([0.0, 1.0, 2.0]), 7)
    assert out.double().sum().item() == approx(1.0, abs=1e-7)


def test_exact_best_of_n_n1_and_normalisation():
    gen = torch.Generator().manual_seed(0)
    probs = -torch.rand(7, generator=gen).log()  # exponential draws, normalised: a Dirichlet(1) sample
    probs = probs / probs.sum()
    rewards = torch.randint(0, 3, (7,), generator=gen).float()  # with ties
    assert exact_best_of_n(probs, rewards, 1).tolist() == approx(probs.tolist())
    for n in (2, 5, 50):
        assert exact_best_of_n(probs, rewards, n).sum().item() == approx(1.0)


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    p, q = p.double(), q.double()
    return float(torch.where(p > 0, p * (p / q).log(), 0.0).sum())


@pytest.mark.parametrize("seed", range(5))
def test_exact_best_of_n_kl_is_below_the_bound(seed):
    gen = torch.Generator().manual_seed(seed)
    k = 3 + seed * 5
    probs = torch.rand(k, generator=gen, dtype=torch.float64) + 0.01
    probs = probs / probs.sum()
    rewards = torch.randn(k, generator=gen)
    kls = []
    for n in (1, 2, 4, 16, 64):
        kl = _kl(exact_best_of_n(probs, rewards, n), probs)
        assert kl <= bon_kl_bound(n) + 1e-12
        kls.append(kl)
    assert kls[0] == approx(0.0)
    assert kls == sorted(kls)  # more samples, further from π_ref
    # a categorical saturates: as n → ∞, π_n → the best output y*, and KL → −log π(y*)
    assert kls[-1] <= -math.log(probs[rewards.argmax()].item()) + 1e-12
    assert all(kl < bon_kl_bound(n) for kl, n in zip(kls[1:], (2, 4, 16, 64)))


def test_exact_best_of_n_kl_saturates_for_two_outputs():
    probs, rewards = T([0.5, 0.5], dtype=torch.float64), T([0.0, 1.0])
    # π_64 = (2⁻⁶⁴, 1 − 2⁻⁶⁴): KL → log 2, while the bound grows like log n
    assert _kl(exact_best_of_n(probs, rewards, 64), probs) == approx(math.log(2), rel=1e-12)


def test_exact_best_of_n_matches_monte_carlo():
    probs = T([0.1, 0.25, 0.2, 0.05, 0.3, 0.1])
    rewards = T([0.0, 1.0, 2.0, 2.0, 1.0, 3.0])  # ties: 1 vs 4, 2 vs 3
    n, draws = 3, 200_000
    # an independent statement of the tie rule: keep the first-drawn sample of the best reward
    gen = torch.Generator().manual_seed(0)
    samples = torch.multinomial(probs, draws * n, replacement=True, generator=gen).view(draws, n)
    best = samples.gather(1, rewards[samples].argmax(dim=1, keepdim=True)).squeeze(1)  # argmax: the first max
    empirical = torch.bincount(best, minlength=6).double() / draws
    exact = exact_best_of_n(probs, rewards, n).double()
    tolerance = 5 * torch.sqrt(exact * (1 - exact) / draws) + 1e-4
    assert ((empirical - exact).abs() <= tolerance).all(), (empirical, exact)


def test_exact_best_of_n_matches_the_sampler_on_tied_gold_rewards():
    """The real best-of-n sampler against the exact distribution, on gold rewards, which tie
    (many completions share a sentiment score): the kept completion's frequencies agree."""
    from rlhf_lab import exact as exact_lib
    from rlhf_lab.algos.best_of_n import best_of_n
    from rlhf_lab.models import build_policy
    from rlhf_lab.scale import get_scale
    from rlhf_lab.worlds.reviews import ReviewsWorld

    scale = get_scale("ci").replace(n_layer=1, n_head=2, n_embd=32, seed=0)
    # 21 completions: 4 words (two of each polarity, equal in size) then EOS or one more word
    world = ReviewsWorld(n_topics=1, words_per_class=2, max_new_tokens=2, negation=False, intensifier=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = build_policy(world, scale)  # an untrained policy: spread over many completions
    enum = exact_lib.Enumeration(world)
    probs = enum.logprobs(policy)[0].exp()  # (K,) for the first prompt
    gold = enum.gold[0]
    n, draws = 3, 20_000
    kept = best_of_n(policy, world, [world.prompts[0]] * draws, n, world.gold_rewards,
                     generator=torch.Generator().manual_seed(0))
    empirical = torch.bincount(enum.index(kept.completions), minlength=len(probs)).double() / draws
    exact = exact_best_of_n(probs, gold, n).double()
    top = torch.arange(len(probs))
    tied = [int(i) for i in top if int((gold == gold[i]).sum()) > 1]
    assert len(tied) >= 10, "the check needs tied outputs"
    tolerance = 5 * torch.sqrt(exact[top] * (1 - exact[top]) / draws) + 1e-4
    assert ((empirical[top] - exact[top]).abs() <= tolerance).all(), (empirical[top], exact[top])


def test_bon_win_rate():
    probs, rewards = T([0.5, 0.5]), T([0.0, 1.0])
    # π_2 = (0.25, 0.75): 0.25·(0 + ½·0.5) + 0.75·(0.5 + ½·0.5) = 0.625 ≤ 2/3
    assert bon_win_rate(probs, rewards, 2) == approx(0.625)
    gen = torch.Generator().manual_seed(1)
    probs = -torch.rand(20, generator=gen).log()  # exponential draws, normalised: a Dirichlet(1) sample
    probs = probs / probs.sum()
    rewards = torch.randn(20, generator=gen)
    assert bon_win_rate(probs, rewards, 1) == approx(0.5)
    for n in (2, 4, 16):
        assert 0.5 < bon_win_rate(probs, rewards, n) <= n / (n + 1)
    # nearly continuous (many equally likely distinct outputs): close to n/(n + 1)
    k = 2000
    uniform = torch.full((k,), 1 / k)
    assert bon_win_rate(uniform, torch.arange(k).float(), 4) == approx(0.8, abs=1e-3)


# ---------------------------------------------------------------- bad input

Z23, Z24 = torch.zeros(2, 3), torch.zeros(2, 4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: reinforce_loss(T([0.0, 1.0]), T([0.0])), "seq_logp and rewards"),
        (lambda: reinforce_loss(T([0.0]), T([0.0]), "median"), "baseline"),
        (lambda: reinforce_loss(T([0.0]), T([0.0]), T([0.0, 1.0])), "baseline"),
        (lambda: ppo_policy_loss(*_ppo_inputs(), 0.0), "clip_eps"),
        (lambda: ppo_policy_loss(*_ppo_inputs(), 1.0), "clip_eps"),
        (lambda: ppo_policy_loss(*_ppo_inputs(), -0.1), "clip_eps"),
        (lambda: ppo_policy_loss(Z23, Z23, torch.zeros(2), torch.ones(2, 3), 0.2), "same shape"),
        (lambda: value_loss(Z23, Z23, torch.zeros(2, 2), torch.ones(2, 3)), "same shape"),
        (lambda: value_loss(Z23, Z23, Z23, torch.ones(2, 3), 0.0), "clip_eps"),
        (lambda: dpo_loss(*DPO_ARGS[:4], 0.0), "beta"),
        (lambda: dpo_loss(*DPO_ARGS[:4], -0.1), "beta"),
        (lambda: dpo_loss(CHOSEN, T([0.0]), REF_CHOSEN, REF_REJECTED, 0.1), "same shape"),
        (lambda: dpo_loss(*DPO_ARGS, kind="kto"), "kind"),
        (lambda: dpo_loss(*DPO_ARGS, label_smoothing=0.5), "label_smoothing"),
        (lambda: dpo_loss(*DPO_ARGS, label_smoothing=-0.1), "label_smoothing"),
        (lambda: dpo_loss(*DPO_ARGS, kind="ipo", label_smoothing=0.1), "label_smoothing"),
        (lambda: dpo_loss(*DPO_ARGS, kind="hinge", label_smoothing=0.1), "label_smoothing"),
        (lambda: simpo_loss(CHOSEN, REJECTED, 0.0, 1.0), "beta"),
        (lambda: simpo_loss(CHOSEN, REJECTED, 2.0, -1.0), "gamma"),
        (lambda: simpo_loss(CHOSEN, T([0.0]), 2.0, 1.0), "same shape"),
        (lambda: group_advantages(T([[1.0], [0.0]])), "G >= 2"),
        (lambda: group_advantages(T([1.0, 0.0])), "G >= 2"),
        (lambda: group_advantages(T([[1.0, 0.0]]), scale="std"), "scale"),
        (lambda: rloo_advantages(T([[1.0]])), "G >= 2"),
        (lambda: grpo_loss(*_grpo_inputs(), loss_type="ppo"), "loss_type"),
        (lambda: grpo_loss(*_grpo_inputs(), loss_type="dr_grpo"), "max_tokens"),
        (lambda: grpo_loss(*_grpo_inputs(), loss_type="dr_grpo", max_tokens=2), "max_tokens"),
        (lambda: grpo_loss(*_grpo_inputs(), eps_low=1.0), "eps_low"),
        (lambda: grpo_loss(*_grpo_inputs(), eps_high=0.0), "eps_high"),
        (lambda: grpo_loss(*_grpo_inputs(), beta=-0.1), "beta"),
        (lambda: grpo_loss(Z24, Z24, None, AGG_ADV, AGG_MASK, beta=0.1), "logp_ref"),
        (lambda: grpo_loss(Z24, Z24, None, T([1.0]), AGG_MASK), "adv"),
        (lambda: grpo_loss(Z24, Z24, torch.zeros(2, 3), AGG_ADV, AGG_MASK), "shape"),
        (lambda: bon_kl_bound(0), "n must be"),
        (lambda: bon_kl_bound(2.5), "n must be"),
        (lambda: bon_kl_bound(True), "n must be"),
        (lambda: exact_best_of_n(T([0.5, 0.5]), T([0.0, 1.0]), 0), "n must be"),
        (lambda: exact_best_of_n(T([0.5, 0.6]), T([0.0, 1.0]), 2), "probs"),
        (lambda: exact_best_of_n(T([0.5, 0.5]), T([0.0]), 2), "probs and rewards"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _grpo_inputs():
    return torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4), AGG_ADV, AGG_MASK


def test_group_advantages_accept_integer_rewards_and_eps_zero():
    from rlhf_lab.algos.grpo import group_advantages

    ints = torch.tensor([[1, 0, 0, 1], [1, 1, 1, 1]])  # a verifier's 0/1 rewards, one all-correct group
    adv = group_advantages(ints)
    assert adv.dtype == torch.float32
    assert torch.equal(adv, group_advantages(ints.float()))
    assert adv[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    no_eps = group_advantages(ints.float(), eps=0.0)
    assert torch.isfinite(no_eps).all() and no_eps[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # 0, not NaN
    # unequal groups with eps = 0: (r − mean) / Bessel std exactly
    assert no_eps[0].tolist() == approx(((ints[0].float() - 0.5) / ints[0].float().std()).tolist())

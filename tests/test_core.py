"""Unit tests for rlhf_lab.core: hand-computed tiny tensors, a plain reference loop for GAE,
Monte Carlo checks of the KL estimators against the exact KL, and the ValueErrors."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_lab.core import (
    entropy_from_logits,
    gae,
    kl_penalty,
    masked_mean,
    masked_whiten,
    sequence_logprobs,
    token_logprobs,
)

LN2, LN3 = math.log(2.0), math.log(3.0)
INF = float("inf")


# -- token_logprobs ------------------------------------------------------------------------------
def test_token_logprobs_hand_computed():
    # softmax([0, ln 2, ln 3]) = [1/6, 2/6, 3/6]; the second row is the same shifted by +5
    # (log-softmax is shift-invariant) and has one token masked out with -inf: [1/3, 2/3, 0].
    logits = torch.tensor(
        [
            [[0.0, LN2, LN3], [0.0, LN2, LN3]],
            [[5.0, 5.0 + LN2, 5.0 + LN3], [0.0, LN2, -INF]],
        ]
    )  # (B=2, T=2, V=3)
    tokens = torch.tensor([[0, 2], [1, 1]])
    expected = torch.tensor(
        [[math.log(1 / 6), math.log(3 / 6)], [math.log(2 / 6), math.log(2 / 3)]]
    )
    torch.testing.assert_close(token_logprobs(logits, tokens), expected)


def test_token_logprobs_matches_cross_entropy_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g) * 4
    tokens = torch.randint(0, 7, (3, 5), generator=g)
    expected = -torch.nn.functional.cross_entropy(
        logits.reshape(-1, 7), tokens.reshape(-1), reduction="none"
    ).reshape(3, 5)
    torch.testing.assert_close(token_logprobs(logits, tokens), expected)


# -- sequence_logprobs ---------------------------------------------------------------------------
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_sequence_logprobs_sum_and_average(mask_dtype):
    # The padded entries hold values that would dominate any sum they leaked into.
    token_logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, 1e30], [-7.0, -INF, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]).to(mask_dtype)
    torch.testing.assert_close(
        sequence_logprobs(token_logp, mask), torch.tensor([-6.0, -4.5, -7.0])
    )
    torch.testing.assert_close(
        sequence_logprobs(token_logp, mask, average=True), torch.tensor([-2.0, -2.25, -7.0])
    )


# -- entropy_from_logits -------------------------------------------------------------------------
@pytest.mark.parametrize("V", [2, 5, 1000])
def test_entropy_uniform_is_log_v(V):
    logits = torch.full((2, 3, V), 7.5)  # any constant: uniform
    torch.testing.assert_close(entropy_from_logits(logits), torch.full((2, 3), math.log(V)))


def test_entropy_hand_computed_and_one_hot():
    p = torch.tensor([1 / 6, 2 / 6, 3 / 6])
    h_expected = -(p * p.log()).sum()
    logits = torch.tensor(
        [
            [0.0, LN2, LN3, -INF],  # the 1/6, 2/6, 3/6 distribution, one token masked out
            [0.0, -INF, -INF, -INF],  # one-hot
            [1000.0, 0.0, 0.0, 0.0],  # one-hot up to exp(-1000): large logits stay stable
            [3.0, 3.0, -INF, -INF],  # uniform over the two allowed tokens
        ]
    )
    expected = torch.stack([h_expected, torch.tensor(0.0), torch.tensor(0.0), torch.tensor(LN2)])
    torch.testing.assert_close(entropy_from_logits(logits), expected)


def test_entropy_gradient_is_finite_with_masked_tokens():
    logits = torch.tensor([[0.3, -1.2, -INF, 2.0, -INF]], requires_grad=True)
    entropy_from_logits(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()
    # Masked tokens get no gradient; the allowed ones match the entropy of the 3 allowed logits.
    assert logits.grad[0, 2] == 0 and logits.grad[0, 4] == 0
    allowed = torch.tensor([[0.3, -1.2, 2.0]], requires_grad=True)
    entropy_from_logits(allowed).sum().backward()
    torch.testing.assert_close(logits.grad[0, [0, 1, 3]], allowed.grad[0])


# -- masked_mean / masked_whiten ------------------------------------------------------------------
X = torch.tensor([[1.0, 2.0, 3.0, 1e30], [4.0, 5.0, INF, float("nan")]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_masked_mean_ignores_padding(mask_dtype):
    mask = MASK.to(mask_dtype)
    torch.testing.assert_close(masked_mean(X, mask), torch.tensor(3.0))  # (1+2+3+4+5)/5
    torch.testing.assert_close(masked_mean(X, mask, dim=1), torch.tensor([2.0, 4.5]))
    # the last column has no valid entry: its mean is undefined
    torch.testing.assert_close(
        masked_mean(X, mask, dim=0), torch.tensor([2.5, 3.5, 3.0, math.nan]), equal_nan=True
    )


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_masked_whiten_hand_computed(mask_dtype):
    mask = MASK.to(mask_dtype)
    # valid values 1..5: mean 3, unbiased variance (4+1+0+1+4)/4 = 2.5
    std = math.sqrt(2.5 + 1e-8)
    z = torch.tensor([[-2.0, -1.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0]]) / std
    z[~MASK.bool()] = 0.0
    torch.testing.assert_close(masked_whiten(X, mask), z)
    shifted = torch.where(MASK.bool(), z + 3.0, 0.0)
    torch.testing.assert_close(masked_whiten(X, mask, shift_mean=False), shifted)


def test_masked_whiten_gives_zero_mean_unit_unbiased_variance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 9, generator=g, dtype=torch.float64) * 3 + 11
    mask = torch.arange(9) < torch.tensor([[9], [5], [2], [7]])  # (4, 9) right padding
    w = masked_whiten(x, mask)
    valid = w[mask]
    torch.testing.assert_close(valid.mean(), torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(valid.var(unbiased=True), torch.tensor(1.0, dtype=torch.float64))
    # and the same numbers as whitening the valid entries alone
    xv = x[mask]
    torch.testing.assert_close(valid, (xv - xv.mean()) / torch.sqrt(xv.var() + 1e-8))


# -- gae ------------------------------------------------------------------------------------------
def gae_reference(rewards, values, length, gamma, lam):
    """Â_t = Σ_l (γλ)^l δ_{t+l} over one sequence's valid prefix, as an explicit sum."""
    r = [float(v) for v in rewards[:length]]
    v = [float(x) for x in values[:length]] + [0.0]  # V after the last valid token is 0
    deltas = [r[t] + gamma * v[t + 1] - v[t] for t in range(length)]
    adv = [
        sum((gamma * lam) ** l * deltas[t + l] for l in range(length - t)) for t in range(length)
    ]
    return adv, [a + v[t] for t, a in enumerate(adv)]


def _padded_batch(lengths, T, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(len(lengths), T, generator=g, dtype=torch.float64)
    values = torch.randn(len(lengths), T, generator=g, dtype=torch.float64)
    mask = torch.arange(T) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
    # Garbage at the padding: it must not leak into valid positions.
    rewards[~mask] = 1e6
    values[~mask] = -1e6
    return rewards, values, mask


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_gae_matches_reference_loop(gamma, lam, mask_dtype):
    lengths = [7, 4, 1, 0, 6]
    rewards, values, mask = _padded_batch(lengths, T=7, seed=2)
    adv, ret = gae(rewards, values, mask.to(mask_dtype), gamma, lam)
    for b, length in enumerate(lengths):
        ref_adv, ref_ret = gae_reference(rewards[b], values[b], length, gamma, lam)
        torch.testing.assert_close(adv[b, :length], torch.tensor(ref_adv, dtype=torch.float64))
        torch.testing.assert_close(ret[b, :length], torch.tensor(ref_ret, dtype=torch.float64))
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_gae_special_cases():
    lengths = [5, 3, 2]
    rewards, values, mask = _padded_batch(lengths, T=5, seed=3)
    r = torch.where(mask, rewards, 0.0)
    v = torch.where(mask, values, 0.0)
    v_next = torch.cat([v[:, 1:], torch.zeros(3, 1, dtype=torch.float64)], dim=1)
    # λ = 0: the TD residual δ_t = r_t + γ V_{t+1} − V_t
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv, torch.where(mask, r + 0.9 * v_next - v, 0.0))
    # λ = 1, γ = 1: reward-to-go minus value; the return is the reward-to-go itself
    reward_to_go = r.flip(1).cumsum(1).flip(1)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, torch.where(mask, reward_to_go - v, 0.0))
    torch.testing.assert_close(ret, reward_to_go)


def test_gae_hand_computed_and_detached():
    # one sequence of 2 tokens, γ = 0.5, λ = 0.5:
    # δ_1 = 2 + 0 − 1 = 1; δ_0 = 1 + 0.5·1 − 0.5 = 1; Â_1 = 1; Â_0 = 1 + 0.25·1 = 1.25
    values = torch.tensor([[0.5, 1.0, 9.0]], requires_grad=True)
    adv, ret = gae(torch.tensor([[1.0, 2.0, 9.0]]), values, torch.tensor([[1, 1, 0]]), 0.5, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[1.25, 1.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[1.75, 2.0, 0.0]]))
    assert not adv.requires_grad and not ret.requires_grad


# -- kl_penalty -----------------------------------------------------------------------------------
N_SAMPLES = 200_000


def _categorical_pair(scale, seed):
    g = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(torch.randn(10, generator=g, dtype=torch.float64) * scale, dim=0)
    logp_ref = torch.log_softmax(torch.randn(10, generator=g, dtype=torch.float64) * scale, dim=0)
    return logp, logp_ref


def _exact_kl(logp, logq):
    return float((logp.exp() * (logp - logq)).sum())


def _samples(logp, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(logp.exp(), N_SAMPLES, replacement=True, generator=g)


def test_kl_estimators_exact_expectation():
    # E_π[k] = Σ_y π(y) k(y), computed exactly: k1 and k3 are unbiased, k2 is not.
    logp, logp_ref = _categorical_pair(scale=1.5, seed=4)
    kl = _exact_kl(logp, logp_ref)
    p = logp.exp()
    for kind in ("k1", "k3"):
        assert float((p * kl_penalty(logp, logp_ref, kind)).sum()) == pytest.approx(kl, rel=1e-12)
    assert abs(float((p * kl_penalty(logp, logp_ref, "k2")).sum()) - kl) > 0.05 * kl


# KL(π‖π_ref) ≈ 2.12 and KL(π_ref‖π) ≈ 1.57 for this pair; at 200k samples the standard error
# of the k1 and k3 means is about 0.2% of the KL, so the 1% tolerance is 4.5 standard errors.
MC_PAIR = dict(scale=2.0, seed=0)


def test_kl_estimators_monte_carlo_match_exact_kl():
    logp, logp_ref = _categorical_pair(**MC_PAIR)
    kl = _exact_kl(logp, logp_ref)
    reverse_kl = _exact_kl(logp_ref, logp)
    assert abs(reverse_kl - kl) > 0.2 * kl  # the two directions are far apart for this pair
    y = _samples(logp, seed=1)  # samples from π
    for kind in ("k1", "k3"):
        est = kl_penalty(logp[y], logp_ref[y], kind)
        se = float(est.std()) / math.sqrt(N_SAMPLES)
        assert float(est.mean()) == pytest.approx(kl, rel=0.01), kind
        # a flipped direction (estimating KL(π_ref‖π), or −KL(π‖π_ref)) would be this far off
        assert abs(float(est.mean()) - reverse_kl) > 20 * se, kind
    # k1 is negative on some samples; k3 never is
    assert (kl_penalty(logp[y], logp_ref[y], "k1") < 0).any()
    assert (kl_penalty(logp[y], logp_ref[y], "k3") >= 0).all()


def test_kl_swapped_arguments_estimate_the_other_direction():
    logp, logp_ref = _categorical_pair(**MC_PAIR)
    kl = _exact_kl(logp, logp_ref)
    reverse_kl = _exact_kl(logp_ref, logp)
    y = _samples(logp_ref, seed=2)  # samples from π_ref
    for kind in ("k1", "k3"):
        est = kl_penalty(logp_ref[y], logp[y], kind)
        se = float(est.std()) / math.sqrt(N_SAMPLES)
        # k3's relative standard error is 0.5% in this direction, so test in standard errors
        assert abs(float(est.mean()) - reverse_kl) < 4 * se, kind
        assert abs(float(est.mean()) - kl) > 20 * se, kind


def test_k2_is_biased_for_a_large_kl():
    logp, logp_ref = _categorical_pair(scale=3.0, seed=8)
    kl = _exact_kl(logp, logp_ref)
    assert kl > 1.0
    y = _samples(logp, seed=9)
    k2 = kl_penalty(logp[y], logp_ref[y], "k2")
    se = float(k2.std()) / math.sqrt(N_SAMPLES)
    assert abs(float(k2.mean()) - kl) > 10 * se


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k3_is_nonnegative_and_accurate_near_zero(dtype):
    small = torch.logspace(-12, 0, 1001)
    log_r = torch.cat([torch.linspace(-40, 15, 100_001), small, -small]).to(dtype)
    k3 = kl_penalty(torch.zeros_like(log_r), log_r, "k3")  # log r = logp_ref − logp
    assert (k3 >= 0).all() and torch.isfinite(k3).all()
    # near r = 1, k3 ≈ ½ (log r)²: exp(log r) − 1 − log r would return 0 or rounding noise here
    tiny = torch.tensor([1e-4, -1e-4], dtype=dtype)
    k3_tiny = kl_penalty(torch.zeros_like(tiny), tiny, "k3")
    torch.testing.assert_close(k3_tiny, 0.5 * tiny**2 + tiny**3 / 6, rtol=1e-3, atol=0)


def test_kl_penalty_hand_computed():
    # π(y) = 1/2, π_ref(y) = 1/4: log r = −ln 2, r = 1/2
    logp, logp_ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    torch.testing.assert_close(kl_penalty(logp, logp_ref, "k1"), torch.tensor([LN2]))
    torch.testing.assert_close(kl_penalty(logp, logp_ref, "k2"), torch.tensor([0.5 * LN2**2]))
    torch.testing.assert_close(kl_penalty(logp, logp_ref, "k3"), torch.tensor([-0.5 + LN2]))
    assert kl_penalty(logp, logp_ref).shape == (1,)  # k1 by default


# -- input validation -----------------------------------------------------------------------------
def test_value_errors_name_the_argument():
    logits = torch.zeros(2, 4, 5)
    msg = r"tokens has shape \(2, 3\) but logits has shape \(2, 4, 5\)"
    with pytest.raises(ValueError, match=msg):
        token_logprobs(logits, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens must be an integer tensor"):
        token_logprobs(logits, torch.zeros(2, 4))
    msg = r"mask has shape \(2, 3\) but token_logp has shape \(2, 4\)"
    with pytest.raises(ValueError, match=msg):
        sequence_logprobs(torch.zeros(2, 4), torch.ones(2, 3), average=True)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\) but x has shape \(2, 4\)"):
        masked_mean(torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"mask has shape \(4,\) but x has shape \(2, 4\)"):
        masked_whiten(torch.zeros(2, 4), torch.ones(4))
    with pytest.raises(ValueError, match="mask selects 1 valid entries"):
        masked_whiten(torch.zeros(2, 4), torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="kind must be one of"):
        kl_penalty(torch.zeros(3), torch.zeros(3), kind="k4")
    with pytest.raises(ValueError, match=r"logp_ref has shape \(2,\) but logp has shape \(3,\)"):
        kl_penalty(torch.zeros(3), torch.zeros(2))


def test_gae_value_errors():
    r, m = torch.zeros(2, 4), torch.ones(2, 4)
    msg = r"values has shape \(2, 3\) but rewards has shape \(2, 4\)"
    with pytest.raises(ValueError, match=msg):
        gae(r, torch.zeros(2, 3), m, 1.0, 0.95)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\) but rewards has shape \(2, 4\)"):
        gae(r, r, torch.ones(2, 3), 1.0, 0.95)
    with pytest.raises(ValueError, match=r"rewards must have shape \(B, T\), got \(4,\)"):
        gae(torch.zeros(4), torch.zeros(4), torch.ones(4), 1.0, 0.95)
    with pytest.raises(ValueError, match="mask must be right-padded"):
        gae(r, r, torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]]), 1.0, 0.95)
    for gamma in (1.5, -0.1, math.nan):
        with pytest.raises(ValueError, match="gamma must be in"):
            gae(r, r, m, gamma, 0.95)
    for lam in (1.01, -1.0):
        with pytest.raises(ValueError, match="lam must be in"):
            gae(r, r, m, 1.0, lam)

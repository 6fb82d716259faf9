"""rlhf_lab.exercises: the checkers pass the references and fail typical wrong implementations
with a message naming what differs; every practice answer is recomputed independently."""

import html
import inspect
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from rlhf_lab import book
from rlhf_lab import exercises as ex
from rlhf_lab.exercises.problems import REGISTRY


@pytest.fixture(autouse=True)
def _student_edition(monkeypatch):
    """The student edition, whatever the environment says: a wrong answer is a result here."""
    monkeypatch.delenv("RLHF_LAB_EDITION", raising=False)


def _solution(problem):
    namespace = {}
    exec(ex.solution_source(problem), namespace)
    return namespace[problem]


# -- the references pass, the stubs fail, the package agrees with the formulas ------------------
@pytest.mark.parametrize("problem", ex.PROBLEMS)
def test_solution_source_passes_and_stub_fails(problem):
    solution = _solution(problem)
    result = ex.check(problem, solution)
    assert result.passed, str(result)
    assert list(inspect.signature(solution).parameters) == list(REGISTRY[problem].args)
    stub_ns = {}
    exec(ex.stub_source(problem), stub_ns)
    stub = ex.check(problem, stub_ns[problem])
    assert not stub.passed and "NotImplementedError" in stub.message
    assert "rlhf_lab" not in ex.solution_source(problem)  # plain torch
    for source in (ex.stub_source(problem), ex.solution_source(problem)):
        assert "Shape:" in source and max(len(line) for line in source.splitlines()) <= 88


@pytest.mark.parametrize("problem", ex.PROBLEMS)
def test_package_reference_equals_direct_formula(problem):
    spec = REGISTRY[problem]
    for case in spec.cases():
        args = [case.inputs[a] for a in spec.args]
        pkg = spec.package(*args)
        direct = spec.formula(*args)
        assert pkg.shape == direct.shape
        torch.testing.assert_close(pkg.double(), direct, rtol=1e-5, atol=1e-6, msg=case.name)
        if case.grad:
            leaves = [[a.clone().requires_grad_(n in spec.grad_args) if torch.is_tensor(a) else a
                       for n, a in zip(spec.args, args)] for _ in range(2)]
            grads = [torch.autograd.grad(f(*x).sum(), [a for n, a in zip(spec.args, x)
                                                        if n in spec.grad_args])
                     for f, x in zip((spec.package, spec.formula), leaves)]
            for gp, gf in zip(*grads):
                torch.testing.assert_close(gp.double(), gf.double(), rtol=1e-5, atol=1e-6)


def test_check_is_deterministic_and_never_raises_for_student_errors():
    def wrong(r_chosen, r_rejected):
        return (r_chosen - r_rejected).mean()

    assert ex.check("bradley_terry_loss", wrong).message == \
        ex.check("bradley_terry_loss", wrong).message

    def raises(seq_logp, rewards, baseline):
        weights = rewards - baseline
        return weights[100]  # IndexError in the student's own line

    result = ex.check("reinforce_loss", raises)
    assert not result.passed and not result
    assert "IndexError" in result.message and "index 100 is out of bounds" in result.message
    assert "return weights[100]" in result.message  # the last frame of the student's code
    assert "raised" in result.message
    assert not ex.check("gae", 42).passed


def test_unknown_problem_lists_the_known_names():
    with pytest.raises(ValueError) as info:
        ex.check("ppo_loss", lambda *a: None)
    for name in ex.PROBLEMS:
        assert name in str(info.value)
    with pytest.raises(ValueError):
        ex.stub_source("nope")


def test_result_renders_green_or_red_with_the_message():
    good = ex.check("kl_k3", _solution("kl_k3"))
    bad = ex.check("kl_k3", lambda logp, logp_ref: logp - logp_ref)
    assert "#2e7d32" in good._repr_html_() and html.escape(good.message) in good._repr_html_()
    page = bad._repr_html_()
    assert "#c62828" in page and html.escape(bad.message) in page
    assert str(bad).startswith("✗") and repr(good).startswith("✓")
    assert "expected" in bad.message and "got" in bad.message and "hint:" in bad.message


# -- typical wrong implementations fail, naming what differs -----------------------------------
def _bt_sum(c, r):
    return -F.logsigmoid(c - r).sum()


def _bt_swapped(c, r):
    return -F.logsigmoid(r - c).mean()


def _bt_naive(c, r):
    return -torch.log(torch.sigmoid(c - r)).mean()


def _bt_tuple(c, r):
    diff = c - r
    return -F.logsigmoid(diff).mean(), {"accuracy": (diff > 0).float().mean().item()}


def _bt_item(c, r):
    return torch.tensor(-F.logsigmoid(c - r).mean().item())


def _rf_no_baseline(seq_logp, rewards, baseline):
    return -(rewards * seq_logp).mean()


def _rf_sign(seq_logp, rewards, baseline):
    return ((rewards - baseline) * seq_logp).mean()


def _rf_sum(seq_logp, rewards, baseline):
    return -((rewards - baseline) * seq_logp).sum()


def _rf_per_sample(seq_logp, rewards, baseline):
    return -(rewards - baseline) * seq_logp


def _rf_detached(seq_logp, rewards, baseline):
    return -((rewards - baseline) * seq_logp.detach()).mean()


def _gae_loop(rewards, values, mask, gamma, lam, use_mask=True, factor=None, zero_pad=True,
              multiply=False):
    """A student's GAE with switches for the usual mistakes."""
    valid = mask.bool() if use_mask else torch.ones_like(mask, dtype=torch.bool)
    if multiply:
        rewards, values = rewards * valid, values * valid
    else:
        rewards, values = torch.where(valid, rewards, 0.0), torch.where(valid, values, 0.0)
    adv = torch.zeros_like(rewards)
    next_value = next_adv = torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = delta + (gamma * lam if factor is None else factor) * next_adv
        adv[:, t] = next_adv
        next_value = values[:, t]
    if not zero_pad:  # padded positions left holding something other than 0
        return torch.where(valid, adv, 0.5)
    return adv


def _gae_bootstrap_padding(rewards, values, mask, gamma, lam):
    """Rewards masked, but the last valid token bootstraps from the padded value after it."""
    valid = mask.bool()
    rewards = torch.where(valid, rewards, 0.0)
    adv = torch.zeros_like(rewards)
    next_value = next_adv = torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = torch.where(valid[:, t], delta + gamma * lam * next_adv, 0.0)
        adv[:, t] = next_adv
        next_value = values[:, t]
    return adv


def _ppo(logp, logp_old, adv, mask, clip_eps, combine=torch.min, clip=True, reduce="tokens",
         multiply=False, eps=None, invert=False, ratio_of_logs=False, clip_product=False):
    valid = mask.bool()
    if multiply:
        logp, logp_old, adv = logp * valid, logp_old * valid, adv * valid
    else:
        logp = torch.where(valid, logp, 0.0)
        logp_old, adv = torch.where(valid, logp_old, 0.0), torch.where(valid, adv, 0.0)
    ratio = torch.exp(logp_old - logp) if invert else torch.exp(logp - logp_old)
    if ratio_of_logs:
        ratio = logp / logp_old
    eps = clip_eps if eps is None else eps
    clipped = torch.clamp(ratio, 1 - eps, 1 + eps) * adv if clip else ratio * adv
    if clip_product:
        clipped = torch.clamp(ratio * adv, 1 - eps, 1 + eps)
    per_token = -combine(ratio * adv, clipped)
    if reduce == "entries":
        return (per_token * valid).mean()
    if reduce == "sequences":
        return ((per_token * valid).sum(1) / valid.sum(1)).mean()
    return (per_token * valid).sum() / valid.sum()


def _dpo(c, r, rc, rr, beta, inside=True, ref=True, swap=False, naive=False):
    delta = ((c - rc) - (r - rr)) if ref else (c - r)
    if swap:
        delta = -delta
    if naive:
        return -torch.log(torch.sigmoid(beta * delta)).mean()
    return -F.logsigmoid(beta * delta).mean() if inside else -(beta * F.logsigmoid(delta)).mean()


def _grpo(rewards, correction=1, eps=1e-4, dim=1, convert=True):
    r = rewards.float() if convert else rewards
    if dim is None:
        return (r - r.mean()) / (r.std(correction=correction) + eps)
    return (r - r.mean(dim, keepdim=True)) / (r.std(dim, keepdim=True, correction=correction) + eps)


def _bon(probs, rewards, n, order="reward", minus=True, scatter=True):
    idx = torch.arange(len(probs)) if order == "index" else torch.argsort(
        rewards, descending=order == "descending")
    cdf = torch.cumsum(probs[idx], 0)
    if not scatter:
        return cdf**n - (cdf - probs[idx]) ** n
    out = torch.empty_like(probs)
    out[idx] = cdf**n - (cdf - probs[idx]) ** n if minus else cdf**n
    return out


WRONG = {
    "sft_loss": [
        (lambda lp, m: -(torch.where(m, lp, 0.0).sum(1) / m.sum(1)).mean(), ["mean per demonstration"]),
        (lambda lp, m: -torch.where(m, lp, 0.0).sum() / m.numel(), ["padding included"]),
        (lambda lp, m: torch.where(m, lp, 0.0).sum() / m.sum(), ["sign"]),
        (lambda lp, m: -torch.where(m, lp, 0.0).sum(), ["summed"]),
        (lambda lp, m: -(lp * m).sum() / m.sum(), ["garbage", "torch.where"]),
        (lambda lp, m: -torch.where(m, lp, 0.0).sum(1).mean(), ["divided by B"]),
        (lambda lp, m: -lp.mean(), ["the mask is ignored"]),
    ],
    "bradley_terry_loss": [
        (_bt_sum, ["scale", "sum"]),
        (_bt_swapped, ["swapped"]),
        (_bt_naive, ["nan/inf", "logsigmoid"]),
        (_bt_tuple, ["return type", "tuple", "(loss, stats)"]),
        (_bt_item, ["gradient", "does not carry a gradient"]),
    ],
    "reinforce_loss": [
        (_rf_no_baseline, ["baseline is not subtracted"]),
        (_rf_sign, ["sign"]),
        (_rf_sum, ["sum"]),
        (_rf_per_sample, ["shape", "expected shape ()"]),
        (_rf_detached, ["gradient"]),
        (lambda lp, r, b: -((r - r.mean()) * lp).mean(), ["batch's mean reward", "baseline argument"]),
    ],
    "gae": [
        (lambda r, v, m, g, l: _gae_loop(r, v, m, g, 1.0), ["λ seems to be ignored"]),
        (lambda r, v, m, g, l: _gae_loop(r, v, m, g, l, factor=l), ["γλ, not λ"]),
        (lambda r, v, m, g, l: _gae_loop(r, v, m, g, l, use_mask=False), ["mask is ignored"]),
        (lambda r, v, m, g, l: _gae_loop(r, v, m, g, l, zero_pad=False),
         ["padding", "padded positions must be 0"]),
        (lambda r, v, m, g, l: _gae_loop(r, v, m, g, l, multiply=True),
         ["garbage (nan, 1e6)", "nan/inf", "torch.where"]),
        (lambda r, v, m, g, l: (_gae_loop(r, v, m, g, l), _gae_loop(r, v, m, g, l) + v),
         ["tuple", "the advantages as one tensor"]),
        (_gae_bootstrap_padding, ["the next value there is 0"]),
        (lambda r, v, m, g, l: _gae_loop(r, v, m, g, l) + torch.where(m, v, 0.0), ["the return Â_t + V_t"]),
        (lambda r, v, m, g, l: -_gae_loop(r, v, m, g, l), ["sign", "better than the critic expected"]),
    ],
    "ppo_policy_loss": [
        (lambda *a: _ppo(*a, combine=torch.max), ["−max(ρA, clip(ρ)A)", "before the minus sign"]),
        (lambda *a: _ppo(*a, ratio_of_logs=True), ["not logp / logp_old"]),
        (lambda *a: _ppo(*a, clip_product=True), ["clip the ratio, then multiply"]),
        (lambda *a: _ppo(*a, clip=False), ["clip is missing"]),
        (lambda *a: _ppo(*a, reduce="entries"), ["valid tokens only"]),
        (lambda *a: _ppo(*a, reduce="sequences"), ["GRPO's aggregation"]),
        (lambda *a: _ppo(*a, multiply=True), ["nan/inf", "0 · nan"]),
        (lambda *a: _ppo(*a, eps=0.2), ["ε = 0.1", "hard-coded"]),
        (lambda *a: _ppo(*a, invert=True), ["inverted"]),
        (lambda *a: -_ppo(*a), ["sign"]),
        (lambda lp, *a: _ppo(lp.detach(), *a), ["gradient"]),
    ],
    "dpo_loss": [
        (lambda *a: _dpo(*a, inside=False), ["β belongs inside"]),
        (lambda *a: _dpo(*a, ref=False), ["reference log-probs are missing"]),
        (lambda *a: _dpo(*a, swap=True), ["swapped"]),
        (lambda *a: _dpo(*a, naive=True), ["large margins", "logsigmoid"]),
        (lambda *a: 5 * _dpo(*a), ["sum"]),
        (lambda c, r, rc, rr, b: -F.logsigmoid(b * ((rc - c) - (rr - r))).mean(), ["log-ratios are inverted"]),
    ],
    "group_advantages": [
        (lambda r: _grpo(r, correction=0), ["population std", "Bessel"]),
        (lambda r: _grpo(r, eps=0.0), ["eps"]),
        (lambda r: _grpo(r, convert=False), ["raised", "integer rewards", "float()"]),
        (lambda r: _grpo(r, dim=None), ["whole batch"]),
        (lambda r: _grpo(r, dim=0), ["dim=1"]),
        (lambda r: _grpo(r, eps=1e-8), ["much smaller", "std + 1e-4"]),
        (lambda r: _grpo(r, eps=0.0).nan_to_num(0.0), ["nan_to_num"]),
        (lambda r: (r.float() - r.float().mean(1, keepdim=True)) / (r.float().std() + 1e-4),
         ["std of the whole batch"]),
        (lambda r: -_grpo(r), ["sign", "beats its group's mean"]),
    ],
    "kl_k3": [
        (lambda lp, lr: lp - lr, ["k1"]),
        (lambda lp, lr: torch.exp(lp - lr) - 1 - (lp - lr), ["reversed"]),
        (lambda lp, lr: 0.5 * (lr - lp) ** 2, ["k2"]),
        (lambda lp, lr: (torch.exp(lr - lp) - 1 - (lr - lp)).mean(), ["shape", "not a reduction"]),
        (lambda lp, lr: torch.exp(lr - lp) - 1 + (lr - lp), ["subtract log ρ"]),
        (lambda lp, lr: torch.exp((lr - lp).detach()) - 1 - (lr - lp),
         ["gradient with respect to logp (the value itself is right)", "detached"]),
        (lambda lp, lr: -(torch.exp(lr - lp) - 1 - (lr - lp)), ["sign", "never negative"]),
    ],
    "exact_best_of_n": [
        (lambda p, r, n: _bon(p, r, n, order="index"), ["shuffled order", "sort by reward"]),
        (lambda p, r, n: _bon(p, r, n, order="descending"), ["wrong way"]),
        (lambda p, r, n: _bon(p, r, n, minus=False), ["F⁻(y)^n"]),
        (lambda p, r, n: p**n / (p**n).sum(), ["renormalised"]),
        (lambda p, r, n: _bon(p, r, n, scatter=False), ["in reward order"]),
        (lambda p, r, n: -_bon(p, r, n), ["sign", "probability distribution"]),
        (lambda p, r, n: list(_bon(p, r, n)), ["the distribution π_n as one tensor"]),
    ],
}


@pytest.mark.parametrize("problem", ex.PROBLEMS)
def test_wrong_implementations_fail_with_what_differs(problem):
    assert len(WRONG[problem]) >= 3
    for fn, needles in WRONG[problem]:
        result = ex.check(problem, fn)
        assert not result.passed, (problem, needles)
        for needle in needles:
            assert needle in result.message, (problem, needle, result.message)
        assert "what differs:" in result.message
        assert "eq-" not in result.message  # equations by the book's numbers, not by label


# -- practice sets: every stored answer is recomputed here, independently ----------------------
def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _bandit_batches(pi, r, batch):
    """Every batch of `batch` arms with its probability: (probability, arms) pairs."""
    for arms in itertools.product(range(len(pi)), repeat=batch):
        yield math.prod(float(pi[a]) for a in arms), arms


def _reinforce_moments(pi, r, batch, baseline):
    """Exact mean and total variance of one batch's REINFORCE gradient estimate (softmax)."""
    eye = torch.eye(len(pi), dtype=torch.float64)
    mean, second = torch.zeros(len(pi), dtype=torch.float64), 0.0
    for prob, arms in _bandit_batches(pi, r, batch):
        rewards = r[list(arms)]
        b = rewards.mean() if baseline == "batch mean" else baseline
        g = torch.stack([(rewards[i] - b) * (eye[a] - pi) for i, a in enumerate(arms)]).mean(0)
        mean += prob * g
        second += prob * float(g @ g)
    return mean, second - float(mean @ mean)


def _v01_q2():
    from rlhf_lab.worlds import bandit as bt
    s = _t(0.3, -1.2, 2.0)
    changes = {"a": 2 * s, "b": s + 3, "c": s + 3 * torch.nn.functional.one_hot(s.argmax(), 3),
               "d": s.exp()}
    same = [k for k, v in changes.items() if torch.allclose(bt.bt_matrix(v), bt.bt_matrix(s))]
    assert len(same) == 1
    return same[0]


def _v01_q4():
    from rlhf_lab.worlds import bandit as bt
    y = torch.cat([torch.ones(30), torch.zeros(10)]).double()
    s = bt.fit_bradley_terry(torch.zeros(40, dtype=torch.long), torch.ones(40, dtype=torch.long),
                             y, 2, l2=1e-9)
    return float(s[0] - s[1])


def _v01_q5():
    from rlhf_lab.worlds import bandit as bt
    q = torch.tensor([[0.5, 0.2, 0.8], [0.8, 0.5, 0.2], [0.2, 0.8, 0.5]], dtype=torch.float64)
    assert q[0, 2] == q[2, 1] == q[1, 0] == 0.8  # A ≻ C, C ≻ B, B ≻ A
    assert bt.condorcet_winner(q) is None and bt.borda_winner(q) is None and bt.cycles(q)
    return "b"


def _v02_q3():
    pi, r = _t(0.3, 0.7), _t(1.0, 0.0)
    grad_j = pi * (r - (pi * r).sum())
    mean, _ = _reinforce_moments(pi, r, 8, "batch mean")
    assert torch.allclose(mean, (mean @ grad_j / (grad_j @ grad_j)) * grad_j)  # along ∇J
    return float(mean @ grad_j / (grad_j @ grad_j))


def _v02_q4():
    pi, r = _t(0.5, 0.3, 0.2), _t(1.0, 0.0, 2.0)
    mean0, var0 = _reinforce_moments(pi, r, 2, 0.0)
    mean10, var10 = _reinforce_moments(pi, r + 10, 2, 0.0)
    assert torch.allclose(mean0, mean10) and var10 > var0
    return "b"


def _gae_toy(lam):
    """Exact conditional bias and std of Â^λ_0 on a 2-token episode with an imperfect critic."""
    from rlhf_lab.core import gae
    p_a, p_b = _t(0.6, 0.4), _t(0.7, 0.3, 0.2, 0.8).view(2, 2)
    reward = _t(1.0, -0.5, 0.3, 2.0).view(2, 2)
    q = (p_b * reward).sum(1)  # Q(s_0, a) = V(s_1) after token a
    v_hat0, v_hat1 = float((p_a * q).sum()) + 0.3, q + _t(0.25, -0.4)
    rows = [(a, b) for a in range(2) for b in range(2)]
    rewards = torch.stack([_t(0.0, float(reward[a, b])) for a, b in rows])
    values = torch.stack([_t(v_hat0, float(v_hat1[a])) for a, _ in rows])
    adv = gae(rewards, values, torch.ones(4, 2, dtype=torch.bool), 1.0, lam)[0][:, 0].view(2, 2)
    mean = (p_b * adv).sum(1)
    var = (p_b * (adv - mean[:, None]) ** 2).sum(1)
    bias = float((p_a * (mean - (q - v_hat0)) ** 2).sum().sqrt())
    return bias, float((p_a * var).sum().sqrt())


def _v03_q4():
    (bias0, std0), (bias1, std1) = _gae_toy(0.0), _gae_toy(1.0)
    assert bias0 > 0.05 and std1 > 0.05
    starts_at_zero = "std" if std0 < 1e-12 else "bias"
    ends_at_zero = "bias" if bias1 < 1e-12 else "std"
    return {"A": starts_at_zero, "B": ends_at_zero}


def _v03_q5():
    p_b = (_t(0.7, 0.3), _t(0.1, 0.9))  # two policies' continuations of the same prefix
    reward = _t(1.0, -1.0)  # the reward model: fixed
    values = [float((p * reward).sum()) for p in p_b]
    assert abs(values[0] - values[1]) > 0.1
    return "b"


def _v03_q6():
    from rlhf_lab.algos.a2c import a2c_policy_loss
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, float("nan"), 9.0]])
    adv = torch.tensor([[1.0, 0.5, -2.0], [2.0, 5.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()
    return float(a2c_policy_loss(logp, adv, mask)[0])


def _clip_objective(rho, adv, eps=0.2):
    """L^CLIP of one token and dL/dρ, through rlhf_lab's ppo_policy_loss."""
    from rlhf_lab.algos.ppo import ppo_policy_loss
    logp = torch.tensor([[math.log(rho)]], dtype=torch.float64, requires_grad=True)
    loss, _ = ppo_policy_loss(logp, torch.zeros(1, 1, dtype=torch.float64),
                              torch.tensor([[adv]], dtype=torch.float64), torch.ones(1, 1), eps)
    (grad,) = torch.autograd.grad(-loss, logp)
    return -float(loss.detach()), float(grad) / rho


def _v04_q3():
    zero = [rho for rho in (0.3, 0.6, 0.79, 0.81, 1.0, 1.19, 1.21, 1.5, 2.0)
            if _clip_objective(rho, -1.0)[1] == 0.0]
    assert zero == [0.3, 0.6, 0.79]
    return "b"


def _v04_q4():
    # the question's curves at ρ = 0.5 and ρ = 2: P = (0.5, 1.2), Q = (−0.8, −2.0)
    described = {"P": [0.5, 1.2], "Q": [-0.8, -2.0]}
    label = {}
    for name, values in described.items():
        for sign, adv in (("positive", 1.0), ("negative", -1.0)):
            if [_clip_objective(rho, adv)[0] for rho in (0.5, 2.0)] == pytest.approx(values):
                label[name] = sign
    return label


def _v04_q6():
    from rlhf_lab.core import kl_penalty
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    logp_ref = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    kl = float((logp.exp() * (logp - logp_ref)).sum())
    unbiased = [k for k in ("k1", "k2", "k3")
                if abs(float((logp.exp() * kl_penalty(logp, logp_ref, k)).sum()) - kl) < 1e-9]
    return {("k1",): "a", ("k1", "k3"): "b", ("k2", "k3"): "c"}.get(tuple(unbiased), "d")


def _v05_q4():
    from rlhf_lab.algos.reward_model import label_ceiling
    gaps, tau = _t(0.1, 0.3, 0.05), 0.2
    agree = torch.sigmoid(gaps / tau)  # P(label follows the gold order)
    best = max(float(sum(a if pick else 1 - a for a, pick in zip(agree, picks)) / 3)
               for picks in itertools.product([True, False], repeat=3))
    assert best == pytest.approx(label_ceiling(gaps, torch.zeros(3), tau))
    return "b"


def _v05_q5():
    from rlhf_lab.algos.reward_model import bradley_terry_loss
    g = torch.Generator().manual_seed(0)
    c, r = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g,
                                                                         dtype=torch.float64)
    return float(bradley_terry_loss(c + 5, r + 5)[0] - bradley_terry_loss(c, r)[0])


def _v06_q2_q3():
    from rlhf_lab import exact
    from rlhf_lab.algos.best_of_n import exact_best_of_n
    p = _t(0.5, 0.3, 0.2)
    pi2 = exact_best_of_n(p, _t(0.0, 1.0, 2.0), 2)
    return float(pi2[2]), float(exact.kl(pi2.log(), p.log()))


def _v06_q4():
    from rlhf_lab import exact
    from rlhf_lab.algos.best_of_n import bon_kl_bound, exact_best_of_n

    def kl(p, n):
        return float(exact.kl(exact_best_of_n(p, torch.arange(len(p)).double(), n).log(),
                              p.log()))

    flat, peaked = torch.full((2000,), 1 / 2000, dtype=torch.float64), _t(0.5, 0.3, 0.2)
    assert bon_kl_bound(4) - kl(flat, 4) < 1e-2  # nearly tight: no output has much mass
    assert kl(peaked, 2) < bon_kl_bound(2) - 0.04  # not the KL itself (a)
    assert kl(peaked, 1000) <= math.log(1 / 0.2) + 1e-9 < bon_kl_bound(1000)  # saturates (d)
    assert all(kl(peaked, n) <= bon_kl_bound(n) + 1e-12 for n in (1, 2, 5, 50))  # not (c)
    return "b"


def _v06_q5():
    from rlhf_lab.algos.best_of_n import select_samples
    g = torch.Generator().manual_seed(0)
    rewards = torch.tensor([[1.0], [0.0], [-1.0]]) + 0.3 * torch.randn(3, 8, generator=g)
    per_prompt, overall = select_samples(rewards, 2, "per_prompt"), select_samples(rewards, 2,
                                                                                  "overall")
    assert int(per_prompt.sum()) == int(overall.sum()) == 6 and int(per_prompt[2].sum()) == 2
    return "b" if int(overall[2].sum()) == 0 else "c"


def _dpo_kind(delta, kind, beta):
    from rlhf_lab.algos.dpo import dpo_loss
    zero = torch.zeros_like(delta)
    return torch.stack([dpo_loss(d[None], z[None], z[None], z[None], beta, kind)[0]
                        for d, z in zip(delta, zero)])


def _v07_q4():
    grid = torch.arange(0, 5.0005, 0.001, dtype=torch.float64)
    return float(grid[_dpo_kind(grid, "ipo", 0.25).argmin()])


def _v07_q5():
    grid = torch.arange(0, 20.0005, 0.001, dtype=torch.float64)
    return float(grid[_dpo_kind(grid, "hinge", 0.1) == 0].min())


def _v07_q6():
    g = torch.Generator().manual_seed(1)
    logp = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    logp_ref = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    beta = 0.3
    mean_implicit = float((logp_ref.exp() * beta * (logp - logp_ref)).sum())
    kl_ref_pi = float((logp_ref.exp() * (logp_ref - logp)).sum())
    assert mean_implicit == pytest.approx(-beta * kl_ref_pi) and mean_implicit < 0
    return "b"


def _zero_variance(p, group):
    """P(all G rewards equal), by enumerating every outcome of the group."""
    return sum(math.prod(p if o else 1 - p for o in outcome)
               for outcome in itertools.product([0, 1], repeat=group) if len(set(outcome)) == 1)


def _v08_q6():
    from rlhf_lab.algos.grpo import grpo_loss
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    loss, _ = grpo_loss(logp, torch.zeros(2, 3), None, torch.tensor([-1.0, -1.0]), mask,
                        loss_type="grpo")
    (grad,) = torch.autograd.grad(loss, logp)
    return float(grad[0, 0] / grad[1, 0])


def _argmax_on_grid(f, lo, hi, step=1e-5):
    d = torch.arange(lo, hi, step, dtype=torch.float64)
    return float(d[f(d).argmax()])


def _v09_q4():
    counts = [len(set(s)) for s in itertools.product(range(4), repeat=4)]
    return sum(counts) / len(counts)


def _frontier_toy():
    """π*_β along β for a proxy whose favourite output gold dislikes: (proxy, gold, kl) lists."""
    from rlhf_lab import exact
    logp_ref = torch.log(_t(0.35, 0.3, 0.2, 0.13, 0.02))
    gold = _t(0.0, 0.5, 1.0, 0.3, -2.0)
    proxy = _t(0.0, 0.5, 1.0, 0.3, 1.5)  # right except on a rare output
    out = []
    for beta in torch.logspace(1, -3, 60).tolist():
        logp = exact.kl_regularized_optimum(logp_ref, proxy, beta)
        out.append((float((logp.exp() * proxy).sum()), float((logp.exp() * gold).sum()),
                    float(exact.kl(logp, logp_ref))))
    return [list(x) for x in zip(*out)]


def _v09_q5():
    proxy, gold, _ = _frontier_toy()
    assert all(b >= a - 1e-12 for a, b in zip(proxy, proxy[1:]))  # the proxy only rises
    peak = gold.index(max(gold))
    assert 0 < peak < len(gold) - 1  # gold peaks at an interior KL
    return {"A": "proxy", "B": "gold"}


def _v09_q6():
    _, _, kl = _frontier_toy()  # β falls along the list
    assert all(b >= a - 1e-12 for a, b in zip(kl, kl[1:]))
    return "b"


def _pkg(module, name):
    return getattr(__import__(module, fromlist=[name]), name)


def _v01b_q1():
    """The SFT loss of two rows: the package's sft_loss on the padded batch."""
    logp = _t(-0.5, -1.0, -0.2, -2.0, 0.0, 0.0).reshape(2, 3)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    return float(_pkg("rlhf_lab.algos.sft", "sft_loss")(logp, mask)[0])


def _v01b_q3():
    """The prompt tokens' entropy: '+' and '=' certain, b uniform over 10 digits."""
    p = torch.full((10,), 0.1, dtype=torch.float64)
    return float(-(p * p.log()).sum())


def _v10_q4():
    pass_at_k = _pkg("rlhf_lab.exact", "pass_at_k")
    gold = _t(1.0, 0.0).expand(2, 2)
    a = torch.log(_t(0.5, 0.5, 0.5, 0.5).view(2, 2))
    b = torch.log(_t(1 - 1e-12, 1e-12, 0.1, 0.9).view(2, 2))
    sharper = pass_at_k(b, gold, 1) > pass_at_k(a, gold, 1)
    return "a" if sharper and pass_at_k(b, gold, 4) < pass_at_k(a, gold, 4) else "b"


VERIFY = {
    ("01b", "q1"): _v01b_q1,
    ("01b", "q2"): lambda: "b",
    ("01b", "q3"): _v01b_q3,
    ("01", "q1"): lambda: float(_pkg("rlhf_lab.worlds.bandit", "bt_matrix")(_t(1.0, -0.5))[0, 1]),
    ("01", "q2"): _v01_q2,
    ("01", "q3"): lambda: float(_pkg("rlhf_lab.worlds.bandit", "bt_log_likelihood")(
        _t(0.0, 1.0), torch.tensor([1, 1, 1]), torch.tensor([0, 0, 0]), _t(1.0, 1.0, 0.0))),
    ("01", "q4"): _v01_q4,
    ("01", "q5"): _v01_q5,
    ("01", "q6"): lambda: next(n for n in range(400, 10_000)
                               if 0.2 * math.sqrt(400 / n) <= 0.1 + 1e-12),
    ("02", "q1"): lambda: float(torch.autograd.grad(
        (torch.softmax(x := torch.log(_t(0.5, 0.3, 0.2)).requires_grad_(), 0)
         * _t(1.0, 0.0, 2.0)).sum(), x)[0][2]),
    ("02", "q2"): lambda: float(_pkg("rlhf_lab.algos.reinforce", "reinforce_loss")(
        _t(-1.0, -2.0), _t(1.0, 0.0), 0.5)[0]),
    ("02", "q3"): _v02_q3,
    ("02", "q4"): _v02_q4,
    ("02", "q5"): lambda: float(_pkg("rlhf_lab.algos.grpo", "rloo_advantages")(
        _t(2.0, 0.0, 1.0, 3.0)[None])[0, 0]),
    **{("03", q): (lambda lam, t: lambda: float(_pkg("rlhf_lab.core", "gae")(
        _t(0.0, 0.0, 1.0)[None], _t(0.2, 0.5, 0.6)[None], torch.ones(1, 3, dtype=torch.bool),
        1.0, lam)[0][0, t]))(lam, t) for q, lam, t in (("q1", 0.0, 2), ("q2", 0.5, 0),
                                                        ("q3", 1.0, 0))},
    ("03", "q4"): _v03_q4,
    ("03", "q5"): _v03_q5,
    ("03", "q6"): _v03_q6,
    ("04", "q1"): lambda: _clip_objective(1.5, 2.0)[0],
    ("04", "q2"): lambda: _clip_objective(0.5, -1.0)[0],
    ("04", "q3"): _v04_q3,
    ("04", "q4"): _v04_q4,
    ("04", "q5"): lambda: float(_pkg("rlhf_lab.core", "kl_penalty")(_t(-1.0), _t(-1.5), "k3")),
    ("04", "q6"): _v04_q6,
    ("05", "q1"): lambda: _pkg("rlhf_lab.algos.reward_model", "label_ceiling")(
        _t(0.2), _t(0.0), 0.2),
    ("05", "q2"): lambda: _pkg("rlhf_lab.algos.reward_model", "label_ceiling")(
        _t(0.0, 0.2, 0.6), torch.zeros(3), 0.2),
    ("05", "q3"): lambda: float(_pkg("rlhf_lab.algos.reward_model", "bradley_terry_loss")(
        _t(1.0, 0.0), _t(0.0, 0.5))[0]),
    ("05", "q4"): _v05_q4,
    ("05", "q5"): _v05_q5,
    ("05", "q6"): lambda: float((3.0 - (x := _t(1.5, 2.5)).mean()) / x.std(correction=0)),
    ("06", "q1"): lambda: _pkg("rlhf_lab.algos.best_of_n", "bon_kl_bound")(4),
    ("06", "q2"): lambda: _v06_q2_q3()[0],
    ("06", "q3"): lambda: _v06_q2_q3()[1],
    ("06", "q4"): _v06_q4,
    ("06", "q5"): _v06_q5,
    ("07", "q1"): lambda: float(_dpo_kind(_t(5.0), "sigmoid", 0.1)[0]),
    ("07", "q2"): lambda: float(0.5 * (torch.log(_t(0.2)) - torch.log(_t(0.1)))),
    ("07", "q3"): lambda: float(_pkg("rlhf_lab.exact", "kl_regularized_optimum")(
        torch.log(_t(0.5, 0.5)), _t(1.0, 0.0), 1.0).exp()[0]),
    ("07", "q4"): _v07_q4,
    ("07", "q5"): _v07_q5,
    ("07", "q6"): _v07_q6,
    ("08", "q1"): lambda: float(_pkg("rlhf_lab.algos.grpo", "group_advantages")(
        torch.tensor([[1, 0, 0, 0]]))[0, 0]),
    ("08", "q2"): lambda: float(_pkg("rlhf_lab.algos.grpo", "rloo_advantages")(
        _t(1.0, 0.0, 0.0, 0.0)[None])[0, 0]),
    ("08", "q3"): lambda: _zero_variance(0.9, 8),
    ("08", "q4"): lambda: next(g for g in range(2, 40) if _zero_variance(0.8, g) < 0.1),
    ("08", "q5"): lambda: _pkg("rlhf_lab.exact", "pass_at_k")(
        torch.log(_t(0.3, 0.7))[None], _t(1.0, 0.0)[None], 4),
    ("08", "q6"): _v08_q6,
    ("09", "q1"): lambda: _argmax_on_grid(lambda d: d * (1 - 0.25 * d), 0.0, 10.0) ** 2,
    ("09", "q2"): lambda: _argmax_on_grid(lambda d: d * (1 - 0.5 * d.log()), 0.01, 10.0),
    ("09", "q3"): lambda: -0.5 * math.exp(0.0) + 2.0,
    ("09", "q4"): _v09_q4,
    ("09", "q5"): _v09_q5,
    ("09", "q6"): _v09_q6,
    ("10", "q1"): lambda: min(range(1, 65), key=lambda n: abs(
        _pkg("rlhf_lab.algos.best_of_n", "bon_kl_bound")(n) - 1.0)),
    ("10", "q2"): lambda: 0.8 * 0.9 + (1 - 0.8) * (1 - 0.9),
    ("10", "q3"): lambda: 40 - math.ceil(100 * 4 / (16 * 8)),
    ("10", "q4"): _v10_q4,
    # ZeRO-2 keeps the bf16 weights whole and shards gradients and Adam's fp32 states
    ("11", "q1"): lambda: 64 * 4 / 8,
    ("11", "q2"): lambda: 135e6 * (2 + 2 / 8 + 12 / 8) / 1e9,
    ("11", "q3"): lambda: float(torch.tensor(1.2) / torch.tensor(256.0).sqrt()),
    ("11", "q4"): lambda: "b",
}
# answers found by a fit or on a grid agree to the fit's or the grid's precision
PRECISION = {("01", "q4"): 1e-4, ("07", "q4"): 1e-3, ("07", "q5"): 1e-3, ("09", "q1"): 1e-4,
             ("09", "q2"): 1e-4}


def test_practice_sets_cover_every_chapter_after_the_tour():
    assert ex.CHAPTERS == tuple(path.stem.split("_")[0] for path in book.chapter_paths()[1:])
    for chapter in ex.CHAPTERS:
        ps = ex.practice(chapter)
        assert isinstance(ps, ex.PracticeSet) and 3 <= len(ps.questions) <= 6
        assert len({q.id for q in ps.questions}) == len(ps.questions)
        for q in ps.questions:
            assert q.kind in ("numeric", "choice", "curves") and q.text and q.worked and q.hint
            if q.kind == "numeric":
                assert "within ±" in q.text or "exact integer" in q.text  # tolerance stated
            if q.kind == "choice":
                assert q.answer in "abcdef"[: len(q.choices)] and len(q.choices) >= 3
            if q.kind == "curves":
                assert set(q.answer) <= set(q.choices) and len(q.answer) == len(q.curves)
    assert {(c, q.id) for c in ex.CHAPTERS for q in ex.practice(c).questions} == set(VERIFY)


@pytest.mark.parametrize("key", sorted(VERIFY))
def test_practice_answer_is_what_the_formula_gives(key):
    chapter, qid = key
    q = ex.practice(chapter).question(qid)
    computed = VERIFY[key]()
    if q.kind == "numeric":
        assert abs(computed - q.answer) <= PRECISION.get(key, 1e-6), (computed, q.answer)
    elif q.kind == "curves":
        assert tuple(computed[c] for c in q.curves) == q.answer
    else:
        assert computed == q.answer
    result = ex.answer(chapter, qid, computed)
    assert result.passed, result.message
    assert ex.solution(chapter, qid).startswith("Answer:")


def test_practice_wrong_answers_get_hints():
    for chapter in ex.CHAPTERS:
        for q in ex.practice(chapter).questions:
            if q.kind == "numeric":
                wrong = q.answer + 10 * q.tol + 1.0
            elif q.kind == "choice":
                wrong = next(c for c in "abcd" if c != q.answer)
            else:
                wrong = dict(zip(q.curves, reversed(q.answer)))
            result = ex.answer(chapter, q.id, wrong)
            assert not result.passed and "hint:" in result.message and result.hint
            for trap, hint in q.traps:
                assert hint in ex.answer(chapter, q.id, trap).message
    population = ex.answer("08", "q1", 0.75 / (math.sqrt(0.75 / 4) + 1e-4))
    assert not population.passed and "Bessel" in population.message


def test_a_numeric_answer_right_but_for_precision_or_percent_is_told_so():
    rough = ex.answer("01b", "q3", round(math.log(10), 1))  # 2.3 where 2.303 ± 0.001 is asked
    assert not rough.passed and "more decimals" in rough.hint
    percent = ex.answer("10", "q2", 74)  # 0.74 asked, as a fraction
    assert not percent.passed and "percentage" in percent.hint
    far = ex.answer("01b", "q3", 5.0)
    assert not far.passed and "more decimals" not in far.hint and "percentage" not in far.hint


def test_practice_answers_are_parsed_leniently_and_refused_clearly():
    assert ex.answer("04", "q1", torch.tensor(2.4)).passed
    assert ex.answer("04", "q3", "(B)").passed and ex.answer("04", "q3", " b ").passed
    assert ex.answer("03", "q4", ["std", "bias"]).passed
    assert ex.answer("03", "q4", {"a": "STD", "b": "bias"}).passed
    assert "letter" in ex.answer("04", "q3", 2).message
    assert "number" in ex.answer("04", "q1", "2.4").message
    assert "each curve" in ex.answer("03", "q4", {"A": "std"}).message
    assert ex.practice(2) == ex.practice("02") == ex.practice("02_policy_gradient")
    assert ex.practice("01b_sft").chapter == "01b"
    with pytest.raises(ValueError, match="01, 01b, 02"):
        ex.practice("12")
    with pytest.raises(ValueError, match="q1"):
        ex.answer("02", "q99", 1.0)


def test_an_answer_not_given_yet_is_neither_right_nor_wrong():
    for chapter, qid, form in (("04", "q1", "a number"), ("04", "q3", "a letter"),
                               ("03", "q4", "a dict")):
        result = ex.answer(chapter, qid, None)  # the placeholder of a chapter's answer cell
        assert result.pending and not result.passed and not result
        assert "not answered yet" in result.message and form in result.message
        assert str(result).startswith("…") and "hint" not in result.message
        page = result._repr_html_()
        assert "not answered yet" in page and "#c62828" not in page and "#2e7d32" not in page
    assert not ex.answer("04", "q1", 2.4).pending and not ex.answer("04", "q1", 0.0).pending


def test_the_instructor_edition_raises_where_a_check_or_answer_does_not_pass(monkeypatch):
    stub_ns = {}
    exec(ex.stub_source("dpo_loss"), stub_ns)
    monkeypatch.setenv("RLHF_LAB_EDITION", "instructor")
    with pytest.raises(AssertionError, match="RLHF_LAB_EDITION=instructor(.|\n)*NotImplementedError"):
        ex.check("dpo_loss", stub_ns["dpo_loss"])
    with pytest.raises(AssertionError, match="04/q1"):
        ex.answer("04", "q1", 2.5)
    with pytest.raises(AssertionError, match="not answered yet"):
        ex.answer("04", "q1", None)
    assert ex.check("dpo_loss", _solution("dpo_loss")).passed
    assert ex.answer("04", "q1", 2.4).passed and ex.practice("04").answer("q3", "b").passed
    monkeypatch.setenv("RLHF_LAB_EDITION", "student")
    assert not ex.check("dpo_loss", stub_ns["dpo_loss"]).passed  # a result, not an error


def test_practice_set_renders_its_questions():
    ps = ex.practice("06")
    page = ps._repr_html_()
    for q in ps.questions:
        assert html.escape(q.text) in page and q.text in str(ps)
    assert "answer(" in page and "solution(" in page
    assert "answer=" not in repr(ps.questions[0])  # the answer is not printed with the question


def test_practice_questions_cite_equations_their_chapter_defines():
    """A question shows an equation by the book's number; that equation is its chapter's own."""
    import re

    chapter_of = {n: chapter for chapter, n in book.equation_numbers().values()}
    cited = 0
    for chapter in ex.CHAPTERS:
        for q in ex.practice(chapter).questions:
            words = " ".join([q.text, q.worked, q.hint, *(h for _, h in q.traps)])
            for n in re.findall(r"\beq\. \(?(\d+)", words):
                assert chapter_of[int(n)] == chapter, (chapter, q.id, n)
                cited += 1
    assert cited >= 20  # the scan finds the citations


def test_an_untouched_stub_is_pending_not_red_and_any_other_error_is_a_failure():
    stub_ns: dict = {}
    exec(ex.stub_source("gae"), stub_ns)
    result = ex.check("gae", stub_ns["gae"])
    assert result.pending and not result.passed and "not attempted yet" in result.message
    assert "not attempted yet" in result._repr_html_()

    def broken(rewards, values, mask, gamma, lam):
        raise ValueError("oops")

    result = ex.check("gae", broken)
    assert not result.pending and not result.passed and "ValueError: oops" in result.message

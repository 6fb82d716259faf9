"""The code a chapter cell shows for each coding problem: the student's stub and the
instructor's solution, in plain torch (no rlhf_lab), sharing one signature and docstring."""

from __future__ import annotations

from rlhf_lab.exercises import sft_problem
from rlhf_lab.exercises.problems import get_problem

IMPORTS = "import torch\nimport torch.nn.functional as F\n\n\n"

# name → (signature, docstring, solution body); every line fits the book's 88 columns
_SOURCES: dict[str, tuple[str, str, str]] = {
    "bradley_terry_loss": (
        "def bradley_terry_loss(\n    r_chosen: torch.Tensor, r_rejected: torch.Tensor\n"
        ") -> torch.Tensor:",
        """Bradley–Terry loss: the mean over pairs of −log σ(r_chosen − r_rejected).

    Shape:
        r_chosen (B,), r_rejected (B,) → () (a scalar tensor).
    """,
        """    # logsigmoid is stable where log(sigmoid(x)) underflows to log 0
    return -F.logsigmoid(r_chosen - r_rejected).mean()
"""),
    "reinforce_loss": (
        "def reinforce_loss(\n    seq_logp: torch.Tensor, rewards: torch.Tensor, baseline: float\n"
        ") -> torch.Tensor:",
        """REINFORCE surrogate loss −mean((R − b) · log π(y)); its gradient estimates −∇J.

    Shape:
        seq_logp (B,) (carries the gradient), rewards (B,), baseline a float → ().
    """,
        """    adv = (rewards - baseline).detach()  # a fixed weight: no gradient through R − b
    return -(adv * seq_logp).mean()
"""),
    "gae": (
        "def gae(\n    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,\n"
        "    gamma: float, lam: float,\n) -> torch.Tensor:",
        """Generalised advantage estimation: Â_t = Σ_l (γλ)^l δ_{t+l},
    δ_t = r_t + γ V_{t+1} − V_t, computed backwards as Â_t = δ_t + γλ Â_{t+1}.

    The mask is right-padded (True then False in each row). The value after the last
    valid token is 0; padded positions may hold anything, and their advantage is 0.

    Shape:
        rewards (B, T), values (B, T), mask (B, T) bool → advantages (B, T).
    """,
        """    valid = mask.bool()
    # padding holds no reward and no value; where() keeps a padded nan out (0·nan = nan)
    rewards = torch.where(valid, rewards, 0.0)
    values = torch.where(valid, values, 0.0)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,) V after the last token: 0
    next_adv = torch.zeros_like(rewards[:, 0])  # (B,) Â_{t+1}
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # δ_t
        next_adv = delta + gamma * lam * next_adv  # Â_t = δ_t + γλ Â_{t+1}
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return torch.where(valid, advantages, 0.0)
"""),
    "ppo_policy_loss": (
        "def ppo_policy_loss(\n    logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor,\n"
        "    mask: torch.Tensor, clip_eps: float,\n) -> torch.Tensor:",
        """PPO's clipped loss: the mean over valid tokens of
    −min(ρ A, clip(ρ, 1 − ε, 1 + ε) A), with ρ = exp(logp − logp_old).

    Padded positions (mask False) may hold anything, nan included.

    Shape:
        logp (B, T) (carries the gradient), logp_old (B, T), adv (B, T),
        mask (B, T) bool → ().
    """,
        """    valid = mask.bool()
    # select padding out before any arithmetic: it may hold nan
    logp = torch.where(valid, logp, 0.0)
    logp_old = torch.where(valid, logp_old, 0.0)
    adv = torch.where(valid, adv, 0.0)
    ratio = torch.exp(logp - logp_old)  # ρ = π_θ / π_old
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    per_token = -torch.min(ratio * adv, clipped * adv)
    return per_token[valid].mean()
"""),
    "dpo_loss": (
        "def dpo_loss(\n    logp_chosen: torch.Tensor, logp_rejected: torch.Tensor,\n"
        "    ref_logp_chosen: torch.Tensor, ref_logp_rejected: torch.Tensor, beta: float,\n"
        ") -> torch.Tensor:",
        """DPO loss: the mean over pairs of −log σ(β Δ), with
    Δ = (logp_chosen − ref_logp_chosen) − (logp_rejected − ref_logp_rejected).

    Shape:
        logp_chosen, logp_rejected (B,) (carry the gradient),
        ref_logp_chosen, ref_logp_rejected (B,) → ().
    """,
        """    chosen = logp_chosen - ref_logp_chosen  # log π_θ(y_w) / π_ref(y_w)
    rejected = logp_rejected - ref_logp_rejected  # log π_θ(y_l) / π_ref(y_l)
    return -F.logsigmoid(beta * (chosen - rejected)).mean()
"""),
    "group_advantages": (
        "def group_advantages(rewards: torch.Tensor) -> torch.Tensor:",
        """GRPO's advantages: (r − group mean) / (group std + 1e-4), per row (group).

    The std is Bessel-corrected (divides by G − 1). Integer 0/1 rewards are accepted.

    Shape:
        rewards (N, G) → advantages (N, G), floating point.
    """,
        """    if not rewards.is_floating_point():
        rewards = rewards.float()  # 0/1 rewards from a verifier
    mean = rewards.mean(dim=1, keepdim=True)  # (N, 1)
    std = rewards.std(dim=1, keepdim=True)  # (N, 1), Bessel-corrected
    return (rewards - mean) / (std + 1e-4)
"""),
    "kl_k3": (
        "def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:",
        """Per-sample k3 estimate of KL(π‖π_ref) for samples y ~ π:
    k3 = ρ − 1 − log ρ, with ρ = π_ref(y) / π(y).

    Shape:
        logp (N,) (log π(y)), logp_ref (N,) (log π_ref(y)) → (N,).
    """,
        """    log_ratio = logp_ref - logp  # log ρ
    return torch.exp(log_ratio) - 1 - log_ratio
"""),
    "exact_best_of_n": (
        "def exact_best_of_n(\n    probs: torch.Tensor, rewards: torch.Tensor, n: int\n"
        ") -> torch.Tensor:",
        """The exact distribution of the best of n samples from π_ref = probs:
    π_n(y) = F(y)^n − F⁻(y)^n, with F(y) the probability that one draw has a reward
    ≤ r(y) and F⁻(y) = F(y) − π_ref(y) that it has a smaller one.

    The rewards are distinct, in any order.

    Shape:
        probs (K,), rewards (K,) → (K,).
    """,
        """    order = torch.argsort(rewards)  # worst to best
    cdf = torch.cumsum(probs[order], dim=0)  # F(y): one draw is no better than y
    below = cdf - probs[order]  # F⁻(y): one draw is strictly worse
    out = torch.empty_like(probs)
    out[order] = cdf**n - below**n
    return out
"""),
}


_SOURCES["sft_loss"] = sft_problem.SOURCE


def _parts(problem: str) -> tuple[str, str, str]:
    chapter = get_problem(problem).chapter  # ValueError listing the known names
    signature, doc, body = _SOURCES[problem]
    return signature, f"{doc.rstrip()}\n\n    Coding problem of chapter {chapter}.\n    ", body


def stub_source(problem: str) -> str:
    """The stub a chapter shows for ``problem``: the exact signature, a docstring with shapes,
    and ``raise NotImplementedError``. Exec'ing it defines the function."""
    signature, doc, _ = _parts(problem)
    return f'{IMPORTS}{signature}\n    """{doc}"""\n    raise NotImplementedError\n'


def solution_source(problem: str) -> str:
    """A clean reference solution for ``problem`` in plain torch (the instructor edition)."""
    signature, doc, body = _parts(problem)
    return f'{IMPORTS}{signature}\n    """{doc}"""\n{body}'

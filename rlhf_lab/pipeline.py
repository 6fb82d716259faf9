"""Plumbing for the capstone: compare methods at one KL, relabel preferences with an AI judge,
and collect a policy's own correct samples for rejection-sampling SFT.

Methods that trade reward for KL can only be compared at the same distance from their start
(chapter 09): a method that moved further is not better, it spent more KL. So the capstone picks
one target KL(π‖π_sft) and turns each method's knob until it lands there —

* best-of-n: the n whose *exact* best-of-n distribution is nearest (:func:`best_of_n_near`);
* PPO, GRPO: early stopping — train until an evaluation reaches the target
  (:func:`train_to_kl`), then take the checkpoint nearest it (:func:`checkpoint_near`);
* DPO: its β, by bisection in log β (:func:`bisect_knob`), since a larger β keeps the policy
  closer to π_ref.

RLAIF replaces the gold labeller by a judge: :func:`judge_pairs` relabels pairs with a judge's
scores and :func:`label_agreement` measures how often a set of labels agrees with the gold
ordering. :func:`correct_samples` is the rejection-sampling step of a multi-stage (R1-style)
recipe. Introduced in chapter 10 (capstone).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import datasets
import torch
from torch import Tensor

from rlhf_lab.algos.best_of_n import best_of_n, exact_best_of_n
from rlhf_lab.algos.loop import RewardFn
from rlhf_lab.history import History
from rlhf_lab.validate import check_callable, check_float, check_int, check_tensor, check_texts
from rlhf_lab.worlds.base import TokenWorld


class _BudgetReached(Exception):
    """Raised by :func:`train_to_kl`'s callback to end a run; never escapes it."""


def train_to_kl(train: Callable[[Callable], History], stop_at: float, callback: Callable | None = None,
                key: str = "kl/exact") -> History:
    """Early stopping at a KL budget: ``train(cb)`` until an evaluation's ``key`` reaches ``stop_at``.

    ``train`` starts a trainer with ``cb`` as its callback (e.g.
    ``lambda cb: ppo.train(policy, world, config, cb, ...)``); ``cb`` passes every log on to
    ``callback`` (e.g. a ``LiveCurves``) and ends the run at the first evaluation whose ``key``
    is ≥ ``stop_at``. A run that never gets there ends at its last step.

    Returns:
        The run's ``History`` up to where it stopped; ``history.policy`` is the policy at that
        last evaluation (which :func:`checkpoint_near` may not pick: it reports the metrics of
        the evaluation nearest the budget, possibly the one before).
    """
    check_callable("train", train, "a function callback -> History that starts a trainer")
    check_float("stop_at", stop_at)
    check_callable("callback", callback, "a function callback(step, metrics, history)", none=True)
    seen: list[History] = []

    def stop_at_budget(step: int, metrics: dict[str, float], history: History) -> None:
        seen[:] = [history]
        if callback is not None:
            callback(step, metrics, history)
        if metrics.get(key, -math.inf) >= stop_at:
            raise _BudgetReached

    try:
        return train(stop_at_budget)
    except _BudgetReached:
        history = seen[0]
        history.policy.eval()
        return history


def checkpoint_near(history: History, target: float, key: str = "kl/exact") -> dict[str, float]:
    """The evaluation of ``history`` whose ``key`` (the exact KL) is nearest ``target``.

    Early stopping at a KL budget: every metric the evaluator logged at that step, plus
    ``step``. Ties go to the earlier checkpoint.

    Raises:
        ValueError: ``history`` logged no ``key``.
    """
    check_float("target", target)
    values = history[key] if key in history.keys() else []
    if not values:
        raise ValueError(f"history has no {key!r}; train with an evaluator (eval_every ≥ 1)")
    steps = history.steps(key)
    i = min(range(len(values)), key=lambda j: abs(values[j] - target))
    step = steps[i]
    row = {k: history[k][history.steps(k).index(step)] for k in history.keys() if step in history.steps(k)}
    return {**row, "step": float(step)}


def best_of_n_logprobs(logp_ref: Tensor, rewards: Tensor, n: int) -> Tensor:
    """Exact log-probs of best-of-n from π_ref under ``rewards``, per prompt (eq-bon-exact).

    Shape: logp_ref (P, K), rewards (P, K) → (P, K), −inf where best-of-n never lands.
    """
    check_tensor("logp_ref", logp_ref, kind="float", ndim=2, dims="(P, K)")
    check_tensor("rewards", rewards, shape=tuple(logp_ref.shape), dims="(P, K)")
    check_int("n", n, ge=1)
    probs = torch.stack([exact_best_of_n(p, r, n) for p, r in zip(logp_ref.double().exp(), rewards.double())])
    return torch.where(probs > 0, probs.log(), torch.tensor(-math.inf, dtype=torch.float64))


def best_of_n_near(logp_ref: Tensor, rewards: Tensor, target: float, kl_fn: Callable[[Tensor], float],
                   n_max: int = 256) -> tuple[int, Tensor]:
    """The n in 1 … ``n_max`` whose exact best-of-n KL, ``kl_fn(logp)``, is nearest ``target``.

    The exact KL of best-of-n grows with n, so the search stops once it has passed the target.

    Returns:
        (n, log-probs (P, K) of best-of-n).

    Raises:
        ValueError: best-of-``n_max`` is still short of the target (raise ``n_max``, or lower the
            target: best-of-n's KL is at most log n − (n − 1)/n).
    """
    check_float("target", target, ge=0)
    check_callable("kl_fn", kl_fn, "a function logp (P, K) -> KL in nats")
    check_int("n_max", n_max, ge=1)
    best = (math.inf, 1, logp_ref.double())
    for n in range(1, n_max + 1):
        logp = best_of_n_logprobs(logp_ref, rewards, n)
        kl = kl_fn(logp)
        if abs(kl - target) < best[0]:
            best = (abs(kl - target), n, logp)
        if kl > target:
            break
    else:
        if kl < target:
            raise ValueError(f"best-of-{n_max} reaches KL {kl:.3f} < target {target}: raise n_max or lower "
                             f"the target")
    return best[1], best[2]


def bisect_knob(run: Callable[[float], tuple[float, object]], lo: float, hi: float, target: float, *,
                tol: float, max_runs: int = 5) -> tuple[float, object, list[tuple[float, float]]]:
    """Turn a knob that the KL falls with (β) until ``run(knob)``'s KL is within ``tol`` of ``target``.

    ``run`` returns ``(kl, result)``. The first try is the geometric middle of [lo, hi]; then,
    while the target is not bracketed, the guess assumes KL ∝ 1/knob (DPO's KL roughly is); once
    it is, the guess interpolates log knob linearly in log KL between the two nearest tries on
    either side (regula falsi), so a power law is hit at once. Every guess stays inside the
    interval the tries so far leave open. Stops at the first run within ``tol`` or after
    ``max_runs`` runs.

    Returns:
        (knob, result) of the run nearest the target, and every (knob, kl) tried, in order.
    """
    check_callable("run", run, "a function knob -> (kl, result)")
    check_float("lo", lo, gt=0)
    check_float("hi", hi, gt=lo)
    check_float("target", target, gt=0)
    check_float("tol", tol, gt=0)
    check_int("max_runs", max_runs, ge=1)
    tried: list[tuple[float, float]] = []
    best: tuple[float, float, object] = (math.inf, lo, None)
    a, b = math.log(lo), math.log(hi)  # the open interval of log knob
    guess = (a + b) / 2
    for _ in range(max_runs):
        knob = math.exp(guess)
        kl, result = run(knob)
        tried.append((knob, kl))
        if abs(kl - target) < best[0]:
            best = (abs(kl - target), knob, result)
        if abs(kl - target) <= tol:
            break
        # the KL falls as the knob grows: too far from the start means a larger knob
        a, b = (guess, b) if kl > target else (a, guess)
        far = [(math.log(k), math.log(v)) for k, v in tried if v > target and v > 0]
        near = [(math.log(k), math.log(v)) for k, v in tried if 0 < v < target]
        if far and near:
            (x0, y0), (x1, y1) = max(far), min(near)  # the tightest bracket
            guess = x0 + (math.log(target) - y0) * (x1 - x0) / (y1 - y0)
        else:
            guess = guess + math.log(max(kl, 1e-12) / target)  # KL ∝ 1/knob
        if not a < guess < b:
            guess = (a + b) / 2
    return best[1], best[2], tried


def label_agreement(pairs: datasets.Dataset) -> float:
    """The fraction of pairs whose chosen completion has the higher gold reward (gold ties left out).

    Reads the columns ``chosen_gold`` and ``rejected_gold`` (``data.preference_dataset``).
    """
    chosen = torch.tensor(pairs["chosen_gold"], dtype=torch.float64)
    rejected = torch.tensor(pairs["rejected_gold"], dtype=torch.float64)
    decided = chosen != rejected
    if not bool(decided.any()):
        raise ValueError("every pair has equal gold rewards; agreement is undefined")
    return float((chosen > rejected)[decided].double().mean())


def judge_pairs(pairs: datasets.Dataset, judge: RewardFn, seed: int = 0) -> datasets.Dataset:
    """The same pairs, with the judge's verdict as the label: chosen is the one it scores higher.

    ``judge(prompts, completions) -> Tensor (B,)``, e.g. a reward model trained on a few gold
    labels. The gold columns follow their completions, so :func:`label_agreement` measures the
    judge. A tie is a fair coin (seeded by ``seed``): keeping the given order would leak the gold
    label into the judge's.
    """
    check_callable("judge", judge, "a function judge(prompts, completions) -> Tensor (B,)")
    prompts = check_texts("pairs['prompt']", pairs["prompt"])
    a, b = pairs["chosen"], pairs["rejected"]
    score_a = torch.as_tensor(judge(prompts, a)).detach().double().cpu()  # (B,)
    score_b = torch.as_tensor(judge(prompts, b)).detach().double().cpu()  # (B,)
    coin = torch.rand(len(prompts), generator=torch.Generator().manual_seed(seed)) < 0.5
    swap = ((score_b > score_a) | ((score_b == score_a) & coin)).tolist()
    cols = {"prompt": prompts,
            "chosen": [y if s else x for x, y, s in zip(a, b, swap)],
            "rejected": [x if s else y for x, y, s in zip(a, b, swap)]}
    if "chosen_gold" in pairs.column_names:
        ga, gb = pairs["chosen_gold"], pairs["rejected_gold"]
        cols["chosen_gold"] = [y if s else x for x, y, s in zip(ga, gb, swap)]
        cols["rejected_gold"] = [x if s else y for x, y, s in zip(ga, gb, swap)]
    return datasets.Dataset.from_dict(cols)


def correct_samples(policy: torch.nn.Module, world: TokenWorld, prompts: Sequence[str], n: int, *,
                    reward_fn: RewardFn | None = None, generator: torch.Generator | None = None
                    ) -> tuple[datasets.Dataset, int]:
    """Rejection sampling: n samples of each prompt from ``policy``, kept where the reward is > 0.

    With the verifier of a verifiable world (the default, ``world.gold_rewards``) these are the
    policy's own correct answers, duplicates included (a prompt solved often weighs more), as
    DeepSeek-R1's rejection-sampling stage collects them for SFT.

    Returns:
        A ``datasets.Dataset`` (columns prompt, completion) for ``sft.train``, and the number of
        samples drawn (len(prompts) · n), the stage's sampling cost.
    """
    prompts = check_texts("prompts", prompts)
    check_int("n", n, ge=1)
    drawn = best_of_n(policy, world, prompts, n, reward_fn or world.gold_rewards, generator=generator)
    rows = [(x, y) for x, ys, rs in zip(drawn.prompts, drawn.samples, drawn.sample_rewards.tolist())
            for y, r in zip(ys, rs) if r > 0]
    data = datasets.Dataset.from_dict({"prompt": [x for x, _ in rows], "completion": [y for _, y in rows]})
    return data, len(prompts) * n

"""Reward models from pairwise preferences: a Config, a short training loop, and tools around it.

A preference pair is a prompt x with two completions, y_w (chosen) and y_l (rejected). Under
Bradley–Terry P(y_w ≻ y_l | x) = σ(r(x, y_w) − r(x, y_l)), so maximum likelihood is

    L = −E[log σ(r(x, y_w) − r(x, y_l) − m)]                                       (eq-rm-loss)

with an optional margin m ≥ 0 (Llama 2 uses one that grows with how strongly raters preferred
y_w). Only reward differences are identified, so after training we shift and scale the RM to
mean 0, std 1 on reference samples (``normalise_rewards``): the scale then means the same
thing in every chapter that uses it as a reward.

The loss itself, :func:`bradley_terry_loss`, is in ``pairwise.py`` beside DPO's (importable
from here). ``train`` takes a :class:`RewardModelConfig`; ``train_reward_model`` takes its
fields as keyword arguments. ``label_ceiling`` is the best accuracy noisy labels allow, and
``enumerated_rewards`` scores every completion of an enumerated world. Introduced in chapter 05.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlhf_lab.algos.loop import Callback, RunLog, check_fields, make_optimizer, optimizer_step
from rlhf_lab.data import PREFERENCE_COLUMNS as COLUMNS  # noqa: F401  (re-exported)
from rlhf_lab.data import check_preferences
from rlhf_lab.history import History
from rlhf_lab.pairwise import bradley_terry_loss
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import as_tensor, check_callable, check_float, check_instance, check_int, check_tensor, check_texts


def _pair_scores(rm, tokenizer, prompts, chosen, rejected, device) -> tuple[torch.Tensor, torch.Tensor]:
    """r(x, y_w), r(x, y_l) in one forward pass over 2B texts. Shape: → (B,), (B,)."""
    texts = [f"{p} {c}" for p, c in zip(prompts, chosen)] + [f"{p} {r}" for p, r in zip(prompts, rejected)]
    enc = tokenizer(texts, padding=True, return_tensors="pt").to(device)
    scores = rm.raw_forward(enc["input_ids"], enc["attention_mask"])  # (2B,)
    return scores[: len(prompts)], scores[len(prompts):]


@torch.no_grad()
def preference_accuracy(rm, tokenizer, dataset, batch_size: int = 256) -> float:
    """Fraction of pairs the RM orders correctly (r(x, y_w) > r(x, y_l))."""
    check_preferences(dataset, "dataset")
    check_int("batch_size", batch_size, ge=1)
    device = next(rm.parameters()).device
    was_training = rm.training
    rm.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start: start + batch_size]
        r_c, r_r = _pair_scores(rm, tokenizer, batch["prompt"], batch["chosen"], batch["rejected"], device)
        correct += int((r_c > r_r).sum())
    rm.train(was_training)
    return correct / len(dataset)


@dataclass
class RewardModelConfig:
    """Hyperparameters of :func:`train`; validated on construction (chapter 05).

    Attributes:
        epochs: passes over the training pairs, ≥ 1.
        lr: η > 0, Adam learning rate; 1e-3 … 3e-3 for the tiny models (reviews world at ci,
            2,000 pairs, 2 epochs: held-out accuracy 0.80 at 3e-3, 0.67 at 1e-3).
        batch_size: pairs per step, ≥ 1.
        weight_decay: ≥ 0; above 0 the optimiser is AdamW (Adam with decoupled weight decay).
        max_grad_norm: gradient-norm clip, > 0. Without it a run at lr 3e-3 could stall near
            chance for good (measured: 0.55 held-out accuracy at one seed where the clipped run
            reaches 0.8), after a few large early steps.
        seed: seeds the shuffling; default ``RLHF_LAB_SEED``.
        progress: show a tqdm progress bar.
    """

    epochs: int = 1
    lr: float = 3e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = field(default_factory=get_seed)  # RLHF_LAB_SEED unless given
    progress: bool = True

    def __post_init__(self) -> None:
        check_fields(self, lambda: {
            "epochs": (self.epochs >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
        })


def train(rm, tokenizer, train_dataset, config: RewardModelConfig, callback: Callback | None = None, *,
          eval_dataset=None) -> History:
    """Fit ``rm`` to preference pairs by minimising the Bradley–Terry loss (eq-rm-loss).

    Each step: 1) the scores r(x, y_w), r(x, y_l) of a minibatch of pairs; 2) the loss and a
    gradient step; 3) log. Each epoch ends with the training accuracy and, given an eval set,
    the held-out one.

    Args:
        rm: a ``models.RewardModel`` (its raw, un-normalised score is trained, in place).
        tokenizer: tokenizes ``prompt + " " + completion``.
        train_dataset, eval_dataset: ``datasets.Dataset`` with columns prompt, chosen, rejected.
        config: a :class:`RewardModelConfig`.
        callback: called as ``callback(step, metrics, history)`` after every log.

    Returns:
        History with, per step, ``rm/loss`` and ``rm/accuracy`` (batch), and per epoch (at the
        step that ends it) ``rm/epoch_loss``, ``rm/train_accuracy`` and, with an eval set,
        ``rm/eval_accuracy``.

    Raises:
        FloatingPointError: the loss, the gradient norm or the model's outputs became NaN or
            infinite (names the step and the last finite metrics; ``err.history``).
    """
    check_instance("rm", rm, torch.nn.Module, "a RewardModel")
    check_callable("tokenizer", tokenizer, "a tokenizer (texts -> ids)")
    check_instance("config", config, RewardModelConfig, "a RewardModelConfig")
    check_callable("callback", callback, "a function callback(step, metrics, history)", none=True)
    check_preferences(train_dataset, "train_dataset")
    if eval_dataset is not None:
        check_preferences(eval_dataset, "eval_dataset")
    device = next(rm.parameters()).device
    params = list(rm.parameters())
    opt = make_optimizer(params, config.lr, fused=False, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(train_dataset)
    run = RunLog(None, 1, config.epochs * -(-n // config.batch_size), callback, "reward model", config.progress)
    step = 0
    for _ in range(config.epochs):
        rm.train()
        order = torch.randperm(n, generator=gen).tolist()
        losses, correct = [], 0
        for start in range(0, n, config.batch_size):
            batch = train_dataset[order[start: start + config.batch_size]]
            with run.guard(step):  # NaN scores (diverged weights) stop the run here
                # 1) scores, 2) loss and step
                r_c, r_r = _pair_scores(rm, tokenizer, batch["prompt"], batch["chosen"], batch["rejected"], device)
                loss, stats = bradley_terry_loss(r_c, r_r)
            optimizer_step(opt, loss, params, config.max_grad_norm, step, run.history)
            # 3) log
            losses.append(loss.item() * len(r_c))
            correct += round(stats["accuracy"] * len(r_c))
            run.log(step, {"rm/loss": loss.item(), "rm/accuracy": stats["accuracy"]})
            step += 1
            run.tick(loss=f"{loss.item():.3f}")
        summary = {"rm/epoch_loss": sum(losses) / n, "rm/train_accuracy": correct / n}
        if eval_dataset is not None:
            summary["rm/eval_accuracy"] = preference_accuracy(rm, tokenizer, eval_dataset)
        run.log(step - 1, summary)
    rm.eval()
    return run.close()


def train_reward_model(rm, tokenizer, train_dataset, *, eval_dataset=None, epochs: int = 1, lr: float = 3e-3,
                       batch_size: int = 32, seed: int | None = None, weight_decay: float = 0.0,
                       max_grad_norm: float = 1.0, progress: bool = True) -> History:
    """:func:`train` with the config's fields as keyword arguments (the form chapters 05–09 use).

    ``seed`` None means ``RLHF_LAB_SEED``. Raises ``ValueError`` naming a bad argument, as the
    config does.
    """
    config = RewardModelConfig(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                               max_grad_norm=max_grad_norm, progress=progress,
                               **({} if seed is None else {"seed": seed}))
    return train(rm, tokenizer, train_dataset, config, eval_dataset=eval_dataset)


@torch.no_grad()
def normalise_rewards(rm, tokenizer, texts: list[str], batch_size: int = 256) -> tuple[float, float]:
    """Set ``rm.reward_mean`` / ``rm.reward_std`` to the raw scores' mean and std on ``texts``.

    Use reference samples (prompt + completion drawn from π_ref): afterwards the RM's output
    has mean 0 and std 1 under π_ref. Returns (mean, std).
    """
    texts = check_texts("texts", texts)
    check_int("batch_size", batch_size, ge=1)
    if len(texts) < 2:
        raise ValueError(f"texts must hold at least 2 texts to estimate a std, got {len(texts)}")
    raw = check_tensor("the reward model's scores", rm.score_texts(texts, tokenizer, batch_size=batch_size, raw=True),
                       finite=True)
    mean, std = raw.mean().item(), raw.std().item()
    if not std > 0:
        raise ValueError("the reward model gives every text the same score; its std is 0, cannot normalise")
    rm.reward_mean.fill_(mean)
    rm.reward_std.fill_(std)
    return mean, std


def label_ceiling(chosen_gold: torch.Tensor, rejected_gold: torch.Tensor, label_noise: float) -> float:
    """The best held-out accuracy any reward model can expect on labels drawn with noise τ.

    A labeller who prefers a with probability σ((r_a − r_b)/τ) (``data.preference_dataset``)
    disagrees with the gold ordering on some pairs, and no model can predict a coin flip. The
    Bayes classifier picks the gold-better completion and is right with probability

        ceiling = mean over pairs of max(σ(Δ/τ), 1 − σ(Δ/τ)),   Δ = r(y_w) − r(y_l)

    which depends on |Δ| only, so it is the same whichever completion the label chose.

    Args:
        chosen_gold: gold rewards of the chosen completions.
        rejected_gold: gold rewards of the rejected completions.
        label_noise: τ ≥ 0, the Bradley–Terry temperature of the labels (0: noiseless, ties ½).

    Shape:
        chosen_gold: (B,), introduced in chapter 05.
        rejected_gold: (B,), introduced in chapter 05.

    Returns:
        The expected accuracy of the Bayes classifier, in [½, 1].
    """
    chosen_gold = torch.as_tensor(check_tensor("chosen_gold", as_tensor("chosen_gold", chosen_gold), finite=True),
                                  dtype=torch.float64)
    rejected_gold = torch.as_tensor(check_tensor("rejected_gold", as_tensor("rejected_gold", rejected_gold),
                                                 finite=True), dtype=torch.float64)
    if chosen_gold.ndim != 1 or chosen_gold.shape != rejected_gold.shape or chosen_gold.numel() == 0:
        raise ValueError(
            "chosen_gold and rejected_gold must both have shape (B,) with B ≥ 1, "
            f"got {tuple(chosen_gold.shape)} and {tuple(rejected_gold.shape)}"
        )
    check_float("label_noise", label_noise, ge=0)
    gap = (chosen_gold - rejected_gold).abs()
    # (eq-label-ceiling); at τ = 0 a tie is a coin flip and any other pair is certain
    right = torch.sigmoid(gap / label_noise) if label_noise > 0 else torch.where(gap > 0, 1.0, 0.5)
    return float(right.double().mean())


@torch.no_grad()
def enumerated_rewards(rm, tokenizer, enumeration, batch_size: int = 1024) -> torch.Tensor:
    """The reward model's score of every (prompt, completion) of an ``exact.Enumeration``.

    The proxy table the exact metrics need: pass it as ``proxy`` to ``ExactEvaluator`` or
    ``Enumeration.metrics``, or look rewards up in it instead of running the model again.

    Returns:
        float64 tensor (P, K) in the enumeration's order, on the CPU.
    """
    check_instance("rm", rm, torch.nn.Module, "a RewardModel")
    check_int("batch_size", batch_size, ge=1)
    texts = [f"{x} {y}" for x in enumeration.prompts for y in enumeration.completions]
    scores = rm.score_texts(texts, tokenizer, batch_size=batch_size)
    return scores.double().view(enumeration.shape)

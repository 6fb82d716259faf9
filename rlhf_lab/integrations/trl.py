"""TRL 1.x trainers with the workbook's worlds, rewards and measurements.

TRL's ``RewardTrainer``, ``DPOTrainer`` and ``GRPOTrainer`` read datasets of texts and call
reward functions on texts; the workbook speaks in worlds, tensors and a ``History``. This module
is the adapter, nothing more — the losses stay TRL's (tests/test_trl_crosscheck.py pins them
against ``rlhf_lab.algos``):

* ``reward_func(score, world, tokenizer)`` — a workbook reward ``score(prompts, completions) ->
  Tensor (B,)`` as TRL's ``reward_func(prompts, completions, **kwargs) -> list[float]``. It reads
  TRL's ``completion_ids``, so a completion that stopped at EOS is told from a truncated one
  (TRL's texts drop special tokens), and gives ``invalid_reward`` to a text that is not in the
  world's language (a hub model writes any word);
* ``trl_preferences(dataset)`` — prompt / chosen / rejected in the form TRL concatenates;
* ``WorkbookCallback`` — a ``transformers.TrainerCallback`` that logs an evaluator's metrics
  (``SampledEvaluator``: gold and proxy reward, KL to π_ref, entropy, with standard errors) into
  a ``History`` and calls a workbook callback such as ``LiveCurves``;
* ``training_args``, ``build``, ``generation_kwargs``, ``reference_path``, ``classifier_reward``,
  ``quiet``
  — the settings every run here shares.

Introduced in chapter 11.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import torch
from transformers import TrainerCallback

from rlhf_lab.cache import cache_dir
from rlhf_lab.data import check_preferences
from rlhf_lab.history import History
from rlhf_lab.models import pretrain_key, pretrain_reference, quiet_transformers
from rlhf_lab.scale import Scale, get_scale, get_seed
from rlhf_lab.validate import check_callable, check_float, check_instance, check_int
from rlhf_lab.worlds.base import EOS, TokenWorld

# TRL's log keys that mean what a workbook key means (book/metrics.md)
TRL_KEYS = {"loss": "loss/policy", "grad_norm": "stats/grad_norm"}
INVALID_REWARD = -2.0  # a text outside the world's language: below any completion of the reviews world


def completion_text(ids: Sequence[int], tokenizer) -> str:
    """A generated completion as the world writes it: words, then ``[EOS]`` if it stopped there.

    TRL decodes with ``skip_special_tokens=True``, which drops the EOS token; the gold reward
    of the reviews world penalises a missing EOS, so the ids decide.
    """
    ids = list(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    if ids and ids[-1] == tokenizer.eos_token_id:
        text = f"{text} {EOS}".strip()
    return text


def reward_func(score: Callable, world: TokenWorld, tokenizer, *, name: str = "gold",
                invalid_reward: float = INVALID_REWARD) -> Callable[..., list[float]]:
    """``score`` as a TRL reward function ``f(prompts, completions, **kwargs) -> list[float]``.

    Args:
        score: ``score(prompts, completions) -> Tensor (B,)``, e.g. ``world.gold_rewards`` or a
            proxy reward model; completions are world texts (``"great food [EOS]"``).
        world: the world whose language the completions must be in.
        tokenizer: the policy's tokenizer (to decode TRL's ``completion_ids``).
        name: the function's ``__name__``; TRL logs ``rewards/<name>/mean``.
        invalid_reward: the reward of a completion with a word the world does not know.

    Called by hand (no ``completion_ids``), it scores the completion texts as given.
    """
    check_callable("score", score, "a function score(prompts, completions) -> Tensor (B,)")
    check_instance("world", world, TokenWorld, "a TokenWorld")
    check_float("invalid_reward", invalid_reward)
    known = set(world.completion_vocab)

    def reward(prompts: list[str], completions: list[str], completion_ids=None, **kwargs) -> list[float]:
        if completion_ids is not None:
            completions = [completion_text(ids, tokenizer) for ids in completion_ids]
        valid = [i for i, y in enumerate(completions) if set(y.split()) <= known]
        out = [float(invalid_reward)] * len(completions)
        if valid:
            scores = score([prompts[i] for i in valid], [completions[i] for i in valid])
            for i, r in zip(valid, torch.as_tensor(scores).flatten().tolist()):
                out[i] = float(r)
        return out

    reward.__name__ = name
    return reward


def trl_preferences(dataset: datasets.Dataset, *, require_eos: bool = True) -> datasets.Dataset:
    """Preference pairs as TRL reads them: prompt, " " + chosen, " " + rejected.

    TRL tokenizes ``prompt + chosen`` as one string, so a completion starts with its space.
    TRL also appends EOS to a completion without one, which would turn a truncated completion
    into another one; with ``require_eos`` (default) only pairs whose completions both end in
    EOS are kept — give the workbook's trainers the same rows.
    """
    check_preferences(dataset)
    with no_progress_bars():
        if require_eos:
            dataset = dataset.filter(lambda row: row["chosen"].endswith(EOS) and row["rejected"].endswith(EOS))
        return dataset.map(lambda row: {"chosen": " " + row["chosen"], "rejected": " " + row["rejected"]},
                           remove_columns=[c for c in dataset.column_names if c not in ("prompt", "chosen", "rejected")])


def generation_kwargs(world: TokenWorld, tokenizer) -> dict:
    """``GRPOConfig(generation_kwargs=...)`` that restricts sampling as the workbook's sampler does.

    With the world's own tokenizer, the tokens a completion may not contain (prompt tokens,
    PAD, UNK) are suppressed (logit −inf), as ``world.mask_logits`` does. TRL's loss still
    takes log-probs over the whole vocabulary, so its log π differs from the workbook's masked
    one by log Σ_allowed π, which a pretrained reference keeps near 0. A hub model's tokenizer
    has no such list: nothing is suppressed and ``reward_func`` gives foreign texts
    ``invalid_reward``.
    """
    check_instance("world", world, TokenWorld, "a TokenWorld")
    if tokenizer.get_vocab() != world.token_to_id():
        return {}
    return {"suppress_tokens": [i for i, ok in enumerate(world.allowed_mask().tolist()) if not ok]}


def reference_path(world: TokenWorld, scale: Scale | None = None) -> Path:
    """The folder of ``world``'s tiny reference GPT-2 and its tokenizer (``save_pretrained``).

    Pretrains it first if the cache lacks it; ``models.load_policy(path)`` loads it as it
    loads a hub model, through ``AutoModelForCausalLM``.
    """
    scale = scale or get_scale()
    pretrain_reference(world, scale, progress=False)
    return cache_dir() / "models" / pretrain_key(world, scale)


def classifier_reward(model, tokenizer) -> Callable[[list[str], list[str]], torch.Tensor]:
    """A sequence classifier with one label (TRL's reward model) as ``score(prompts, completions)``.

    Scores ``prompt + " " + completion`` as ``RewardTrainer`` trained it (right-padded; the
    model reads its last non-pad token).
    """
    check_instance("model", model, torch.nn.Module, "a sequence classifier (num_labels=1)")

    @torch.no_grad()
    def score(prompts: list[str], completions: list[str]) -> torch.Tensor:
        was_training = model.training
        model.eval()
        texts = [f"{x} {y}" for x, y in zip(prompts, completions)]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        rewards = model(**batch).logits[:, 0].float().cpu()  # (B,)
        model.train(was_training)
        return rewards

    return score


def training_args(config_cls, output_dir: str | Path, **fields):
    """A TRL config (``GRPOConfig``, ``DPOConfig``, ``RewardConfig``) with this book's defaults.

    No reporting, no checkpoints, a log every step, a constant learning rate (as the workbook's
    trainers), the CPU when there is no GPU, bf16 on a GPU that has it, and ``RLHF_LAB_SEED``;
    ``fields`` override any of them.
    """
    cuda = torch.cuda.is_available()
    defaults = dict(output_dir=str(output_dir), report_to="none", save_strategy="no", logging_steps=1,
                    disable_tqdm=True, lr_scheduler_type="constant", use_cpu=not cuda,
                    bf16=cuda and torch.cuda.is_bf16_supported(), seed=get_seed())
    with quiet():
        return config_cls(**{**defaults, **fields})


def build(trainer_cls, **kwargs):
    """``trainer_cls(**kwargs)`` (a TRL trainer) built quietly, without the callback that prints
    every log line (``disable_tqdm=True`` installs it); ``WorkbookCallback`` keeps the record."""
    from transformers.trainer_callback import PrinterCallback

    with quiet():
        trainer = trainer_cls(**kwargs)
    trainer.remove_callback(PrinterCallback)
    return trainer


@contextlib.contextmanager
def quiet():
    """Silence transformers' and TRL's notices that are noise here (deprecations, padding hints)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    trl_logger = logging.getLogger("trl")
    trl_level = trl_logger.level
    trl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), quiet_transformers(), no_progress_bars():
            for category in (FutureWarning, DeprecationWarning, UserWarning):
                warnings.filterwarnings("ignore", category=category, module=r"(transformers|trl|accelerate)\b")
            yield
    finally:
        hf_logging.set_verbosity(level)
        trl_logger.setLevel(trl_level)


@contextlib.contextmanager
def no_progress_bars():
    """No ``datasets`` progress bar (map, filter) inside; as it was after. A bar of a few
    milliseconds' work shows in a static page as one stuck at 0 %."""
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            datasets.enable_progress_bars()


class WorkbookCallback(TrainerCallback):
    """The workbook's measurements inside a TRL (or any ``transformers``) trainer.

    At the start of training and every ``eval_every`` optimizer steps (and at the last one) it
    runs ``evaluator(model)`` — a ``SampledEvaluator`` (``reward/gold``, ``reward/proxy``,
    ``kl/estimate``, ``entropy/estimate``, each with ``_se``), an ``ExactEvaluator`` or a
    ``TextSampledEvaluator`` — logs the metrics into ``history`` at the trainer's step, and
    calls ``callback(step, metrics, history)``, e.g. a ``LiveCurves``. TRL's own ``loss`` and
    ``grad_norm`` are logged as ``loss/policy`` and ``stats/grad_norm``. Only the main process
    measures (with several processes under ``accelerate``, the others train on).

    Args:
        evaluator: ``evaluator(policy) -> dict[str, float]``.
        eval_every: optimizer steps between two evaluations (≥ 1).
        callback: called as ``callback(step, metrics, history)`` after each evaluation.

    Attributes:
        history: the ``History`` of the run.
    """

    def __init__(self, evaluator: Callable, eval_every: int, callback: Callable | None = None) -> None:
        check_callable("evaluator", evaluator, "a function evaluator(policy) -> dict of metrics")
        check_int("eval_every", eval_every, ge=1)
        check_callable("callback", callback, "a function callback(step, metrics, history)", none=True)
        self.evaluator, self.eval_every, self.callback = evaluator, eval_every, callback
        self.history = History()
        self._done: set[int] = set()

    def _evaluate(self, state, model) -> None:
        step = state.global_step
        if not state.is_world_process_zero or model is None or step in self._done:
            return
        self._done.add(step)
        metrics = self.evaluator(model)
        self.history.log(step, metrics)
        if self.callback is not None:
            self.callback(step, metrics, self.history)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._evaluate(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.eval_every == 0 or state.global_step >= state.max_steps:
            self._evaluate(state, model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        found = {ours: logs[theirs] for theirs, ours in TRL_KEYS.items() if theirs in (logs or {})}
        if found and state.is_world_process_zero:
            self.history.log(state.global_step, found)


__all__ = ["INVALID_REWARD", "WorkbookCallback", "build", "classifier_reward", "completion_text", "generation_kwargs",
           "quiet", "reference_path", "reward_func", "training_args", "trl_preferences"]

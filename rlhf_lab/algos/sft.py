"""Supervised fine-tuning (SFT): maximum likelihood on demonstrations, stage 1 of RLHF.

A demonstration is a prompt x and a response ȳ that a person wrote for it. SFT raises the
probability of ȳ given x, token by token, and only on the response:

    L_SFT(θ) = −(1/N) Σ_i Σ_t log π_θ(ȳ_{i,t} | x_i, ȳ_{i,<t}),   N = Σ_i |ȳ_i|

(the loss of InstructGPT's first stage, Ouyang et al. 2022, and TRL's ``SFTTrainer`` with
``completion_only_loss=True``: the mean over the batch's response tokens). Pretraining is the
same next-token loss on every token of a corpus (``models.lm_loss``); ``completion_only_loss=False``
adds the prompt's tokens to the loss, as pretraining would.

Every demonstration only says "do this": there is no negative signal, so SFT copies the
demonstrators — their mistakes included — and cannot do better than they do on average.
Introduced in the SFT chapter (01b).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import datasets
import torch
from torch import Tensor

from rlhf_lab.algos.loop import (Callback, ExactEvaluator, RunLog, SampledEvaluator, check_fields, check_train_args,
                                 default_evaluator, make_optimizer, optimizer_step, trainable_copy)
from rlhf_lab.core import masked_mean, token_logprobs
from rlhf_lab.history import History
from rlhf_lab.likelihood import sft_loss  # noqa: F401  (re-exported; shared with rejection sampling)
from rlhf_lab.models import position_ids_from_mask
from rlhf_lab.rollout import Rollout, encode_texts
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import check_float, check_instance, check_int
from rlhf_lab.worlds.base import TokenWorld

COLUMNS = ("prompt", "completion")  # TRL's prompt-completion format


# -- demonstrations --------------------------------------------------------------------------------
def demonstrations(world: TokenWorld, n: int, *, min_gold: float = 0.0, noise: float = 0.0,
                   seed: int | None = None) -> datasets.Dataset:
    """``n`` demonstrations (columns ``prompt``, ``completion``) written by the world's annotators.

    An annotator writes like the pretraining corpus (fluent text of the world) but only hands in a
    response whose gold reward exceeds ``min_gold`` (reviews: the positive ones; arithmetic: the
    correct sums). A fraction ``noise`` of the rows is drawn from the rest instead (gold ≤
    ``min_gold``) — the careless annotator — so that a chapter can show what SFT does with bad examples it cannot tell apart.

    Raises:
        ValueError: n < 1, noise outside [0, 1], or the corpus yields too few rows of a kind.
    """
    check_instance("world", world, TokenWorld, "a TokenWorld")
    check_int("n", n, ge=1)
    check_float("min_gold", min_gold)
    check_float("noise", noise, ge=0.0, le=1.0)
    check_int("seed", seed, none=True)
    seed = get_seed() if seed is None else seed
    n_bad = round(noise * n)
    want = {True: n - n_bad, False: n_bad}
    found: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    prompts = set(world.prompts)
    for text in world.corpus(20 * n + 200, seed=seed):
        words = text.split()
        k = next((k for k in range(1, len(words)) if " ".join(words[:k]) in prompts), None)
        if k is None:
            raise ValueError(f"{world.name}'s corpus text {text!r} starts with none of its prompts")
        x, y = " ".join(words[:k]), " ".join(words[k:])
        good = world.gold_reward(x, y) > min_gold
        if len(found[good]) < want[good]:
            found[good].append((x, y))
    for good, rows in found.items():
        if len(rows) < want[good]:
            kind = f"gold > {min_gold}" if good else f"gold <= {min_gold}"
            raise ValueError(f"{world.name}'s corpus gave {len(rows)} of the {want[good]} demonstrations with {kind} "
                             f"asked for (n={n}, noise={noise}, min_gold={min_gold})")
    rows = found[True] + found[False]
    random.Random(seed).shuffle(rows)
    return datasets.Dataset.from_dict({"prompt": [x for x, _ in rows], "completion": [y for _, y in rows]})


def demonstration_logprobs(policy: torch.nn.Module, world: TokenWorld, batch: Rollout,
                           include_prompt: bool = False) -> tuple[Tensor, Tensor]:
    """Teacher-forced log-probs of an encoded batch and the mask of the tokens in the loss.

    The response's tokens are scored under the policy as it samples (``world.mask_logits``, the
    distribution the exact metrics use); with ``include_prompt`` the prompt's tokens after its
    first are scored too, under the unmasked language model, as pretraining scores them.

    Shape: → (B, Tp − 1 + Tc) each; the prompt's columns first.
    """
    logp, keep, _ = _teacher_forced(policy, world, batch, include_prompt)
    return logp, keep


def _teacher_forced(policy: torch.nn.Module, world: TokenWorld, batch: Rollout,
                    include_prompt: bool) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`demonstration_logprobs`, and the response's masked logits (B, Tc, V)."""
    mask = batch.attention_mask
    logits = policy(input_ids=batch.input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                    use_cache=False).logits.float()  # (B, Tp + Tc, V)
    tp = batch.prompt_ids.shape[1]
    response = world.mask_logits(logits[:, tp - 1: -1])  # position t predicts token t + 1
    logp_y = token_logprobs(response, batch.completion_ids)
    m_y = batch.completion_mask
    logp_x = token_logprobs(logits[:, : tp - 1], batch.prompt_ids[:, 1:])
    m_x = batch.prompt_mask[:, 1:] * batch.prompt_mask[:, :-1] * int(include_prompt)
    logp = torch.cat([logp_x, logp_y], 1)
    keep = torch.cat([m_x, m_y], 1)
    return logp.masked_fill(keep == 0, 0.0), keep, response


# -- training ------------------------------------------------------------------------------------
@dataclass
class SFTConfig:
    """Hyperparameters of :func:`train`; validated on construction (SFT chapter).

    Attributes:
        epochs: passes over the demonstrations, ≥ 1; typical 1 … 3 (InstructGPT: 16, on 13k prompts).
        batch_size: demonstrations per gradient step, ≥ 1; typical 16 … 128.
        lr: η > 0, Adam learning rate; 1e-4 … 1e-3 for the tiny policies (1e-5 for real LLMs).
        completion_only_loss: the loss on the response's tokens only (what TRL's SFTConfig default,
            ``completion_only_loss=None``, does for prompt–completion data); False adds the
            prompt's tokens, as pretraining does.
        max_grad_norm: gradient-norm clip, > 0; typical 1.0.
        eval_every: evaluation every this many gradient steps, ≥ 1 (and at the end).
        seed: seeds the shuffling.
        progress: show a tqdm progress bar.
    """

    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-4
    completion_only_loss: bool = True
    max_grad_norm: float = 1.0
    eval_every: int = 10
    seed: int = field(default_factory=get_seed)  # RLHF_LAB_SEED unless given
    progress: bool = True

    def __post_init__(self) -> None:
        check_fields(self, lambda: {
            "epochs": (self.epochs >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
            "eval_every": (self.eval_every >= 1, ">= 1"),
        })


def train(
    policy: torch.nn.Module,
    world: TokenWorld,
    config: SFTConfig,
    callback: Callback | None = None,
    *,
    data: datasets.Dataset | None = None,
    ref_policy: torch.nn.Module | None = None,
    evaluator: ExactEvaluator | SampledEvaluator | None = None,
) -> History:
    """Supervised fine-tuning of a copy of ``policy`` on demonstrations (SFT chapter).

    Each gradient step: 1) a shuffled batch of demonstrations, teacher-forced; 2) one step on
    :func:`sft_loss`; 3) log, at the step that counts the update, the batch's numbers from the
    forward pass before it: ``loss/sft``, ``stats/response_nll`` (the NLL per response token,
    equal to ``loss/sft`` unless the prompt is in the loss), ``stats/token_accuracy`` (how often
    the most likely token is the demonstrated one, on the response) and ``stats/grad_norm``.
    The evaluator's metrics (exact ``reward/gold``, ``kl/exact``, ``entropy/exact`` on an
    enumerable world) are logged at step 0, every ``eval_every`` steps and at the end.

    Args:
        policy: the starting policy (the pretrained model); not modified (a copy is trained).
        world: a token world.
        config: an :class:`SFTConfig`.
        callback: called as ``callback(step, metrics, history)`` after every log.
        data: a ``datasets.Dataset`` with columns ``prompt`` and ``completion``; default
            ``demonstrations(world, 512, seed=config.seed)``.
        ref_policy: π_ref of the KL; default ``policy``.
        evaluator: a prepared evaluator; default ``default_evaluator(world, ref_policy)``.

    Returns:
        The ``History``; the trained policy is ``history.policy``.
    """
    check_train_args(policy, world, config, SFTConfig, callback=callback, ref_policy=ref_policy,
                     evaluator=evaluator)
    data = demonstrations(world, 512, seed=config.seed) if data is None else data
    check_instance("data", data, datasets.Dataset, "a datasets.Dataset with columns prompt, completion")
    missing = [c for c in COLUMNS if c not in data.column_names]
    if missing or len(data) == 0:
        raise ValueError(f"data needs columns {list(COLUMNS)} and at least one row; missing {missing}, "
                         f"{len(data)} rows")
    ref_policy = policy if ref_policy is None else ref_policy
    evaluator = evaluator or default_evaluator(world, ref_policy)
    model = trainable_copy(policy)
    params = list(model.parameters())
    device = params[0].device
    batch = encode_texts(world, list(data["prompt"]), list(data["completion"]), device)
    opt = make_optimizer(params, config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    per_epoch = -(-len(data) // config.batch_size)
    steps = config.epochs * per_epoch
    run = RunLog(evaluator, config.eval_every, steps, callback, "SFT", config.progress)
    run.history.policy = model
    run.evaluate(0, model)
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), config.batch_size):
            mini = batch.select(order[start: start + config.batch_size])
            with run.guard(step):
                # 1) teacher forcing: log π(ȳ_t | x, ȳ_<t) at every demonstrated token
                logp, keep, response = _teacher_forced(model, world, mini, not config.completion_only_loss)
                loss, stats = sft_loss(logp, keep)  # 2) the loss, on the tokens in ``keep``
            grad_norm = optimizer_step(opt, loss, params, config.max_grad_norm, step, run.history)
            step += 1
            with torch.no_grad():  # 3) the response's own numbers, whatever the loss included
                m_y = mini.completion_mask.bool()
                tc = m_y.shape[1]
                nll_y = -masked_mean(logp.detach()[:, -tc:], m_y).item()
                guess = response.detach().argmax(-1)
                accuracy = masked_mean((guess == mini.completion_ids).float(), m_y).item()
            run.log(step, {"loss/sft": loss.item(), "stats/response_nll": nll_y,
                           "stats/token_accuracy": accuracy, "stats/grad_norm": grad_norm})
            run.evaluate(step, model)
            run.tick(loss=f"{loss.item():.3f}")
    model.eval()
    return run.close()

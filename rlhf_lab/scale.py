"""Scale presets: how big the worlds, models and training runs are.

Three presets share one set of fields:

* ``ci``  — the 2-core CI machine: every chapter in 60 s, every claim still asserted.
* ``cpu`` — a student laptop or Colab CPU: every chapter in 150 s on the 2-core CI machine.
* ``gpu`` — Colab T4 … H200: larger worlds (metrics by sampling), larger models, full curves.

The preset is chosen by the ``RLHF_LAB_SCALE`` environment variable; without it, ``gpu`` when
CUDA is available, else ``cpu``. The seed of every random choice a chapter makes comes from one
place, :func:`get_seed` (``RLHF_LAB_SEED``, default 0), carried as ``Scale.seed``; the trainers'
configs take it as their default seed. A chapter's claims must hold for any seed
(``benchmarks/run_chapters.py --seeds 0 1 2 3 4`` checks it). Introduced in chapter 00.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from rlhf_lab.validate import check_bool, check_instance, check_int, is_int

SCALES = ("ci", "cpu", "gpu")
ENV_VAR = "RLHF_LAB_SCALE"
SEED_VAR = "RLHF_LAB_SEED"


def get_seed() -> int:
    """The workbook's seed: the integer in ``RLHF_LAB_SEED``, else 0.

    Every chapter derives its random choices from it (``scale.seed``, ``scale.seed + 1``, …) and
    every trainer's config uses it as its default ``seed``, so one variable reruns a whole
    chapter with other random numbers.

    Raises:
        ValueError: ``RLHF_LAB_SEED`` is not a non-negative integer.
    """
    raw = os.environ.get(SEED_VAR, "").strip()
    if not raw:
        return 0
    try:
        seed = int(raw)
    except ValueError:
        raise ValueError(f"{SEED_VAR}={raw!r} is not an integer; set it to a seed such as 0, 1, 2") from None
    if seed < 0:
        raise ValueError(f"{SEED_VAR}={raw!r} must be >= 0")
    return seed


@dataclass(frozen=True)
class Scale:
    """One preset. Every field is a size or a budget; chapters read them instead of constants."""

    name: str
    device: str
    # bandit world (chapter 01)
    bandit_arms: int
    bt_comparisons: tuple[int, ...]  # comparison counts scanned in chapter 01
    # reviews world (worlds/reviews.py)
    reviews_topics: int
    reviews_words: int  # completion words per polarity class (see reviews.py)
    reviews_max_new_tokens: int
    reviews_enumerable: bool
    # arithmetic world (worlds/arithmetic.py)
    arithmetic_max_operand: int
    # tiny GPT-2 policies (models.py)
    n_layer: int
    n_head: int
    n_embd: int
    pretrain_steps: int
    pretrain_batch_size: int
    corpus_size: int
    # preference data and reward models
    preference_pairs: int
    rm_epochs: int
    # RL training runs
    rl_steps: int
    rollout_batch_size: int
    seed: int = 0  # from RLHF_LAB_SEED (get_seed); seeds pretraining and the chapter's draws

    def __post_init__(self) -> None:
        """Every size an integer >= 1 (the seed >= 0), so a typo in ``replace(...)`` fails here, naming
        the field, not deep inside a model or a world."""
        kinds = {"int": lambda n, v: check_int(n, v, ge=0 if n == "Scale.seed" else 1),
                 "bool": check_bool, "str": lambda n, v: check_instance(n, v, str, "a string")}
        for f in dataclasses.fields(self):
            kinds.get(f.type, lambda n, v: None)(f"Scale.{f.name}", getattr(self, f.name))
        if not isinstance(self.bt_comparisons, tuple) or not all(is_int(n) and n >= 1 for n in self.bt_comparisons):
            raise ValueError(f"Scale.bt_comparisons must be a tuple of integers >= 1; got {self.bt_comparisons!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"Scale.n_embd must be a multiple of n_head={self.n_head}; got {self.n_embd}")

    def exact(self) -> "Scale":
        """The preset for a chapter's exact (enumerated) sections: this one where its worlds are
        enumerable (ci, cpu); at gpu, cpu's sizes on this preset's device. Chapters 08–09 run their
        exact sections at ``scale.exact()`` and their full-size sections at ``scale``."""
        if self.reviews_enumerable:
            return self
        return dataclasses.replace(get_scale("cpu"), device=self.device, seed=self.seed)

    def replace(self, **changes) -> "Scale":
        """A copy with some fields changed (for experiments in a chapter)."""
        return dataclasses.replace(self, **changes)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: fall back to the CPU preset
        return False


_PRESETS: dict[str, dict] = {
    "ci": dict(
        bandit_arms=6, bt_comparisons=(25, 100, 400, 1600, 6400),
        reviews_topics=3, reviews_words=3, reviews_max_new_tokens=4, reviews_enumerable=True,
        arithmetic_max_operand=9,
        n_layer=2, n_head=2, n_embd=64, pretrain_steps=300, pretrain_batch_size=64,
        corpus_size=4000, preference_pairs=2000, rm_epochs=2,
        rl_steps=40, rollout_batch_size=64,
    ),
    "cpu": dict(
        bandit_arms=8, bt_comparisons=(25, 100, 400, 1600, 6400, 25600),
        reviews_topics=4, reviews_words=4, reviews_max_new_tokens=4, reviews_enumerable=True,
        arithmetic_max_operand=10,
        n_layer=2, n_head=4, n_embd=128, pretrain_steps=1000, pretrain_batch_size=128,
        corpus_size=20000, preference_pairs=3000, rm_epochs=2,
        rl_steps=50, rollout_batch_size=128,
    ),
    "gpu": dict(
        bandit_arms=16, bt_comparisons=(25, 100, 400, 1600, 6400, 25600, 102400),
        reviews_topics=8, reviews_words=8, reviews_max_new_tokens=10, reviews_enumerable=False,
        arithmetic_max_operand=99,
        n_layer=6, n_head=8, n_embd=384, pretrain_steps=4000, pretrain_batch_size=256,
        corpus_size=200000, preference_pairs=40000, rm_epochs=3,
        rl_steps=600, rollout_batch_size=512,
    ),
}


def get_scale(name: str | None = None) -> Scale:
    """Return the preset ``name``, else the one named by ``RLHF_LAB_SCALE``, else the default,
    with ``seed`` from :func:`get_seed`.

    Raises:
        ValueError: ``name`` (or the environment variable) is not one of ``ci``, ``cpu``, ``gpu``;
            ``RLHF_LAB_SEED`` is not a non-negative integer.
    """
    source = "name"
    if name is None:
        name = os.environ.get(ENV_VAR) or None
        source = ENV_VAR
    if name is None:
        name = "gpu" if _cuda_available() else "cpu"
    key = str(name).strip().lower()
    if key not in _PRESETS:
        raise ValueError(f"{source}={name!r} is not a known scale; allowed: {', '.join(SCALES)}")
    device = "cuda" if key == "gpu" and _cuda_available() else "cpu"
    return Scale(name=key, device=device, seed=get_seed(), **_PRESETS[key])

"""Datasets: a world's prompts, gold-labelled preference pairs, and preference data from files or the hub.

Preference pairs are labelled the way Gao et al. (2022) build synthetic preferences: two
completions of one prompt are drawn from a policy, and the gold reward r decides which is chosen
through the Bradley–Terry model at a temperature τ (eq-bt, with a temperature):

    P(a ≻ b) = σ((r_a − r_b) / τ)

τ → 0 gives noiseless labels (the higher gold reward always wins); a larger τ makes close pairs
coin flips, like human labellers who agree about 73–77 % of the time. Every dataset is a
``datasets.Dataset`` with the columns TRL's preference trainers read: ``prompt``, ``chosen``,
``rejected``. Introduced in chapter 05.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import torch

from rlhf_lab.hub import looks_like_path, offline_reason
from rlhf_lab.scale import get_seed
from rlhf_lab.validate import (check_callable, check_float, check_instance, check_int, check_logprobs, check_tensor,
                               check_texts)
from rlhf_lab.worlds.base import TokenWorld

# file extension → the `datasets` builder that reads it
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
# the marker before each assistant turn in Anthropic HH-style transcripts
_ASSISTANT = "\n\nAssistant:"
# a policy so sure of itself that two distinct completions are this hard to draw is refused
_MAX_REDRAWS = 100


PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def check_preferences(dataset: datasets.Dataset, name: str = "dataset") -> None:
    """Raise ``ValueError`` unless ``dataset`` has the columns prompt, chosen, rejected and a row.

    The check every trainer on preference pairs (the reward model, DPO) makes first; ``name``
    is the argument's name in the message.
    """
    check_instance(name, dataset, datasets.Dataset, "a datasets.Dataset with columns prompt, chosen, rejected")
    missing = [c for c in PREFERENCE_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} needs columns {list(PREFERENCE_COLUMNS)}; missing {missing}")
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty: it needs at least one preference pair")
    for column in PREFERENCE_COLUMNS:
        if getattr(dataset.features[column], "dtype", None) not in ("string", "large_string"):
            raise ValueError(f"{name}'s column {column!r} must hold strings; it holds {dataset.features[column]}")


def prompt_dataset(world: TokenWorld) -> datasets.Dataset:
    """One row per prompt of ``world``, column ``prompt``."""
    check_instance("world", world, TokenWorld, "a TokenWorld")
    return datasets.Dataset.from_dict({"prompt": list(world.prompts)})


def preference_dataset(
    world: TokenWorld,
    n_pairs: int,
    *,
    logp: torch.Tensor | None = None,
    sample_fn: Callable[[list[str]], list[str]] | None = None,
    label_noise: float = 0.2,
    seed: int | None = None,
) -> datasets.Dataset:
    """``n_pairs`` preference pairs of distinct completions labelled by the gold reward (eq-bt, with a temperature).

    Prompts are spread evenly over ``world.prompts`` (in a random order). For each, two
    completions a ≠ b are drawn independently from the policy (redrawn while equal), then a is
    chosen with probability σ((r_a − r_b)/τ), τ = ``label_noise``.

    Args:
        world: the world whose gold reward labels the pairs.
        n_pairs: number of pairs, ≥ 1.
        logp: the policy as exact log-probs (P, K) over ``world.enumerate_completions()``
            (an enumerable world; see ``exact.exact_logprobs``).
        sample_fn: otherwise, a sampler ``prompts -> completions`` (texts as in the world,
            e.g. wrapping ``rollout``), one completion per prompt.
        label_noise: τ ≥ 0, the Bradley–Terry temperature; 0 means noiseless labels (ties
            broken by a coin flip).
        seed: seeds the prompts, the samples drawn from ``logp`` and the labels; default
            ``RLHF_LAB_SEED`` (``scale.get_seed``).

    Returns:
        A ``datasets.Dataset`` with columns prompt, chosen, rejected, chosen_gold, rejected_gold.
    """
    check_instance("world", world, TokenWorld, "a TokenWorld")
    check_int("n_pairs", n_pairs, ge=1)
    check_float("label_noise (τ, the Bradley–Terry temperature)", label_noise, ge=0)
    check_int("seed", seed, none=True)
    check_callable("sample_fn", sample_fn, "a function prompts -> completions", none=True)
    if (logp is None) == (sample_fn is None):
        raise ValueError("pass exactly one of logp (exact log-probs (P, K)) and sample_fn (a sampler)")
    g = torch.Generator().manual_seed(get_seed() if seed is None else seed)
    rows = (torch.arange(n_pairs) % len(world.prompts))[torch.randperm(n_pairs, generator=g)]  # (n_pairs,)
    prompts = [world.prompts[i] for i in rows.tolist()]
    if logp is not None:
        a, b = _pairs_from_logp(world, rows, logp, g)
    else:
        a, b = _pairs_from_sampler(prompts, sample_fn)
    r_a, r_b = world.gold_rewards(prompts, a).double(), world.gold_rewards(prompts, b).double()
    # (eq-bt) with a temperature: P(a ≻ b) = σ((r_a − r_b)/τ); at τ = 0 a step function with ties at ½
    diff = r_a - r_b
    p_a = torch.sigmoid(diff / label_noise) if label_noise > 0 else 0.5 * (1 + torch.sign(diff))
    a_wins = (torch.rand(n_pairs, generator=g, dtype=torch.float64) < p_a).tolist()
    return datasets.Dataset.from_dict({
        "prompt": prompts,
        "chosen": [x if w else y for x, y, w in zip(a, b, a_wins)],
        "rejected": [y if w else x for x, y, w in zip(a, b, a_wins)],
        "chosen_gold": [float(x if w else y) for x, y, w in zip(r_a, r_b, a_wins)],
        "rejected_gold": [float(y if w else x) for x, y, w in zip(r_a, r_b, a_wins)],
    })


def _pairs_from_logp(
    world: TokenWorld, rows: torch.Tensor, logp: torch.Tensor, g: torch.Generator
) -> tuple[list[str], list[str]]:
    """Two distinct completions per prompt row drawn i.i.d. from π = exp(logp), redrawn while equal."""
    completions = world.enumerate_completions()
    shape = (len(world.prompts), len(completions))
    if tuple(check_tensor("logp", logp, kind="float").shape) != shape:
        raise ValueError(f"logp must have shape (P, K) = {shape}, got {tuple(logp.shape)}")
    check_logprobs("logp", logp, normalized=True)
    probs = logp.detach().double().cpu().exp()
    idx = torch.empty(len(rows), 2, dtype=torch.long)
    todo = torch.arange(len(rows))
    for _ in range(_MAX_REDRAWS):
        for r in rows[todo].unique().tolist():
            at = todo[rows[todo] == r]
            idx[at] = torch.multinomial(probs[r], 2 * len(at), replacement=True, generator=g).view(-1, 2)
        todo = todo[idx[todo, 0] == idx[todo, 1]]
        if len(todo) == 0:
            return [completions[i] for i in idx[:, 0].tolist()], [completions[i] for i in idx[:, 1].tolist()]
    raise ValueError(
        f"logp is too concentrated: {len(todo)} pairs still drew the same completion twice after "
        f"{_MAX_REDRAWS} tries; use a policy with more spread"
    )


def _pairs_from_sampler(
    prompts: list[str], sample_fn: Callable[[list[str]], list[str]]
) -> tuple[list[str], list[str]]:
    """Two distinct completions per prompt from ``sample_fn``, redrawn while equal."""
    a, b = check_texts("sample_fn's output", sample_fn(prompts)), check_texts("sample_fn's output", sample_fn(prompts))
    if len(a) != len(prompts) or len(b) != len(prompts):
        raise ValueError(f"sample_fn must return one completion per prompt ({len(prompts)}), got {len(a)}")
    todo = [i for i in range(len(prompts)) if a[i] == b[i]]
    for _ in range(_MAX_REDRAWS):
        if not todo:
            return a, b
        redrawn = list(sample_fn([prompts[i] for i in todo]))
        for i, y in zip(todo, redrawn):
            b[i] = y
        todo = [i for i in todo if a[i] == b[i]]
    raise ValueError(
        f"sample_fn returned the same completion twice for {len(todo)} prompts after {_MAX_REDRAWS} "
        "redraws; use a sampler with more spread (e.g. a higher temperature)"
    )


# -- preference data from files or the hub ------------------------------------------------------
def load_preferences(name_or_path: str | os.PathLike, split: str = "train") -> datasets.Dataset:
    """Load preference pairs and map them to the columns ``prompt``, ``chosen``, ``rejected``.

    ``name_or_path`` is a local file (.json, .jsonl, .parquet, .csv), a folder written by
    ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a hub dataset name. Schemas:

    * explicit prompt: ``prompt``, ``chosen``, ``rejected`` strings (TRL's standard format);
    * chat messages: ``chosen`` / ``rejected`` are lists of ``{"role", "content"}``; the prompt is
      the ``prompt`` column (a string or messages) or, when absent, the messages the two share
      (UltraFeedback-binarized, TRL's conversational format);
    * implicit prompt transcripts: ``chosen`` / ``rejected`` strings with the prompt as their
      shared beginning up to the last ``"\\n\\nAssistant:"`` (Anthropic HH-RLHF).

    Several messages render as ``"role: content"`` lines separated by blank lines.

    Raises:
        ValueError: the data has no chosen/rejected columns, or a file type is not supported.
        FileNotFoundError: a name that looks like a path (``./``, ``/``, ``~``, a file suffix) does
            not exist: a typo is reported, not sent to the hub.
        RuntimeError: a hub name could not be loaded (offline, or it does not exist).
    """
    check_instance("name_or_path", name_or_path, (str, os.PathLike), "a file or folder path, or a hub name")
    check_instance("split", split, str, "a split name such as 'train'")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"split={split!r} is not in {str(path)!r}; it has {list(data)}")
            data = data[split]
    elif path.is_file():
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"name_or_path={str(path)!r}: file type must be one of {sorted(_BUILDERS)}")
        data = datasets.load_dataset(builder, data_files={split: str(path)}, split=split)
    elif looks_like_path(name_or_path):
        raise FileNotFoundError(f"name_or_path={str(name_or_path)!r} looks like a local path, but there is no "
                                f"file or folder there")
    else:
        data = _load_from_hub(str(name_or_path), split)
    return _to_preference_columns(data)


def _load_from_hub(name: str, split: str) -> datasets.Dataset:
    how = (
        f"Download it where the hub is reachable (datasets.load_dataset({name!r}, split={split!r})"
        ".save_to_disk('some/dir')) and pass that folder, or a .json/.jsonl/.parquet/.csv file, as name_or_path."
    )
    # `datasets` reads the offline switch once at import: if it was set later, or the hub cannot be
    # reached, it would still try the network (and retry for a minute), so we refuse here instead
    reason = None if datasets.config.HF_HUB_OFFLINE else offline_reason(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if reason is not None:
        raise RuntimeError(f"{name!r} is not a local path and {reason} (offline: HF_HUB_OFFLINE). {how}")
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, no such dataset, no network: one clear message
        state = "the hub is offline (HF_HUB_OFFLINE)" if datasets.config.HF_HUB_OFFLINE else "the hub could not serve it"
        raise RuntimeError(f"could not load {name!r}: it is not a local path and {state} ({err}). {how}") from err


def _to_preference_columns(data: datasets.Dataset) -> datasets.Dataset:
    missing = [c for c in ("chosen", "rejected") if c not in data.column_names]
    if missing:
        raise ValueError(
            f"preference data needs columns chosen and rejected (and optionally prompt); "
            f"missing {missing}, found {data.column_names}"
        )
    # explicit string features: `map` would otherwise keep a same-named input column's type
    features = datasets.Features({c: datasets.Value("string") for c in ("prompt", "chosen", "rejected")})
    return data.map(_to_preference_row, remove_columns=data.column_names, features=features)


def _to_preference_row(row: dict) -> dict[str, str]:
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if isinstance(chosen, list):  # chat messages
        if isinstance(prompt, list):  # conversational prompt; chosen/rejected may repeat it
            n = len(prompt) if chosen[: len(prompt)] == prompt == rejected[: len(prompt)] else 0
        else:  # the prompt is the leading messages the two share (or repeats the prompt string)
            n = 0
            while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
                n += 1
        if isinstance(prompt, str):
            text = prompt
        else:
            text = _render(prompt if isinstance(prompt, list) else chosen[:n])
        return {"prompt": text, "chosen": _render(chosen[n:]), "rejected": _render(rejected[n:])}
    # a CSV reader may have parsed "4" as a number
    chosen, rejected = str(chosen), str(rejected)
    if prompt is None:  # transcripts with an implicit prompt
        prefix = os.path.commonprefix([chosen, rejected])
        cut = prefix.rfind(_ASSISTANT)
        cut = cut + len(_ASSISTANT) if cut >= 0 else 0
        return {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}
    return {"prompt": str(prompt), "chosen": chosen, "rejected": rejected}


def _render(messages: Sequence[dict]) -> str:
    """One message → its content; several → ``"role: content"`` blocks."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)

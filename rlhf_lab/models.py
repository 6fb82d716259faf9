"""Tiny GPT-2 policies and their tokenizer, the pretrained reference π_ref, and real hub models.

The policies are ordinary ``GPT2LMHeadModel``s with a word-level ``PreTrainedTokenizerFast``, so
everything a chapter does with them — ``save_pretrained``, ``from_pretrained``, padding,
``generate`` — is what it would do with a hub model. ``load_policy`` loads a real one.

* ``build_tokenizer(world)`` / ``build_policy(world, scale)`` — fresh tokenizer and model.
* ``pretrain_reference(world, scale)`` — the reference/SFT policy π_ref: next-token training on
  the world's corpus, cached on disk (``cache.py``).
* ``load_policy(name_or_path)`` — a real causal LM and its tokenizer.
* ``ValueHead``, ``ValueModel``, ``RewardModel`` — scalar heads on a copy of the transformer
  (defined in ``heads.py``, importable from here).

Dropout is off in every model we build: RL compares log-probs of the same tokens computed in
different passes, and dropout would make them disagree for no reason.

Introduced in chapter 00.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rlhf_lab.cache import build_or_load, cache_dir, config_key
from rlhf_lab.heads import (RewardModel, ValueHead, ValueModel, last_token_index,  # noqa: F401  (re-exported)
                            position_ids_from_mask)
from rlhf_lab.hub import local_folder, looks_like_path, offline_reason
from rlhf_lab.scale import Scale, get_scale
from rlhf_lab.validate import check_bool, check_instance, check_tensor
from rlhf_lab.worlds.base import EOS, PAD, UNK, TokenWorld

# Bump when pretraining changes in a way that changes the weights, so stale caches are not used.
PRETRAIN_VERSION = 1
PRETRAIN_LR = 3e-3
PRETRAIN_WARMUP = 0.05  # fraction of steps with a linear learning-rate warm-up


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' own progress bars (loading and saving weights) inside the block."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# -- tokenizer and policy ----------------------------------------------------------------------
def build_tokenizer(world: TokenWorld):
    """A word-level ``PreTrainedTokenizerFast`` whose ids are the indices in ``world.vocab``.

    Texts are split on whitespace; ``[PAD]``, ``[EOS]``, ``[UNK]`` are its special tokens (EOS
    doubles as BOS, as in GPT-2). Nothing is added to an encoded text: corpus texts already
    end in ``[EOS]``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    check_instance("world", world, TokenWorld, "a TokenWorld (e.g. ReviewsWorld, ArithmeticWorld)")
    if list(world.vocab[:3]) != [PAD, EOS, UNK]:
        raise ValueError(f"world.vocab must start with {[PAD, EOS, UNK]}, got {list(world.vocab[:3])}")
    backend = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(world.vocab)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, bos_token=EOS, unk_token=UNK
    )


def _n_positions(world: TokenWorld) -> int:
    """Room for the longest prompt plus a completion, rounded up to a multiple of 16."""
    longest = max(len(p.split()) for p in world.prompts) + world.max_new_tokens
    return 16 * math.ceil(max(longest, 32) / 16)


def build_policy(world: TokenWorld, scale: Scale | None = None):
    """A freshly initialised ``GPT2LMHeadModel`` sized by ``scale`` (default: ``get_scale()``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    check_instance("world", world, TokenWorld, "a TokenWorld (e.g. ReviewsWorld, ArithmeticWorld)")
    check_instance("scale", scale, Scale, "a Scale (get_scale('ci'), …)", none=True)
    scale = scale or get_scale()
    config = GPT2Config(
        vocab_size=len(world.vocab), n_positions=_n_positions(world),
        n_embd=scale.n_embd, n_layer=scale.n_layer, n_head=scale.n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        # exact GELU is one fused kernel; GPT-2's tanh approximation costs several on CPU
        activation_function="gelu",
        bos_token_id=world.eos_id, eos_token_id=world.eos_id, pad_token_id=world.pad_id,
    )
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = world.pad_id
    return model


# -- pretraining the reference policy ----------------------------------------------------------
def _world_identity(world: TokenWorld, seed: int) -> dict:
    """What defines a world for the cache: its tokens, and a fingerprint of its corpus generator
    (the hash of 1,000 of its texts), so editing how a world writes its corpus invalidates the
    cached models without generating the whole corpus on every load."""
    sample = world.corpus(1000, seed=seed)
    return {"name": world.name, "vocab": list(world.vocab), "prompts": list(world.prompts),
            "completion_vocab": list(world.completion_vocab), "max_new_tokens": world.max_new_tokens,
            "corpus_sha256": hashlib.sha256("\n".join(sample).encode()).hexdigest()}


def pretrain_key(world: TokenWorld, scale: Scale) -> str:
    """Cache key of the reference policy: the world, the model sizes, the training budget."""
    config = {**_world_identity(world, scale.seed), "n_layer": scale.n_layer, "n_head": scale.n_head,
              "n_embd": scale.n_embd, "steps": scale.pretrain_steps, "batch_size": scale.pretrain_batch_size,
              "corpus_size": scale.corpus_size, "seed": scale.seed, "lr": PRETRAIN_LR, "version": PRETRAIN_VERSION}
    return f"ref-{world.name}-{config_key(config)}"


def _encode_corpus(world: TokenWorld, corpus: list[str]) -> torch.Tensor:
    """Right-padded token ids, shape (N, T)."""
    rows = [world.encode(text) for text in corpus]
    ids = torch.full((len(rows), max(map(len, rows))), world.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids


def lm_loss(model, ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy on every non-pad token after the first.

    Shape: ids (B, T), right-padded.
    """
    check_tensor("ids", ids, kind="int", ndim=2, nonempty=True, dims="(B, T)")
    mask = (ids != pad_id).long()
    logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


def _train_reference(world: TokenWorld, scale: Scale, progress: bool):
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
        torch.manual_seed(scale.seed)
        model = build_policy(world, scale).to(scale.device)
    data = _encode_corpus(world, world.corpus(scale.corpus_size, seed=scale.seed)).to(scale.device)
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.01, betas=(0.9, 0.98))
    steps = scale.pretrain_steps
    warmup = max(1, int(PRETRAIN_WARMUP * steps))
    # 1) linear warm-up, 2) cosine decay to a tenth of the peak learning rate
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    )
    gen = torch.Generator().manual_seed(scale.seed)
    model.train()
    bar = tqdm(range(steps), desc=f"pretraining π_ref on {world.name}", disable=not progress)
    for _ in bar:
        batch = data[torch.randint(len(data), (scale.pretrain_batch_size,), generator=gen).to(data.device)]
        batch = batch[:, : int((batch != world.pad_id).sum(1).max())]  # drop all-pad columns
        loss = lm_loss(model, batch, world.pad_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return model


def pretrain_reference(world: TokenWorld, scale: Scale | None = None, *, cache: bool = True,
                       progress: bool = True):
    """The reference/SFT policy π_ref of ``world``: a tiny GPT-2 trained on ``world.corpus``.

    Trained with next-token cross-entropy (AdamW, warm-up then cosine decay) for
    ``scale.pretrain_steps`` batches of ``scale.pretrain_batch_size`` texts, seeded by
    ``scale.seed``: a rerun on the same CPU with the same number of torch threads gives the same
    weights (the thread count changes the order of floating-point sums). With ``cache=True`` the
    model is saved with ``save_pretrained`` under ``cache_dir()/models`` and later calls load it
    with ``from_pretrained``; a partial or corrupted entry is rebuilt with a ``CacheWarning``.

    Returns:
        (model, tokenizer): a ``GPT2LMHeadModel`` in eval mode on ``scale.device`` and its tokenizer.
    """
    from transformers import GPT2LMHeadModel

    check_instance("scale", scale, Scale, "a Scale (get_scale('ci'), …)", none=True)
    check_bool("cache", cache)
    check_bool("progress", progress)
    scale = scale or get_scale()
    tokenizer = build_tokenizer(world)
    if not cache:
        return _train_reference(world, scale, progress), tokenizer

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        model = _train_reference(world, scale, progress)
        with quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        info = {"world": world.name, "scale": scale.name, "seconds": round(time.perf_counter() - start, 2)}
        (tmp / "rlhf_lab.json").write_text(json.dumps(info))

    def load(path: Path):
        with quiet_transformers():
            return GPT2LMHeadModel.from_pretrained(path).to(scale.device).eval()

    target = cache_dir() / "models" / pretrain_key(world, scale)
    return build_or_load(target, build, load, f"reference policy for {world.name}"), tokenizer


# -- real models --------------------------------------------------------------------------------
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
                   "vocab.txt")


def load_policy(name_or_path: str | os.PathLike, **kwargs):
    """A causal LM and its tokenizer from a local directory or a hub name.

    Goes through ``AutoModelForCausalLM`` / ``AutoTokenizer``; ``kwargs`` are passed to the
    model's ``from_pretrained`` (e.g. ``torch_dtype``). A tokenizer without a pad token gets
    its EOS token as pad. Whether the hub can be used is decided at call time
    (``hub.offline_reason``): with ``HF_HUB_OFFLINE`` set, or the hub unreachable for a few
    seconds, only the local Hugging Face cache is read, so offline the answer is quick.

    Raises:
        FileNotFoundError: a name that looks like a path (``./``, ``/``, ``~``, …) names no folder,
            or the folder has no tokenizer files.
        OSError: the name is not a local directory and the hub cannot provide it (offline).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_instance("name_or_path", name_or_path, (str, os.PathLike), "a folder path or a hub name (a string)")
    source = str(name_or_path)
    folder = local_folder(name_or_path)
    offline = None
    if folder is not None:
        source = str(folder)
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise FileNotFoundError(f"name_or_path={source!r} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}): "
                                    "save it beside the model with tokenizer.save_pretrained(dir)")
    elif looks_like_path(name_or_path):
        raise FileNotFoundError(f"name_or_path={source!r} looks like a local path, but there is no directory there")
    else:
        offline = offline_reason(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        if offline is not None:  # read only the local Hugging Face cache: no retries against the network
            kwargs = {**kwargs, "local_files_only": True}
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline is not None)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if folder is not None:
            raise
        raise OSError(
            f"could not load {source!r}: it is not a local directory and the Hugging Face hub could not "
            f"provide it — {offline or 'the hub could not serve it'} (you may be offline: HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). "
            "On a machine with network access run `model.save_pretrained(dir)` and "
            "`tokenizer.save_pretrained(dir)` (or `hf download <name> --local-dir dir`), copy the directory "
            "here and pass its path: load_policy('path/to/dir')."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer

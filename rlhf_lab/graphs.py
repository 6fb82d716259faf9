"""CUDA graphs for the sampler: GPT-2's decoding step recorded once and replayed.

On a GPU a tiny policy is launch-bound: one decoding step of the two-layer models is some
hundred small kernels, each taking microseconds to launch and less to run, and ``generate``
adds its own per-step work. A CUDA graph records the step's kernels once and replays them with
one launch. A graph replays fixed shapes at fixed addresses, so the step here differs from the
eager decoder's (``decoding._GPT2Decoder``) in three ways:

* one row per slot: every row keeps its place for the whole completion, ended rows included
  (their tokens are ignored), instead of one slot per distinct prefix;
* a static KV cache of ``rows × length`` positions, written at a position held in a device
  tensor (``gpt2.blocks`` with a tensor ``start``) that the step itself moves on;
* attention over every cached position, an additive key mask hiding those not written yet.

The sampling (masking, noise, argmax, bookkeeping) stays outside the graph and is the eager
loop's own code, drawing the same noise: on the same device, a graphed and an eager run of one
seed sample the same tokens, with log-probs equal to rounding (tests/test_graphs.py). A step is
recorded per (weights, rows, length) and kept (``KEEP`` of them); it reads the parameters at
their addresses, so an optimizer's in-place updates are seen and a moved or reloaded model gets
a new recording; the kept steps hold their weights, so up to ``KEEP`` models stay in memory
after their last use. Set ``RLHF_LAB_CUDA_GRAPHS=0`` to decode eagerly. ``benchmarks/sampler.py``
measures both against ``generate``.

Introduced for issue 18 (README, "Performance").
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch

from rlhf_lab import gpt2
from rlhf_lab.models import position_ids_from_mask

ENV_VAR = "RLHF_LAB_CUDA_GRAPHS"
MAX_ROWS = 1024  # larger batches amortise the launches anyway; a 1,024-row cache at gpu sizes is ≈ 0.6 GB
KEEP = 4  # recorded steps kept (each holds its cache and the graph's memory)
_ALIGN = 16  # cache lengths are rounded up to a multiple of this, so nearby prompt lengths share a recording
_STEPS: OrderedDict = OrderedDict()


def enabled(device: torch.device, rows: int) -> bool:
    """Whether ``decoding.sample_ids`` decodes GPT-2 through a recorded step: on CUDA, up to
    ``MAX_ROWS`` rows, unless ``RLHF_LAB_CUDA_GRAPHS=0``.

    Raises:
        ValueError: ``RLHF_LAB_CUDA_GRAPHS`` is set to something other than 0 or 1.
    """
    raw = os.environ.get(ENV_VAR, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"{ENV_VAR}={raw!r} is not allowed: 0 decodes eagerly, 1 (the default) replays "
                         "CUDA graphs on a GPU")
    return device.type == "cuda" and rows <= MAX_ROWS and raw != "0"


class Step:
    """One decoding step over ``rows`` rows with static buffers; recorded as a CUDA graph when
    ``record`` (on a GPU), else run eagerly (the same arithmetic, for tests on a CPU).

    Before each ``run``: ``token`` (rows, 1) holds each row's newest token; ``position`` its
    position; ``at`` the cache position it is written to; ``key_bias`` (rows, 1, 1, length) is 0
    on the keys a row may see and −inf elsewhere. ``run`` returns the logits (rows, V) — on a graph,
    a buffer the next run overwrites — and moves ``at`` and ``position`` on by one.
    """

    def __init__(self, w: gpt2.Weights, rows: int, length: int, record: bool) -> None:
        self.w = w
        heads, c = w.layers[0].heads, w.wte.shape[1]
        like = dict(device=w.wte.device, dtype=w.wte.dtype)
        self.cache = torch.zeros((len(w.layers), 2, rows, heads, length, c // heads), **like)
        self.key_bias = torch.full((rows, 1, 1, length), float("-inf"), **like)
        self.token = torch.zeros((rows, 1), dtype=torch.long, device=w.wte.device)
        self.position = torch.zeros_like(self.token)
        self.at = torch.zeros((1,), dtype=torch.long, device=w.wte.device)
        self.graph = self.logits = None
        if record:
            try:
                with torch.cuda.device(w.wte.device):  # the model's GPU, whichever is current
                    self._record()
            except RuntimeError as err:
                raise RuntimeError(f"recording the sampler's decoding step as a CUDA graph failed ({err}); set "
                                   f"{ENV_VAR}=0 to decode eagerly") from err

    def _record(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the main stream, as CUDA graphs require
            for _ in range(2):
                self._compute()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._compute()

    def _compute(self) -> torch.Tensor:
        self.key_bias.index_fill_(3, self.at, 0.0)  # the new token's key becomes visible
        hidden = gpt2.blocks(self.w, self.token, self.position, self.key_bias, self.cache, self.at)
        self.at.add_(1)
        self.position.add_(1)
        return gpt2.head(self.w, hidden[:, -1])

    def run(self) -> torch.Tensor:
        if self.graph is None:
            return self._compute()
        self.graph.replay()
        return self.logits


def step(w: gpt2.Weights, rows: int, length: int) -> Step:
    """The recorded step for these weights (by address), rows and cache length (rounded up)."""
    length = -(-length // _ALIGN) * _ALIGN
    tensors = [w.wte, w.wpe, *w.ln_f[:2], w.lm_head]
    for layer in w.layers:
        tensors += [*layer.ln_1[:2], *layer.c_attn, *layer.attn_proj, *layer.ln_2[:2], *layer.c_fc, *layer.mlp_proj]
    # buffers made under inference_mode could not be updated outside it, and a step recorded under
    # autocast would replay its lower precision: both modes are part of the key
    key = (tuple(t.data_ptr() for t in tensors), w.wte.dtype, str(w.wte.device), rows, length,
           torch.is_inference_mode_enabled(), torch.is_autocast_enabled(w.wte.device.type))
    if key not in _STEPS:
        _STEPS[key] = Step(w, rows, length, record=w.wte.device.type == "cuda")
        while len(_STEPS) > KEEP:
            _STEPS.popitem(last=False)
    _STEPS.move_to_end(key)
    return _STEPS[key]


class Decoder:
    """``decoding.sample_ids``'s decoder interface (prefill, advance) over a recorded step."""

    def __init__(self, step: Step) -> None:
        self.step = step

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """Runs the distinct prompts eagerly, then gives every row its prompt's keys and values.

        Shape: ids, mask (S, Tp); slot (B,) → logits (S, V).
        """
        s, w = self.step, self.step.w
        tp = ids.shape[1]
        layers, _, _, heads, _, head_dim = s.cache.shape
        prompt_cache = w.wte.new_empty((layers, 2, ids.shape[0], heads, tp, head_dim))
        hidden = gpt2.blocks(w, ids, position_ids_from_mask(mask), gpt2.padded_causal_mask(mask), prompt_cache)
        s.cache[..., tp:, :].zero_()  # never read unmasked, but a stale NaN would survive 0 · NaN
        s.cache[..., :tp, :].copy_(prompt_cache.index_select(2, slot))
        row_mask = mask.index_select(0, slot).bool()
        s.key_bias.fill_(float("-inf"))
        s.key_bias[:, 0, 0, :tp].masked_fill_(row_mask, 0.0)
        s.position.copy_(row_mask.sum(dim=1, keepdim=True))
        s.at.fill_(tp)
        return gpt2.head(w, hidden[:, -1])

    def advance(self, slot: torch.Tensor, rows: torch.Tensor, token: torch.Tensor, vocab: int):
        """Feeds the live rows their tokens and runs the step; every row is its own slot.

        Shape: slot, rows, token (A,) → logits (B, V), rows (A,).
        """
        self.step.token.index_copy_(0, rows, token[:, None])
        return self.step.run(), rows


def decoder(w: gpt2.Weights, rows: int, length: int) -> Decoder:
    """A decoder for ``rows`` rows of up to ``length`` tokens (prompt and completion)."""
    return Decoder(step(w, rows, length))

"""Value and reward models: a transformer body with a scalar head (chapters 03–05).

* ``ValueModel`` — per-token values V(s_t): the head on every hidden state (A2C, PPO).
* ``RewardModel`` — r(x, y): the head on the hidden state of the last real token, normalised
  to mean 0 and std 1 on reference samples (chapter 05).

Both start from a copy of a policy's transformer (``from_policy``) and save and load like a
transformers model. The two mask helpers they read positions with, ``position_ids_from_mask``
and ``last_token_index``, serve the sampler and the log-prob code too. Introduced in chapter 03.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from rlhf_lab.validate import check_bool, check_instance, check_int, check_texts


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them.

    Shape: attention_mask (B, T) → (B, T); padded positions get 0.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for left or right padding. Shape (B, T) → (B,)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


class ValueHead(nn.Module):
    """A linear map from a hidden state to one number. Shape: (..., H) → (...)."""

    def __init__(self, hidden_size: int) -> None:
        check_int("hidden_size", hidden_size, ge=1)
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)  # every output starts at 0: no initial preference
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).squeeze(-1)


def _backbone_from(model_or_config):
    """A transformer body (no LM head): a copy of a policy's, or a fresh one from a config."""
    from transformers import AutoModel, PretrainedConfig  # the name both v4 and v5 export

    if isinstance(model_or_config, PretrainedConfig):
        return AutoModel.from_config(model_or_config)
    body = getattr(model_or_config, "base_model", model_or_config)
    return copy.deepcopy(body)


class _ScalarHeadModel(nn.Module):
    """A backbone with a ``ValueHead``; subclasses choose where the head is read."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ValueHead(backbone.config.hidden_size)

    @property
    def config(self):
        return self.backbone.config

    @classmethod
    def from_policy(cls, policy: nn.Module):
        """Start from a copy of ``policy``'s transformer (its LM head is dropped), on its device."""
        check_instance("policy", policy, nn.Module, "a transformers model (e.g. a GPT2LMHeadModel)")
        device = next(policy.parameters()).device
        return cls(_backbone_from(policy)).to(device)

    @classmethod
    def from_config(cls, config):
        """A freshly initialised backbone of the given transformers config."""
        return cls(_backbone_from(config))

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states, shape (B, T, H)."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        return out.last_hidden_state

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (head and buffers included)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, path / "model.safetensors")

    @classmethod
    def from_pretrained(cls, path: str | Path):
        from safetensors.torch import load_file
        from transformers import AutoConfig

        path = Path(path)
        model = cls.from_config(AutoConfig.from_pretrained(path))
        model.load_state_dict(load_file(path / "model.safetensors"))
        return model.eval()


class ValueModel(_ScalarHeadModel):
    """Per-token values V(s_t): the head applied to every hidden state (chapters 03–04).

    ``forward(input_ids (B, T), attention_mask (B, T)) -> values (B, T)``; entries at padded
    positions are meaningless and must be masked by the caller.
    """

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_states(input_ids, attention_mask))


class RewardModel(_ScalarHeadModel):
    """r(x, y): a scalar head on the hidden state of the last real token (chapter 05).

    The output is normalised, (raw − reward_mean) / reward_std; both are buffers (0 and 1 until
    ``algos.reward_model.normalise_rewards`` sets them), so they are saved and loaded with it.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    def raw_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Un-normalised scores. Shape: (B, T) → (B,)."""
        hidden = self.hidden_states(input_ids, attention_mask)  # (B, T, H)
        last = last_token_index(attention_mask)  # (B,)
        return self.head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised scores. Shape: input_ids, attention_mask (B, T) → (B,)."""
        return (self.raw_forward(input_ids, attention_mask) - self.reward_mean) / self.reward_std

    @torch.no_grad()
    def score_texts(self, texts: list[str], tokenizer, batch_size: int = 256, raw: bool = False) -> torch.Tensor:
        """Scores of whole texts (prompt + " " + completion). Shape (len(texts),), on CPU."""
        texts = check_texts("texts", texts, nonempty=False)
        check_int("batch_size", batch_size, ge=1)
        check_bool("raw", raw)
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start: start + batch_size]), padding=True, return_tensors="pt").to(device)
            score = self.raw_forward if raw else self.forward
            out.append(score(enc["input_ids"], enc["attention_mask"]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

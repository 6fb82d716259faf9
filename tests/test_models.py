"""models.py: tokenizer, policy, pretraining and its cache, value/reward models, load_policy."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch

from rlhf_lab import cache, models
from rlhf_lab.scale import get_scale
from rlhf_lab.worlds.base import EOS, PAD, UNK, TokenWorld

WORD_PROBS = {"a": [0.6, 0.1, 0.3], "b": [0.1, 0.6, 0.3], "the b": [0.1, 0.6, 0.3]}
LENGTH_PROBS = [0.2, 0.5, 0.3]  # P(0, 1, 2 words before EOS)


class ToyWorld(TokenWorld):
    """Three words, prompts of one and two tokens, and a corpus with a known distribution."""

    def __init__(self) -> None:
        self.name = "toy"
        self.prompts = list(WORD_PROBS)
        self.completion_vocab = ["good", "bad", "meh", EOS]
        self.vocab = [PAD, EOS, UNK, "the", "a", "b", "good", "bad", "meh"]
        self.max_new_tokens = 3
        self.enumerable = True

    def true_probs(self, prompt: str) -> torch.Tensor:
        """P(completion | prompt) of the corpus, over ``enumerate_completions()``. Shape (K,)."""
        words = self.completion_vocab[:3]
        probs = []
        for completion in self.enumerate_completions():
            toks = completion.split()
            if toks[-1] != EOS:
                probs.append(0.0)  # corpus completions always end in EOS
                continue
            p = LENGTH_PROBS[len(toks) - 1]
            for tok in toks[:-1]:
                p *= WORD_PROBS[prompt][words.index(tok)]
            probs.append(p)
        return torch.tensor(probs, dtype=torch.float64)

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        g = torch.Generator().manual_seed(seed)
        words = self.completion_vocab[:3]
        out = []
        for _ in range(n):
            prompt = self.prompts[int(torch.randint(len(self.prompts), (1,), generator=g))]
            k = int(torch.multinomial(torch.tensor(LENGTH_PROBS), 1, generator=g))
            idx = torch.multinomial(torch.tensor(WORD_PROBS[prompt]), k, replacement=True, generator=g) if k else []
            out.append(" ".join([prompt, *(words[int(i)] for i in idx), EOS]))
        return out

    def gold_reward(self, prompt: str, completion: str) -> float:
        toks = completion.split()
        return float(toks.count("good") - toks.count("bad"))


def exact_logprobs(model, world: TokenWorld, prompt: str) -> torch.Tensor:
    """log π(y | prompt) of every enumerable completion by full forward passes. Shape (K,)."""
    completions = world.enumerate_completions()
    p_ids = world.encode(prompt)
    rows = [p_ids + world.encode(c) for c in completions]
    width = max(map(len, rows))
    ids = torch.tensor([r + [world.pad_id] * (width - len(r)) for r in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    with torch.no_grad():
        logits = world.mask_logits(model(input_ids=ids, attention_mask=mask).logits.float())
    logp = torch.log_softmax(logits[:, len(p_ids) - 1: -1], -1).gather(-1, ids[:, len(p_ids):, None]).squeeze(-1)
    return logp.masked_fill(mask[:, len(p_ids):] == 0, 0.0).sum(1).double()


@pytest.fixture
def world():
    return ToyWorld()


@pytest.fixture
def tiny_scale():
    return get_scale("ci").replace(pretrain_steps=30, pretrain_batch_size=32, corpus_size=500, n_embd=32)


@pytest.fixture(autouse=True)
def _cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "cache"))


# -- tokenizer ---------------------------------------------------------------------------------
def test_tokenizer_ids_are_vocab_indices(world):
    tok = models.build_tokenizer(world)
    assert len(tok) == len(world.vocab)
    assert tok.convert_tokens_to_ids(world.vocab) == list(range(len(world.vocab)))
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, 1)
    text = "the b good meh [EOS]"
    assert tok(text)["input_ids"] == world.encode(text)  # nothing added around the text
    assert tok.decode(world.encode(text)) == text
    assert tok("a nonsense")["input_ids"] == [4, 2]  # unknown word → [UNK]


def test_tokenizer_pads_left_and_right_and_survives_save_load(world, tmp_path):
    from transformers import AutoTokenizer

    tok = models.build_tokenizer(world)
    tok.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    for t in (tok, loaded):
        right = t(["a", "the b good"], padding=True)
        left = t(["a", "the b good"], padding=True, padding_side="left")
        assert right["input_ids"] == [[4, 0, 0], [3, 5, 6]] and right["attention_mask"] == [[1, 0, 0], [1, 1, 1]]
        assert left["input_ids"] == [[0, 0, 4], [3, 5, 6]] and left["attention_mask"] == [[0, 0, 1], [1, 1, 1]]
        assert t.decode([0, 4, 6, 1], skip_special_tokens=True) == "a good"
    assert loaded.get_vocab() == tok.get_vocab()


def test_tokenizer_rejects_a_vocab_without_the_specials(world):
    world.vocab = ["a", "b"]
    with pytest.raises(ValueError, match="vocab"):
        models.build_tokenizer(world)


# -- policy --------------------------------------------------------------------------------------
def test_build_policy_config(world):
    scale = get_scale("ci")
    model = models.build_policy(world, scale)
    c = model.config
    sizes = (len(world.vocab), scale.n_layer, scale.n_head, scale.n_embd)
    assert (c.vocab_size, c.n_layer, c.n_head, c.n_embd) == sizes
    assert (c.pad_token_id, c.eos_token_id, c.bos_token_id) == (0, 1, 1)
    assert c.n_positions >= max(len(p.split()) for p in world.prompts) + world.max_new_tokens
    assert c.n_positions <= 64
    assert c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0.0
    out = model(input_ids=torch.tensor([[4, 6, 1]])).logits
    assert out.shape == (1, 3, len(world.vocab))


# -- pretraining --------------------------------------------------------------------------------
def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_pretraining_is_deterministic(world, tiny_scale):
    a, _ = models.pretrain_reference(world, tiny_scale, cache=False, progress=False)
    b, _ = models.pretrain_reference(world, tiny_scale, cache=False, progress=False)
    assert not a.training
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pretraining_fits_the_corpus_distribution(world):
    """At the ci budget π_ref is close to the distribution the corpus was drawn from."""
    scale = get_scale("ci")
    torch.manual_seed(scale.seed)
    untrained = models.build_policy(world, scale).eval()
    model, _ = models.pretrain_reference(world, scale, cache=False, progress=False)
    for prompt in world.prompts:
        p_true = world.true_probs(prompt)
        p_model = exact_logprobs(model, world, prompt).exp()
        assert abs(p_model.sum().item() - 1.0) < 1e-5  # the enumeration covers every outcome
        tv = 0.5 * (p_model - p_true).abs().sum().item()
        tv_before = 0.5 * (exact_logprobs(untrained, world, prompt).exp() - p_true).abs().sum().item()
        # the corpus itself (≈1,300 texts per prompt) is 0.02–0.04 away from the truth
        assert tv < 0.12, f"total variation to the corpus distribution for {prompt!r} is {tv:.3f}"
        assert tv_before > 0.5


def test_pretraining_cache_round_trip_and_rebuild(world, tiny_scale, monkeypatch):
    first, tok = models.pretrain_reference(world, tiny_scale, progress=False)
    (entry,) = [p for p in (cache.cache_dir() / "models").glob("ref-toy-*") if p.is_dir()]
    assert cache.is_valid(entry) and (entry / "config.json").exists() and (entry / "tokenizer.json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model must be loaded, not retrained")

    with monkeypatch.context() as m:
        m.setattr(models, "_train_reference", no_training)
        start = time.perf_counter()
        loaded, _ = models.pretrain_reference(world, tiny_scale, progress=False)
        assert time.perf_counter() - start < 2.0
    s1, s2 = _state(first), _state(loaded)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)

    # a truncated weights file (a killed run, a full disk) is detected and rebuilt
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(cache.CacheWarning, match="corrupted"):
        rebuilt, _ = models.pretrain_reference(world, tiny_scale, progress=False)
    s3 = _state(rebuilt)
    assert all(torch.equal(s1[k], s3[k]) for k in s1)

    # a different budget is a different entry
    models.pretrain_reference(world, tiny_scale.replace(pretrain_steps=31), progress=False)
    assert len([p for p in (cache.cache_dir() / "models").glob("ref-toy-*") if p.is_dir()]) == 2


def test_pretraining_on_the_reviews_world_at_ci():
    """π_ref of the reviews world writes fluent reviews (the corpus is fluent) and ends them."""
    reviews = pytest.importorskip("rlhf_lab.worlds.reviews")
    exact = pytest.importorskip("rlhf_lab.exact")
    scale = get_scale("ci")
    world = reviews.ReviewsWorld.from_scale(scale)
    model, _ = models.pretrain_reference(world, scale, cache=False, progress=False)
    probs = exact.completion_logprobs(model, world).exp()  # (P, K)
    parts = [world.gold_parts(c) for c in world.enumerate_completions()]
    fluent = torch.tensor([p["repeated"] + p["misplaced"] + p["no_eos"] + p["empty"] == 0 for p in parts])
    truncated = torch.tensor([p["no_eos"] == 1 for p in parts])
    assert probs[:, fluent].sum(1).min() > 0.9  # measured 0.93–0.94
    assert probs[:, truncated].sum(1).max() < 0.01  # measured 0.003


# -- value and reward models --------------------------------------------------------------------
def test_position_ids_and_last_token_for_both_paddings():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert models.position_ids_from_mask(right).tolist() == [[0, 1, 2, 2], [0, 1, 2, 3]]
    assert models.position_ids_from_mask(left).tolist() == [[0, 0, 1, 2], [0, 1, 2, 3]]
    assert models.last_token_index(right).tolist() == [2, 3]
    assert models.last_token_index(left).tolist() == [3, 3]


def _trained_head(model_cls, world, seed=0):
    torch.manual_seed(seed)
    model = model_cls.from_policy(models.build_policy(world, get_scale("ci")))
    torch.nn.init.normal_(model.head.linear.weight)  # a non-zero head, so scores differ
    return model.eval()


def test_reward_model_reads_the_last_real_token_for_any_padding(world):
    rm = _trained_head(models.RewardModel, world)
    tok = models.build_tokenizer(world)
    texts = ["a good [EOS]", "the b bad meh [EOS]", "b [EOS]"]
    alone = torch.stack([rm.score_texts([t], tok)[0] for t in texts])
    with torch.no_grad():
        for side in ("right", "left"):
            enc = tok(texts, padding=True, padding_side=side, return_tensors="pt")
            batched = rm(enc["input_ids"], enc["attention_mask"])
            assert batched.shape == (3,)
            assert torch.allclose(batched, alone, atol=1e-5)
    assert alone.unique().numel() == 3


def test_reward_model_normalisation_buffers_save_and_load(world, tmp_path):
    rm = _trained_head(models.RewardModel, world)
    tok = models.build_tokenizer(world)
    texts = ["a good [EOS]", "the b bad meh [EOS]"]
    raw = rm.score_texts(texts, tok, raw=True)
    rm.reward_mean.fill_(0.5)
    rm.reward_std.fill_(2.0)
    assert torch.allclose(rm.score_texts(texts, tok), (raw - 0.5) / 2.0)
    rm.save_pretrained(tmp_path / "rm")
    loaded = models.RewardModel.from_pretrained(tmp_path / "rm")
    assert loaded.reward_mean.item() == 0.5 and loaded.reward_std.item() == 2.0
    assert torch.allclose(loaded.score_texts(texts, tok), rm.score_texts(texts, tok))


def test_models_from_a_policy_copy_its_transformer(world):
    policy = models.build_policy(world, get_scale("ci"))
    rm = models.RewardModel.from_policy(policy)
    assert torch.equal(rm.backbone.wte.weight, policy.transformer.wte.weight)
    with torch.no_grad():
        rm.backbone.wte.weight.add_(1.0)  # a copy: training the RM leaves the policy alone
    assert not torch.equal(rm.backbone.wte.weight, policy.transformer.wte.weight)
    assert rm(torch.tensor([[4, 6, 1]]), torch.ones(1, 3, dtype=torch.long)).tolist() == [0.0]  # zero-init head


def test_value_model_gives_one_value_per_token(world, tmp_path):
    vm = _trained_head(models.ValueModel, world)
    ids = torch.tensor([[0, 4, 6, 1], [3, 5, 7, 1]])
    mask = (ids != 0).long()
    values = vm(ids, mask)
    assert values.shape == (2, 4)
    # causal: a token's value does not depend on later tokens
    assert torch.allclose(vm(ids[:, :3], mask[:, :3]), values[:, :3], atol=1e-5)
    # left padding does not change the values of the real tokens
    assert torch.allclose(vm(ids[:1, 1:], mask[:1, 1:]), values[:1, 1:], atol=1e-5)
    vm.save_pretrained(tmp_path / "vm")
    assert torch.allclose(models.ValueModel.from_pretrained(tmp_path / "vm")(ids, mask), values)


# -- load_policy --------------------------------------------------------------------------------
def test_load_policy_from_a_local_directory(world, tmp_path):
    model = models.build_policy(world, get_scale("ci")).eval()
    tok = models.build_tokenizer(world)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    loaded, loaded_tok = models.load_policy(tmp_path / "tiny")
    ids = torch.tensor([loaded_tok("the b good [EOS]")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert loaded_tok.pad_token_id == 0 and not loaded.training


def test_load_policy_offline_explains_how_to_use_a_local_path(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(OSError, match="offline") as err:
        models.load_policy("rlhf-lab-test/no-such-model")
    assert "load_policy('path/to/dir')" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no directory"):
        models.load_policy(str(tmp_path / "missing" / "model"))


def test_lm_loss_ignores_padding(world):
    torch.manual_seed(0)
    model = models.build_policy(world, get_scale("ci"))
    ids = torch.tensor([[4, 6, 1]])
    padded = torch.tensor([[4, 6, 1, 0, 0]])
    assert math.isclose(models.lm_loss(model, ids, 0).item(), models.lm_loss(model, padded, 0).item(), rel_tol=1e-5)
    logits = model(input_ids=ids).logits[0]
    by_hand = -(torch.log_softmax(logits[0], -1)[6] + torch.log_softmax(logits[1], -1)[1]) / 2
    assert math.isclose(models.lm_loss(model, ids, 0).item(), by_hand.item(), rel_tol=1e-5)


def test_enumeration_matches_the_contract(world):
    completions = world.enumerate_completions()
    assert len(completions) == 1 + 3 + 9 + 27
    assert world.true_probs("a").sum().item() == pytest.approx(1.0)
    assert set(itertools.islice(completions, 4)) == {"[EOS]", "good [EOS]", "bad [EOS]", "meh [EOS]"}

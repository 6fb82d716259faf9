"""Practice sets for chapters 06–09. Every answer is a formula evaluated here, and a test
recomputes it independently (tests/test_exercises.py)."""

from __future__ import annotations

import math

from rlhf_lab.exercises.questions import choice, curves, numeric

# best-of-2 of π_ref = (0.5, 0.3, 0.2) with rewards (0, 1, 2): F = (0.5, 0.8, 1), F⁻ = (0, 0.5, 0.8)
_PI_2 = (0.5**2, 0.8**2 - 0.5**2, 1 - 0.8**2)
_KL_2 = sum(p * math.log(p / q) for p, q in zip(_PI_2, (0.5, 0.3, 0.2)))
_GROUP_STD = math.sqrt((0.75**2 + 3 * 0.25**2) / 3)  # Bessel: divide by G − 1 = 3

SETS = {
    "06": ("Best-of-n and rejection sampling", (
        numeric("q1", "What is the bound of eq-bon-kl on KL(π_n‖π_ref) for n = 4?",
                math.log(4) - 3 / 4, 1e-3, "log n − (n − 1)/n, natural log.",
                "log 4 − 3/4 = 1.3863 − 0.75 ≈ 0.6363 nats."),
        numeric("q2", "π_ref = (0.5, 0.3, 0.2) over three outputs with rewards (0, 1, 2). With "
                "what probability does best-of-2 return the highest-reward output?", _PI_2[2],
                1e-3, "π_n(y) = F(y)^n − F⁻(y)^n with outputs sorted by reward.",
                "For the best output F = 1 and F⁻ = 1 − 0.2 = 0.8, so π_2 = 1 − 0.8² = 0.36.",
                traps=((0.2**2, "π_ref(y)² is the chance both draws are y; best-of-2 returns "
                        "y whenever y is drawn at least once."),)),
        numeric("q3", "Same π_ref and rewards, n = 2: what is the exact KL(π_2‖π_ref) in nats?",
                _KL_2, 1e-3,
                "first π_2 = (0.5², 0.8² − 0.5², 1 − 0.8²), then Σ π_2 log(π_2/π_ref).",
                "π_2 = (0.25, 0.39, 0.36); KL = 0.25 log(0.5) + 0.39 log(1.3) + 0.36 log(1.8) "
                "≈ 0.1406, below the bound log 2 − 1/2 ≈ 0.1931.",
                traps=((math.log(2) - 0.5, "that is the bound of eq-bon-kl, not the exact "
                        "KL."),)),
        choice("q4", "Which is true of log n − (n − 1)/n?",
               ("it is the exact KL of best-of-n",
                "it is an upper bound on the KL, nearly tight when no output carries much "
                "probability", "it is a lower bound on the KL",
                "the exact KL grows without bound in n for any categorical π_ref"), "b",
               "compare with the KL of always returning the single best output y*.",
               "It is Beirami et al.'s upper bound, an equality only in the continuous limit. "
               "For a categorical π_ref the exact KL can never exceed log(1/π_ref(y*)), so it "
               "saturates while the bound keeps growing."),
        choice("q5", "Three prompts (easy, medium, hard) with 8 samples each; you keep 6 samples "
               "for fine-tuning. Which selection can leave the hard prompt with none?",
               ("the top 2 of each prompt", "the top 6 of the whole batch", "both", "neither"),
               "b", "which selection compares rewards across prompts?",
               "Top-overall ranks all 24 samples together; an easy prompt's samples score "
               "higher, so the hard prompt can get none. Top per prompt always keeps 2 each."),
    )),
    "07": ("DPO and SimPO", (
        numeric("q1", "DPO loss (eq-dpo) of one pair at β = 0.1 whose log-ratios "
                "log π_θ/π_ref are +2 for the chosen and −3 for the rejected completion?",
                math.log1p(math.exp(-0.5)), 1e-3, "Δ = 2 − (−3) = 5; the loss is −log σ(βΔ).",
                "−log σ(0.1 · 5) = log(1 + e^(−0.5)) ≈ 0.4741.",
                traps=((math.log1p(math.exp(-5.0)), "β is missing: −log σ(βΔ)."),)),
        numeric("q2", "The implicit reward β log π_θ(y)/π_ref(y) with β = 0.5, π_θ(y) = 0.2 and "
                "π_ref(y) = 0.1?", 0.5 * math.log(2.0), 1e-3, "natural log of the ratio, times β.",
                "0.5 · log(0.2 / 0.1) = 0.5 · log 2 ≈ 0.3466."),
        numeric("q3", "π_ref = (0.5, 0.5), rewards r = (1, 0), β = 1. What is the probability "
                "of the first output under π*_β (eq-dpo-optimum)?",
                math.e / (math.e + 1), 1e-3, "π*_β ∝ π_ref · exp(r/β); normalise.",
                "π* ∝ (0.5e, 0.5), so π*(first) = e / (e + 1) ≈ 0.7311."),
        numeric("q4", "IPO (eq-ipo) with β = 0.25: at which margin Δ is one pair's loss "
                "lowest?", 1 / (2 * 0.25), 1e-3, "(Δ − 1/(2β))² is lowest where it is zero.",
                "Δ = 1/(2 · 0.25) = 2."),
        numeric("q5", "SLiC's hinge (eq-slic-hinge) with β = 0.1: from which margin Δ on is the "
                "loss zero?", 1 / 0.1, 1e-3, "max(0, 1 − βΔ) is zero once βΔ ≥ 1.",
                "βΔ = 1 at Δ = 1/β = 10."),
        choice("q6", "During DPO training rewards/chosen and rewards/rejected both fall while "
               "rewards/margins grows. What does it mean?",
               ("training is broken: the chosen reward must rise",
                "nothing is wrong: over samples of π_ref the mean implicit reward is "
                "−β KL(π_ref‖π) ≤ 0, and only the margin enters the loss",
                "β is too small", "the reference model is being updated"), "b",
               "average β log π/π_ref over samples of π_ref (eq-dpo-jensen).",
               "E_{π_ref}[β log π/π_ref] = −β KL(π_ref‖π) ≤ 0: as π concentrates, most "
               "completions (chosen ones included) lose probability. The loss depends on the "
               "margin only, and the margin grows."),
    )),
    "08": ("GRPO and verifiable rewards", (
        numeric("q1", "GRPO advantage (eq-grpo-adv; Bessel-corrected std, ε = 1e-4) of the "
                "first response in a group with rewards (1, 0, 0, 0)?",
                0.75 / (_GROUP_STD + 1e-4), 1e-3,
                "mean 0.25; the std divides the squared deviations by G − 1 = 3.",
                "Deviations (0.75, −0.25, −0.25, −0.25); Bessel std √(0.75/3) = 0.5; "
                "A_1 = 0.75 / 0.5001 ≈ 1.4997.",
                traps=((0.75 / (math.sqrt(0.75 / 4) + 1e-4),
                        "population std? Use the Bessel-corrected std (divide by G − 1)."),)),
        numeric("q2", "RLOO advantage (eq-rloo) of that same first response?", 1 - 0 / 3, 1e-3,
                "subtract the mean of the other G − 1 rewards.",
                "1 − (0 + 0 + 0)/3 = 1; equivalently G/(G − 1)·(r − mean) = 4/3 · 0.75 = 1."),
        numeric("q3", "A prompt is solved with probability p = 0.9 and groups have G = 8. What "
                "is the probability that a group has zero variance (eq-zero-var)?",
                0.9**8 + 0.1**8, 1e-3, "all 8 right, or all 8 wrong.",
                "0.9⁸ + 0.1⁸ ≈ 0.4305: almost half the groups of such a prompt teach nothing.",
                traps=((1 - 0.9**8, "that is the chance that at least one of the 8 fails; "
                        "zero variance needs all right or all wrong."),)),
        numeric("q4", "For p = 0.8, what is the smallest group size G for which the probability "
                "of a zero-variance group is below 0.1?",
                next(g for g in range(2, 100) if 0.8**g + 0.2**g < 0.1), 0,
                "evaluate p^G + (1 − p)^G for G = 9, 10, 11, ….",
                "0.8¹⁰ + 0.2¹⁰ ≈ 0.1074 ≥ 0.1 and 0.8¹¹ + 0.2¹¹ ≈ 0.0859 < 0.1, so G = 11."),
        numeric("q5", "A prompt has success rate p = 0.3. What is its pass@4 (eq-pass-k)?",
                1 - 0.7**4, 1e-3, "1 − (1 − p)^k: the chance that not all k tries fail.",
                "1 − 0.7⁴ = 1 − 0.2401 = 0.7599.",
                traps=((4 * 0.3, "the tries overlap: use 1 − (1 − p)^k, not k·p."),)),
        numeric("q6", "Two wrong answers with the same advantage, of 1 and 3 tokens, at ρ = 1, "
                "aggregated as in GRPO (eq-grpo-agg). How many times larger is the gradient "
                "on each token of the short answer than on each token of the long one?",
                (1 / 1) / (1 / 3), 1e-3, "each token's weight is 1/|o_i| within its answer.",
                "Weights 1/(G·|o|): 1/(2·1) for the short answer's token and 1/(2·3) for each "
                "of the long one's, a factor of 3 (Dr. GRPO and DAPO make it 1).",
                traps=((1.0, "that is Dr. GRPO's or DAPO's aggregation, not GRPO's 1/|o_i|."),)),
    )),
    "09": ("Over-optimisation and entropy collapse", (
        numeric("q1", "Gao et al.'s best-of-n form R_bon(d) = d(α − β_bon d) with α = 1 and "
                "β_bon = 0.25, d = √KL. At which KL, in nats, is the gold gain highest?",
                (1 / (2 * 0.25)) ** 2, 1e-3, "maximise over d, then KL = d².",
                "dR/dd = α − 2β_bon d = 0 at d = α/(2β_bon) = 2, so KL = d² = 4 nats.",
                traps=((2.0, "that is d; the KL is d²."),)),
        numeric("q2", "The RL form R_RL(d) = d(α − β_RL log d) with α = 1 and β_RL = 0.5: at "
                "which d is the gold gain highest?", math.exp((1 - 0.5) / 0.5), 1e-3,
                "dR/dd = α − β_RL log d − β_RL.",
                "Setting α − β_RL(log d + 1) = 0 gives log d = (α − β_RL)/β_RL = 1, d = e ≈ 2.718."),
        numeric("q3", "Cui et al.'s fit R = −a e^H + b (eq-entropy-collapse) with a = 0.5 and "
                "b = 2: what reward is left once the entropy is spent (H = 0)?",
                -0.5 * math.exp(0) + 2, 1e-3, "e⁰ = 1.", "R(0) = −0.5 · 1 + 2 = 1.5 = b − a."),
        numeric("q4", "π is uniform over 4 completions. What is the expected number of distinct "
                "completions among 4 samples, Σ_y [1 − (1 − π(y))⁴]?", 4 * (1 - 0.75**4), 1e-3,
                "each completion is missing from 4 draws with probability (3/4)⁴.",
                "4 · (1 − 0.75⁴) = 4 · 0.6836 ≈ 2.734: four samples rarely show all four."),
        curves("q5", "Along the exact frontier π*_β against a proxy reward model, as β falls "
               "(the KL grows), curve A keeps rising and curve B rises, peaks at an interior "
               "KL and falls. Which is the proxy reward and which the gold reward?",
               ("A", "B"), ("proxy", "gold"), ("proxy", "gold"),
               "π*_β maximises E[proxy] − β KL; what must the proxy do as β falls?",
               "The expected proxy reward of π*_β can only rise as β falls (its derivative in "
               "1/β is a variance, ≥ 0), so A is the proxy; gold (B) rises while proxy and "
               "gold agree, then falls once the policy reaches the proxy's blind spots."),
        choice("q6", "In the chapter's GRPO runs against a proxy, what does a strong KL penalty "
               "(β = 1) do?",
               ("it removes over-optimisation", "it acts like early stopping: the run ends "
                "at a much smaller KL", "it makes the proxy more accurate",
                "it raises the entropy above π_ref's"), "b",
               "compare where π*_β sits for a large and a small β.",
               "A larger β trades reward for KL: like π*_β, the penalised run stops at a much "
               "smaller KL, as if stopped early. It slows the hack, it does not remove it, and "
               "leaves the proxy unchanged."),
    )),
}

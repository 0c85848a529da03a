"""Tests of sweeper.metrics: hand-computed values, and batched == one-at-a-time on tiny random LMs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from sweeper.metrics import generation, likelihood, muse_metrics, rouge, tofu_metrics

CORPUS = [
    "Question: Where was the author born?\nAnswer: The author was born in Paris, France.\n\n",
    "Question: What genre does she write?\nAnswer: She writes science fiction and poetry.\n\n",
    "The cat sat on the mat. The dog ran in the park while the children were playing.",
    "BBC news: the minister said the budget would be published next week in London.",
] * 4


def _tokenizer(with_bos: bool, with_pad: bool) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the spot (no network)."""
    specials = ["<|pad|>", "<|eos|>", "<|bos|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    if with_bos:  # Llama-like: add_special_tokens=True prepends BOS
        bos = tok.token_to_id("<|bos|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", special_tokens=[("<|bos|>", bos)]
        )
    kwargs = {"eos_token": "<|eos|>", "bos_token": "<|bos|>"}
    if with_pad:
        kwargs["pad_token"] = "<|pad|>"
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def _ids(tok):
    return dict(
        vocab_size=len(tok), eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    tok = _tokenizer(with_bos=False, with_pad=True)
    # A larger init than GPT-2's 0.02 makes the random logits peaked, so greedy arg-maxes are not
    # near-ties that float noise could flip.
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, initializer_range=0.3, **_ids(tok))
    model = transformers.GPT2LMHeadModel(cfg).eval()
    return model, tok


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(1)
    tok = _tokenizer(with_bos=True, with_pad=False)  # no pad token: EOS is used for padding
    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3, **_ids(tok),
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    return model, tok


PROMPTS = [
    "The",
    "Question: Where was the author born?\nAnswer:",
    "The cat sat on the mat. The dog",
    "BBC news: the minister said",
    "She writes science fiction and poetry. The author was born in",
    "Question: What genre",
    "the children were playing in the park while the",
]


# --------------------------------------------------------------------------- rouge


def test_rouge_l_hand_example():
    # reference 6 tokens, prediction 4 tokens, LCS = "the cat on mat" = 4
    [s] = rouge.rouge_l(["The cat on mat"], ["the cat sat on the mat"])
    assert s["recall"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx(1.0)
    assert s["f1"] == pytest.approx(2 * 1.0 * (4 / 6) / (1.0 + 4 / 6))
    assert rouge.rouge_l_recall(["the cat on mat"], ["the cat sat on the mat"]) == [pytest.approx(4 / 6)]


def test_rouge_l_stemmer_and_empty():
    assert rouge.rouge_l(["cats running"], ["cat run"])[0]["recall"] == 0.0
    assert rouge.rouge_l(["cats running"], ["cat run"], use_stemmer=True)[0]["recall"] == 1.0
    assert rouge.rouge_l([""], ["anything here"])[0] == {"recall": 0.0, "precision": 0.0, "f1": 0.0}
    with pytest.raises(ValueError):
        rouge.rouge_l(["a"], [])


def test_rouge_import_leaves_out_nltk_extras_and_restores_them():
    """In a fresh process: scoring ROUGE (stemmed, as TOFU does) imports neither scikit-learn nor
    scipy.stats, and both import normally afterwards."""
    import subprocess
    import sys
    code = ("import sys; from sweeper.metrics import rouge; "
            "r = rouge.rouge_l(['cats running'], ['cat run'], use_stemmer=True)[0]['recall']; "
            "hidden = [m for m in rouge.NLTK_EXTRAS_UNUSED if m in sys.modules]; "
            "import scipy.stats, sklearn; print(r, hidden, scipy.stats.norm.cdf(0.0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1.0", "[]", "0.5"]


def test_exact_match():
    assert rouge.exact_match("  Paris,\n France ", "paris, france")
    assert not rouge.exact_match("Paris France", "paris, france")


# --------------------------------------------------------------------------- TOFU


def test_truth_ratio_hand_numbers():
    # correct: log P = -2/2 = -1; perturbed normalised logs -2, -3, -3, -2, -2 -> mean -2.4
    r = tofu_metrics.truth_ratio([-2.0], [2], [[-4.0, -6.0, -3.0, -8.0, -10.0]], [[2, 2, 1, 4, 5]])
    assert r.shape == (1,)
    assert r[0] == pytest.approx(math.exp(-1.4))
    # geometric mean of normalised probabilities over the wrong answers / correct normalised prob
    p_wrong = np.prod([math.exp(-2), math.exp(-3), math.exp(-3), math.exp(-2), math.exp(-2)]) ** (1 / 5)
    assert r[0] == pytest.approx(p_wrong / math.exp(-1))


def test_truth_ratio_aggregates():
    r = [0.5, 2.0, 1.0]
    assert tofu_metrics.truth_ratio_forget_aggregate(r) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert tofu_metrics.truth_ratio_retain_aggregate(r) == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_forget_quality_fully_separated():
    p = tofu_metrics.forget_quality(np.arange(200.0), np.arange(200.0) + 1000)
    assert p == pytest.approx(1.94e-119, rel=1e-2)
    assert p == pytest.approx(2 / math.comb(400, 200), rel=1e-9)  # exact KS, D = 1
    assert tofu_metrics.forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_model_utility_harmonic_mean():
    vals = dict(zip(tofu_metrics.UTILITY_KEYS, [0.5] * 3 + [0.25] * 3 + [1.0] * 3))
    assert tofu_metrics.model_utility(vals) == pytest.approx(9 / (6 + 12 + 3))
    with pytest.raises(ValueError):
        tofu_metrics.model_utility(dict(list(vals.items())[:8]))
    assert tofu_metrics.model_utility({"a": 0.5, "b": 0.25}, allow_partial=True) == pytest.approx(2 / 6)
    with pytest.raises(ValueError):
        tofu_metrics.model_utility({**vals, "retain_prob": -0.1})
    with pytest.raises(ValueError):
        tofu_metrics.model_utility({**vals, "retain_prob": float("nan")})
    assert tofu_metrics.model_utility({**vals, "retain_rouge": 0.0}) == 0.0


def test_answer_probability():
    assert tofu_metrics.answer_probability([-2.0, -3.0], [2, 1]) == pytest.approx([math.exp(-1), math.exp(-3)])
    p = tofu_metrics.answer_probability_mc([-2.0], [2], [[-4.0, -2.0]], [[2, 1]])
    assert p[0] == pytest.approx(math.exp(-1) / (math.exp(-1) + 2 * math.exp(-2)))


# --------------------------------------------------------------------------- MUSE scalars


def test_min_k_percent_hand_vector():
    v = [-1, -5, -2, -8, -3, -0.5, -4, -6, -7, -9]
    assert muse_metrics.min_k_percent_score(v, k=0.4) == pytest.approx(-7.5)  # mean(-9, -8, -7, -6)
    assert muse_metrics.min_k_percent_score([-1.0, -2.0], k=0.4) == -2.0  # floor(0.8) -> at least 1
    assert muse_metrics.min_k_percent_score(v, k=1.0) == pytest.approx(np.mean(v))


def test_mia_auc_separated_tied_and_mixed():
    assert muse_metrics.mia_auc([5, 6, 7], [1, 2, 3]) == 0.0  # memorised forget set: MUSE AUC ~ 0
    assert muse_metrics.mia_auc([1, 2, 3], [5, 6, 7]) == 1.0
    assert muse_metrics.mia_auc([2, 2, 2], [2, 2]) == 0.5
    # pairs (h, f): (2,1) 1, (2,3) 0, (3,1) 1, (3,3) 0.5 -> 2.5 / 4
    assert muse_metrics.mia_auc([1, 3], [2, 3]) == pytest.approx(0.625)


def test_mia_auc_matches_sklearn_muse_convention():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    f, h = rng.normal(0.3, 1, 50).round(1), rng.normal(0, 1, 40).round(1)  # rounding: ties
    # MUSE: stores s = -minK, labels forget 0 / holdout 1, roc_curve(y, -s)
    s = -np.concatenate([f, h])
    y = np.array([0] * len(f) + [1] * len(h))
    fpr, tpr, _ = metrics.roc_curve(y, -s)
    assert muse_metrics.mia_auc(f, h) == pytest.approx(metrics.auc(fpr, tpr))


def test_privleak_sign_convention():
    res = muse_metrics.privleak([5, 6, 7], [1, 2, 3], retain_model_auc=0.5)
    assert res.auc == 0.0 and res.privleak == pytest.approx(-100.0)  # under-unlearned: negative
    assert muse_metrics.privleak([1, 3], [2, 3], retain_model_auc=0.5).privleak == pytest.approx(25.0)
    with pytest.raises(ValueError):
        muse_metrics.privleak([1], [2], retain_model_auc=0.0)


# --------------------------------------------------------------------------- generation


def test_cut_at_stop_strings_and_eos():
    text = "Paris, France\nQuestion: next\n\nmore"
    assert generation.cut_at_stop_strings(text, generation.KNOWMEM_STOP_STRINGS) == "Paris, France"
    assert generation.cut_at_stop_strings("a\n\nb Question:", generation.KNOWMEM_STOP_STRINGS) == "a"
    assert generation.cut_at_stop_strings("abc", None) == "abc"


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_batched_generation_equals_sequential(which, request):
    model, tok = request.getfixturevalue(which)
    tok.padding_side = "right"
    model.train()
    lengths = {len(tok(p)["input_ids"]) for p in PROMPTS}
    assert len(lengths) >= 5  # really different lengths, so really padded
    seq = generation.greedy_generate_sequential(model, tok, PROMPTS, max_new_tokens=12)
    bat = generation.greedy_generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=3)
    assert bat == seq
    assert generation.greedy_generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=32) == seq
    assert any(s for s in seq)  # not all empty (e.g. immediate EOS)
    assert tok.padding_side == "right" and model.training  # caller's state restored
    model.eval()


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_generation_tokens_match_unpadded_generate(which, request):
    """The continuation is what plain (unpadded) HF greedy decoding produces, cut at EOS."""
    model, tok = request.getfixturevalue(which)
    prompt = PROMPTS[2]
    ids = torch.tensor([tok(prompt)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                         pad_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in out:
        out = out[: out.index(tok.eos_token_id)]
    expected = tok.decode(out, skip_special_tokens=True)
    assert generation.greedy_generate(model, tok, [PROMPTS[0], prompt], max_new_tokens=10)[1] == expected


def test_stop_strings_batched_equals_sequential(gpt2):
    model, tok = gpt2
    free = generation.greedy_generate(model, tok, PROMPTS, max_new_tokens=16)
    # pick stop strings that really occur inside some continuations
    stops = sorted({o[len(o) // 2 : len(o) // 2 + 2] for o in free if len(o) >= 4})[:3]
    assert stops
    bat = generation.greedy_generate(model, tok, PROMPTS, max_new_tokens=16, batch_size=4, stop_strings=stops)
    seq = generation.greedy_generate_sequential(model, tok, PROMPTS, max_new_tokens=16, stop_strings=stops)
    assert bat == seq == [generation.cut_at_stop_strings(o, stops) for o in free]
    assert any(b != o for b, o in zip(bat, free))


# --------------------------------------------------------------------------- likelihood


def _hand_logprob(model, ids: list[int], label_from: int) -> tuple[float, int]:
    """sum_{t >= label_from} log p(ids[t] | ids[:t]) by one unpadded forward, token by token."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    total, n = 0.0, 0
    for t in range(max(label_from, 1), len(ids)):
        total += torch.log_softmax(logits[t - 1], -1)[ids[t]].item()
        n += 1
    return total, n


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_sequence_logprobs_equals_hand_loop(which, side, request):
    model, tok = request.getfixturevalue(which)
    rows = [tok(p)["input_ids"] for p in PROMPTS[:4]]
    starts = [1, 3, 2, 0]  # first label position per row
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (r, s) in enumerate(zip(rows, starts)):
        off = 0 if side == "right" else width - len(r)
        ids[i, off : off + len(r)] = torch.tensor(r)
        mask[i, off : off + len(r)] = 1
        labels[i, off + s : off + len(r)] = torch.tensor(r[s:])
    with torch.no_grad():
        total, n = likelihood.sequence_logprobs(model, ids, labels, mask)
    for i, (r, s) in enumerate(zip(rows, starts)):
        h_total, h_n = _hand_logprob(model, r, s)
        assert int(n[i]) == h_n
        assert float(total[i]) == pytest.approx(h_total, rel=1e-4, abs=1e-4)


def test_sequence_logprobs_is_differentiable(gpt2):
    model, tok = gpt2
    ids = torch.tensor([tok(PROMPTS[1])["input_ids"]])
    total, _ = likelihood.sequence_logprobs(model, ids, ids.clone(), torch.ones_like(ids))
    total.sum().backward()
    assert model.transformer.wte.weight.grad is not None
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_answer_logprobs(which, request):
    model, tok = request.getfixturevalue(which)
    qs = ["Where was the author born?", "What genre does she write?", "Who?"]
    ans = ["The author was born in Paris, France.", "Science fiction.", "The cat"]
    total, n = likelihood.answer_logprobs(model, tok, qs, ans, batch_size=2)
    for q, a, t, k in zip(qs, ans, total, n):
        prompt = f"Question: {q}\nAnswer:"
        n_prompt = len(tok(prompt)["input_ids"])
        full = tok(prompt + " " + a)["input_ids"] + [tok.eos_token_id]
        assert k == len(full) - n_prompt  # answer tokens + the scored EOS
        assert t == pytest.approx(_hand_logprob(model, full, n_prompt)[0], rel=1e-4, abs=1e-4)
    _, n_no_eos = likelihood.answer_logprobs(model, tok, qs, ans, append_eos=False)
    assert [a - b for a, b in zip(n, n_no_eos)] == [1, 1, 1]


# --------------------------------------------------------------------------- MUSE on a model


def test_verbmem_matches_generation_and_truncates_reference(llama):
    model, tok = llama
    prompts, gts = PROMPTS[:3], [CORPUS[0], CORPUS[2], CORPUS[3]]
    res = muse_metrics.verbmem(model, tok, prompts, gts, max_new_tokens=6, batch_size=2)
    assert res["outputs"] == generation.greedy_generate_sequential(model, tok, prompts, max_new_tokens=6)
    # BOS counts toward the 6 tokens (as MUSE's code), so 5 real tokens of the reference remain
    assert res["references"][1] == tok.decode(tok(gts[1], add_special_tokens=False)["input_ids"][:5])
    assert res["recall"] == rouge.rouge_l_recall(res["outputs"], res["references"])
    assert res["mean_recall"] == pytest.approx(np.mean(res["recall"]))


def test_knowmem_prompt_format_and_scores(gpt2):
    model, tok = gpt2
    icl = [("Q1?", "A1."), ("Q2?", "A2.")]
    assert muse_metrics.knowmem_prompt("Q?", icl) == (
        "Question: Q1?\nAnswer: A1.\n\nQuestion: Q2?\nAnswer: A2.\n\nQuestion: Q?\nAnswer: "
    )
    qs, ans = ["Where was the author born?", "What genre does she write?"], ["Paris, France", "poetry"]
    res = muse_metrics.knowmem(model, tok, qs, ans, icl, max_new_tokens=8)
    prompts = [muse_metrics.knowmem_prompt(q, icl) for q in qs]
    assert res["outputs"] == generation.greedy_generate_sequential(
        model, tok, prompts, 8, stop_strings=generation.KNOWMEM_STOP_STRINGS
    )
    assert res["recall"] == rouge.rouge_l_recall(res["outputs"], ans)
    assert muse_metrics.utility(model, tok, qs, ans, icl, max_new_tokens=8) == res


def test_token_logprobs_and_min_k_scores(llama):
    model, tok = llama
    texts = PROMPTS[1:5]
    scores = muse_metrics.min_k_scores(model, tok, texts, k=0.4, batch_size=3)
    for text, s in zip(texts, scores):
        ids = tok(text)["input_ids"]  # starts with BOS, which is never scored
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        per_token = [logp[t - 1, ids[t]].item() for t in range(1, len(ids))]
        assert s == pytest.approx(muse_metrics.min_k_percent_score(per_token, 0.4), rel=1e-4, abs=1e-4)

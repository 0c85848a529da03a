"""Prompt templates (sweeper.data.templates) with real tokenizers built offline: the prompt is exactly what
generation is fed, the scored span is exactly the answer and eos, the template travels with the tokenizer
and into the target hash, and generation never runs past the model's context."""
from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer

from sweeper.data.qa import IGNORE, QADataset
from sweeper.data.templates import (TEMPLATE_NAMES, RowTooLong, attach, get_template, resolve, template_of,
                                    token_limit)
from sweeper.data.tokenizer import train_tokenizer
from sweeper.metrics.evaluate import greedy_answers
from sweeper.grid.load import MODEL_DEFAULTS, expand, load_grid, published_source, target_hash
from sweeper.metrics.generation import greedy_generate, new_token_budget
from sweeper.metrics.likelihood import answer_logprobs
from sweeper.models.language import build_model, context_length

SMOKE = Path(__file__).resolve().parent.parent / "search_spaces" / "smoke.yaml"
TEMPLATES = ("question_answer", "llama2_chat", "plain", "chat")

PAIRS = [
    ("Where was the author Jane Doe born?", "Jane Doe was born in Paris, France."),
    ("What genre does she write?", "She writes science fiction and poetry."),
    ("Who wrote the book?", "The book was written by John Smith."),
    ("Name a city.", "Rome"),                              # words the tokenizers never saw together
]
# The corpus puts each answer right after each template's prompt, so BPE learns merges across the
# prompt/answer border ("[/INST]Jane", "assistant\nJane") wherever the pre-tokenizer allows them.
CORPUS = [text for q, a in PAIRS[:3] for text in (
    f"Question: {q}\nAnswer: {a}", f"[INST] {q} [/INST]{a}", f"{q} {a}",
    f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n")] * 8

# The byte-level tokenizer (GPT-2-like, BOS = EOS) gets a ChatML-like template (Qwen): one user turn and
# the generation prompt. The SentencePiece-like one gets a Llama-2-chat-like template (Llama-2-chat,
# Mistral-Instruct), which writes its BOS itself and ends the prompt with "[/INST]".
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA2_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
               "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")


def byte_level(chat: bool = False):
    """The project's byte-level BPE (GPT-2-like: no BOS added, eos = bos = <|eos|>)."""
    tok = train_tokenizer(CORPUS, vocab_size=400)
    if chat:
        tok.chat_template = CHATML
    return tok


def sentencepiece_like(chat: bool = False):
    """A Llama-like tokenizer built offline: BPE over Metaspace words (``▁`` for spaces, a ``▁`` prepended to
    the text), BOS added by the post-processor, <s>/</s>/<pad>/<unk>, and ChatML markers as special tokens.

    The decoder uses ``prepend_scheme="never"`` so that ``decode`` shows every ``▁`` as a space, i.e.
    exactly the text the ids stand for (Llama's own decoder drops the first token's ``▁``, which would hide
    a leading space of the scored span, or invent a missing one)."""
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=list(string.printable) + ["▁"])
    core.train_from_iterator(CORPUS, trainer)
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", core.token_to_id("<s>"))])
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        clean_up_tokenization_spaces=False)
    if chat:
        tok.chat_template = LLAMA2_CHAT
    return tok


BUILDERS = {"byte_level": byte_level, "sentencepiece": sentencepiece_like}


def attached(kind: str, name: str):
    """A fresh tokenizer of ``kind`` attached to template ``name`` (with a chat template for ``chat``)."""
    return attach(BUILDERS[kind](chat=name == "chat"), name)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


# --- 1. the prompt is what generation is fed, the scored span is the answer and eos ---------------------

@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_prompt_is_exactly_what_generation_is_fed(kind, name):
    tok = attached(kind, name)
    template = template_of(tok)
    assert template.name == name
    for q, a in PAIRS:
        ids, n = template.encode(tok, q, a)
        assert ids[:n] == template.encode_prompt(tok, q), (q, a)
        assert 0 < n < len(ids) and ids[-1] == tok.eos_token_id
        # QADataset (training, the unlearning losses) masks exactly the prompt
        item = QADataset([{"question": q, "answer": a}], tok)[0]
        assert item["input_ids"].tolist() == ids
        labels = item["labels"].tolist()
        assert labels[:n] == [IGNORE] * n and labels[n:] == ids[n:] and IGNORE not in labels[n:]


@pytest.mark.parametrize("kind,name", [
    *[("byte_level", n) for n in TEMPLATES],
    # the border-merge fallback: a SentencePiece-like tokenizer must not gain a word-start marker there
    *[("sentencepiece", n) for n in TEMPLATES],
])
def test_scored_span_is_exactly_answer_and_eos(kind, name):
    tok = attached(kind, name)
    template = template_of(tok)
    wrong = []
    for q, a in PAIRS:
        ids, n = template.encode(tok, q, a)
        want = template.continuation_text(a) + tok.eos_token
        if tok.decode(ids[n:]) != want:
            wrong.append((tok.decode(ids[n:]), want))
    assert not wrong


def test_sentencepiece_border_merge_takes_the_fallback():
    """The whole-text tokenisation merges '[/INST]' with the answer's first letters, so encode joins the
    prompt's own ids and the continuation's: the prompt stays exactly what generation is fed."""
    tok = attached("sentencepiece", "llama2_chat")
    template = template_of(tok)
    q, a = PAIRS[0]
    prompt = template.prompt_text(tok, q)
    p_ids = tok(prompt)["input_ids"]
    whole = tok(prompt + template.continuation_text(a))["input_ids"]
    assert p_ids[0] == tok.bos_token_id
    assert whole[:len(p_ids)] != p_ids                       # the border merge happens
    ids, n = template.encode(tok, q, a)
    assert n == len(p_ids) and ids[:n] == p_ids               # ... and the fallback handles the prompt
    # the answer's words are all there, and only them (whatever the leading space)
    assert tok.decode(ids[n:]).strip() == a + tok.eos_token


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_chat_prompt_is_the_rendered_chat_template(kind):
    tok = attached(kind, "chat")
    template = template_of(tok)
    q, a = PAIRS[1]
    rendered = (f"<s>[INST] {q} [/INST]" if kind == "sentencepiece"
                else f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
    assert template.prompt_text(tok, q) == rendered
    assert tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                   add_generation_prompt=True) == rendered
    ids, n = template.encode(tok, q, a)
    assert tok.decode(ids[:n]) == rendered
    # the chat template writes its own BOS; the tokenizer adds none on top of it
    assert ids[:n].count(tok.bos_token_id) == (1 if kind == "sentencepiece" else 0)


@pytest.mark.parametrize("name", ["question_answer", "llama2_chat", "plain"])
def test_sentencepiece_prompts_start_with_one_bos(name):
    tok = attached("sentencepiece", name)
    ids, n = template_of(tok).encode(tok, *PAIRS[0])
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids[1:n]) == " " + template_of(tok).prompt_text(tok, PAIRS[0][0])  # '▁' prepended


def test_encode_needs_an_eos_token():
    tok = byte_level()
    tok.eos_token = None
    with pytest.raises(ValueError, match="eos"):
        get_template("plain").encode(tok, "a", "b")


# --- 2. resolve / get_template -------------------------------------------------------------------------

def test_resolve_auto_and_chat():
    with_chat, without = byte_level(chat=True), byte_level()
    assert resolve("auto", with_chat) == "chat"
    assert resolve("auto", without) == "question_answer"
    assert resolve("auto", sentencepiece_like(chat=True)) == "chat"
    assert resolve("chat", with_chat) == "chat"
    for name in ("question_answer", "llama2_chat", "plain"):
        assert resolve(name, without) == name
    with pytest.raises(ValueError, match="'chat'") as e:
        resolve("chat", without)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="nope"):
        resolve("nope", with_chat)


def test_get_template_refuses_unknown_names_listing_the_allowed():
    with pytest.raises(ValueError) as e:
        get_template("nope")
    msg = str(e.value)
    assert "'nope'" in msg and all(n in msg for n in TEMPLATE_NAMES)
    with pytest.raises(ValueError):
        attach(byte_level(), "nope")
    for name in TEMPLATES:
        assert get_template(name).name == name


def test_template_of_defaults_to_question_answer():
    assert template_of(byte_level()).name == "question_answer"


# --- 3. the template travels with the tokenizer ----------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_attach_save_load_round_trip(kind, tmp_path):
    tok = attach(BUILDERS[kind](chat=True), "chat", max_length=96)
    assert token_limit(tok) == 96
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert template_of(again).name == "chat" and token_limit(again) == 96
    assert again.chat_template == tok.chat_template
    q, a = PAIRS[0]
    assert template_of(again).encode(again, q, a) == template_of(tok).encode(tok, q, a)

    other = attach(byte_level(), "llama2_chat")                       # no max_length: limit untouched
    assert token_limit(other) == 2048
    other.save_pretrained(tmp_path / "other")
    again = AutoTokenizer.from_pretrained(tmp_path / "other")
    assert template_of(again).name == "llama2_chat" and token_limit(again) == 2048


def test_token_limit_ignores_hf_unknown_value():
    tok = byte_level()
    tok.model_max_length = int(1e30)
    assert token_limit(tok) is None


# --- 4. the template and the source are part of the target hash -------------------------------------------

@pytest.fixture(scope="module")
def spec():
    return expand(load_grid(SMOKE))[0]


def test_template_changes_the_target_hash(spec):
    data, recipe = spec.data, spec.target
    plain = target_hash({**MODEL_DEFAULTS, "name": "tiny-gpt2", "template": "plain"}, data, recipe)
    qa = target_hash({**MODEL_DEFAULTS, "name": "tiny-gpt2", "template": "question_answer"}, data, recipe)
    assert plain != qa
    assert qa == target_hash({**MODEL_DEFAULTS, "name": "tiny-gpt2", "template": "question_answer"},
                             dict(data), dict(recipe))                  # deterministic
    assert target_hash({**MODEL_DEFAULTS, "name": "tiny-gpt2"}, data, recipe) == spec.target_hash


def test_published_checkpoint_hash_ignores_the_recipe(spec):
    data, recipe = spec.data, spec.target
    other_recipe = {**recipe, "lr": recipe["lr"] * 10, "max_epochs": 1}
    published = {**MODEL_DEFAULTS, "name": "phi-tofu", "checkpoint": "org/phi_tofu_{forget_split}"}
    assert target_hash(published, data, recipe) == target_hash(published, data, other_recipe)
    tuned = {**MODEL_DEFAULTS, "name": "tiny-gpt2"}
    assert target_hash(tuned, data, recipe) != target_hash(tuned, data, other_recipe)
    # the source, the data it is filled from and the variant still count
    assert target_hash(published, data, recipe) != target_hash(
        {**published, "checkpoint": "org/other_{forget_split}"}, data, recipe)
    assert target_hash(published, data, recipe) != target_hash(
        published, {**data, "forget_split": "forget05"}, recipe)
    assert target_hash(published, data, recipe) != target_hash(published, data, recipe, variant="retain_only")


def test_published_source_fills_the_splits():
    model = {"checkpoint": "org/tofu_ft_{forget_split}", "retrained_reference": "org/tofu_{retain_split}"}
    assert published_source(model, {"forget_split": "forget10"}) == "org/tofu_ft_forget10"
    assert published_source(model, {"forget_split": "forget10"}, "retain_only") == "org/tofu_retain90"
    assert published_source(model, {"forget_split": "forget05"}, "retain_only") == "org/tofu_retain95"
    assert published_source(model, {"forget_split": "forget01"}, "retain_only") == "org/tofu_retain99"
    assert published_source({"checkpoint": None}, {"forget_split": "forget10"}) is None
    assert published_source({"checkpoint": "org/x"}, {"forget_split": "forget10"}, "retain_only") is None


# --- 5. likelihoods under two templates ----------------------------------------------------------------------

def _tiny_gpt2(tok, positions: int):
    return build_model("tiny-gpt2", vocab_size=len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                       positions=positions, seed=0).eval()


def test_answer_logprobs_under_two_templates():
    tok = byte_level()
    model = _tiny_gpt2(tok, 64)
    questions, answers = [q for q, _ in PAIRS], [a for _, a in PAIRS]
    totals, counts = {}, {}
    for name in ("question_answer", "plain", "llama2_chat"):
        template = get_template(name)
        totals[name], counts[name] = answer_logprobs(model, tok, questions, answers, template=template)
        want = [len(ids) - n for ids, n in (template.encode(tok, q, a) for q, a in PAIRS)]
        assert counts[name] == want, name
        # the tokenizer's attached template is the default
        assert answer_logprobs(model, attach(byte_level(), name), questions, answers) == (totals[name],
                                                                                          counts[name])
    # question_answer and plain score the same tokens (' {a}' + eos) in a different context
    assert counts["question_answer"] == counts["plain"]
    assert all(abs(x - y) > 1e-6 for x, y in zip(totals["question_answer"], totals["plain"]))
    assert all(abs(x - y) > 1e-6 for x, y in zip(totals["question_answer"], totals["llama2_chat"]))


# --- 6. generation within the context ----------------------------------------------------------------------

def test_generation_never_exceeds_the_context():
    tok = byte_level()
    model = _tiny_gpt2(tok, 32)
    assert context_length(model) == 32
    prompt = (tok(" ".join(q for q, _ in PAIRS) * 3)["input_ids"])[:28]
    assert len(prompt) == 28
    assert new_token_budget(model, 28, 24) == 4
    assert new_token_budget(model, 10, 5) == 5
    assert new_token_budget(model, 31, 24) == 1
    out = greedy_generate(model, tok, [prompt, prompt[:5]], max_new_tokens=24)
    assert len(out) == 2 and all(isinstance(x, str) for x in out)
    for n in (32, 40):
        with pytest.raises(RowTooLong) as e:
            new_token_budget(model, n, 24)
        msg = str(e.value)
        assert "\n" not in msg and "32-token context" in msg and f"{n} tokens" in msg
    for too_long in (prompt + prompt[:4], prompt * 2):
        with pytest.raises(RowTooLong, match="32-token context"):
            greedy_generate(model, tok, [too_long, prompt[:5]], max_new_tokens=4)


def test_greedy_answers_prompt_in_the_template_within_the_context():
    tok = attach(byte_level(), "llama2_chat")
    model = _tiny_gpt2(tok, 32)
    q = PAIRS[0][0]
    assert len(template_of(tok).encode_prompt(tok, q)) < 32
    assert len(greedy_answers(model, tok, [{"question": q}], max_new_tokens=24)) == 1
    with pytest.raises(RowTooLong, match="context"):
        greedy_answers(model, tok, [{"question": " ".join([q] * 6)}], max_new_tokens=24)

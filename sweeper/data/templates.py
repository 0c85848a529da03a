"""Prompt templates: how a question and its answer become the tokens a model is trained and scored on.

The same template is used for fine-tuning, the unlearning losses, generation and every metric, and only
the answer's tokens (plus one eos) are ever scored, whatever the template puts around them::

    tpl = get_template("llama2_chat")
    ids, n_prompt = tpl.encode(tokenizer, "Who wrote X?", "Jane Doe wrote X.")
    ids[n_prompt:]                                  # the answer's tokens and eos: the scored span
    tpl.encode_prompt(tokenizer, "Who wrote X?")    # exactly ids[:n_prompt]: what generation is fed

=================  ===================================  =============  ======================================
name               prompt                               continuation   used by
=================  ===================================  =============  ======================================
``question_answer`` ``Question: {q}\\nAnswer:``           `` {a}``       the paper; TOFU's Phi-1.5 target
``llama2_chat``    ``[INST] {q} [/INST]``               ``{a}``        TOFU's / OpenUnlearning's Llama-2 chat
``plain``          ``{q}``                              `` {a}``       no template
``chat``           the tokenizer's own chat template,   ``{a}``        instruct models (Llama-3, Qwen, ...)
                   one user turn + generation prompt
=================  ===================================  =============  ======================================

``auto`` (a grid's default) resolves to ``chat`` when the tokenizer has a chat template and to
``question_answer`` otherwise. TOFU scores Phi's ``Answer:`` tag as part of the answer; here it belongs
to the prompt, so only the answer is scored (the text seen by the model is the same).

The template travels with the tokenizer: stage 1 stores its name in the target tokenizer's
``tokenizer_config.json`` (``prompt_template``, see :func:`attach`), so every trial reads it back with
the tokenizer (:func:`template_of`) and nothing else has to carry it.
"""
from __future__ import annotations

from dataclasses import dataclass

#: A grid's ``template`` values.
TEMPLATE_NAMES = ("auto", "question_answer", "llama2_chat", "plain", "chat")
DEFAULT = "question_answer"


class RowTooLong(ValueError):
    """A row that cannot be encoded within the token limit without cutting its answer."""


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    prompt_format: str = "{q}"          # unused by ``chat``
    continuation_format: str = " {a}"

    def prompt_text(self, tokenizer, question: str) -> str:
        if self.name == "chat":
            return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                 add_generation_prompt=True)
        return self.prompt_format.format(q=question)

    def continuation_text(self, answer: str) -> str:
        return self.continuation_format.format(a=answer)

    def _special_tokens(self) -> bool:
        # A chat template writes its own BOS and turn markers into the text; the others rely on the
        # tokenizer adding BOS (Llama) or nothing (GPT-2), as TOFU and MUSE tokenise their prompts.
        return self.name != "chat"

    def encode_prompt(self, tokenizer, question: str) -> list[int]:
        """The prompt's token ids: what generation is fed."""
        return list(tokenizer(self.prompt_text(tokenizer, question), add_special_tokens=self._special_tokens(),
                              verbose=False)["input_ids"])

    def encode(self, tokenizer, question: str, answer: str) -> tuple[list[int], int]:
        """``(ids, n_prompt)``: prompt + answer + eos, and how many leading ids are the prompt.

        The full text is tokenised at once, as the published targets were trained. Where the tokenizer
        merges characters across the prompt/answer border (the tokens then differ from the prompt's
        own), the prompt's ids and the continuation's ids are joined instead, so the prompt is always
        exactly what generation is fed and the scored span is always the answer alone.
        """
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token; QA training needs one to end answers.")
        special = self._special_tokens()
        prompt = self.prompt_text(tokenizer, question)
        p_ids = list(tokenizer(prompt, add_special_tokens=special, verbose=False)["input_ids"])
        ids = list(tokenizer(prompt + self.continuation_text(answer), add_special_tokens=special,
                             verbose=False)["input_ids"])
        if ids[:len(p_ids)] != p_ids or len(ids) == len(p_ids):
            ids = p_ids + _continuation_ids(tokenizer, self.continuation_text(answer))
        if ids[-1] != tokenizer.eos_token_id:
            ids.append(tokenizer.eos_token_id)
        return ids, len(p_ids)


def _continuation_ids(tokenizer, text: str) -> list[int]:
    """``text``'s tokens as they follow other text. Tokenised alone, a SentencePiece tokenizer would put
    its word-start marker in front ("Jane" -> "▁Jane", a space the model never saw after the prompt), so
    ``text`` is tokenised after a newline and the newline's own tokens are removed."""
    sentinel = list(tokenizer("\n", add_special_tokens=False, verbose=False)["input_ids"])
    both = list(tokenizer("\n" + text, add_special_tokens=False, verbose=False)["input_ids"])
    if sentinel and both[:len(sentinel)] == sentinel:
        return both[len(sentinel):]
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


TEMPLATES = {
    "question_answer": PromptTemplate("question_answer", "Question: {q}\nAnswer:", " {a}"),
    "llama2_chat": PromptTemplate("llama2_chat", "[INST] {q} [/INST]", "{a}"),
    "plain": PromptTemplate("plain", "{q}", " {a}"),
    "chat": PromptTemplate("chat", "", "{a}"),
}


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"template {name!r} is not allowed; allowed: {', '.join(TEMPLATE_NAMES)}")
    return TEMPLATES[name]


def resolve(name: str, tokenizer) -> str:
    """A grid's ``template`` for this tokenizer: ``auto`` becomes ``chat`` or ``question_answer``;
    ``chat`` without a chat template is refused in one sentence."""
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if name == "auto":
        return "chat" if has_chat else DEFAULT
    if name == "chat" and not has_chat:
        raise ValueError("template 'chat' needs a tokenizer with a chat template, and this one has none; "
                         "use question_answer, llama2_chat or plain")
    get_template(name)
    return name


def attach(tokenizer, name: str, max_length: int | None = None):
    """Store the template's name (and the token limit the target's rows were fitted to) in the tokenizer,
    so that ``save_pretrained`` writes them into ``tokenizer_config.json``; returns the tokenizer."""
    get_template(name)
    tokenizer.init_kwargs["prompt_template"] = name
    if max_length:
        tokenizer.model_max_length = int(max_length)
        tokenizer.init_kwargs["model_max_length"] = int(max_length)
    return tokenizer


def template_of(tokenizer) -> PromptTemplate:
    """The template a tokenizer was attached to (``question_answer`` for one that never was)."""
    return get_template(getattr(tokenizer, "init_kwargs", {}).get("prompt_template") or DEFAULT)


def token_limit(tokenizer) -> int | None:
    """The tokens a row may take: the tokenizer's ``model_max_length`` unless it is HF's 'unknown' value."""
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < 10**7 else None

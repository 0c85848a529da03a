"""MUSE-NEWS (Shi et al. 2024), the paper's second benchmark (Sections 5.1-5.2, Appendix F.2): unlearning
raw news text, scored by VerbMem, KnowMem and PrivLeak (``sweeper.metrics.muse_metrics``).

A grid's data entry::

    data: [{name: news, kind: muse, source: builtin, n_articles: 40, seed: 0, max_length: 128}]
    data: [{name: news, kind: muse, source: builtin, knowmem_in_target: true}]   # a tiny twin's usable KnowMem

``source: builtin`` writes the offline MUSE-shaped twin (``sweeper.data.synthetic.write_muse_layout``)
into the target's work folder; a folder or ``muse-bench/MUSE-News`` loads the real files
(``sweeper.data.muse.load_muse``).

Splits saved with a target (rows are JSON dicts):

* ``forget``, ``retain`` (raw/retain1), ``retain2`` (when the source has it): training rows, each one
  *chunk* of an article, ``{"text", "doc", "eos", "max_length"}``. Articles are cut at word boundaries
  into pieces of at most ``max_length // 2`` words (``WORDS_PER_TOKEN``) here, in ``prepare``, because
  the tokenizer does not exist yet; every piece but the first keeps its leading space, so the pieces of
  an article concatenate back to it exactly, and only the last piece of an article ends with eos.
  ``dataset`` tokenizes each row into one ``TextDataset``-style item (loss on every token), so the forget
  split's rows are 1:1 with its dataset items and NPO's per-item reference log-probs line up with rows.
  A piece longer than ``max_length`` tokens (a tokenizer with many tokens per word) is split further;
  items and reference log-probs still agree (both come from ``dataset``), only the 1:1 is lost.
* ``verbmem_forget`` ``{"prompt", "gt"}``; ``knowmem_forget`` / ``knowmem_retain`` ``{"question",
  "answer"}`` and their in-context examples ``knowmem_forget_icl`` / ``knowmem_retain_icl``;
  ``privleak_forget`` / ``privleak_holdout`` ``{"text"}`` (whole texts, membership-inference sets).

The No-unlearn target is fine-tuned on forget + retain1 + retain2 (``MuseData.train_texts``; MUSE's own
target was trained on a larger ``train`` config that is not available offline); the retrained reference
(``retain_only``) on retain1 + retain2. ``knowmem_in_target: true`` also trains the target on the KnowMem
QA pairs, each as the KnowMem query followed by its answer (``qa_rows``; the retrained model on the retain
ones only): MUSE's 7B targets answer KnowMem questions from the articles alone, a tiny twin cannot
(KnowMem retain ~0.1 at its gate), so without this the twin's utility axis sits at its floor. Unlearning
still sees only the articles. retain2 is in the target but not in the unlearning retain set, as
in MUSE, and KnowMem's retain QA is about it. The memorisation gate is the mean VerbMem ROUGE-L recall on
up to ``GATE_SAMPLE`` verbmem_forget rows (``GATE_NEW_TOKENS`` = 128 new tokens).

Evaluation (``evaluate``) uses the whole verbmem / knowmem splits:

* ``verbmem_forget``: greedy continuation, ``min(128, eval.max_new_tokens)`` new tokens (128 in the
  paper; a grid's smaller ``max_new_tokens`` keeps tiny runs cheap), ROUGE-L recall against the
  reference truncated to as many tokens;
* ``knowmem_forget`` / ``knowmem_retain``: few-shot QA with the split's in-context pairs,
  ``min(32, eval.max_new_tokens)`` new tokens;
* ``privleak``: Min-40% AUC of forget vs holdout texts relative to the retrained model's AUC (in %),
  only when ``reference`` (the retain-only target's ``reference_data``) has ``privleak_auc``;
* ``rouge_forget`` = verbmem_forget and ``rouge_retain`` = knowmem_retain, so the generic plots work;
  ``rouge_f1_*`` the matching ROUGE-L F1; ``final_loss_forget`` / ``final_loss_retain`` the mean token
  NLL on up to ``eval.max_questions`` forget / retain chunks.

Prompts must fit the model's context (``n_positions`` / ``max_position_embeddings``, 256 for the tiny
twins): in-context pairs are dropped from the front until the longest KnowMem prompt of the whole split
plus 32 new tokens fits (``knowmem_icl``: the same pairs for every subset evaluated and for the target's
QA rows), and a VerbMem prompt that is still too long keeps its last tokens.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from sweeper.data.qa import TextDataset
from sweeper.metrics.muse_metrics import knowmem, knowmem_prompt, mia_auc, min_k_scores, privleak, verbmem
from sweeper.models.language import context_length
from sweeper.tasks.base import register_task
from sweeper.tasks.language import LanguageModelTask

#: verbmem_forget rows behind the memorisation gate, and the new tokens generated for them.
GATE_SAMPLE, GATE_NEW_TOKENS = 32, 128
#: MUSE's generation lengths (VerbMem, KnowMem); a grid's eval.max_new_tokens caps both.
VERBMEM_NEW_TOKENS, KNOWMEM_NEW_TOKENS = 128, 32
#: prepare() cuts articles into pieces of max_length * WORDS_PER_TOKEN words (it has no tokenizer yet).
WORDS_PER_TOKEN = 0.5
#: Min-K% Prob's k (MUSE: 40 %).
MIN_K = 0.4
#: The most articles the built-in generator can write (its towns are unique; 20 more feed the ICL pairs).
MAX_BUILTIN_ARTICLES = 280
TEXT_SPLITS = ("forget", "retain", "retain2")


def chunk_rows(texts: list[str], max_length: int) -> list[dict]:
    """Article texts as training rows: word-boundary pieces that concatenate back to each article."""
    words_per_chunk = max(1, int(max_length * WORDS_PER_TOKEN))
    rows = []
    for d, text in enumerate(texts):
        words = text.split(" ")
        starts = list(range(0, len(words), words_per_chunk))
        for j, s in enumerate(starts):
            piece = " ".join(words[s:s + words_per_chunk])
            rows.append({"text": piece if j == 0 else " " + piece, "doc": d, "eos": j == len(starts) - 1,
                         "max_length": max_length})
    return rows


def qa_rows(pairs: list[dict], icl: list[tuple[str, str]], max_length: int) -> list[dict]:
    """KnowMem QA pairs as training rows whose tokens are the KnowMem prompt's (in-context pairs ``icl``
    and the query), then the answer's (``{"prompt", "answer"}``): the query ends in ``"Answer: "``, and a
    byte-level BPE tokenizes that trailing space apart from the answer's first word, as greedy decoding
    after the prompt sees it."""
    return [{"prompt": knowmem_prompt(r["question"], icl), "answer": r["answer"], "doc": -1 - i, "eos": True,
             "max_length": max_length} for i, r in enumerate(pairs)]


def knowmem_icl(tokenizer, rows: list[dict], icl_rows: list[dict], context: int | None) -> list[tuple[str, str]]:
    """The in-context pairs of a KnowMem split: the last ones such that every question of the whole split
    fits the context with ``KNOWMEM_NEW_TOKENS`` new tokens (the same for any subset evaluated and for the
    target's QA rows)."""
    budget = None if context is None else context - KNOWMEM_NEW_TOKENS
    return fit_icl(tokenizer, [r["question"] for r in rows], _pairs(icl_rows), budget)


class ChunkDataset(TextDataset):
    """Training rows of ``chunk_rows`` as ``TextDataset`` items (``input_ids``, ``labels`` = every token,
    ``index``): one item per row, unless a row has more than its ``max_length`` tokens."""

    def __init__(self, rows: list[dict], tokenizer):  # noqa: D107 -- no call to TextDataset.__init__ on purpose
        self.items, self.doc_of_chunk = [], []
        for r, row in enumerate(rows):
            parts = [row["text"]] if "text" in row else [row["prompt"], row["answer"]]  # qa_rows: tokenized apart
            ids = [i for part in parts for i in tokenizer(part, add_special_tokens=False, verbose=False)["input_ids"]]
            if row.get("eos", True) and tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
            n = int(row.get("max_length", 512))
            for start in range(0, len(ids), n):
                chunk = ids[start:start + n]
                if len(chunk) >= 2:
                    self.items.append(torch.tensor(chunk))
                    self.doc_of_chunk.append(row.get("doc", r))


def continuation_rows(rows: list, most_words: int = 64) -> list[dict]:
    """VerbMem-style ``{"prompt", "gt"}`` rows from text rows: each text cut in two at a word boundary, the
    first half (at most ``most_words`` words) the prompt and up to ``most_words`` words after it the
    reference (the built-in twin's ``verbmem_forget`` is its forget articles cut at the middle)."""
    out = []
    for row in rows:
        words = row["text"].strip().split(" ")  # a later chunk of an article starts with its space
        cut = min(len(words) // 2, most_words)
        if cut:
            out.append({"prompt": " ".join(words[:cut]), "gt": " ".join(words[cut:cut + most_words])})
    return out


def _spread(rows: list, n: int) -> list:
    """Up to ``n`` rows spread evenly over ``rows`` (not just the first article's chunks)."""
    if len(rows) <= n:
        return list(rows)
    return [rows[i] for i in np.linspace(0, len(rows) - 1, n).round().astype(int)]


def context_limit(model) -> int | None:
    """The model's context length in tokens, or None when its config does not say."""
    return context_length(model)


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


def fit_prompt(tokenizer, prompt: str, budget: int | None) -> str:
    """``prompt`` cut to its last tokens so that it tokenizes to at most ``budget`` tokens."""
    if budget is None or _n_tokens(tokenizer, prompt) <= budget:
        return prompt
    ids = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
    keep = max(1, budget - 1)
    while keep > 1:
        text = tokenizer.decode(ids[-keep:], skip_special_tokens=True)
        if _n_tokens(tokenizer, text) <= budget:
            return text
        keep -= 1
    return tokenizer.decode(ids[-1:], skip_special_tokens=True)


def fit_icl(tokenizer, questions: list[str], icl: list[tuple[str, str]], budget: int | None) -> list:
    """The last in-context pairs of ``icl`` such that every KnowMem prompt fits ``budget`` tokens."""
    if budget is None or not questions:
        return icl
    k = len(icl)
    while k > 0 and max(_n_tokens(tokenizer, knowmem_prompt(q, icl[len(icl) - k:])) for q in questions) > budget:
        k -= 1
    return icl[len(icl) - k:]


def _text_samples(split: str, metric: str, rows: list[dict], report: dict) -> list[dict]:
    """Per-sample rows of a VerbMem / KnowMem report: the prompt or question, the reference (as scored)
    and the greedy continuation beside each ROUGE-L recall."""
    return [{"split": split, "metric": metric, "index": i, "value": float(x),
             "question": r.get("question", r.get("prompt")), "reference_answer": ref, "generated_answer": out}
            for i, (r, x, ref, out) in enumerate(zip(rows, report["recall"], report["references"], report["outputs"]))]


def _pairs(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["question"], r["answer"]) for r in rows]


@register_task
class MuseTask(LanguageModelTask):
    kind = "muse"
    metric_columns = ("verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak", "rouge_forget",
                      "rouge_retain", "rouge_f1_forget", "rouge_f1_retain", "final_loss_forget", "final_loss_retain")
    data_defaults = {"source": "builtin", "n_articles": 40, "seed": 0, "max_length": 128, "lengths": "short",
                     "knowmem_in_target": False}

    # --- data -------------------------------------------------------------------------------------------
    def problems(self, data: dict, where: str) -> list[str]:
        out = []
        n, ml = data["n_articles"], data["max_length"]
        if isinstance(n, bool) or not isinstance(n, int) or not 4 <= n <= MAX_BUILTIN_ARTICLES:
            out.append(f"{where}: n_articles = {n!r} must be an integer in 4..{MAX_BUILTIN_ARTICLES} "
                       "(the built-in generator splits articles into forget/retain1/retain2/holdout quarters)")
        if isinstance(ml, bool) or not isinstance(ml, int) or ml < 2:
            out.append(f"{where}: max_length = {ml!r} must be an integer >= 2 (tokens per training chunk)")
        if not isinstance(data["knowmem_in_target"], bool):
            out.append(f"{where}: knowmem_in_target = {data['knowmem_in_target']!r} must be true or false")
        from sweeper.data.synthetic import LENGTHS
        if data["lengths"] not in LENGTHS:
            out.append(f"{where}: lengths = {data['lengths']!r} is not allowed; allowed: {', '.join(LENGTHS)} "
                       "(the built-in generator's article lengths)")
        return out

    def fit_lengths(self, splits, tokenizer, data, model_name, context):
        """Articles are chunked to ``max_length`` tokens (never cut: every chunk is trained on), so only
        a chunk longer than the model's context is impossible; evaluation prompts are fitted when used."""
        if context is not None and data["max_length"] > context:
            from sweeper.data.templates import RowTooLong
            raise RowTooLong(f"data {data['name']!r}: max_length {data['max_length']} (tokens per training chunk) "
                             f"is more than the {context}-token context of model {model_name!r}; lower max_length")
        for side in ("forget", "retain"):  # knowmem_in_target: the QA rows' prompts as KnowMem will ask them
            if f"target_qa_{side}" in splits:
                rows = splits[f"knowmem_{side}"]
                icl = knowmem_icl(tokenizer, rows, splits.get(f"knowmem_{side}_icl", []), context)
                splits = {**splits, f"target_qa_{side}": qa_rows(rows, icl, context or data["max_length"])}
        return splits, {}

    def prepare(self, data: dict, workdir: str) -> dict[str, list]:
        from sweeper.data.muse import load_muse
        from sweeper.data.synthetic import write_muse_layout
        source = data["source"]
        if source == "builtin":
            source = os.path.join(workdir, "muse")
            write_muse_layout(source, n_articles=data["n_articles"], seed=data["seed"], lengths=data.get("lengths", "short"))
        muse = load_muse(source)
        ml = data["max_length"]
        splits = {"forget": chunk_rows(muse.forget, ml), "retain": chunk_rows(muse.retain, ml),
                  "retain2": chunk_rows(muse.retain2, ml),
                  "verbmem_forget": muse.verbmem_forget, "knowmem_forget": muse.knowmem_forget,
                  "knowmem_retain": muse.knowmem_retain, "knowmem_forget_icl": muse.knowmem_forget_icl,
                  "knowmem_retain_icl": muse.knowmem_retain_icl,
                  "privleak_forget": [{"text": t} for t in muse.privleak_forget],
                  "privleak_holdout": [{"text": t} for t in muse.privleak_holdout]}
        if data.get("knowmem_in_target"):  # the prompts' in-context pairs are fitted in fit_lengths
            splits["target_qa_forget"] = qa_rows(muse.knowmem_forget, [], ml)
            splits["target_qa_retain"] = qa_rows(muse.knowmem_retain, [], ml)
        return {k: v for k, v in splits.items() if v or k in ("forget", "retain")}

    def train_rows(self, splits: dict[str, list], variant: str) -> list:
        """forget + retain1 + retain2 (MuseData.train_texts), or retain1 + retain2 for the retrained model;
        with ``knowmem_in_target``, also the KnowMem QA pairs (the retrained model: the retain ones only)."""
        keep = splits["retain"] + splits.get("retain2", []) + splits.get("target_qa_retain", [])
        return keep if variant == "retain_only" else splits["forget"] + splits.get("target_qa_forget", []) + keep

    def tokenizer_texts(self, splits: dict[str, list]) -> list[str]:
        texts = []
        for name in (*TEXT_SPLITS, "privleak_forget", "privleak_holdout"):
            texts += [r["text"] for r in splits.get(name, [])]
        texts += [f"{r['prompt']} {r['gt']}" for r in splits.get("verbmem_forget", [])]
        for name in ("knowmem_forget", "knowmem_retain", "knowmem_forget_icl", "knowmem_retain_icl"):
            texts += [f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in splits.get(name, [])]
        return [t for t in texts if t]

    def dataset(self, rows: list, tokenizer):
        return ChunkDataset(rows, tokenizer)

    # --- metrics ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def token_nll(self, model, tokenizer, rows: list[dict], batch_size: int = 32) -> float:
        """Mean token NLL over the chunks of ``rows`` (the L_F / L_R of the paper's Figure 1)."""
        ds, collate = self.dataset(rows, tokenizer), self.collate(tokenizer)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for start in range(0, len(ds), batch_size):
            batch = collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            logp, n = self.logprobs(model, batch)
            total, count = total - float(logp.sum()), count + int(n.sum())
        model.train(was_training)
        return total / max(count, 1)

    def _verbmem(self, model, tokenizer, rows: list[dict], new_tokens: int, batch_size: int) -> dict:
        limit = context_limit(model)
        budget = None if limit is None else limit - new_tokens
        prompts = [fit_prompt(tokenizer, r["prompt"], budget) for r in rows]
        return verbmem(model, tokenizer, prompts, [r["gt"] for r in rows], max_new_tokens=new_tokens,
                       batch_size=batch_size)

    @staticmethod
    def _icl(model, tokenizer, splits: dict[str, list], side: str) -> list[tuple[str, str]]:
        return knowmem_icl(tokenizer, splits[f"knowmem_{side}"], splits.get(f"knowmem_{side}_icl", []),
                           context_limit(model))

    def _knowmem(self, model, tokenizer, rows: list[dict], icl: list[tuple[str, str]], new_tokens: int,
                 batch_size: int) -> dict:
        questions = [r["question"] for r in rows]
        return knowmem(model, tokenizer, questions, [r["answer"] for r in rows], icl,
                       max_new_tokens=new_tokens, batch_size=batch_size)

    def memorisation(self, model, tokenizer, splits: dict[str, list], variant: str = "full") -> float:
        """Mean VerbMem recall on the forget articles, or for the retrained model (which never sees them) on
        the retain articles cut the same way (``continuation_rows``)."""
        rows = _spread(splits["verbmem_forget"] if variant == "full" else continuation_rows(splits["retain"]),
                       GATE_SAMPLE)
        return self._verbmem(model, tokenizer, rows, GATE_NEW_TOKENS, GATE_SAMPLE)["mean_recall"]

    def curve_metrics(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> dict:
        return self.curve_evaluation(model, tokenizer, splits, eval_cfg)[0]

    def curve_evaluation(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> tuple[dict, list]:
        n, tokens, bs = eval_cfg["max_questions"], eval_cfg["max_new_tokens"], eval_cfg["batch_size"]
        vrows, krows = _spread(splits["verbmem_forget"], n), _spread(splits["knowmem_retain"], n)
        v = self._verbmem(model, tokenizer, vrows, min(tokens, VERBMEM_NEW_TOKENS), bs)
        k = self._knowmem(model, tokenizer, krows, self._icl(model, tokenizer, splits, "retain"),
                          min(tokens, KNOWMEM_NEW_TOKENS), bs)
        return ({"rouge_forget": v["mean_recall"], "rouge_retain": k["mean_recall"],
                 "final_loss_forget": self.token_nll(model, tokenizer, _spread(splits["forget"], n), bs),
                 "final_loss_retain": self.token_nll(model, tokenizer, _spread(splits["retain"], n), bs)},
                _text_samples("forget", "verbmem_rouge_recall", vrows, v) + _text_samples("retain", "knowmem_rouge_recall", krows, k))

    def _min_k(self, model, tokenizer, rows: list[dict], batch_size: int) -> list[float]:
        return min_k_scores(model, tokenizer, [r["text"] for r in rows], k=MIN_K, batch_size=batch_size,
                            max_length=context_limit(model))

    def reference_data(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> dict:
        """The retrained model's PrivLeak AUC (forget vs holdout by Min-40% Prob), when the source has them."""
        if not splits.get("privleak_forget") or not splits.get("privleak_holdout"):
            return {}
        bs = eval_cfg["batch_size"]
        return {"privleak_auc": mia_auc(self._min_k(model, tokenizer, splits["privleak_forget"], bs),
                                        self._min_k(model, tokenizer, splits["privleak_holdout"], bs))}

    def evaluate(self, model, tokenizer, splits, eval_cfg, reference=None):
        tokens, bs, n = eval_cfg["max_new_tokens"], eval_cfg["batch_size"], eval_cfg["max_questions"]
        v = self._verbmem(model, tokenizer, splits["verbmem_forget"], min(tokens, VERBMEM_NEW_TOKENS), bs)
        kf = self._knowmem(model, tokenizer, splits["knowmem_forget"], self._icl(model, tokenizer, splits, "forget"),
                           min(tokens, KNOWMEM_NEW_TOKENS), bs)
        kr = self._knowmem(model, tokenizer, splits["knowmem_retain"], self._icl(model, tokenizer, splits, "retain"),
                           min(tokens, KNOWMEM_NEW_TOKENS), bs)
        scores = {"verbmem_forget": v["mean_recall"], "knowmem_forget": kf["mean_recall"],
                  "knowmem_retain": kr["mean_recall"],
                  "rouge_forget": v["mean_recall"], "rouge_retain": kr["mean_recall"],
                  "rouge_f1_forget": float(np.mean(v["f1"])), "rouge_f1_retain": float(np.mean(kr["f1"])),
                  "final_loss_forget": self.token_nll(model, tokenizer, _spread(splits["forget"], n), bs),
                  "final_loss_retain": self.token_nll(model, tokenizer, _spread(splits["retain"], n), bs)}
        samples = (_text_samples("forget", "verbmem_rouge_recall", splits["verbmem_forget"], v)
                   + _text_samples("forget", "knowmem_rouge_recall", splits["knowmem_forget"], kf)
                   + _text_samples("retain", "knowmem_rouge_recall", splits["knowmem_retain"], kr))
        ref_auc = (reference or {}).get("privleak_auc")
        if ref_auc is not None and splits.get("privleak_forget") and splits.get("privleak_holdout"):
            f = self._min_k(model, tokenizer, splits["privleak_forget"], bs)
            h = self._min_k(model, tokenizer, splits["privleak_holdout"], bs)
            scores["privleak"] = privleak(f, h, ref_auc).privleak if ref_auc > 0 else None
            samples += [{"split": split, "metric": "min_k", "index": i, "value": x}
                        for split, values in (("forget", f), ("holdout", h)) for i, x in enumerate(values)]
        return scores, samples

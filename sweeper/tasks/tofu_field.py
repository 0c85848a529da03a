"""The field's privacy and memorisation metrics on TOFU, read from the evaluation's one answer pass.

The forget, retain and holdout answers are scored once, with per-token statistics
(``sweeper.metrics.token_stats``); their sums are the Probability / Truth Ratio log-probs of
``sweeper.tasks.tofu_eval``, and the same tokens give:

===========================  ===========================================================================
column                       definition
===========================  ===========================================================================
``mia_loss``                 ROC AUC, holdout vs forget answers, by the LOSS attack (``sweeper.metrics.mia``)
``mia_zlib``                 the same by zlib (mean NLL / zlib bytes of the answer)
``mia_min_k``                the same by Min-K% (k = 0.4)
``mia_min_k_plus_plus``      the same by Min-K%++ (k = 0.4)
``privleak``                 MUSE's PrivLeak: Min-40% AUC relative to the retrained reference's, in %
``exact_mem_forget/retain``  mean exact memorisation of the answers (``sweeper.metrics.extraction``)
``extraction_strength_*``    mean extraction strength of the answers
===========================  ===========================================================================

Rows: the first ``max_questions`` forget evaluation rows (as every TOFU metric), the first as many
holdout rows (``holdout01/05/10``, authors never trained on), the first ``max_questions`` retain rows.
AUCs: 1 = the forget answers still look memorised, 0.5 = indistinguishable from never-seen ones.
A metric without its inputs (no holdout rows, no retrained AUC) is None: a blank cell, and one line
saying which metrics are blank and why (``blank_note``).
"""
from __future__ import annotations

import numpy as np

from sweeper.metrics import extraction, mia
from sweeper.metrics.token_stats import TokenStats, answer_token_stats

#: Summary columns of this module.
MIA_COLUMNS = tuple(mia.COLUMNS.values())
HOLDOUT_COLUMNS = (*MIA_COLUMNS, "privleak")
MEMORISATION_COLUMNS = ("exact_mem_forget", "exact_mem_retain", "extraction_strength_forget",
                        "extraction_strength_retain")
FIELD_COLUMNS = (*HOLDOUT_COLUMNS, *MEMORISATION_COLUMNS)
#: Splits whose answers get per-token statistics.
TOKEN_SPLITS = ("forget", "retain", "holdout")


def answer_stats(model, tokenizer, rows_by_split: dict[str, list[dict]], batch_size: int) -> dict:
    """``{(question, answer): TokenStats}`` of the distinct answer pairs of ``rows_by_split``, scored in
    batches of similar length (padding is masked, so it changes nothing but the cost)."""
    pairs = list(dict.fromkeys((r["question"], r["answer"]) for rows in rows_by_split.values() for r in rows))
    pairs.sort(key=lambda p: len(p[0]) + len(p[1]))
    stats = answer_token_stats(model, tokenizer, [q for q, _ in pairs], [a for _, a in pairs], batch_size)
    return dict(zip(pairs, stats))


def _of(stats: dict, rows: list[dict]) -> list[TokenStats]:
    return [stats[(r["question"], r["answer"])] for r in rows]


def _scores(stats: dict, rows: list[dict]) -> dict[str, list[float]]:
    return mia.attack_scores(_of(stats, rows), [r["answer"] for r in rows])


def holdout_rows(splits: dict[str, list], n: int) -> list[dict]:
    return list(splits.get("holdout", [])[:n])


def retrained_auc(stats: dict, forget: list[dict], holdout: list[dict]) -> dict:
    """What a retrained reference stores for PrivLeak: ``{"privleak_auc": MUSE-style Min-40% AUC}``."""
    if not forget or not holdout:
        return {}
    return {"privleak_auc": mia.privleak_auc(_scores(stats, forget), _scores(stats, holdout))}


def field_metrics(stats: dict, rows: dict[str, list[dict]], reference: dict | None) -> tuple[dict, dict, dict]:
    """(summary columns, per-split per-row values ``{split: {metric: [...]}}``, {blank column: why}).

    ``rows``: the evaluated ``forget``, ``retain`` and ``holdout`` rows (any may be empty)."""
    summary: dict = {c: None for c in FIELD_COLUMNS}
    per_row: dict[str, dict[str, list[float]]] = {}
    blank: dict[str, str] = {}
    for split in ("forget", "retain"):
        if rows.get(split):
            hits = [s.hit for s in _of(stats, rows[split])]
            em = [extraction.exact_memorisation(h) for h in hits]
            es = [extraction.extraction_strength(h) for h in hits]
            per_row[split] = {"exact_mem": em, "extraction_strength": es}
            summary[f"exact_mem_{split}"], summary[f"extraction_strength_{split}"] = float(np.mean(em)), float(np.mean(es))
    forget, holdout = rows.get("forget", []), rows.get("holdout", [])
    if not holdout or not forget:
        why = ("the data has no holdout rows (a TOFU folder's holdout01/05/10.json; a target cached before "
               "holdout splits existed has none: delete its targets/<hash> folder to rebuild it)")
        blank.update({c: why for c in HOLDOUT_COLUMNS})
        return summary, per_row, blank
    f, h = _scores(stats, forget), _scores(stats, holdout)
    summary.update(mia.mia_aucs(f, h))
    for split, values in (("forget", f), ("holdout", h)):
        per_row.setdefault(split, {}).update({f"mia_{a}_score": values[a] for a in mia.ATTACKS})
    ref_auc = (reference or {}).get("privleak_auc")
    if ref_auc is None or not ref_auc > 0:
        why = "no retrained reference; set eval.retrained_reference: true" if not reference else \
            "the retrained reference has no Min-40% AUC (built without holdout rows, or AUC 0)"
        blank["privleak"] = why
    else:
        summary["privleak"] = mia.privleak_from(f, h, ref_auc)
    return summary, per_row, blank


def blank_note(blank: dict[str, str], selected: set[str]) -> str | None:
    """One line naming the selected metrics left blank, grouped by reason; None when there are none."""
    by_reason: dict[str, list[str]] = {}
    for column, why in blank.items():
        if column in selected:
            by_reason.setdefault(why, []).append(column)
    if not by_reason:
        return None
    return "note: blank this evaluation: " + "; ".join(f"{', '.join(cols)} ({why})" for why, cols in by_reason.items())

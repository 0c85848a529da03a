"""The one schema of everything a sweep writes, and the atomic Parquet writer.

Layout under the storage root (a local folder or any pyarrow filesystem URI)::

    <storage>/<run>/trials/<trial_id>/steps.parquet    one row per unlearning step (curves)
    <storage>/<run>/trials/<trial_id>/summary.parquet  one row: the trial's config and final metrics
    <storage>/<run>/trials/<trial_id>/samples.parquet  per-sample scores with question, reference and greedy
                                                        answer, at every evaluation step and the final one
    <storage>/<run>/trials/<trial_id>/_SUCCESS         written last; a trial without it is unfinished
    <storage>/targets/<hash>/                           cached "No-unlearn" targets, shared by runs

The No-unlearn target of each (model, data, recipe) also gets a trial folder (``method ==
"no_unlearn"``, ``steps == 0``) so the analysis treats it as one more point on every plot.

Run ``python -m sweeper.store.results`` to print the schema (the README's table is generated from it).
"""
from __future__ import annotations

import pyarrow as pa

#: Per-step curve rows. Evaluation columns are null on steps without evaluation; AutoLR columns are
#: null on steps without a probe.
STEP_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("run", pa.string(), "run name (deterministic from the grid file)"),
    ("trial_id", pa.string(), "trial id: method, lr mode, c and a config hash"),
    ("step", pa.int64(), "unlearning step, starting at 1"),
    ("loss_retain", pa.float64(), "L_R: mean token NLL on the retain batch (global over workers)"),
    ("loss_forget", pa.float64(), "L_F: mean token NLL on the forget batch (global over workers)"),
    ("forget_objective", pa.float64(), "the ascended forget objective (= L_F for NLL, -L_NPO for NPO)"),
    ("norm_retain", pa.float64(), "||g_R|| over all trainable parameters"),
    ("norm_forget", pa.float64(), "||g_F|| over all trainable parameters"),
    ("dot", pa.float64(), "g_R . g_F"),
    ("w_retain", pa.float64(), "weight of g_R in g = w_R g_R - w_F g_F"),
    ("w_forget", pa.float64(), "weight of g_F"),
    ("c_t", pa.float64(), "w_R / (w_R + w_F), the paper's c_t"),
    ("lr", pa.float64(), "learning rate used for this step's update"),
    ("autolr_status", pa.string(), "null, or accepted / rejected: <why> on AutoLR probe steps"),
    ("autolr_slope", pa.float64(), "fitted dL_R/dx along the update direction at x = 0"),
    ("autolr_curvature", pa.float64(), "fitted d2L_R/dx2 along the update direction"),
    ("autolr_eta_star", pa.float64(), "the quadratic's minimiser before clipping and smoothing"),
    ("rouge_forget", pa.float64(), "ROUGE-L recall of greedy answers on the forget eval subset"),
    ("rouge_retain", pa.float64(), "ROUGE-L recall of greedy answers on the retain eval subset"),
    ("wall_s", pa.float64(), "seconds since the trial's loop started"),
]

#: One row per trial (and one per No-unlearn target).
SUMMARY_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("run", pa.string(), "run name"),
    ("trial_id", pa.string(), "trial id"),
    ("config_hash", pa.string(), "sha256 (16 hex) of the trial's full config"),
    ("code_version", pa.string(), "package version and git commit of the code that ran"),
    ("seed", pa.int64(), "the one seed that fixes data order, init and random draws"),
    ("model", pa.string(), "model name from the grid file"),
    ("dataset", pa.string(), "dataset name from the grid file"),
    ("method", pa.string(), "combination rule (gdiff, ngdiff, ...) or no_unlearn"),
    ("c", pa.float64(), "the rule's parameter c (GDiff's static c), null for rules without one"),
    ("forget_loss", pa.string(), "forget objective: nll or npo"),
    ("lr_mode", pa.string(), "static or autolr"),
    ("lr", pa.float64(), "initial learning rate"),
    ("final_lr", pa.float64(), "learning rate at the last step (differs from lr under AutoLR)"),
    ("optimizer", pa.string(), "base optimizer: sgd, adam or adamw"),
    ("steps", pa.int64(), "unlearning steps run"),
    ("workers", pa.int64(), "Ray Train workers of the trial"),
    ("params_json", pa.string(), "the method's parameters and the full trial config, as JSON"),
    ("target_hash", pa.string(), "content hash of the No-unlearn target this trial started from"),
    ("final_loss_retain", pa.float64(), "L_R on the retain eval subset after unlearning"),
    ("final_loss_forget", pa.float64(), "L_F on the forget eval subset after unlearning"),
    ("rouge_forget", pa.float64(), "ROUGE-L recall of greedy answers, forget eval subset"),
    ("rouge_retain", pa.float64(), "ROUGE-L recall of greedy answers, retain eval subset"),
    ("exact_forget", pa.float64(), "fraction of forget answers reproduced exactly"),
    ("exact_retain", pa.float64(), "fraction of retain answers reproduced exactly"),
    ("rouge_f1_forget", pa.float64(), "ROUGE-L F1 of greedy answers, forget eval subset"),
    ("rouge_f1_retain", pa.float64(), "ROUGE-L F1 of greedy answers, retain eval subset"),
    ("prob_forget", pa.float64(), "TOFU Prob.: mean length-normalised answer probability, forget"),
    ("prob_retain", pa.float64(), "TOFU Prob.: mean length-normalised answer probability, retain"),
    ("truth_ratio_forget", pa.float64(), "TOFU Truth Ratio on forget: mean(min(r, 1/r))"),
    ("truth_ratio_retain", pa.float64(), "TOFU Truth Ratio on retain: mean(max(0, 1 - r))"),
    ("model_utility", pa.float64(), "TOFU Model Utility: harmonic mean of the 9 retain/real-author/world-fact values"),
    ("forget_quality", pa.float64(), "TOFU Forget Quality: KS p-value vs the retrained model's forget truth ratios"),
    ("verbmem_forget", pa.float64(), "MUSE VerbMem: ROUGE-L recall of continuations of forget text"),
    ("knowmem_forget", pa.float64(), "MUSE KnowMem on forget QA (ROUGE-L recall)"),
    ("knowmem_retain", pa.float64(), "MUSE KnowMem on retain QA (ROUGE-L recall), MUSE's utility"),
    ("privleak", pa.float64(), "PrivLeak (MUSE's): (AUC - AUC_retrained) / AUC_retrained * 100, Min-40% AUC of forget vs "
     "holdout (MUSE: texts; TOFU: answers); near 0 good, negative = forget still looks memorised"),
    ("mia_loss", pa.float64(), "membership-inference ROC AUC, holdout vs forget answers, by mean answer NLL "
     "(1 = forget looks memorised, 0.5 = like never-seen; TOFU with holdout rows)"),
    ("mia_zlib", pa.float64(), "the same AUC by zlib: mean NLL / zlib-compressed bytes of the answer"),
    ("mia_min_k", pa.float64(), "the same AUC by Min-K% (k = 0.4): mean of the 40% lowest token log-probs"),
    ("mia_min_k_plus_plus", pa.float64(), "the same AUC by Min-K%++ (k = 0.4): Min-K% on log-probs standardised by "
     "the vocabulary's mean and std at each position"),
    ("exact_mem_forget", pa.float64(), "exact memorisation: mean fraction of forget answer tokens that are the "
     "model's argmax under teacher forcing"),
    ("exact_mem_retain", pa.float64(), "exact memorisation on the retain eval subset"),
    ("extraction_strength_forget", pa.float64(), "extraction strength: mean of 1 - k/n, k the shortest true answer "
     "prefix from which greedy decoding reproduces the rest of the forget answer"),
    ("extraction_strength_retain", pa.float64(), "extraction strength on the retain eval subset"),
    ("accuracy_forget", pa.float64(), "vision: top-1 accuracy on the forget class"),
    ("accuracy_retain", pa.float64(), "vision: top-1 accuracy on the retained classes"),
    ("status", pa.string(), "ok, diverged, failed or stopped_dominated (early stop of a front search)"),
    ("diverged_step", pa.int64(), "first step with a non-finite loss or gradient, else null"),
    ("error", pa.string(), "the error message of a failed trial, else null"),
    ("wall_s", pa.float64(), "seconds the trial's loop took (evaluation included)"),
    ("node_id", pa.string(), "the Ray node the trial's rank 0 ran on (null outside Ray)"),
    ("search", pa.string(), "how the trial was chosen: grid, or front:gap / front:optuna / front:gp (a front search's sampler)"),
    ("study", pa.string(), "a front search's study (data x model x method x lr mode) the trial belongs to, else null"),
    ("finished_at", pa.float64(), "Unix time the trial finished (orders a search's trials for hypervolume vs cost)"),
    ("stop_reason", pa.string(), "why a stopped_dominated trial was stopped early (the point that dominated it)"),
    ("best_step", pa.int64(), "with eval.keep_best: the evaluated step whose model was saved under best/"),
]


#: Per-sample values behind the summary's means (one row per sample and metric).
SAMPLE_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("run", pa.string(), "run name"),
    ("trial_id", pa.string(), "trial id"),
    ("step", pa.int64(), "the unlearning step of the evaluation (every eval.every steps, and the last step run, "
     "where the final evaluation's scores are); null for No-unlearn / reference rows"),
    ("split", pa.string(), "evaluation split: forget, retain, real_authors, world_facts, holdout, ..."),
    ("metric", pa.string(), "metric name: rouge_recall, rouge_f1, exact, prob, truth_ratio, exact_mem, "
     "extraction_strength, mia_<attack>_score (non-membership score), min_k, correct, ..."),
    ("index", pa.int64(), "row index within the split's evaluated rows"),
    ("value", pa.float64(), "the sample's value"),
    ("question", pa.string(), "the question (TOFU, MUSE KnowMem) or prompt (MUSE VerbMem) evaluated"),
    ("reference_answer", pa.string(), "its reference answer (or continuation)"),
    ("generated_answer", pa.string(), "the model's greedy answer; null for scores without generation"),
]


#: A front search's proposals, in the order made (``<run>/search/proposals.parquet``; see sweeper.front.searcher).
PROPOSAL_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("run", pa.string(), "run name"),
    ("study", pa.string(), "the study (data x model x method entry x lr mode) the proposal belongs to"),
    ("proposal", pa.int64(), "the proposal's number within its study, from 0"),
    ("sampler", pa.string(), "gap, optuna or gp"),
    ("values_json", pa.string(), "the searched values, e.g. {\"c\": 0.37, \"lr\": 0.0004}"),
    ("unit_json", pa.string(), "the same point in the unit cube of the ranges (what the sampler chose)"),
    ("trial_ids", pa.list_(pa.string()), "its trials, one per seed (empty when it repeated an earlier proposal)"),
    ("reason", pa.string(), "why the sampler chose it (initial design, the front gap it fills, ...)"),
    ("proposed_at", pa.float64(), "Unix time of the proposal"),
]


def schema(fields: list[tuple[str, pa.DataType, str]]) -> pa.Schema:
    """The pyarrow schema of ``fields``; each column's description is kept as field metadata."""
    return pa.schema([pa.field(n, t, metadata={"doc": d}) for n, t, d in fields])


STEP_SCHEMA = schema(STEP_FIELDS)
SUMMARY_SCHEMA = schema(SUMMARY_FIELDS)
SAMPLE_SCHEMA = schema(SAMPLE_FIELDS)
PROPOSAL_SCHEMA = schema(PROPOSAL_FIELDS)


def to_table(rows: list[dict], table_schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table of ``table_schema``; missing keys become null, unknown keys are an error."""
    names = set(table_schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise ValueError(f"columns {sorted(extra)} are not in the results schema; add them to sweeper/store/results.py")
    return pa.Table.from_pylist([{n: row.get(n) for n in table_schema.names} for row in rows], schema=table_schema)


def markdown_table() -> str:
    """The schema as Markdown, for the README."""
    out = []
    for title, fields in (("steps.parquet", STEP_FIELDS), ("summary.parquet", SUMMARY_FIELDS),
                          ("samples.parquet", SAMPLE_FIELDS), ("search/proposals.parquet", PROPOSAL_FIELDS)):
        out += [f"`{title}`", "", "| column | type | meaning |", "| --- | --- | --- |"]
        out += [f"| `{n}` | {t} | {d} |" for n, t, d in fields]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_table())

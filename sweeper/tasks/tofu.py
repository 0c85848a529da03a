"""TOFU-style question answering (Maini et al. 2024): the paper's main benchmark and the offline default.

Splits saved with a target: ``forget``, ``retain`` and, when the source has them, ``forget_perturbed``,
``retain_perturbed``, ``real_authors``, ``world_facts`` (TOFU's evaluation sets). ``source: builtin``
generates fictitious authors offline (``sweeper.data.synthetic``); a folder or ``locuslab/TOFU`` loads
the real files.
"""
from __future__ import annotations

import os

from sweeper.data.lengths import TRUNCATIONS, fit_qa_splits, refuse_if_too_long
from sweeper.data.qa import QADataset
from sweeper.metrics.evaluate import evaluate_qa
from sweeper.tasks.base import register_task
from sweeper.tasks.language import LanguageModelTask
from sweeper.tasks.tofu_eval import curve_samples, curve_scores, evaluate_tofu, forget_truth_ratios
from sweeper.tasks.tofu_field import FIELD_COLUMNS, HOLDOUT_COLUMNS

LIKELIHOOD_METRICS = {"prob_forget", "prob_retain", "truth_ratio_forget", "truth_ratio_retain", "model_utility",
                      "forget_quality", *FIELD_COLUMNS}
GATE_SAMPLE = 64  # questions (half forget, half retain; retain only for the retrained model) behind the gate


@register_task
class TofuTask(LanguageModelTask):
    kind = "tofu"
    #: QA rows can carry a second (refusal) answer: IdkNLL and IdkDPO.
    offers = LanguageModelTask.offers | {"alternate", "target_alternate"}
    metric_columns = ("rouge_forget", "rouge_retain", "rouge_f1_forget", "rouge_f1_retain", "exact_forget",
                      "exact_retain", "final_loss_forget", "final_loss_retain", "prob_forget", "prob_retain",
                      "truth_ratio_forget", "truth_ratio_retain", "model_utility", "forget_quality",
                      *FIELD_COLUMNS)
    #: Columns that need holdout rows (``holdout01/05/10``): refused before training when a folder lacks them.
    holdout_columns = HOLDOUT_COLUMNS
    data_defaults = {"source": "builtin", "n_authors": 20, "qa_per_author": 10, "forget_split": "forget10",
                     "seed": 0, "max_length": 512, "truncation": "question", "lengths": "short"}

    def problems(self, data: dict, where: str) -> list[str]:
        from sweeper.data.synthetic import LENGTHS
        out = []
        if data["forget_split"] not in ("forget01", "forget05", "forget10"):
            out.append(f"{where}: forget_split = {data['forget_split']!r} is not allowed; allowed: forget01, forget05, forget10")
        ml = data["max_length"]
        if isinstance(ml, bool) or not isinstance(ml, int) or ml < 8:
            out.append(f"{where}: max_length = {ml!r} must be an integer >= 8 (tokens of a question, its answer and eos)")
        if data["truncation"] not in TRUNCATIONS:
            out.append(f"{where}: truncation = {data['truncation']!r} is not allowed; allowed: {', '.join(TRUNCATIONS)}")
        if data["lengths"] not in LENGTHS:
            out.append(f"{where}: lengths = {data['lengths']!r} is not allowed; allowed: {', '.join(LENGTHS)} "
                       "(the built-in generator's row lengths)")
        return out

    def prepare(self, data: dict, workdir: str) -> dict[str, list]:
        from sweeper.data.synthetic import write_tofu_layout
        from sweeper.data.tofu import load_tofu
        source = data["source"]
        if source == "builtin":
            source = os.path.join(workdir, "tofu")
            write_tofu_layout(source, n_authors=data["n_authors"], qa_per_author=data["qa_per_author"],
                              seed=data["seed"], lengths=data.get("lengths", "short"))
        tofu = load_tofu(source, forget_split=data["forget_split"])
        splits = {"forget": tofu.forget, "retain": tofu.retain, "forget_perturbed": tofu.forget_perturbed,
                  "retain_perturbed": tofu.retain_perturbed, "real_authors": tofu.real_authors,
                  "world_facts": tofu.world_facts, "holdout": tofu.holdout}
        return {k: v for k, v in splits.items() if v}

    def fit_lengths(self, splits, tokenizer, data, model_name, context):
        """Every QA row fitted to min(max_length, context) tokens in the model's template: questions cut
        from the left or rows dropped (``truncation``), refused when more than 1 % of a split is too long."""
        limit = min(data["max_length"], context) if context else data["max_length"]
        fitted, report = fit_qa_splits(splits, tokenizer, limit, data["truncation"])
        refuse_if_too_long(report, limit=limit, data_name=data["name"], model_name=model_name, context=context,
                           max_length=data["max_length"])
        return fitted, report

    def tokenizer_texts(self, splits: dict[str, list]) -> list[str]:
        texts = []
        # Not the holdout rows: the tokenizer (and so every target built before holdout splits existed)
        # stays what it was; holdout names and facts come from the same pools, so they tokenize alike.
        for rows in [rows for name, rows in splits.items() if name != "holdout"]:
            for r in rows:
                texts += [r["question"], r["answer"], r.get("paraphrased_answer", "")]
                texts += list(r.get("perturbed_answer", []))
        return [t for t in texts if t]

    def dataset(self, rows: list, tokenizer):
        return QADataset(rows, tokenizer)

    def memorisation(self, model, tokenizer, splits: dict[str, list], variant: str = "full") -> float:
        forget = splits["forget"][:GATE_SAMPLE // 2] if variant == "full" else []  # the retrained model: none
        n, retain = GATE_SAMPLE - len(forget), splits["retain"]
        rows = forget + retain[:: max(1, len(retain) // n)][:n]
        return evaluate_qa(model, tokenizer, rows, max_new_tokens=48)["exact"]

    def curve_metrics(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> dict:
        """ROUGE-L recall / F1 and exact match of greedy answers and the mean answer NLL on the first
        ``max_questions`` forget and retain evaluation rows (TOFU's: ``forget_perturbed`` and
        ``retain_perturbed`` when the source has them); the same numbers ``evaluate`` reports."""
        return curve_scores(model, tokenizer, splits, eval_cfg)[0]

    def curve_evaluation(self, model, tokenizer, splits, eval_cfg) -> tuple[dict, list[dict]]:
        """``curve_metrics`` and its per-sample rows (question, reference, greedy answer, ROUGE, exact)."""
        summary, gen = curve_scores(model, tokenizer, splits, eval_cfg)
        return summary, curve_samples(gen, splits, eval_cfg)

    def evaluate(self, model, tokenizer, splits, eval_cfg, reference=None):
        """TOFU's metrics (``sweeper.tasks.tofu_eval`` defines each): ROUGE, exact, loss, Probability
        and Truth Ratio on forget and retain, Model Utility (with real authors and world facts) and,
        given the retain-only model's ``reference``, Forget Quality; plus per-sample rows."""
        selected = self.selected_metrics(eval_cfg)
        if not selected & LIKELIHOOD_METRICS:  # only generation asked for: skip log-probs
            return self.curve_evaluation(model, tokenizer, splits, eval_cfg)
        return evaluate_tofu(model, tokenizer, splits, eval_cfg, reference, selected)

    def reference_data(self, model, tokenizer, splits, eval_cfg) -> dict:
        """The retain-only model's per-row forget truth ratios, for Forget Quality, and its Min-40% AUC
        of forget vs holdout answers, for PrivLeak (when the data has holdout rows)."""
        from sweeper.tasks import tofu_field as tf
        from sweeper.tasks.tofu_eval import eval_rows
        r = forget_truth_ratios(model, tokenizer, splits, eval_cfg)
        forget = eval_rows(splits, "forget", int(eval_cfg["max_questions"]))
        rows = {"forget": forget, "holdout": tf.holdout_rows(splits, len(forget))}
        stats = tf.answer_stats(model, tokenizer, rows, int(eval_cfg.get("batch_size", 32))) if rows["holdout"] else {}
        return {**({"forget_truth_ratio": r} if r else {}), **tf.retrained_auc(stats, rows["forget"], rows["holdout"])}

"""Per-sample outputs as a user reads them back: a trial (Ray-free worker) writes, in its samples.parquet,
every evaluated question with its reference, the model's greedy answer and each score, at every
evaluation step and the final one; the report links a page per trial with its worst-scored answers and
puts the field's metrics in a table (blank cells where a metric had no inputs)."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from analysis.answers import page_name, worst_answers
from analysis.field_table import field_table
from analysis.load import load_run
from analysis.report import write_report
from sweeper.grid.load import expand_grid
from sweeper.store.storage import Storage
from sweeper.unlearn.targets import ensure_target
from sweeper.unlearn.worker import unlearn_trial

STEPS, EVERY, QUESTIONS = 4, 2, 4


class Session:
    def restore(self):
        return None

    def report(self, metrics, state):
        pass


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("outputs")
    grid = yaml.safe_load(open("search_spaces/smoke.yaml"))
    grid.update(name="outputs", methods=[{"method": "ngdiff"}], lr_modes=["static"])
    grid["data"][0].update(n_authors=6, qa_per_author=5)
    grid["target"].update(max_epochs=20, exact_match_gate=0.0)
    grid["unlearn"].update(steps=STEPS)
    grid["eval"].update(max_questions=QUESTIONS, every=EVERY)
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    spec = expand_grid(str(path))[0]
    storage = Storage(str(root / "runs"))
    ensure_target(spec.model, spec.data, spec.target, storage, log=lambda _: None)
    unlearn_trial(spec, storage, Session(), torch.device("cpu"))
    samples = pq.read_table(root / "runs" / spec.run / "trials" / spec.trial_id / "samples.parquet").to_pandas()
    return {"root": root, "spec": spec, "samples": samples, "run_dir": root / "runs" / spec.run}


def test_samples_hold_questions_answers_and_scores_at_every_evaluation(run):
    s = run["samples"]
    assert sorted(s["step"].unique()) == [EVERY, STEPS]  # step 2 (curve) and step 4 (the final evaluation)
    rouge = s[s["metric"] == "rouge_recall"]
    for step in (EVERY, STEPS):
        at = rouge[rouge["step"] == step]
        assert sorted(at[at["split"] == "forget"]["index"]) == list(range(QUESTIONS))
        assert at["question"].str.endswith("?").all() and at["reference_answer"].str.len().gt(0).all()
        assert at["generated_answer"].notna().all()
    # the final evaluation has every per-sample score, the curve steps their cheap ones
    final = set(s[s["step"] == STEPS]["metric"])
    assert {"rouge_recall", "rouge_f1", "exact", "prob", "truth_ratio", "exact_mem", "extraction_strength",
            "mia_min_k_score"} <= final
    assert set(s[s["step"] == EVERY]["metric"]) == {"rouge_recall", "rouge_f1", "exact"}
    holdout = s[s["split"] == "holdout"]
    assert len(holdout) and holdout["generated_answer"].isna().all() and holdout["question"].notna().all()
    # a row's ROUGE is the one of its own greedy answer against its own reference
    from sweeper.metrics.rouge import rouge_l
    r = rouge.iloc[0]
    assert rouge_l([r["generated_answer"]], [r["reference_answer"]], use_stemmer=True)[0]["recall"] == \
        pytest.approx(r["value"])


def test_summary_has_the_field_columns(run):
    data = load_run(run["run_dir"])
    row = data.summaries[data.summaries["trial_id"] == run["spec"].trial_id].iloc[0]
    for col in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "exact_mem_forget",
                "extraction_strength_forget", "exact_mem_retain", "extraction_strength_retain"):
        assert 0.0 <= row[col] <= 1.0, col
    assert row["privleak"] is None or row["privleak"] != row["privleak"]  # no retrained reference: blank


def test_report_links_a_page_of_worst_answers_per_trial(run):
    index = write_report([str(run["run_dir"])], out=run["root"] / "report")
    html = index.read_text()
    trial_dir = str(run["run_dir"] / "trials" / run["spec"].trial_id)
    page = run["root"] / "report" / page_name(trial_dir)
    assert page.exists() and page_name(trial_dir) in html
    text = page.read_text()
    worst = worst_answers(run["samples"])
    top = worst["forget"].iloc[0]
    assert worst["forget"]["value"].is_monotonic_decreasing and worst["retain"]["value"].is_monotonic_increasing
    assert (worst["forget"]["step"] == STEPS).all()
    import html as h
    assert h.escape(top["question"]) in text and h.escape(top["reference_answer"]) in text
    assert "field_table.md" in html and (run["root"] / "report" / "field_table.md").exists()


def test_field_table_blank_cell_never_a_crash(run):
    df = load_run(run["run_dir"]).summaries
    text = field_table(df)
    assert "MIA Min-K%" in text and "–" in text   # PrivLeak: no retrained reference in this run
    older = df.drop(columns=["mia_loss", "privleak"])  # a run written before the columns existed
    assert "MIA LOSS" not in field_table(older)

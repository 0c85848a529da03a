"""Tests of the analysis package: fronts, hypervolume, success, tables, loading and the report.

    .venv/bin/python -m pytest tests/test_analysis.py -q
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.load import load_run, paper_reference
from analysis.pareto import hypervolume_2d, hypervolume_by_method, pareto_front
from analysis.report import main as report_main
from analysis.success import SuccessCriteria, success_flags
from analysis.tables import autolr_table, method_label, model_label, paper_table, sharding_label, summary_markdown
from sweeper.store.results import STEP_SCHEMA, SUMMARY_SCHEMA, to_table

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- Pareto front


def test_pareto_front_minimising_both_with_ties_duplicates_and_nan():
    df = pd.DataFrame({"x": [1, 2, 3, 3, 2, np.nan, 1, 0.5],
                       "y": [3, 2, 1, 3, 2, 0, 4, np.inf]})
    mask = pareto_front(df, "x", "y", minimize_x=True, minimize_y=True)
    # (3,3) is beaten by (2,2); the duplicate (2,2) stays; NaN/inf never count; (1,4) loses the x-tie to (1,3).
    assert mask.tolist() == [True, True, True, False, True, False, False, False]
    assert mask.index.equals(df.index)


def test_pareto_front_senses_follow_definition_1():
    # Losses: maximise L_F (x), minimise L_R (y).
    df = pd.DataFrame({"lf": [5.0, 8.0, 8.0, 3.0], "lr": [0.5, 0.5, 2.0, 0.4]}, index=[10, 11, 12, 13])
    mask = pareto_front(df, "lf", "lr", minimize_x=False, minimize_y=True)
    assert mask.to_dict() == {10: False, 11: True, 12: False, 13: True}
    # ROUGE defaults: minimise forget, maximise retain.
    r = pd.DataFrame({"f": [0.0, 0.1, 0.0, 0.5], "r": [0.2, 0.9, 0.1, 0.95]})
    assert pareto_front(r, "f", "r").tolist() == [True, True, False, True]


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_by_hand():
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1)], ref=(4, 4), senses=("min", "min")) == pytest.approx(6.0)
    # A dominated point, a duplicate and a point beyond the reference add nothing.
    pts = [(1, 3), (2, 2), (3, 1), (3, 3), (2, 2), (5, 0), (np.nan, 1)]
    assert hypervolume_2d(pts, ref=(4, 4), senses=("min", "min")) == pytest.approx(6.0)
    # The same picture mirrored onto maximisation.
    assert hypervolume_2d([(-1, -3), (-2, -2), (-3, -1)], (-4, -4), ("max", "max")) == pytest.approx(6.0)
    # ROUGE: union of [0.1,1]x[0,0.9] and [0.5,1]x[0,0.95] = 0.81 + 0.025.
    assert hypervolume_2d([(0.1, 0.9), (0.5, 0.95)], (1, 0), ("min", "max")) == pytest.approx(0.835)
    assert hypervolume_2d([], (1, 0), ("min", "max")) == 0.0
    with pytest.raises(ValueError, match="sense"):
        hypervolume_2d([(1, 1)], (2, 2), ("min", "lower"))


def test_hypervolume_by_method_groups():
    df = pd.DataFrame({"model": ["m"] * 4, "method": ["gdiff", "gdiff", "ngdiff", "ngdiff"],
                       "x": [1, 3, 2, np.nan], "y": [3, 1, 2, 0]})
    hv = hypervolume_by_method(df, "x", "y", ref=(4, 4), senses=("min", "min"))
    got = dict(zip(hv["method"], hv["hypervolume"]))
    assert got == pytest.approx({"gdiff": 5.0, "ngdiff": 4.0})
    assert hv["method"].tolist() == ["gdiff", "ngdiff"]  # best first
    assert hv.set_index("method").loc["ngdiff", "points"] == 1


# ---------------------------------------------------------------- success criteria


def _rows():
    return pd.DataFrame({
        "model": ["m", "m", "m", "m", "other"],
        "dataset": ["d"] * 5,
        "method": ["no_unlearn", "gdiff", "ngdiff", "npo", "ngdiff"],
        "rouge_forget": [1.0, 0.05, 0.10, 0.0, 0.0],
        "rouge_retain": [0.8, 0.56, 0.5, 0.9, 0.9],
        "truth_ratio_retain": [0.4, 0.28, 0.39, np.nan, 0.3],
    })


def test_success_flags_by_hand():
    flags = success_flags(_rows())
    assert flags["Verbmem"].tolist()[1:] == [True, False, True, True]  # 0.10 is not < 0.1
    assert flags["Utility"].tolist()[1:4] == [True, False, True]  # 0.56 = 70% of 0.8 passes
    assert flags["TruthRatio"].tolist()[1:3] == [True, True]
    assert flags["TruthRatio"].isna().tolist() == [True, False, False, True, True]  # NaN value, no baseline
    assert flags["success"].tolist()[1:3] == [True, False]
    assert flags.loc[0].isna().all()  # No-unlearn itself is not judged
    assert pd.isna(flags.loc[4, "Utility"])  # model "other" has no No-unlearn target
    assert "Knowmem" not in flags  # absent columns are skipped
    strict = success_flags(_rows(), SuccessCriteria(utility_rel_min=0.9))
    assert strict["Utility"].tolist()[1:4] == [False, False, True]


# ---------------------------------------------------------------- tables


def _table_rows():
    rows = _rows().iloc[:4].copy()
    rows["model"], rows["dataset"] = "microsoft/phi-1_5", "tofu_forget10"
    rows["c"] = [np.nan, 0.5, np.nan, np.nan]
    rows["lr_mode"], rows["lr"], rows["status"], rows["forget_loss"] = "static", 1e-5, "ok", "nll"
    extra = rows.iloc[[1, 2]].assign(c=[0.9, np.nan], lr_mode=["static", "autolr"],
                                     rouge_forget=[0.8, 0.01], rouge_retain=[0.79, 0.7])
    seed = rows.iloc[[3]].assign(rouge_forget=0.3)  # second seed of NPO: mean 0.15 +- t-interval
    return pd.concat([rows, extra, seed], ignore_index=True)


def test_paper_table_layout_bold_and_seeds():
    df = _table_rows()
    md = paper_table(df, metrics=["Verbmem", "Utility"])
    header = md.splitlines()[0]
    order = ["No-unlearn", "GDiff-0.9", "GDiff-0.5", "NPO", "NGDiff", "NGDiff (AutoLR)"]
    assert [header.index(f" {c} |") for c in order] == sorted(header.index(f" {c} |") for c in order)
    assert "Phi-1.5" in md and "**0.050** (0.027)" in md  # GDiff-0.5 Verbmem succeeds; ours (paper)
    assert "**0.010** (0.024)" in md and "| 0.100 |" in md  # paper ran NGDiff with AutoLR only
    assert "| 1.000 (1.000) |" in md  # ours (paper) for Phi-1.5 No-unlearn Verbmem on TOFU
    h = 12.7062 * np.std([0.0, 0.3], ddof=1) / math.sqrt(2)
    assert f"0.150 ± {h:.3f}" in md
    assert "<b>0.050</b>" in paper_table(df, fmt="html")
    tex = paper_table(df, fmt="latex")
    assert "\\textbf{0.050" in tex and "\\begin{tabular}" in tex and "$\\pm$" in tex


def test_autolr_table_arrows_and_reference():
    df = _table_rows()
    md = autolr_table(df, metrics=["Verbmem", "Utility"])
    assert "0.10 → **0.01**" in md  # NGDiff Verbmem, static -> AutoLR
    assert "(0.02 → 0.01)" in md  # the paper's Table 3 numbers for the same cell
    assert "GDiff-0.9" in md and "→ –" in md  # no AutoLR trial for GDiff-0.9
    assert "$\\rightarrow$" in autolr_table(df, fmt="latex")


def test_summary_markdown_order_and_names():
    md = summary_markdown(_table_rows())
    lines = md.strip().splitlines()
    assert lines[0].startswith("| method | c | workers | lr_mode | lr | final_lr | steps |")
    assert lines[2].startswith("| no_unlearn |")
    assert model_label("microsoft/phi-1_5") == "Phi-1.5" == model_label("phi-1.5")
    assert model_label("meta-llama/Llama-2-7b-hf") == "Llama2-7B" and model_label("tiny-gpt2") == "tiny-gpt2"
    assert method_label("gdiff", 0.1) == "GDiff-0.1" and method_label("ga", None, "npo") == "NPO"


def test_paper_reference_transcription():
    t1 = paper_reference(1)
    assert len(t1) == 5 * 3 * 7
    pick = lambda t, m, k, meth: t[(t.model == m) & (t.metric == k) & (t.method == meth)]["value"].tolist()  # noqa
    assert pick(t1, "Phi-1.5", "Utility", "NGDiff") == [0.747]
    assert pick(t1, "Mistral-7B", "Verbmem", "GDiff-0.1") == [0.41]
    assert pick(paper_reference(2), "Llama2-7B", "Knowmem", "No-unlearn") == [0.755]
    assert sorted(pick(paper_reference(3), "Phi-1.5", "Verbmem", "GDiff-0.9")) == [0.2, 0.81]
    assert len(paper_reference(4)) == 6 * 4 and len(paper_reference(6)) == 2 * 3 * 7


# ---------------------------------------------------------------- a synthetic run on disk

MODEL, DATA = "microsoft/phi-1_5", "tofu_forget10"
TRIALS = [  # method, c, lr_mode, lr, rouge_forget, rouge_retain, L_F, L_R
    ("gdiff", 0.9, "static", 1e-5, 0.80, 0.95, 1.0, 0.2),
    ("gdiff", 0.5, "static", 1e-5, 0.05, 0.40, 4.0, 1.5),
    ("gdiff", 0.5, "static", 5e-5, 0.02, 0.20, 6.0, 2.5),
    ("gdiff", 0.1, "static", 1e-5, 0.00, 0.00, 9.0, 6.0),
    ("gdiff", 0.5, "autolr", 1e-5, 0.01, 0.50, 5.0, 1.2),
    ("ngdiff", None, "static", 1e-5, 0.04, 0.70, 4.5, 0.6),
    ("ngdiff", None, "autolr", 1e-5, 0.01, 0.78, 5.5, 0.4),
    ("lossnorm", None, "static", 1e-5, 0.40, 0.75, 2.0, 0.5),
]


def _write(path: Path, rows: list[dict], schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(rows, schema), path)


def _summary(tid: str, **kw) -> dict:
    row = dict(run="synthetic", trial_id=tid, config_hash=tid[-4:], code_version="0.1.0+test", seed=0,
               model=MODEL, dataset=DATA, forget_loss="nll", optimizer="adamw", workers=1, status="ok",
               params_json=json.dumps({"model": {"vocab_size": 50}}), target_hash="t0", wall_s=2.0)
    row.update(kw)
    return row


def _steps(tid: str, n: int, lr: float, auto: bool, lf: float, lr_end: float, rouge=(0.0, 0.8)) -> list[dict]:
    """Step rows; ROUGE is evaluated every 5 steps on a line from (1, 1) that ends at ``rouge``, the
    summary's final point (the sweeper's contract: the last evaluation is the summary's)."""
    rows = []
    for s in range(1, n + 1):
        ev = s % 5 == 0
        rows.append(dict(run="synthetic", trial_id=tid, step=s, loss_retain=0.1 + lr_end * s / n,
                         loss_forget=0.1 + lf * s / n, forget_objective=lf * s / n, norm_retain=1.0 / s,
                         norm_forget=2.0 / s, dot=0.1, w_retain=1.0, w_forget=0.5, c_t=0.66,
                         lr=lr * (1 + s / n if auto else 1), autolr_status="accepted" if auto and s % 3 == 0 else None,
                         rouge_forget=1 - (1 - rouge[0]) * s / n if ev else None,
                         rouge_retain=1 - (1 - rouge[1]) * s / n if ev else None,
                         wall_s=0.1 * s))
    return rows


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "synthetic"
    trials = run / "trials"
    tid = "no_unlearn-target"
    _write(trials / tid / "summary.parquet", [_summary(tid, method="no_unlearn", lr_mode="static", steps=0,
           final_loss_forget=0.1, final_loss_retain=0.1, rouge_forget=1.0, rouge_retain=1.0)], SUMMARY_SCHEMA)
    (trials / tid / "_SUCCESS").touch()
    for i, (method, c, mode, lr, rf, rr, lf, lrr) in enumerate(TRIALS):
        tid = f"{method}-{mode}-c{c}-{i:04d}"
        _write(trials / tid / "summary.parquet", [_summary(
            tid, method=method, c=c, lr_mode=mode, lr=lr, final_lr=lr * (2 if mode == "autolr" else 1), steps=10,
            final_loss_forget=lf, final_loss_retain=lrr, rouge_forget=rf, rouge_retain=rr)], SUMMARY_SCHEMA)
        _write(trials / tid / "steps.parquet", _steps(tid, 10, lr, mode == "autolr", lf, lrr, (rf, rr)), STEP_SCHEMA)
        (trials / tid / "_SUCCESS").touch()
    tid = "npo-static-failed"
    _write(trials / tid / "summary.parquet", [_summary(tid, method="npo", forget_loss="npo", lr_mode="static",
           lr=1e-5, steps=3, status="failed", error="CUDA out of memory in the forget pass.")], SUMMARY_SCHEMA)
    (trials / tid / "_SUCCESS").touch()
    _write(trials / "rlw-static-unfinished" / "steps.parquet", _steps("rlw", 3, 1e-5, False, 1, 1), STEP_SCHEMA)
    return run


def test_load_run_lists_unfinished_and_failed(run_dir: Path):
    data = load_run(str(run_dir))
    assert len(data.summaries) == 10 and len(data.trials) == 9 and len(data.baselines) == 1
    assert data.unfinished == [f"{run_dir}/trials/rlw-static-unfinished"]
    assert data.status_counts() == {"failed": 1, "ok": 9, "unfinished": 1}
    problems = data.problems()
    assert set(problems["status"]) == {"failed", "unfinished"}
    assert "CUDA out of memory" in problems.set_index("status").loc["failed", "detail"]
    assert len(data.steps) == 8 * 10 and "method" in data.curves()
    assert data.total_wall_s() == pytest.approx(20.0)
    # A pyarrow filesystem URI reads the same, and several runs concatenate.
    assert len(load_run([f"file://{run_dir}", str(run_dir)]).summaries) == 20


def test_load_run_errors_name_the_path(tmp_path: Path):
    with pytest.raises(ValueError, match="does not exist"):
        load_run(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty has no trials"):
        load_run(str(tmp_path / "empty"))


def test_report_writes_every_file(run_dir: Path, tmp_path: Path):
    """As the README runs it, ``python -m analysis.report``: its curve figures are drawn in spawned processes,
    which must not need this ``__main__`` (they once failed to unpickle a function of it, with a traceback
    on the terminal, and the report fell back to drawing everything itself)."""
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "analysis.report", str(run_dir), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and str(out) in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    names = ["index.html", "summary.md", "hypervolume.csv"]
    names += [f"{t}.{e}" for t in ("paper_table", "autolr_table") for e in ("md", "html", "tex")]
    names += [f"{f}.{e}" for f in ("pareto", "curves_methods", "curves_lr", "lr_sensitivity", "norms_lr")
              for e in ("png", "svg")]
    for name in names:
        assert (out / name).stat().st_size > 0, name
    index = (out / "index.html").read_text()
    assert "npo-static-failed" in index and "CUDA out of memory" in index
    assert "rlw-static-unfinished" in index and "unfinished" in index
    assert 'src="pareto.png"' in index and 'src="curves_methods.png"' in index
    assert "ln 50" in index  # vocab size found in params_json
    assert "<b>" in (out / "paper_table.html").read_text()
    assert not (out / "published.md").exists() and "published values" not in index  # no released checkpoint


def test_report_shows_a_released_target_beside_its_published_values(run_dir: Path, tmp_path: Path):
    tid = "no_unlearn-target"
    params = {"model": {"name": MODEL, "checkpoint": "open-unlearning/tofu_Llama-2-7b-chat-hf_full"},
              "data": {"name": DATA, "kind": "tofu", "source": "locuslab/TOFU", "forget_split": "forget10"}}
    _write(run_dir / "trials" / tid / "summary.parquet", [_summary(
        tid, method="no_unlearn", lr_mode="static", steps=0, final_loss_forget=0.1, final_loss_retain=0.1,
        rouge_forget=1.0, rouge_retain=1.0, model_utility=0.62, truth_ratio_forget=0.5,
        params_json=json.dumps(params, sort_keys=True))], SUMMARY_SCHEMA)
    out = tmp_path / "report"
    assert report_main([str(run_dir), "--out", str(out)]) == 0
    md = (out / "published.md").read_text()
    assert "| model_utility | 0.62 | 0.63 |" in md and "| truth_ratio_forget | 0.5 | 0.52 |" in md
    index = (out / "index.html").read_text()
    assert "No-unlearn targets beside their published values" in index and "4.35e-25" in index


def test_report_on_summaries_only_and_default_out(run_dir: Path, capsys):
    for f in run_dir.glob("trials/*/steps.parquet"):
        f.unlink()
    assert report_main([str(run_dir)]) == 0
    out = run_dir / "report"
    assert (out / "pareto.png").exists() and (out / "summary.md").exists()
    assert not (out / "curves_methods.png").exists()
    assert "no steps.parquet" in (out / "index.html").read_text()


def test_report_error_is_a_sentence(tmp_path: Path, capsys):
    assert report_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_analysis_imports_neither_torch_nor_ray():
    code = "import sys, analysis.report; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_plots_take_raw_steps_with_summaries_and_several_models(run_dir: Path, tmp_path: Path):
    from analysis import plots
    data = load_run(str(run_dir))
    two = pd.concat([data.summaries, data.summaries.assign(model="tiny-gpt2")], ignore_index=True)
    assert [p.suffix for p in plots.plot_pareto(two, tmp_path / "two.png")] == [".png", ".svg"]
    with pytest.raises(ValueError, match="config columns"):
        plots.plot_curves(data.steps, tmp_path / "c.png")
    assert plots.plot_curves(data.steps, tmp_path / "c.png", by="lr", summaries=data.summaries)
    assert plots.plot_lr_sensitivity(data.curves(), tmp_path / "s.png", method="lossnorm") == [tmp_path / "s.png",
                                                                                               tmp_path / "s.svg"]
    assert plots.plot_lr_sensitivity(data.curves(), tmp_path / "none.png", method="pcgrad") == []


def test_seeds_become_one_point_with_a_95_percent_interval():
    """Cells with several seeds are drawn as their mean with t-interval error bars (``front.seed_means``,
    moved from ``plots._seed_means``; tests/test_front_analysis.py covers it over steps)."""
    from analysis.front import seed_means
    rows = [dict(model="m", method="ngdiff", c=None, forget_loss="nll", lr_mode="static", lr=1e-3, seed=s,
                 final_loss_forget=f, final_loss_retain=1.0) for s, f in enumerate([1.0, 2.0, 3.0])]
    out = seed_means(pd.DataFrame(rows), "final_loss_forget", "final_loss_retain")
    assert len(out) == 1 and out["final_loss_forget"].iloc[0] == 2.0
    assert abs(out["final_loss_forget_err"].iloc[0] - 4.302652729911275 * 1.0 / 3 ** 0.5) < 1e-9
    assert out["final_loss_retain_err"].iloc[0] == 0.0


def test_tables_tell_a_sharded_trial_from_its_one_worker_twin():
    """The demo runs NGDiff + AutoLR once on one worker and once over 2 DDP workers: same numbers, two
    trials. The summary shows each trial's workers and strategy, the paper tables give the sharded one
    its own column after its twin."""
    df = _table_rows()
    ngdiff_auto = df[(df["method"] == "ngdiff") & (df["lr_mode"] == "autolr")]
    fsdp = ngdiff_auto.assign(workers=4, trial_id="sharded-fsdp",
                              params_json=json.dumps({"model": {"strategy": "fsdp"}}))
    ddp = ngdiff_auto.assign(workers=2, trial_id="sharded-ddp", params_json=json.dumps({"model": {}}))
    df = pd.concat([df.assign(workers=1), ddp, fsdp], ignore_index=True)
    summary = summary_markdown(df)
    assert "| 2 DDP |" in summary and "| 4 FSDP |" in summary and "| 1 |" in summary
    header = paper_table(df, metrics=["Verbmem"]).splitlines()[0]
    cols = [c.strip() for c in header.split("|")]
    assert cols.index("NGDiff (AutoLR)") < cols.index("NGDiff ×2 DDP (AutoLR)") < cols.index("NGDiff ×4 FSDP (AutoLR)")
    assert sharding_label(1) == "" and sharding_label(None) == "" and sharding_label(3) == " ×3 DDP"


def test_t_interval_half_width_uses_the_t_quantile_of_scipy_stats():
    """The 95 % t half-width takes scipy.special.stdtrit (a lighter import): the same quantile as
    scipy.stats.t.ppf(0.975, n - 1), NaN below two seeds."""
    from scipy import stats

    from analysis.tables import mean_interval, t_half_width
    n = np.array([1, 2, 3, 5, 30])
    h = t_half_width(np.ones(5), n)
    assert np.isnan(h[0])
    assert np.allclose(h[1:], stats.t.ppf(0.975, n[1:] - 1) / np.sqrt(n[1:]))
    m, half, k = mean_interval([1.0, 2.0, 4.0])
    assert (m, k) == (pytest.approx(7 / 3), 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / math.sqrt(3))

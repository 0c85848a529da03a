"""Tests of the front analysis (issue 13): evaluated points, best points, seed means, hypervolume against
cost, the interval rule of the success tables, stopped trials, and the report on front-search runs.

Fast and pure (no Ray, no torch): small synthetic runs, in memory or written the way the sweeper writes::

    .venv/bin/python -m pytest tests/test_front_analysis.py -q
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats

from analysis import front, plots
from analysis.load import RunData, load_run
from analysis.pareto import ROUGE_REF, ROUGE_SENSES, hypervolume_2d
from analysis.report import hypervolumes, main as report_main
from analysis.tables import autolr_table, paper_table
from sweeper.store.results import STEP_SCHEMA, SUMMARY_FIELDS, SUMMARY_SCHEMA, schema, to_table
from sweeper.store.storage import Storage

X, Y = "rouge_forget", "rouge_retain"
GPUS_2 = '{"model": {"gpus_per_worker": 2}}'


def _trial(tid: str, path: dict, wall_per_step: float = 1.0, **summary) -> tuple[dict, list[dict]]:
    """One trial: its summary row and its step rows. ``path`` maps each evaluated step to (forget, retain)
    ROUGE; the last evaluated step is the last step and its point is the summary's."""
    n = max(path) if path else 0
    steps = [dict(trial_id=tid, step=s, loss_retain=0.1, loss_forget=1.0 + s, wall_s=wall_per_step * s,
                  rouge_forget=path[s][0] if s in path else None, rouge_retain=path[s][1] if s in path else None)
             for s in range(1, n + 1)]
    last = path[n] if path else (None, None)
    row = dict(run="front", trial_id=tid, seed=0, model="tiny-gpt2", dataset="authors", method="gdiff", c=0.5,
               forget_loss="nll", lr_mode="static", lr=1e-3, optimizer="adam", workers=1, status="ok",
               params_json='{"model": {}}', steps=n, wall_s=wall_per_step * n, rouge_forget=last[0],
               rouge_retain=last[1], final_loss_forget=2.0 + n, final_loss_retain=0.5)
    row.update(summary)
    return row, steps


def _target(**kw) -> tuple[dict, list[dict]]:
    return _trial("no_unlearn-target", {}, **{"method": "no_unlearn", "c": None, "lr": None, "rouge_forget": 1.0,
                                             "rouge_retain": 1.0, "wall_s": 30.0, "final_loss_forget": 0.1, **kw})


def _run_data(trials: list[tuple[dict, list[dict]]]) -> RunData:
    """The RunData that load_run would return for these trials (every schema column, plus trial_dir)."""
    summaries = to_table([s for s, _ in trials], SUMMARY_SCHEMA).to_pandas()
    summaries["trial_dir"] = "front/trials/" + summaries["trial_id"]
    steps = to_table([{"run": "front", **r} for _, rows in trials for r in rows], STEP_SCHEMA).to_pandas()
    steps["trial_dir"] = "front/trials/" + steps["trial_id"]
    return RunData(summaries, steps)


def _write_run(root: Path, name: str, trials, summary_schema=SUMMARY_SCHEMA) -> Path:
    """Write the trials as ``sweeper.store.records.write_trial`` does (Parquet through Storage, then _SUCCESS)."""
    storage = Storage(str(root))
    for summary, steps in trials:
        base = f"{name}/trials/{summary['trial_id']}"
        storage.write_table(f"{base}/steps.parquet", to_table([{"run": name, **r} for r in steps], STEP_SCHEMA))
        row = {k: v for k, v in summary.items() if k in summary_schema.names}
        storage.write_table(f"{base}/summary.parquet", to_table([row], summary_schema))
        storage.write_bytes(f"{base}/_SUCCESS", b"")
    return root / name


def _h(values) -> float:
    """Half-width of the 95% t-interval, by hand."""
    v = np.asarray(values, float)
    return stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))


# ---------------------------------------------------------------- evaluation points


def test_evaluation_points_take_evaluated_steps_with_their_device_seconds():
    data = _run_data([
        _target(),
        # 2 workers x 2 GPUs: 4 devices; 1.5 s per step.
        _trial("gpu", {5: (0.6, 0.9), 10: (0.2, 0.7)}, wall_per_step=1.5, workers=2, params_json=GPUS_2),
        _trial("cpu", {4: (0.5, 0.8), 8: (0.4, 0.75), 12: (0.3, 0.7)}, workers=3, c=0.1),
        _trial("failed", {5: (0.1, 0.9)}, status="failed"),
    ])
    pts = front.evaluation_points(data).set_index(["trial_id", "step"])
    assert sorted(pts.index) == [("cpu", 4), ("cpu", 8), ("cpu", 12), ("gpu", 5), ("gpu", 10),
                                 ("no_unlearn-target", 0)]
    assert pts.loc[("gpu", 5), "device_s"] == pytest.approx(1.5 * 5 * 4)
    assert pts.loc[("gpu", 10), "device_s"] == pytest.approx(1.5 * 10 * 4)
    assert pts.loc[("cpu", 8), "device_s"] == pytest.approx(8 * 3)  # CPU workers count as one device each
    assert pts.loc[("no_unlearn-target", 0), "device_s"] == 0  # the target is where unlearning starts
    assert pts["final"].to_dict() == {("cpu", 4): False, ("cpu", 8): False, ("cpu", 12): True, ("gpu", 5): False,
                                      ("gpu", 10): True, ("no_unlearn-target", 0): True}
    assert (pts.loc[("gpu", 10), [X, Y]] == [0.2, 0.7]).all()
    assert set(pts["search"]) == {"grid"}  # null search (older runs) counts as grid
    assert set(front.TRIAL_COLUMNS) <= set(pts.reset_index().columns)


def test_evaluation_points_fall_back_to_the_summary():
    trials = [_trial("a", {5: (0.6, 0.9), 10: (0.2, 0.7)}, wall_per_step=2.0)]
    data = _run_data(trials)
    # Without steps (a run without steps.parquet): the summary's final point at step = steps run.
    bare = front.evaluation_points(RunData(data.summaries, pd.DataFrame()))
    assert bare[["step", X, Y, "device_s", "final"]].values.tolist() == [[10, 0.2, 0.7, 20.0, True]]
    # Losses are not per-step metrics: their points are the summaries' even with steps.
    loss = front.evaluation_points(data, "final_loss_forget", "final_loss_retain")
    assert loss["step"].tolist() == [10] and loss["final"].all()


def test_best_points_keep_an_earlier_point_that_beats_the_final_one():
    data = _run_data([
        _trial("over", {5: (0.2, 0.8), 10: (0.3, 0.6)}),         # went on too long: step 5 dominates 10
        _trial("trade", {5: (0.5, 0.9), 10: (0.1, 0.5)}, c=0.1),  # a trade-off: both are best
    ])
    best = front.best_points(front.evaluation_points(data), X, Y, ROUGE_SENSES)
    assert sorted(zip(best["trial_id"], best["step"], best["final"])) == [
        ("over", 5, False), ("trade", 5, False), ("trade", 10, True)]


# ---------------------------------------------------------------- seeds


def _three_seeds() -> list:
    """GDiff-0.5 with three seeds (evaluated at steps 5 and 10) and a worse single-seed GDiff-0.9."""
    paths = [{5: (0.30, 0.80), 10: (0.10, 0.60)}, {5: (0.34, 0.82), 10: (0.12, 0.64)},
             {5: (0.32, 0.78), 10: (0.08, 0.62)}]
    trials = [_trial(f"s{seed}", p, wall_per_step=1.0 + seed, seed=seed) for seed, p in enumerate(paths)]
    return trials + [_trial("c09", {5: (0.5, 0.7), 10: (0.4, 0.55)}, c=0.9)]


def test_seed_means_per_configuration_and_step():
    pts = front.evaluation_points(_run_data(_three_seeds()))
    means = front.seed_means(pts, X, Y)
    assert len(means) == 4  # (c 0.5, 0.9) x (step 5, 10)
    at10 = means[(means["c"] == 0.5) & (means["step"] == 10)].iloc[0]
    assert at10["seeds"] == 3 and at10[X] == pytest.approx(0.10) and at10[Y] == pytest.approx(0.62)
    assert at10[f"{X}_err"] == pytest.approx(_h([0.10, 0.12, 0.08]))
    assert at10["device_s"] == pytest.approx(np.mean([10, 20, 30]))  # what one trial had spent, on average
    assert means.set_index(["c", "step"])["final"].to_dict() == {(0.5, 5): False, (0.5, 10): True,
                                                                (0.9, 5): False, (0.9, 10): True}
    single = means[means["c"] == 0.9]
    assert single["seeds"].eq(1).all() and single[f"{X}_err"].isna().all()


def test_front_costs_report_step_device_seconds_and_seed_intervals():
    data = _run_data([_target()] + _three_seeds() + [
        # A single-seed trial whose best moment (step 4) is on the front but whose end (step 8) is not.
        _trial("early", {4: (0.05, 0.5), 8: (0.5, 0.1)}, wall_per_step=2.5, workers=2, params_json=GPUS_2,
               method="ngdiff", c=None, search="front:gap", study="authors x tiny-gpt2 x ngdiff x static"),
    ])
    costs = front.front_costs(data)
    assert "no_unlearn" not in set(costs["method"])  # the target is not reached by unlearning
    assert costs[X].is_monotonic_increasing
    early = costs[costs["trial_id"] == "early"].iloc[0]
    assert (early["step"], early["device_s"], early["final"]) == (4, 2.5 * 4 * 4, False)
    assert (early["label"], early["search"]) == ("NGDiff", "front:gap")
    seeded = costs[costs["c"] == 0.5].set_index("step")
    assert sorted(seeded.index) == [5, 10]  # both of GDiff-0.5's steps are on the front
    assert seeded.loc[10, "seeds"] == 3 and seeded.loc[10, "label"] == "GDiff-0.5"
    assert seeded.loc[10, f"{Y}_err"] == pytest.approx(_h([0.60, 0.64, 0.62]))
    assert seeded.loc[5, "device_s"] == pytest.approx(np.mean([5, 10, 15]))
    assert 0.9 not in set(costs["c"])  # GDiff-0.9 is dominated everywhere


# ---------------------------------------------------------------- hypervolume against cost


def _front_search() -> list:
    """Grid trials without finish times (as before front searches), then a gap search's trials in the
    order they finished (not their id order), one of them stopped early as dominated, and a failed one."""
    gap = dict(search="front:gap", study="authors x tiny-gpt2 x gdiff x static")
    return [
        _target(),
        _trial("grid-c0.9", {5: (0.7, 0.95), 10: (0.6, 0.9)}, c=0.9, search="grid"),
        _trial("grid-c0.1", {5: (0.2, 0.3), 10: (0.0, 0.1)}, c=0.1),  # null search: grid
        _trial("gap-b", {5: (0.3, 0.85), 10: (0.25, 0.8)}, c=0.62, finished_at=300.0, wall_per_step=2.0, **gap),
        _trial("gap-a", {5: (0.45, 0.9), 10: (0.4, 0.88)}, c=0.77, finished_at=100.0, **gap),
        _trial("gap-stop", {5: (0.65, 0.5)}, c=0.21, finished_at=200.0, status="stopped_dominated",
               stop_reason="dominated by c=0.62 at step 5", rouge_forget=0.65, rouge_retain=0.5,
               final_loss_forget=None, final_loss_retain=None, **gap),
        _trial("gap-oom", {}, c=0.4, finished_at=250.0, status="failed", error="CUDA out of memory.", wall_s=3.0,
               workers=2, params_json=GPUS_2, **gap),
    ]


def test_hypervolume_trace_orders_by_finish_time_and_accumulates_cost():
    data = _run_data(_front_search())
    trace = front.hypervolume_trace(data, X, Y, ROUGE_REF, ROUGE_SENSES)
    pts = front.evaluation_points(data)
    for kind, g in trace.groupby("search"):
        assert g["trials"].tolist() == list(range(1, len(g) + 1))
        assert g["hypervolume"].is_monotonic_increasing  # one seed per configuration: the front only grows
        mine = pts[(pts["search"] == kind) & (pts["method"] != "no_unlearn")]
        assert g["hypervolume"].iloc[-1] == pytest.approx(hypervolume_2d(mine[[X, Y]].to_numpy(), ROUGE_REF,
                                                                         ROUGE_SENSES))
    gap = trace[trace["search"] == "front:gap"]
    assert gap["trial_id"].tolist() == ["gap-a", "gap-stop", "gap-oom", "gap-b"]
    # Whole trials, the failed one included (2 workers x 2 GPUs x 3 s): it cost device time too.
    assert gap["device_s"].tolist() == pytest.approx([10.0, 15.0, 15.0 + 12.0, 27.0 + 20.0])
    assert gap["hypervolume"].iloc[1] == gap["hypervolume"].iloc[0] < gap["hypervolume"].iloc[-1]
    grid = trace[trace["search"] == "grid"]
    assert grid["trial_id"].tolist() == ["grid-c0.1", "grid-c0.9"]  # no finish times: trial id order


def test_hypervolume_trace_averages_the_seeds_that_have_finished():
    data = _run_data(_three_seeds())
    trace = front.hypervolume_trace(data)
    assert trace["trial_id"].tolist() == ["c09", "s0", "s1", "s2"]  # no finish times: trial id order
    pts = front.evaluation_points(data)
    for k, hv in zip(trace["trials"], trace["hypervolume"]):  # the definition, prefix by prefix
        done = front.seed_means(pts[pts["trial_id"].isin(trace["trial_id"].iloc[:k])], X, Y)
        assert hv == pytest.approx(hypervolume_2d(done[[X, Y]].to_numpy(), ROUGE_REF, ROUGE_SENSES))
    assert trace["hypervolume"].nunique() == 4  # every seed that arrives moves GDiff-0.5's means


def test_plot_search_cost_and_c_labels(tmp_path: Path):
    trace = front.hypervolume_trace(_run_data(_front_search()))
    assert [p.suffix for p in plots.plot_search_cost(trace, tmp_path / "cost.png")] == [".png", ".svg"]
    assert plots.plot_search_cost(trace.iloc[:0], tmp_path / "none.png") == []
    # A front search proposes many continuous c: about MAX_C_LABELS labels, 2 significant digits.
    ax = Figure().subplots()
    line = pd.DataFrame({"c": np.linspace(0.01, 0.99, 40), X: np.linspace(0, 1, 40), Y: np.linspace(0, 1, 40)})
    plots._annotate_c(ax, line, X, Y)
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) <= plots.MAX_C_LABELS + 1 and labels[:2] == ["0.01", "0.11"]


def test_pareto_figure_points_add_earlier_best_points_to_the_rouge_panel_only():
    data = _run_data([_target(), _trial("over", {5: (0.2, 0.8), 10: (0.3, 0.6)})])
    loss, rouge = (plots._panel_points(data, panel) for panel in plots.PANELS)  # Figure 1's left, right
    assert sorted(zip(rouge["trial_id"], rouge["step"], rouge["final"])) == [
        ("no_unlearn-target", 0, True), ("over", 5, False), ("over", 10, True)]
    assert loss["final"].all() and len(loss) == 2


# ---------------------------------------------------------------- success tables: the interval rule


def _seeded_cells(verbmem: list[float], utility: list[float]) -> pd.DataFrame:
    """No-unlearn (retain ROUGE 0.8: the Utility threshold is 0.56) and NPO with one row per seed."""
    base = dict(model="microsoft/phi-1_5", dataset="tofu_forget10", c=np.nan, lr_mode="static", lr=1e-5,
                status="ok", forget_loss="nll")
    rows = [dict(base, method="no_unlearn", seed=0, rouge_forget=1.0, rouge_retain=0.8)]
    rows += [dict(base, method="npo", forget_loss="npo", seed=s, rouge_forget=v, rouge_retain=u)
             for s, (v, u) in enumerate(zip(verbmem, utility))]
    return pd.DataFrame(rows)


def test_with_seeds_a_cell_is_bold_only_when_its_interval_clears_the_threshold():
    # Means pass (Verbmem 0.08 < 0.1, Utility 0.6 >= 0.56) but the intervals reach past the thresholds.
    wide = paper_table(_seeded_cells([0.0, 0.05, 0.19], [0.5, 0.6, 0.7]), metrics=["Verbmem", "Utility"],
                       reference=False)
    assert f"| 0.080 ± {_h([0.0, 0.05, 0.19]):.3f} |" in wide and f"| 0.600 ± {_h([0.5, 0.6, 0.7]):.3f} |" in wide
    assert "**" not in wide.split("\n\n")[0]
    assert "bold only when the 95% interval clears the threshold" in wide
    # Tight intervals: 0.085 + 0.012 < 0.1 and 0.6 - 0.025 >= 0.56.
    tight = paper_table(_seeded_cells([0.08, 0.085, 0.09], [0.59, 0.6, 0.61]), metrics=["Verbmem", "Utility"],
                        reference=False)
    assert f"**0.085 ± {_h([0.08, 0.085, 0.09]):.3f}**" in tight and f"**0.600 ± {_h([0.59, 0.6, 0.61]):.3f}**" in tight
    # Table 3 applies the same rule to each side of "static → AutoLR".
    assert "**" not in autolr_table(_seeded_cells([0.0, 0.05, 0.19], [0.5, 0.6, 0.7]), reference=False,
                                    metrics=["Verbmem"]).split("\n\n")[0]
    assert "**0.09 ± 0.01** → –" in autolr_table(_seeded_cells([0.08, 0.085, 0.09], [0.59, 0.6, 0.61]),
                                                  metrics=["Verbmem"], reference=False)


def test_one_seed_is_judged_by_its_value():
    md = paper_table(_seeded_cells([0.09], [0.56]), metrics=["Verbmem", "Utility"], reference=False)
    assert "**0.090**" in md and "**0.560**" in md and "interval" not in md


# ---------------------------------------------------------------- stopped trials, hypervolumes, the report


def test_a_stopped_trial_is_counted_but_is_not_a_problem():
    data = _run_data(_front_search())
    assert data.status_counts()["stopped_dominated"] == 1
    assert set(data.problems()["status"]) == {"failed"}  # only the out-of-memory trial
    assert data.stopped().values.tolist() == [["front/trials/gap-stop", 5, "dominated by c=0.62 at step 5"]]


def test_rouge_hypervolume_per_method_uses_the_best_evaluated_points():
    data = _run_data([_target(), _trial("over", {5: (0.2, 0.8), 10: (0.3, 0.6)})])
    rouge = hypervolumes(data, None).set_index("panel").loc["ROUGE"]
    assert rouge["hypervolume"] == pytest.approx(0.8 * 0.8)  # step 5's point, not the final (0.3, 0.6)
    assert hypervolumes(data.summaries, None).set_index("panel").loc["ROUGE", "hypervolume"] == pytest.approx(0.7 * 0.6)


def test_report_on_a_front_search_run(tmp_path: Path):
    run = _write_run(tmp_path, "front", _front_search() + [_trial(f"seed{s}", p, seed=s, c=0.33, search="front:gap",
                                                                  finished_at=400.0 + s)
                                                           for s, p in enumerate([{5: (0.1, 0.7)}, {5: (0.12, 0.72)},
                                                                                  {5: (0.08, 0.74)}])])
    out = tmp_path / "report"
    assert report_main([str(run), "--out", str(out)]) == 0
    for name in ("search_cost.png", "search_cost.svg", "search_cost.csv", "search_cost_trace.csv", "pareto.png"):
        assert (out / name).stat().st_size > 0, name
    cost = pd.read_csv(out / "search_cost.csv").set_index("search")
    assert sorted(cost.index) == ["front:gap", "grid"]
    assert cost.loc["front:gap", "trials"] == 7 and cost.loc["grid", "trials"] == 2
    assert cost.loc["front:gap", "hypervolume"] > cost.loc["grid", "hypervolume"]
    assert cost.loc["front:gap", "front_points"] >= 1
    index = (out / "index.html").read_text()
    assert "<h2>Search cost</h2>" in index and 'src="search_cost.png"' in index
    assert "1 trial(s) stopped early as dominated" in index and "dominated by c=0.62 at step 5" in index
    problems = index.split("Failed, diverged and unfinished trials")[1].split("</table>")[0]
    assert "gap-oom" in problems and "gap-stop" not in problems
    assert "<th>step</th><th>device-s</th><th>search</th>" in index
    assert "(+2 seeds)" in index and "0.100 ± " in index  # the three seeds' mean on the front


def test_report_on_a_run_without_the_new_columns(tmp_path: Path):
    new = {"search", "study", "finished_at", "stop_reason", "best_step"}
    old = schema([f for f in SUMMARY_FIELDS if f[0] not in new])
    run = _write_run(tmp_path, "old", [_target(), _trial("a", {5: (0.5, 0.9), 10: (0.2, 0.7)}),
                                       _trial("b", {5: (0.3, 0.8), 10: (0.4, 0.6)}, c=0.1)], summary_schema=old)
    assert not new & set(pd.read_parquet(run / "trials/a/summary.parquet").columns)
    out = tmp_path / "report"
    assert report_main([str(run), "--out", str(out)]) == 0
    index = (out / "index.html").read_text()
    assert "Search cost" not in index and not (out / "search_cost.csv").exists()
    assert "Every trial finished with status ok." in index and "<th>device-s</th>" in index
    data = load_run(str(run))
    assert set(front.evaluation_points(data)["search"]) == {"grid"}
    assert front.hypervolume_trace(data)["trial_id"].tolist() == ["a", "b"]


def test_search_axes_are_the_searchs_own_objectives():
    """A front search on [rouge_forget, model_utility] is costed on those axes (bounded: worst corner
    (1, 0)); one on final_loss_forget is referenced at the worst value seen; a grid falls back to ROUGE."""
    import json

    from analysis.front import search_axes
    from analysis.load import RunData

    def run(objectives, rows):
        params = json.dumps({"search": {"kind": "front", "objectives": objectives}} if objectives else {})
        base = dict(model="m", dataset="d", method="gdiff", c=0.5, forget_loss="nll", lr_mode="static", lr=1e-3,
                    seed=0, search="front:gap" if objectives else "grid", study="s", status="ok", steps=30,
                    wall_s=1.0, workers=1, params_json=params)
        df = pd.DataFrame([{**base, "trial_id": f"t{i}", "trial_dir": f"t{i}", **r} for i, r in enumerate(rows)])
        return RunData(summaries=df, steps=pd.DataFrame(columns=["trial_dir", "step"]))

    x, y, senses, ref = search_axes(run(["rouge_forget", "model_utility"], [{"rouge_forget": 0.2, "model_utility": 0.5}]))
    assert (x, y, senses, ref) == ("rouge_forget", "model_utility", ("min", "max"), (1.0, 0.0))
    x, y, senses, ref = search_axes(run(["final_loss_forget", "rouge_retain"], [
        {"final_loss_forget": 3.0, "rouge_retain": 0.5}, {"final_loss_forget": 7.0, "rouge_retain": 0.2}]))
    assert senses == ("max", "max") and ref == (3.0, 0.0)  # the worst L_F seen: higher is better
    assert search_axes(run(None, [{"rouge_forget": 0.2, "rouge_retain": 0.5}]))[:2] == ("rouge_forget", "rouge_retain")


def test_tables_show_only_a_searchs_front_configurations_naming_their_lr(tmp_path: Path):
    """A front search makes a configuration per trial; the success tables keep the ones on their study's
    front (every seed of each, an earlier evaluation counts), name their searched lr, and keep grid trials."""
    gap = dict(search="front:gap", study="authors x tiny-gpt2 x gdiff x static")
    trials = [_target(),
              _trial("grid-c0.5", {10: (0.5, 0.5)}, c=0.5, search="grid"),       # dominated, but a grid: shown
              _trial("front-a", {10: (0.1, 0.8)}, c=0.7, lr=1e-3, **gap),
              _trial("front-b", {10: (0.3, 0.9)}, c=0.9, lr=2e-3, **gap),
              _trial("front-c", {10: (0.4, 0.7)}, c=0.3, lr=5e-4, **gap),       # dominated by front-a
              *[_trial(f"front-d{s}", {5: (0.05, 0.6), 10: (0.5, 0.2)}, c=0.2, lr=3e-4, seed=s, **gap)
                for s in (0, 1)]]                                                # on the front at step 5
    shown, note = front.table_trials(_run_data(trials))
    assert sorted(shown["trial_id"]) == ["front-a", "front-b", "front-d0", "front-d1", "grid-c0.5",
                                         "no_unlearn-target"]
    assert note.startswith("Front search: the tables show the 3 of 4 searched configuration(s)")
    header = paper_table(shown, reference=False).splitlines()[0]
    assert header == ("| Model | Metric | No-unlearn | GDiff-0.9 η=0.002 | GDiff-0.7 η=0.001 | GDiff-0.5 "
                      "| GDiff-0.2 η=0.0003 |")
    grid_only, none = front.table_trials(_run_data(trials[:2]))
    assert none == "" and len(grid_only) == 2

    run = _write_run(tmp_path, "front", trials)
    assert report_main([str(run), "--out", str(tmp_path / "report")]) == 0
    assert "GDiff-0.3" not in (tmp_path / "report/paper_table.md").read_text()
    assert "3 of 4 searched configuration(s)" in (tmp_path / "report/index.html").read_text()
    assert "| gdiff | 0.3 | 1 | static |" in (tmp_path / "report/summary.md").read_text()  # every trial

"""Analysis of sweep outputs: load, Pareto fronts and hypervolume, evaluated points and what the front
cost (``front``), success criteria, tables, plots.

Everything here is a pure function over a pandas DataFrame, except ``load`` (reads Parquet) and
``report`` (writes the report). Nothing imports torch or ray, so the analysis runs anywhere::

    python -m analysis.report runs/<run> [runs/<other> ...] [--out DIR]

or from Python::

    from analysis.load import load_run
    from analysis.pareto import pareto_front
    data = load_run("runs/demo")
    front = pareto_front(data.summaries, "rouge_forget", "rouge_retain")
"""

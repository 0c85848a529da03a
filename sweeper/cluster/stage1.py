"""Stage 1 of a sweep, for one target: fine-tune (or reuse, or load a published) No-unlearn model and
write its row.

The No-unlearn row is written into the run as one more trial folder (``method == "no_unlearn"``,
``steps == 0``), evaluated with the run's own evaluation settings, so every plot and table shows the
starting point beside the methods. When the run has a retrained (retain-only) reference, it gets a row
too (``method == "retrained_reference"``): the "Retain" line of TOFU's and MUSE's tables. Runs inside a
Ray task; plain code, testable without Ray.
"""
from __future__ import annotations

import json

from sweeper.grid.spec import TrialSpec, published_source, target_hash, target_variants, wants_reference  # noqa: F401
from sweeper.store.storage import Storage
from sweeper.unlearn.targets import ensure_target, load_target
from sweeper.store.records import baseline_id, code_version, write_trial


def target_and_baseline(spec: TrialSpec, storage: Storage, log=print, on_ready=None) -> None:
    """Build (or find cached, or load published) the trial's targets, call ``on_ready()`` (the trials need
    nothing more), then evaluate and write the No-unlearn row (and the reference's)."""
    ensure_target(spec.model, spec.data, spec.target, storage, log)
    if wants_reference(spec):
        ensure_target(spec.model, spec.data, spec.target, storage, log, variant="retain_only", eval_cfg=spec.eval)
    if on_ready is not None:
        on_ready()
    for variant in target_variants(spec):
        _baseline_row(spec, storage, variant, log)


def _baseline_row(spec: TrialSpec, storage: Storage, variant: str, log=print) -> None:
    """Evaluate a target (or the reference) with the run's evaluation settings and write its row."""
    from sweeper.tasks import get_task
    from sweeper.unlearn.worker import _retain_reference
    trial_id = baseline_id(spec, variant)
    if storage.exists(f"{spec.run}/trials/{trial_id}/_SUCCESS"):
        return
    key = target_hash(spec.model, spec.data, spec.target, variant)
    target = json.loads(storage.read_bytes(f"targets/{key}/metrics.json"))
    model, tokenizer, splits, _, _ = load_target(storage, key, spec.data["kind"])
    task = get_task(spec.data["kind"])
    scores, samples = task.select(*task.evaluate(model, tokenizer, splits, spec.eval,
                                                 _retain_reference(storage, spec)), spec.eval)
    method = "no_unlearn" if variant == "full" else "retrained_reference"
    log(f"{method} {spec.model['name']} on {spec.data['name']}: "
        + ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if isinstance(v, float)))
    # The published checkpoint this row measured (None when stage 1 fine-tuned it): the report puts
    # the checkpoint's published values beside this row (analysis.published).
    # The model entry without its adapter: the target is the full model, shared by LoRA and full-weight trials.
    model_params = {**{k: v for k, v in spec.model.items() if k != "adapter"},
                    "checkpoint": published_source(spec.model, spec.data, variant)}
    row = dict(run=spec.run, trial_id=trial_id, config_hash=key, code_version=code_version(),
               seed=spec.target["seed"], model=spec.model["name"], dataset=spec.data["name"], method=method,
               steps=0, workers=1, target_hash=key, status="ok", wall_s=0.0,
               params_json=json.dumps({"model": model_params, "data": spec.data, "target": spec.target,
                                       "vocab_size": target["vocab_size"], "lengths": target.get("lengths"),
                                       "template": target.get("template"), "fine_tune_epochs": target["epochs"]},
                                      sort_keys=True),
               **scores)
    write_trial(storage, spec.run, trial_id, [], row, finished=True, samples=samples)

"""Stage 1 of a sweep, for one target: fine-tune (or reuse) the No-unlearn model and write its row.

The No-unlearn row is written into the run as one more trial folder (``method == "no_unlearn"``,
``steps == 0``), evaluated with the run's own evaluation settings, so every plot and table shows the
starting point beside the methods. Runs inside a Ray task; plain code, testable without Ray.
"""
from __future__ import annotations

import json

from sweeper.grid import TrialSpec
from sweeper.storage import Storage
from sweeper.targets import ensure_target, load_target
from sweeper.trial import code_version, write_trial


def baseline_id(spec: TrialSpec) -> str:
    return f"{spec.model['name'].replace('/', '_')}_no_unlearn_{spec.data['name']}_{spec.target_hash[:8]}"


def target_and_baseline(spec: TrialSpec, storage: Storage, log=print) -> None:
    target = ensure_target(spec.model, spec.data, spec.target, storage, log)
    if spec.eval.get("retrained_reference"):
        ensure_target(spec.model, spec.data, spec.target, storage, log, variant="retain_only", eval_cfg=spec.eval)
    base = f"{spec.run}/trials/{baseline_id(spec)}"
    if storage.exists(f"{base}/_SUCCESS"):
        return
    from sweeper.tasks import get_task
    from sweeper.trial import _retain_reference
    model, tokenizer, splits, _, _ = load_target(storage, spec.target_hash, spec.data["kind"])
    task = get_task(spec.data["kind"])
    scores, samples = task.select(*task.evaluate(model, tokenizer, splits, spec.eval,
                                                 _retain_reference(storage, spec)), spec.eval)
    log(f"No-unlearn {spec.model['name']}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()
                                                          if isinstance(v, float)))
    row = dict(run=spec.run, trial_id=baseline_id(spec), config_hash=spec.target_hash, code_version=code_version(),
               seed=spec.target["seed"], model=spec.model["name"], dataset=spec.data["name"], method="no_unlearn",
               steps=0, workers=1, target_hash=spec.target_hash, status="ok", wall_s=0.0,
               params_json=json.dumps({"model": spec.model, "data": spec.data, "target": spec.target,
                                       "vocab_size": target["vocab_size"]}, sort_keys=True),
               **scores)
    write_trial(storage, spec.run, baseline_id(spec), [], row, finished=True, samples=samples)

"""One line per finished trial on the terminal, instead of Ray Tune's full status table (launcher glue).

    tune.RunConfig(verbose=0, callbacks=[TrialLines(total=len(specs))])
    # done 3/25  tiny-gpt2_ngdiff_autolr_lr0.001_s0_52eb98c2  ok  forget 3.912  retain 0.208  4.1 s

``--verbose`` brings Tune's table (and every worker's log) back.
"""
from __future__ import annotations

import sys

from ray.tune import Callback


class TrialLines(Callback):
    """Prints id, status, the forget and retain losses and the seconds of each trial as it finishes."""

    def __init__(self, total: int, stream=None):
        self.total, self.stream, self.done = total, stream or sys.stdout, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trials, trial, trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, trial, {"status": "error (Tune gave up on the trial process)"})

    def _line(self, trials, trial, r: dict) -> None:
        self.done += 1
        losses = "  ".join(f"{name} {r[key]:.3f}" for name, key in (("forget", "final_loss_forget"),
                                                                    ("retain", "final_loss_retain"))
                           if isinstance(r.get(key), (int, float)))
        seconds = f"  {r['wall_s']:.1f} s" if isinstance(r.get("wall_s"), (int, float)) else ""
        print(f"done {self.done}/{self.total}  {trial.config.get('trial', trial.trial_id)}  {r.get('status', '?')}"
              + (f"  {losses}" if losses else "") + seconds, file=self.stream, flush=True)

"""The field's methods in grid files: presets with published defaults, parameter routing, the retain_loss
key, the field grids, and bad input refused before training (one sentence naming the key)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from sweeper.grid.load import TrialSpec, expand, load_grid, validate
from sweeper.launch import main as launch_main

ROOT = Path(__file__).resolve().parents[1]
FIELD = ROOT / "search_spaces" / "field.yaml"


def field_doc() -> dict:
    return yaml.safe_load(FIELD.read_text())


def _specs(tmp_path, methods, data=None, models=None) -> list[TrialSpec]:
    doc = field_doc()
    doc["methods"] = methods
    doc.update({k: v for k, v in (("data", data), ("models", models)) if v is not None})
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(doc))
    return expand(load_grid(path))


def _problems(methods, data=None, models=None) -> list[str]:
    doc = {**field_doc(), "_file": "g.yaml", "methods": methods}
    doc.update({k: v for k, v in (("data", data), ("models", models)) if v is not None})
    return validate(copy.deepcopy(doc))


@pytest.mark.parametrize("grid,extra", [("field", []), ("field_published", ["--num-gpus", "8"])])
def test_field_grids_expand(grid, extra, capsys):
    assert launch_main(["--grid", grid, "--dry-run", *extra]) == 0
    out = capsys.readouterr().out
    for label in ("simnpo", "rmu", "undial", "idknll", "idkdpo", "wga", "satimp", "ce_u", "pdu",
                  "ngdiff+simnpo", "gdiff+npo"):
        assert f"_{label}" in out, (grid, label)


def test_field_grid_has_every_method_once():
    specs = expand(load_grid(FIELD))
    assert len(specs) == 15 and len({s.trial_id for s in specs}) == 15
    forget = {s.forget_loss for s in specs}
    assert forget == {"simnpo", "rmu", "undial", "idknll", "idkdpo", "wga", "satimp", "ce_u", "nll", "npo"}
    assert {s.method for s in specs} == {"gdiff", "ga", "pdu", "ngdiff"}
    assert sorted(s.retain_loss for s in specs if s.retain_loss != "nll") == ["kl", "rmu"]


@pytest.mark.parametrize("preset,rule,forget,retain,params", [
    ("simnpo", "gdiff", "simnpo", "nll", {"c": 0.5}),
    ("rmu", "gdiff", "rmu", "rmu", {"c": 0.5}),
    ("undial", "ga", "undial", "nll", {}),
    ("idknll", "gdiff", "idknll", "nll", {"c": 0.5}),
    ("idkdpo", "gdiff", "idkdpo", "nll", {"c": 0.5}),
    ("wga", "gdiff", "wga", "nll", {"c": 0.5}),
    ("satimp", "gdiff", "satimp", "nll", {"c": 0.909091}),
    ("ce_u", "gdiff", "ce_u", "nll", {"c": 0.5}),
])
def test_presets(tmp_path, preset, rule, forget, retain, params):
    (s,) = _specs(tmp_path, [{"method": preset}])
    assert (s.method, s.forget_loss, s.retain_loss, s.method_params, s.label) == (rule, forget, retain, params, preset)
    assert s.forget_loss_params == {} and s.retain_loss_params == {}


def test_params_route_to_every_objective_that_declares_them(tmp_path):
    (rmu,) = _specs(tmp_path, [{"method": "rmu", "layer": 1, "coeff": 6.5, "c": 0.9}])
    assert rmu.forget_loss_params == {"layer": 1, "coeff": 6.5} and rmu.retain_loss_params == {"layer": 1}
    assert rmu.method_params == {"c": 0.9}
    specs = _specs(tmp_path, [{"method": "simnpo", "beta": [2.5, 4.5], "gamma": 1.0},
                              {"method": "pdu", "eps": 0.3, "forget_loss": "wga", "beta": 2.0},
                              {"method": "ngdiff", "forget_loss": "simnpo", "retain_loss": "kl"}])
    assert sorted(s.forget_loss_params["beta"] for s in specs if s.label == "simnpo") == [2.5, 4.5]
    pdu = next(s for s in specs if s.method == "pdu")
    assert pdu.method_params == {"eps": 0.3} and pdu.forget_loss_params == {"beta": 2.0} and pdu.label == "pdu+wga"
    kl = specs[-1]
    assert kl.retain_loss == "kl" and kl.label == "ngdiff+simnpo+retain_kl"


def test_the_default_retain_loss_keeps_trial_hashes():
    spec = expand(load_grid(FIELD))[-3]
    d = spec.to_dict()
    d.pop("retain_loss"), d.pop("retain_loss_params")
    assert TrialSpec(**d).config_hash == spec.config_hash


@pytest.mark.parametrize("methods,data,models,fragment", [
    ([{"method": "simnpoo"}], None, None, "unknown method 'simnpoo'"),
    ([{"method": "gdiff", "forget_loss": "undail"}], None, None, "unknown forget_loss 'undail'"),
    ([{"method": "ngdiff", "retain_loss": "kll"}], None, None, "unknown retain_loss 'kll'; known: nll, kl, rmu"),
    ([{"method": "simnpo", "alpha": 1.0}], None, None, "method 'gdiff' has no parameter 'alpha'"),
    ([{"method": "undial", "beta": -1}], None, None, "forget_loss 'undial': beta = -1 must be a positive number"),
    ([{"method": "rmu", "layer": 7}], None, None,
     "methods[0]: forget_loss 'rmu': model 'tiny-gpt2': layer = 7 is not a block of this model, which has 2"),
    ([{"method": "idknll"}], [{"name": "news", "kind": "muse", "source": "builtin", "n_articles": 24}], None,
     "methods[0]: forget_loss 'idknll' needs alternate, which data kind 'muse' (news) does not offer"),
    ([{"method": "wga"}], [{"name": "digits", "kind": "vision", "source": "digits", "forget_class": 0}],
     [{"name": "resnet-tiny"}], "forget_loss 'wga' needs tokens, which data kind 'vision' (digits) does not offer"),
    ([{"method": "ngdiff", "retain_loss": "kl"}], [{"name": "digits", "kind": "vision", "source": "digits",
                                                     "forget_class": 0}], [{"name": "resnet-tiny"}],
     "retain_loss 'kl' needs logits, target_logits"),
    ([{"method": "pdu", "dual_lr": -1.0}], None, None, "method 'pdu': dual_lr = -1.0 is outside [0, inf]"),
    ([{"method": "rmu", "retain_loss": ["kl", "nll"]}], None, None, "retain_loss = ['kl', 'nll'] must be one name"),
])
def test_bad_input_is_refused_before_training(methods, data, models, fragment):
    problems = _problems(methods, data, models)
    assert any(fragment in p for p in problems), problems


def test_idk_and_rmu_are_fine_where_they_fit():
    assert _problems([{"method": "idkdpo"}, {"method": "rmu", "layer": 1}, {"method": "pdu"}]) == []
    muse = [{"name": "news", "kind": "muse", "source": "builtin", "n_articles": 24}]
    assert _problems([{"method": "simnpo"}, {"method": "rmu"}, {"method": "undial"}], data=muse) == []

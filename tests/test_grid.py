"""Grid files: expansion of the shipped smoke grid, includes, presets, plugins, and one clear sentence for
every kind of malformed file (each names the file, the key and the value)."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

from sweeper.grid.load import GridError, TrialSpec, expand, load_grid, resolve_grid_path, validate
from sweeper.methods import registry

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "search_spaces" / "smoke.yaml"


def smoke_doc() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def write(path: Path, doc_or_text) -> Path:
    path.write_text(doc_or_text if isinstance(doc_or_text, str) else yaml.safe_dump(doc_or_text, sort_keys=False))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(GridError) as e:
        expand(load_grid(path))
    assert str(e.value) == "\n".join(e.value.problems)
    return e.value.problems


# --- the shipped smoke grid ---------------------------------------------------------------------------

def test_smoke_expands_to_eight_unique_trials():
    specs = expand(load_grid(SMOKE))
    assert len(specs) == 8
    assert len({s.trial_id for s in specs}) == 8
    assert len({s.config_hash for s in specs}) == 8
    got = sorted((s.label, s.c, s.lr_mode) for s in specs if s.method == "gdiff")
    assert got == sorted((lab, c, m) for lab in ["gdiff"] for c in (0.1, 0.5, 0.9) for m in ("static", "autolr"))
    ng = [s for s in specs if s.method == "ngdiff"]
    assert sorted(s.lr_mode for s in ng) == ["autolr", "static"] and all(s.c is None for s in ng)
    for s in specs:
        assert s.run == "smoke" and s.forget_loss == "nll" and s.forget_loss_params == {}
        assert s.model["name"] == "tiny-gpt2" and s.model["strategy"] == "ddp"        # defaults filled in
        assert s.data["forget_split"] == "forget10" and s.data["kind"] == "tofu"
        assert s.optimizer == "adam" and s.lr == 1e-3 and s.steps == 30 and s.batch_size == 8
        assert s.autolr == ({"every": 10} if s.lr_mode == "autolr" else {})
        assert s.target["max_epochs"] == 300 and s.target["seed"] == 0
    # one target for all trials
    assert len({s.target_hash for s in specs}) == 1


def test_trial_ids_name_the_dataset_when_a_grid_has_several(tmp_path):
    """One data entry: ids as before (a run made earlier resumes as is). Two: each id names its dataset,
    the config hash is unchanged, and a run that holds a trial under its older id keeps that id."""
    from sweeper.store.records import adopt_legacy_ids
    from sweeper.store.storage import Storage

    one = {s.config_hash: s for s in expand(load_grid(SMOKE))}
    doc = smoke_doc()
    doc["data"].append({**doc["data"][0], "name": "authors5", "forget_split": "forget05"})
    specs = expand({**doc, "_file": "two.yaml"})
    assert len(specs) == 16 and len({s.trial_id for s in specs}) == 16
    for s in specs:
        assert f"_{s.data['name']}_" in s.trial_id and s.id_dataset
        assert s.legacy_id == s.trial_id.replace(f"_{s.data['name']}_", "_", 1)
    same = [s for s in specs if s.data["name"] == "authors"]
    assert {s.config_hash for s in same} == set(one)                    # the dataset in the id changes no hash
    assert {s.legacy_id for s in same} == {s.trial_id for s in one.values()}
    assert TrialSpec.from_dict(specs[0].to_dict()).trial_id == specs[0].trial_id

    storage = Storage(str(tmp_path))
    old, new = specs[0], specs[1]
    storage.write_bytes(f"{old.run}/trials/{old.legacy_id}/_SUCCESS", b"")       # finished under its old id
    storage.write_bytes(f"{new.run}/trials/{new.trial_id}/_SUCCESS", b"")        # finished under its new id
    storage.write_bytes(f"{new.run}/trials/{new.legacy_id}/_SUCCESS", b"")
    adopted = adopt_legacy_ids(specs[:3], storage)
    assert [s.trial_id for s in adopted] == [old.legacy_id, new.trial_id, specs[2].trial_id]
    assert adopted[0].config_hash == old.config_hash


def test_finished_trials_are_read_from_one_listing(tmp_path):
    """What a relaunch leaves out of Tune: trials with their _SUCCESS marker, not those with Parquet only
    (an interrupted trial writes its curve before it ends)."""
    from sweeper.store.records import finished_trials
    from sweeper.store.storage import Storage

    storage = Storage(str(tmp_path))
    assert finished_trials(storage, "smoke") == set()                       # nothing ran yet
    storage.write_bytes("smoke/trials/a/summary.parquet", b"x")
    storage.write_bytes("smoke/trials/a/_SUCCESS", b"")
    storage.write_bytes("smoke/trials/b/steps.parquet", b"x")               # interrupted: runs again
    storage.write_bytes("other/trials/c/_SUCCESS", b"")                     # another run
    assert finished_trials(storage, "smoke") == {"a"}


def test_trial_spec_round_trips():
    spec = expand(load_grid(SMOKE))[0]
    again = TrialSpec.from_dict(spec.to_dict())
    assert again == spec and again.trial_id == spec.trial_id
    other = expand(load_grid(SMOKE), run="other")[0]
    assert other.config_hash == spec.config_hash and other.run == "other"  # the run is not part of the config


def test_resolve_grid_path_by_name():
    assert resolve_grid_path("smoke") == SMOKE
    assert resolve_grid_path(str(SMOKE)) == SMOKE


# --- includes, presets, plugins ---------------------------------------------------------------------------

def test_include_merges_with_this_file_winning(tmp_path):
    base = smoke_doc()
    write(tmp_path / "base.yaml", base)
    write(tmp_path / "child.yaml", {
        "include": ["base.yaml"], "name": "child", "seeds": [0, 1],
        "methods": [{"method": "ga"}],
        "unlearn": {"steps": 5},          # merged into base's unlearn: optimizer, lr, autolr kept
        "lr_modes": ["static"],
    })
    doc = load_grid(tmp_path / "child.yaml")
    assert doc["name"] == "child"
    assert doc["unlearn"] == {**base["unlearn"], "steps": 5}
    assert [m["method"] for m in doc["methods"]] == ["gdiff", "ngdiff", "ga"]   # lists of methods concatenate
    specs = expand(doc)
    assert len(specs) == (3 + 1 + 1) * 2     # 5 method variants x 2 seeds x static
    assert {s.steps for s in specs} == {5} and {s.run for s in specs} == {"child"}
    assert {s.seed for s in specs} == {0, 1}


def test_nested_includes(tmp_path):
    (tmp_path / "parts").mkdir()
    doc = smoke_doc()
    methods = doc.pop("methods")
    write(tmp_path / "parts" / "settings.yaml", doc)
    write(tmp_path / "parts" / "methods.yaml", {"include": ["settings.yaml"], "methods": methods[:1]})
    write(tmp_path / "top.yaml", {"include": ["parts/methods.yaml"], "methods": methods[1:]})
    specs = expand(load_grid(tmp_path / "top.yaml"))
    assert len(specs) == 8 and {s.run for s in specs} == {"top"}


def test_npo_preset_routes_beta_to_the_forget_loss(tmp_path):
    doc = smoke_doc()
    doc["methods"] = [{"method": "npo", "beta": [0.1, 0.5]},
                      {"method": "gdiff", "c": 0.3, "forget_loss": "npo", "beta": 0.2}]
    doc["lr_modes"] = ["static"]
    specs = expand(load_grid(write(tmp_path / "npo.yaml", doc)))
    npo = [s for s in specs if s.label == "npo"]
    assert len(npo) == 2
    for s in npo:
        assert s.method == "ga" and s.forget_loss == "npo" and s.method_params == {}
    assert sorted(s.forget_loss_params["beta"] for s in npo) == [0.1, 0.5]
    (mixed,) = [s for s in specs if s.method == "gdiff"]
    assert mixed.label == "gdiff+npo" and mixed.method_params == {"c": 0.3}
    assert mixed.forget_loss == "npo" and mixed.forget_loss_params == {"beta": 0.2}
    assert "gdiff+npo-c0.3" in mixed.trial_id


PLUGIN = '''
from sweeper.methods import StepScalars, combination_rule

@combination_rule("grid_test_scaled_gd", bounds={"factor": (0.0, 10.0)})
def scaled_gd(s: StepScalars, state: dict, *, factor: float = 2.0) -> tuple[float, float]:
    """Gradient descent on the retain set, scaled."""
    return factor, 0.0
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A plugin module on sys.path; the rules it registers vanish afterwards."""
    monkeypatch.setattr(registry, "_RULES", dict(registry._RULES))
    (tmp_path / "grid_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("grid_test_plugin", None)


def test_plugin_rule_expands_and_is_validated(plugin_dir):
    doc = smoke_doc()
    doc["plugins"] = ["grid_test_plugin"]
    doc["methods"] = [{"method": "grid_test_scaled_gd", "factor": [1.0, 3.0]}]
    specs = expand(load_grid(write(plugin_dir / "plug.yaml", doc)))
    assert len(specs) == 4
    assert sorted({s.method_params["factor"] for s in specs}) == [1.0, 3.0]
    assert all(s.plugins == ["grid_test_plugin"] for s in specs)

    doc["methods"] = [{"method": "grid_test_scaled_gd", "factor": 11}]
    path = write(plugin_dir / "plug_bad.yaml", doc)
    assert problems_of(path) == [f"{path}: methods[0]: method 'grid_test_scaled_gd': factor = 11 is outside [0, 10]"]


def test_plugin_method_unknown_without_its_plugin(tmp_path):
    doc = smoke_doc()
    doc["methods"] = [{"method": "grid_test_scaled_gd"}]
    (msg,) = problems_of(write(tmp_path / "noplug.yaml", doc))
    assert "unknown method 'grid_test_scaled_gd'" in msg


# --- malformed files: one sentence each ---------------------------------------------------------------------

def _set(*path_and_value):
    *keys, value = path_and_value

    def mutate(d):
        target = d
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return mutate


def _append_method(entry):
    return lambda d: d["methods"].append(entry)


def _pop(key):
    return lambda d: d.pop(key)


# (case id, mutation of the smoke grid, fragments the single message must contain)
CASES = [
    ("unknown_top_key", _set("method", [{"method": "ga"}]),
     ["unknown key 'method'", "allowed:", "did you mean 'methods'?"]),
    ("unknown_method", _append_method({"method": "ngdif"}),
     ["methods[2]", "unknown method 'ngdif'", "known methods:", "did you mean 'ngdiff'?"]),
    ("unknown_model", _set("models", [{"name": "tiny-gpt3"}]),
     ["models[0]", "model 'tiny-gpt3' is neither a tiny twin", "tiny-gpt2"]),
    ("unknown_forget_loss", _append_method({"method": "ga", "forget_loss": "npoo"}),
     ["methods[2]", "unknown forget_loss 'npoo'", "known: nll, npo", "did you mean 'npo'?"]),
    ("c_above_one", _append_method({"method": "gdiff", "c": 1.5}),
     ["methods[2]", "method 'gdiff': c = 1.5 is outside [0, 1]"]),
    ("c_negative_in_list", _append_method({"method": "gdiff", "c": [0.2, -0.1]}),
     ["methods[2]", "c = -0.1 is outside [0, 1]"]),
    ("c_not_a_number", _append_method({"method": "gdiff", "c": "half"}),
     ["methods[2]", "method 'gdiff': c = 'half' is not a number"]),
    ("c_empty_list", _append_method({"method": "gdiff", "c": []}),
     ["methods[2]", "c is an empty list"]),
    ("unknown_method_param", _append_method({"method": "ngdiff", "beta": 0.1}),
     ["method 'ngdiff' has no parameter 'beta'", "its parameters are: eps"]),
    ("npo_beta_negative", _append_method({"method": "npo", "beta": -1}),
     ["forget_loss 'npo': beta = -1 must be a positive number"]),
    ("method_missing", _append_method({"c": 0.5}), ["methods[2]: key 'method' is missing"]),
    ("method_is_list", _append_method({"method": ["ga", "gd"]}),
     ["methods[2]: method = ['ga', 'gd'] must be one name"]),
    ("negative_lr", _set("unlearn", "lr", [1e-3, -1e-3]), ["unlearn: lr = -0.001 must be a positive number"]),
    ("lr_not_number", _set("unlearn", "lr", "fast"), ["unlearn: lr = 'fast' must be a positive number"]),
    ("lr_empty", _set("unlearn", "lr", []), ["unlearn: lr is an empty list"]),
    ("zero_steps", _set("unlearn", "steps", 0), ["unlearn: steps = 0 must be a positive integer"]),
    ("batch_size_float", _set("unlearn", "batch_size", 8.5), ["unlearn: batch_size = 8.5 must be a positive integer"]),
    ("weight_decay_str", _set("unlearn", "weight_decay", "x"), ["unlearn: weight_decay = 'x' must be a number >= 0"]),
    ("bad_lr_mode", _set("lr_modes", ["static", "auto"]), ["lr_modes: 'auto' is not allowed", "allowed: static, autolr"]),
    ("empty_lr_modes", _set("lr_modes", []), ["lr_modes is an empty list"]),
    ("bad_optimizer", _set("unlearn", "optimizer", "sgdm"),
     ["unlearn: optimizer = 'sgdm' is not allowed", "allowed: sgd, adam, adamw"]),
    ("bad_target_optimizer", _set("target", "optimizer", "lion"), ["target: optimizer = 'lion' is not allowed"]),
    ("bad_strategy", _set("models", [{"name": "tiny-gpt2", "strategy": "zero3"}]),
     ["models[0]: strategy = 'zero3' is not allowed", "allowed: ddp, fsdp"]),
    # strategy fsdp is accepted (gloo on CPU, nccl on GPU): the one problem is the dtype
    ("fsdp_accepted_bad_dtype", _set("models", [{"name": "tiny-gpt2", "strategy": "fsdp", "dtype": "fp16"}]),
     ["models[0]: dtype = 'fp16' is not allowed"]),
    ("bad_dtype", _set("models", [{"name": "tiny-gpt2", "dtype": "fp16"}]),
     ["models[0]: dtype = 'fp16' is not allowed", "float32, bfloat16, float16"]),
    ("workers_zero", _set("models", [{"name": "tiny-gpt2", "workers": 0}]),
     ["models[0]: workers = 0 must be a positive integer"]),
    ("trust_remote_code_str", _set("models", [{"name": "tiny-gpt2", "trust_remote_code": "yes"}]),
     ["models[0]: trust_remote_code = 'yes' must be true or false"]),
    ("model_name_missing", _set("models", [{"workers": 1}]), ["models[0]: key 'name' is missing"]),
    ("missing_data", _pop("data"), ["key 'data' is missing or empty"]),
    ("missing_models", _pop("models"), ["key 'models' is missing or empty"]),
    ("empty_methods", _set("methods", []), ["key 'methods' is missing or empty"]),
    ("methods_not_list", _set("methods", {"method": "ga"}), ["key 'methods' must be a list of mappings"]),
    ("target_not_mapping", _set("target", [1]), ["key 'target' must be a mapping"]),
    ("data_source_missing", _set("data", [{"name": "t", "source": "/no/such/tofu/folder"}]),
     ["data[0]: source = '/no/such/tofu/folder' is neither 'builtin', an existing folder"]),
    ("bad_forget_split", _set("data", [{"name": "t", "forget_split": "forget20"}]),
     ["data[0]: forget_split = 'forget20' is not allowed", "forget01, forget05, forget10"]),
    ("too_many_qa", _set("data", [{"name": "t", "qa_per_author": 500}]),
     ["data[0]: qa_per_author = 500", "allowed: 1..20"]),
    ("n_authors_zero", _set("data", [{"name": "t", "n_authors": 0}]),
     ["data[0]: n_authors = 0 must be a positive integer"]),
    ("bad_kind", _set("data", [{"name": "t", "kind": "imagenet"}]), ["data[0]: kind = 'imagenet' is not allowed"]),
    ("unknown_model_key", _set("models", [{"name": "tiny-gpt2", "worker": 2}]),
     ["models[0]: unknown key 'worker'", "did you mean 'workers'?"]),
    ("unknown_data_key", _set("data", [{"name": "t", "n_author": 3}]),
     ["data[0]: unknown key 'n_author'", "did you mean 'n_authors'?"]),
    ("unknown_target_key", _set("target", "epochs", 3), ["target: unknown key 'epochs'", "did you mean 'max_epochs'?"]),
    ("unknown_unlearn_key", _set("unlearn", "step", 3), ["unlearn: unknown key 'step'", "did you mean 'steps'?"]),
    ("unknown_eval_key", _set("eval", "max_question", 3),
     ["eval: unknown key 'max_question'", "did you mean 'max_questions'?"]),
    ("unknown_autolr_key", _set("unlearn", "autolr", {"evry": 3}),
     ["unlearn.autolr: unknown key 'evry'", "did you mean 'every'?"]),
    ("autolr_every_zero", _set("unlearn", "autolr", {"every": 0}), ["unlearn.autolr.every = 0 must be an integer >= 1"]),
    ("autolr_smoothing_one", _set("unlearn", "autolr", {"smoothing": 1}),
     ["unlearn.autolr.smoothing = 1 must be a number in [0, 1)"]),
    ("autolr_probe_scale_str", _set("unlearn", "autolr", {"probe_scale": "x"}),
     ["unlearn.autolr.probe_scale = 'x' must be a number > 0"]),
    ("autolr_not_mapping", _set("unlearn", "autolr", 5), ["unlearn: autolr must be a mapping"]),
    ("exact_match_gate_two", _set("target", "exact_match_gate", 2), ["target: exact_match_gate = 2 must be in [0, 1]"]),
    ("check_every_zero", _set("target", "check_every", 0), ["target: check_every = 0 must be a positive integer"]),
    ("eval_every_negative", _set("eval", "every", -3), ["eval: every = -3 must be a non-negative integer"]),
    ("negative_seed", _set("seeds", [0, -1]), ["seeds: -1 must be a non-negative integer"]),
    ("empty_seeds", _set("seeds", []), ["seeds is an empty list"]),
    ("max_failures_negative", _set("max_failures", -1), ["max_failures = -1 must be a non-negative integer"]),
    ("name_not_string", _set("name", ["x"]), ["name = ['x'] must be a non-empty string"]),
    ("missing_plugin", _set("plugins", ["no_such_grid_plugin"]),
     ["plugins: plugin module 'no_such_grid_plugin' could not be imported"]),
    ("plugin_not_string", _set("plugins", [5]), ["plugins = [5] must be a list of module names"]),
    ("duplicate_trials", _append_method({"method": "ngdiff"}),
     ["the grid expands to duplicate trials", "tiny-gpt2_ngdiff_static", "remove the repeated entries"]),
]


@pytest.mark.parametrize("case,mutate,fragments", CASES, ids=[c[0] for c in CASES])
def test_malformed_grid_one_sentence(tmp_path, case, mutate, fragments):
    doc = copy.deepcopy(smoke_doc())
    mutate(doc)
    path = write(tmp_path / f"{case}.yaml", doc)
    problems = problems_of(path)
    assert len(problems) == 1, problems
    (msg,) = problems
    assert msg.startswith(f"{path}: "), msg
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


TEXT_CASES = [
    ("yaml_syntax_error", "name: x\ndata: [{name: a}\nmodels: [{name: tiny-gpt2}]\n",
     ["YAML syntax error at line 3"]),
    ("yaml_bad_indent", "name: x\n  bad: indent\n", ["YAML syntax error at line 2, column 6"]),
    ("top_level_list", "- data\n- models\n", ["the top level must be a mapping of keys, not a list"]),
    ("top_level_scalar", "just a string\n", ["the top level must be a mapping of keys, not a str"]),
    ("include_not_list", "include: other.yaml\n", ["key 'include' = 'other.yaml' must be a list of file names"]),
    ("include_missing", "include: [nothere.yaml]\n", ["include 'nothere.yaml': no file"]),
    ("include_self", "include: [include_self.yaml]\n", ["include 'include_self.yaml' is circular"]),
]


@pytest.mark.parametrize("case,text,fragments", TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_malformed_text_one_sentence(tmp_path, case, text, fragments):
    path = write(tmp_path / f"{case}.yaml", text)
    (msg,) = problems_of(path)
    assert msg.startswith(f"{path}: "), msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_circular_include_between_two_files(tmp_path):
    write(tmp_path / "a.yaml", "include: [b.yaml]\n")
    write(tmp_path / "b.yaml", "include: [a.yaml]\n")
    (msg,) = problems_of(tmp_path / "a.yaml")
    assert "include 'a.yaml' is circular" in msg and "b.yaml" in msg


def test_empty_file_lists_every_missing_section(tmp_path):
    path = write(tmp_path / "empty.yaml", "")
    problems = problems_of(path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        f"key {k!r} is missing or empty; it must list at least one entry" for k in ("data", "models", "methods")]


def test_several_problems_reported_at_once(tmp_path):
    doc = smoke_doc()
    doc["unlearn"]["steps"] = 0
    doc["unlearn"]["optimizer"] = "sgdm"
    doc["models"][0]["dtype"] = "fp8"
    doc["methods"].append({"method": "gdif"})
    doc["methods"].append({"method": "gdiff", "c": 2})
    doc["seeds"] = [-1]
    doc["target"]["exact_match_gate"] = 1.5
    doc["unlearn"]["autolr"] = {"every": 0, "smoothing": 1}
    path = write(tmp_path / "many.yaml", doc)
    problems = problems_of(path)
    expected = ["dtype = 'fp8'", "unknown method 'gdif'", "c = 2 is outside", "steps = 0", "optimizer = 'sgdm'",
                "exact_match_gate = 1.5", "autolr.every = 0", "autolr.smoothing = 1", "seeds: -1"]
    assert len(problems) == len(expected), problems
    for fragment in expected:
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert validate(load_grid(path)) == problems   # validate() returns the same list without raising


def test_unknown_grid_name_suggests_the_closest():
    with pytest.raises(GridError) as e:
        resolve_grid_path("smok")
    (msg,) = e.value.problems
    assert "grid 'smok'" in msg and "known grids:" in msg and "did you mean 'smoke'?" in msg
    with pytest.raises(GridError, match="known grids:"):
        resolve_grid_path("qqqqqq")


def test_eval_metrics_are_selected_by_name(tmp_path):
    """A grid names its metrics; an unknown one is refused with the allowed names and the closest one."""
    import yaml

    from sweeper.grid.load import GridError, expand, load_grid
    from sweeper.tasks import get_task
    grid = yaml.safe_load(open("search_spaces/smoke.yaml"))
    grid["eval"]["metrics"] = ["truth_ratio_forget", "model_utility"]
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(grid))
    spec = expand(load_grid(tmp_path / "ok.yaml"))[0]
    task = get_task("tofu")
    summary, _ = task.select({"truth_ratio_forget": 0.5, "prob_forget": 0.9, "rouge_forget": 0.1}, [], spec.eval)
    assert summary == {"truth_ratio_forget": 0.5, "prob_forget": None, "rouge_forget": 0.1}
    grid["eval"]["metrics"] = ["truth_ratio_foget"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(grid))
    with pytest.raises(GridError) as e:
        expand(load_grid(tmp_path / "bad.yaml"))
    assert "eval: metric 'truth_ratio_foget' is not computed by kind 'tofu'" in str(e.value)
    assert "did you mean 'truth_ratio_forget'?" in str(e.value)

"""The README's "Adding a method" example works as printed: the module registers, a grid uses it."""
import re
import sys
from pathlib import Path

import yaml

from sweeper.grid.load import expand, load_grid
from sweeper.methods import StepScalars, make_rule

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_method_example_runs_from_a_grid(tmp_path, monkeypatch):
    text = README.read_text()
    section = text.split("### Adding a method", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    grid_part = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    (tmp_path / "my_methods.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_methods", None)
    grid = yaml.safe_load((Path(__file__).resolve().parent.parent / "search_spaces" / "smoke.yaml").read_text())
    grid.update(grid_part, lr_modes=["static"])
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    specs = expand(load_grid(path))
    assert [s.method for s in specs] == ["sqrt_ngdiff"]
    w = make_rule("sqrt_ngdiff").weights(StepScalars(1, 1.0, 2.0, sq_norm_retain=16.0, sq_norm_forget=81.0, dot=0.0))
    assert abs(w.w_retain - 0.5) < 1e-9 and abs(w.w_forget - 1 / 3) < 1e-9


def test_readme_output_schema_is_the_code_schema():
    """The README's tables of steps/summary/samples/proposals columns are ``python -m sweeper.store.results``."""
    from sweeper.store.results import markdown_table
    assert markdown_table().strip() in README.read_text()

"""``--env``: the environment variables every Ray worker of a sweep gets (the session's Ray in
tests/test_fault_tolerance.py and tests/test_inline_task.py shows them arriving); bad entries are refused in one
sentence before Ray starts."""
import pytest

from sweeper.launch import main, worker_env


def test_entries_take_a_value_or_this_shells(monkeypatch):
    monkeypatch.setenv("SWEEPER_TEST_TOKEN", "abc")
    assert worker_env(["HF_HOME=/data/hf=x", "SWEEPER_TEST_TOKEN", "EMPTY="]) == {
        "HF_HOME": "/data/hf=x", "SWEEPER_TEST_TOKEN": "abc", "EMPTY": ""}


@pytest.mark.parametrize("entry,why", [
    ("SWEEPER_TEST_UNSET", "--env SWEEPER_TEST_UNSET: SWEEPER_TEST_UNSET is not set in this shell; give NAME=VALUE instead"),
    ("=x", "--env '=x': expected NAME=VALUE or NAME, with NAME a variable name"),
    ("A B=1", "--env 'A B=1': expected NAME=VALUE or NAME, with NAME a variable name"),
])
def test_bad_entries_are_one_sentence_before_ray(entry, why, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("SWEEPER_TEST_UNSET", raising=False)
    with pytest.raises(ValueError) as e:
        worker_env([entry])
    assert str(e.value) == why
    assert main(["--grid", "smoke", "--storage", str(tmp_path), "--env", entry]) == 2
    assert capsys.readouterr().err == f"error: {why}\n"
    assert not list(tmp_path.iterdir())  # nothing started, nothing written

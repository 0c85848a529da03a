"""The paper's grids are valid data: every part expands, and `paper` is their union without repeats."""
from sweeper.grid.load import expand_grid

PARTS = ["paper/table1", "paper/table1_ngdiff", "paper/table2", "paper/table2_ngdiff", "paper/table3",
         "paper/table4", "paper/table6", "paper/table6_ngdiff", "paper/figure1", "paper/figure5_6"]


def test_every_part_expands_and_paper_is_their_union():
    parts = {p: expand_grid(p, run="paper") for p in PARTS}
    union = {s.trial_id for specs in parts.values() for s in specs}
    paper = expand_grid("paper")
    assert sorted(s.trial_id for s in paper) == sorted(union)
    assert len(paper) == len(union) < sum(len(v) for v in parts.values())  # shared trials run once


def test_table1_is_five_models_by_six_methods_with_ngdiff_on_autolr():
    specs = expand_grid("paper/table1") + expand_grid("paper/table1_ngdiff")
    assert len({s.model["name"] for s in specs}) == 5
    assert {(s.label, s.lr_mode) for s in specs} == {("gdiff", "static"), ("npo", "static"),
                                                    ("lossnorm", "static"), ("ngdiff", "autolr")}
    assert sorted({s.c for s in specs if s.label == "gdiff"}) == [0.1, 0.5, 0.9]
    assert all(s.lr == 5e-5 and s.optimizer == "adam" and s.target["lr"] == 1e-5 for s in specs)


def test_figure1_sweeps_c_from_zero_to_one():
    cs = sorted(s.c for s in expand_grid("paper/figure1") if s.label == "gdiff")
    assert cs == [round(0.1 * i, 1) for i in range(11)]


def test_muse_and_vision_parts_cover_the_papers_tables_2_4_6():
    t2 = expand_grid("paper/table2") + expand_grid("paper/table2_ngdiff")
    assert {s.data["kind"] for s in t2} == {"muse"} and all(s.eval["retrained_reference"] for s in t2)
    assert {s.model["name"] for s in t2} == {"meta-llama/Llama-2-7b-hf", "mistralai/Mistral-7B-v0.1"}
    assert {s.label for s in t2} == {"gdiff", "npo", "lossnorm", "ngdiff"}
    t4 = expand_grid("paper/table4")
    assert {(s.data["source"], s.data["forget_class"]) for s in t4} == {("uoft-cs/cifar10", 5), ("uoft-cs/cifar100", 5)}
    assert {s.model["name"] for s in t4} == {"resnet50"}

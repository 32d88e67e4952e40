"""scripts/crossval_continuous.py: every tuned constant comes from the training folds only, and
the held-out folds add up to the totals it reports (real Aalto participants, a small sample)."""


import numpy as np
from conftest import load_script

from agent.sources.datasets import aalto


def test_folds_partition_the_people_and_each_derives_its_own_constants(aalto_dir):
    crossval = load_script("crossval_continuous")
    people, _ = aalto.load(aalto_dir, users=40, seed=3)
    out = crossval.crossval(people, folds=2)
    first, second = out["folds"]
    assert [first["participants"], second["participants"]] == [[0, 20], [20, 40]]
    assert [first["people"], second["people"]] == [list(range(20)), list(range(20, 40))]
    # derived from 20 people each, not the shipped constants and not each other's
    assert first["weights"]["max_abs_diff_from_shipped"] > 0.01
    assert first["weights"]["median"] != second["weights"]["median"]
    assert first["overdispersion"] != second["overdispersion"]
    assert all(0 < tau < 0.2 for fold in out["folds"] for tau in fold["overdispersion"])
    for fold in out["folds"]:
        tried = fold["training_missed_pct"]
        assert f"{fold['tolerance']:.4f}" in tried  # the chosen tolerance was measured
        assert tried[f"{fold['tolerance']:.4f}"] <= out["max_missed_pct"] or \
            fold["tolerance"] == crossval.TOLERANCES[0]
    total = out["total"]
    for key in ("false_locks", "genuine_keystrokes", "impostor_streams", "users"):
        assert total[key] == first[key] + second[key]
    assert np.isclose(total["anga"], total["genuine_keystrokes"] / max(total["false_locks"], 1))


def test_a_shuffled_order_gives_another_partition_of_the_same_people(aalto_dir):
    crossval = load_script("crossval_continuous")
    people, _ = aalto.load(aalto_dir, users=44, seed=5)
    out = crossval.crossval(people, folds=2, shuffle=1)
    held = [fold["people"] for fold in out["folds"]]
    assert sorted(held[0] + held[1]) == list(range(44))
    assert held[0] != list(range(22))
    assert [fold["users"] for fold in out["folds"]] == [22, 22]
    assert out["shuffle"] == 1
    assert "shuffled with seed 1" in "\n".join(crossval.summary_lines(out))

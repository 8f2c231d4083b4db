"""The robustness study's whole-split figures: pairs by source, AEs by target, the same-sources control."""
from __future__ import annotations

import numpy as np
import pytest

from advhybrid.evaluation.robustness import compare_on_aes, split_figures

def hybrid_test() -> dict[str, np.ndarray]:
    # 4 sources, each with one real image and one AE (made by target 0 or 1), shuffled
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    return {"labels": labels, "is_adv": np.array([0, 0, 0, 0, 1, 1, 1, 1]),
            "source_id": np.array([10, 11, 12, 13, 10, 11, 12, 13]),
            "target_model": np.array([-1, -1, -1, -1, 0, 1, 0, 1]), "target_names": np.array(["a", "b"])}


def test_split_figures_pair_each_real_image_with_its_own_ae_and_break_down_by_target():
    t = hybrid_test()
    pred = t["labels"].copy()
    pred[[4, 6]] = 9  # both AEs of target "a" fool the model
    f = split_figures(pred, t)
    assert f["real"]["acc"] == 1.0 and f["adversarial"]["acc"] == 0.5
    assert f["adversarial_by_target"]["a"]["acc"] == 0.0 and f["adversarial_by_target"]["b"]["acc"] == 1.0
    assert (f["real_vs_adversarial"]["only_a"], f["real_vs_adversarial"]["only_b"]) == (2, 0)
    c = compare_on_aes(pred, t["labels"], t)
    assert c["adversarial"]["diff"] == -0.5 and c["real"]["diff"] == 0.0
    t["source_id"] = np.array([10, 11, 12, 13, 10, 11, 12, 14])
    with pytest.raises(ValueError, match="pair one to one by source_id"):
        split_figures(pred, t)


def test_the_same_sources_control_swaps_each_ae_for_its_source_and_names_an_orphan_ae():
    from advhybrid.data.control import ControlDataError, same_sources

    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    split = {"images": images, "labels": np.array([3, 3, 5, 5]), "is_adv": np.array([0, 1, 1, 0]),
             "source_id": np.array([7, 7, 9, 9])}
    x, y = same_sources(split)
    assert np.array_equal(x[1], images[0]) and np.array_equal(x[2], images[3])
    assert np.array_equal(x[[0, 3]], images[[0, 3]]) and y.tolist() == [3, 3, 5, 5]
    orphan = dict(split, source_id=np.array([7, 7, 8, 9]))
    with pytest.raises(ControlDataError, match=r"train.npz: AEs whose real source image is not in the split \(source ids \[8\]"):
        same_sources(orphan, "train.npz")


def test_attack_counts_charge_the_chained_sweep_only_for_each_budgets_survivors():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("attack_counts", Path(__file__).parents[1] / "tools" / "attack_counts.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rate = lambda k: {"acc": k / 10}  # noqa: E731
    details = {"settings": {"eps_255": [2, 8, 16]},
               "defended/m": {"whitebox": {"n": 10, "clean": rate(6), "pgd": {"2": rate(3), "8": rate(1), "16": rate(0)}}}}
    assert tool.counts(details) == [{"model": "defended/m", "clean": 6, "unchained": 18, "chained": 6 + 3 + 1,
                                     "pgd_8_survivors": 1}]

"""Every size of a profile fits its data set, checked without downloading anything.

The chapters load their data with :func:`influence_utils.load_dataset` (and chapters 7 and 8 through
:func:`influence_utils.checkpoints.checkpoint`); ``load_dataset`` raises when a size exceeds a split. A
full-profile size that does not fit is found only on a GPU runtime, after the downloads and minutes
of training. Here every ``load_dataset`` call of the chapters is mirrored from the config
(:func:`_requests`) and checked against the split sizes: from the data module for the packaged data
sets, from the table of official sizes for the downloadable ones. Then the panels drawn from those
splits (removed examples, queries, Hessian subsamples, chapter 8's mis-predicted and held-out
examples) are checked against the sizes they are drawn from.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

import pytest

import influence_utils as iu
from influence_utils.data import available_datasets, load_dataset

BOOK = Path(__file__).resolve().parents[1] / "book"

#: Official split sizes of the downloadable data sets (what ``load_dataset`` calls train / test).
#: SST-2 (GLUE): 67,349 labelled training sentences; the 872 of the validation split are the test
#: split here, because GLUE's test split has no labels. CIFAR-10: 50,000 / 10,000.
OFFICIAL = {"sst2": (67_349, 872), "cifar10": (50_000, 10_000)}

#: Test accuracy no checkpoint of the book reaches on a downloadable set (the published accuracy of
#: a fully fine-tuned bert-base-uncased on SST-2's validation split, 92.7 %, and of a well-trained
#: ResNet-18 on CIFAR-10, 95 %): chapter 8 needs its mis-predicted examples even from a checkpoint
#: that good. The book's checkpoints train only the top layers, so they do worse.
ACCURACY_CEILING = {"sst2": 0.927, "cifar10": 0.95}

#: ``load_dataset`` calls per chapter, mirrored by :func:`_requests` (a new call must be added there).
LOAD_CALLS = {"01": 1, "02": 2, "03": 2, "04": 1, "05": 1, "06": 2, "07": 1, "08": 1, "09": 1}


@lru_cache(maxsize=None)
def split_sizes(dataset: str, classes: tuple | None = None) -> tuple[int, int]:
    """(train, test) sizes of ``dataset`` (restricted to ``classes``), never downloading."""
    if dataset in OFFICIAL:
        assert classes is None, "no chapter restricts a downloadable data set to some classes"
        return OFFICIAL[dataset]
    assert available_datasets()[dataset].startswith("[offline]"), (
        f"{dataset} is neither packaged nor in the OFFICIAL table of this test: add its official split sizes")
    ds = load_dataset(dataset, classes=classes)
    return ds.n_train, ds.n_test


def _requests(cfg) -> list[tuple[str, str, tuple | None, int | None, int | None]]:
    """``(where, dataset, classes, n_train, n_test)`` of every ``load_dataset`` call of the chapters."""
    c1, c2, c3, c4, c5, c6, c7, c8, c9 = (cfg.ch1, cfg.ch2, cfg.ch3, cfg.ch4, cfg.ch5, cfg.ch6, cfg.ch7, cfg.ch8,
                                          cfg.ch9)
    return [
        ("ch1", c1.dataset, tuple(c1.classes), c1.n_train, c1.n_test),
        ("ch2", c2.dataset, None, c2.n_train, c2.n_test),
        ("ch3 MLP", c3.dataset, None, c3.n_train, c3.n_test),
        ("ch3 ResNet", c3.resnet_dataset, None, c3.resnet_n_train, 100),  # the notebook asks for 100 test images
        ("ch4", c4.mlp.dataset, None, c4.mlp.n_train, c4.mlp.n_test),
        ("ch5", c5.mlp.dataset, None, c5.mlp.n_train, c5.mlp.n_test),
        ("ch6", c6.mlp.dataset, None, c6.mlp.n_train, c6.mlp.n_test),
        ("ch6 exercise", c6.mlp.dataset, tuple(c6.convex_classes), 200, 60),  # sizes written in the exercise cell
        ("ch7 text checkpoint", c7.bert.dataset, None, c7.bert.n_train, c7.bert.n_test),
        ("ch7 image checkpoint", c7.resnet.dataset, None, c7.resnet.n_train, c7.resnet.n_test),
        ("ch7 MLP", c7.mlp.dataset, None, c7.mlp.n_train, c7.mlp.n_test),
        ("ch8 text pool", c7.bert.dataset, None, None, c8.n_pool_text),
        ("ch8 image pool", c7.resnet.dataset, None, None, c8.n_pool_image),
        ("ch9", c9.dataset, tuple(c9.classes), c9.n_train, None),
    ]


def _panels(cfg) -> list[tuple[str, int, int]]:
    """``(what, size, drawn from)``: every panel a chapter draws from a loaded split."""
    c1, c2, c3, c4, c5, c6, c7, c8 = cfg.ch1, cfg.ch2, cfg.ch3, cfg.ch4, cfg.ch5, cfg.ch6, cfg.ch7, cfg.ch8
    out = [
        ("ch1 removed examples", c1.n_removed, c1.n_train),
        ("ch2 removed examples", c2.n_removed, c2.n_train),
        ("ch2 queries", c2.n_queries, c2.n_test),
        ("ch3 right-hand sides", c3.n_rhs, c3.n_test),
        ("ch3 ResNet HVP examples", c3.resnet_hvp_examples, c3.resnet_n_train),
        ("ch3 ResNet queries", c3.resnet_n_test, 100),
        ("ch4 removed examples", c4.n_removed, c4.mlp.n_train),
        ("ch5 perturbed examples", c5.n_perturbed, c5.mlp.n_train),
        ("ch6 typical + hard examples", 2 * c6.n_examples, c6.mlp.n_train),
        ("ch6 largest group", max(c6.group_sizes), c6.mlp.n_train),
    ]
    for name, n_train, n_test in (("text", c7.bert.n_train, c7.bert.n_test),
                                  ("image", c7.resnet.n_train, c7.resnet.n_test),
                                  ("MLP", c7.mlp.n_train, c7.mlp.n_test)):
        out += [(f"ch7 {name} panel z", max(c7.n_z, c7.sweep_n_z), n_train),
                (f"ch7 {name} queries", c7.n_queries, n_test),
                (f"ch7 {name} Hessian examples", c7.hessian_examples, n_train)]
    for name, task, pool in (("text", c7.bert, c8.n_pool_text), ("image", c7.resnet, c8.n_pool_image)):
        out += [(f"ch8 {name} mis-predicted + held-out", c8.n_wrong + c8.n_heldout, pool),
                (f"ch8 {name} largest selection k", max(c8.ks), task.n_train),
                (f"ch8 {name} Hessian examples", c8.hessian_examples, task.n_train)]
    return out


def _misfits(cfg) -> list[str]:
    bad = []
    for where, dataset, classes, n_train, n_test in _requests(cfg):
        have = split_sizes(dataset, classes)
        for part, want, avail in (("n_train", n_train, have[0]), ("n_test", n_test, have[1])):
            if want is not None and want > avail:
                bad.append(f"{where}: {part}={want} > {avail} in {dataset}" + (f" classes {classes}" if classes else ""))
    bad += [f"{what}: {size} > {pool}" for what, size, pool in _panels(cfg) if size > pool]
    for key, task, pool in (("text", cfg.ch7.bert, cfg.ch8.n_pool_text), ("image", cfg.ch7.resnet, cfg.ch8.n_pool_image)):
        ceiling = ACCURACY_CEILING.get(task.dataset)
        if ceiling is not None and cfg.ch8.n_wrong > math.floor((1 - ceiling) * pool):
            bad.append(f"ch8 {key}: n_wrong={cfg.ch8.n_wrong} mis-predicted examples are more than a checkpoint at "
                       f"{ceiling:.1%} accuracy leaves in a pool of {pool} ({math.floor((1 - ceiling) * pool)})")
    return bad


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_every_size_fits_its_data_set(profile):
    """The quick profile (which runs) validates the check; the full profile is what it is for."""
    bad = _misfits(iu.get_config(profile))
    assert not bad, f"{profile} profile sizes that do not fit their data:\n" + "\n".join(bad)


def test_the_check_catches_the_sizes_that_stopped_the_full_profile():
    """Chapter 7's 400 digits test examples (the pool holds 359), and a text pool beyond SST-2's 872."""
    import dataclasses

    cfg = iu.get_config("full")
    bad_mlp = dataclasses.replace(cfg.ch7.mlp, dataset="digits", n_test=400)
    bad_ch7 = dataclasses.replace(cfg, ch7=dataclasses.replace(cfg.ch7, mlp=bad_mlp))
    assert any("ch7 MLP: n_test=400 > 359" in m for m in _misfits(bad_ch7))
    bad_ch8 = dataclasses.replace(cfg, ch8=dataclasses.replace(cfg.ch8, n_pool_text=2000, n_heldout=1000))
    assert any("ch8 text pool: n_test=2000 > 872" in m for m in _misfits(bad_ch8))
    too_many = dataclasses.replace(cfg, ch8=dataclasses.replace(cfg.ch8, n_pool_text=872, n_wrong=100))
    assert any("ch8 text: n_wrong=100" in m for m in _misfits(too_many))


def test_the_official_sizes_are_the_ones_the_data_module_describes():
    described = available_datasets()
    assert "872 validation" in described["sst2"] and "50k train / 10k test" in described["cifar10"]


def test_every_load_dataset_call_of_the_chapters_is_mirrored():
    """A chapter that loads data one more time must add the call to ``_requests`` above."""
    calls = {}
    for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        calls[path.name[:2]] = len(re.findall(r"\bload_dataset\(", source))
    assert calls == LOAD_CALLS, "update _requests (and LOAD_CALLS) in this test for the chapters whose calls changed"

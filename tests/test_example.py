"""The bundled example: present, complete, and as good as its train.json says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hapi_dse.run import RUN_FILES, bundled_example, resolve_run

EXAMPLE = bundled_example()
pytestmark = pytest.mark.skipif(
    not (EXAMPLE / "model.json").is_file(), reason="bundled example not built (make example)"
)


def test_bundled_example_is_the_default_and_complete() -> None:
    run = resolve_run(None)
    assert run.path == EXAMPLE
    assert {p.name for p in EXAMPLE.iterdir()} >= set(RUN_FILES)
    assert sum(p.stat().st_size for p in EXAMPLE.iterdir()) <= 15 * 2**20
    assert run.num_blocks >= 15


def test_every_position_and_head_for_val_and_test() -> None:
    run = resolve_run(None)
    heads = run.model["arch"]["heads"]
    assert set(heads) >= {"linear", "conv", "mlp"}
    expected = {(p, h) for p in range(run.num_blocks) for h in heads}
    expected.add((run.num_blocks - 1, "final"))
    for split, n in (("val", 5_000), ("test", 10_000)):
        stats = run.stats(split)
        assert stats.n == n
        assert set(zip(stats.position.tolist(), stats.head.tolist(), strict=True)) == expected


def test_backbone_reaches_target_accuracy() -> None:
    """The final classifier's test accuracy, recomputed from the cached predictions."""
    stats = resolve_run(None).stats("test")
    final = stats.column(int(stats.position[-1]), "final")
    acc = float((stats.prediction[:, final] == stats.labels).mean())
    assert acc >= 0.925
    recorded = json.loads((EXAMPLE / "train.json").read_text())["backbone_test_acc"]
    assert acc == pytest.approx(recorded, abs=1e-9)


@pytest.mark.slow
def test_cached_predictions_match_the_weights_on_real_data() -> None:
    import torch

    from hapi_dse.data import load_splits

    run = resolve_run(None)
    train_json = json.loads((EXAMPLE / "train.json").read_text())
    data = load_splits("fashion-mnist", seed=train_json["seed"])
    net = run.load_model()
    stats = run.stats("test")
    np.testing.assert_array_equal(stats.labels, data.y["test"])
    with torch.no_grad():
        logits = torch.cat(
            [
                net.all_logits(torch.from_numpy(data.sets["test"].take(np.arange(i, i + 1000))))[0]
                for i in range(0, 10_000, 1000)
            ]
        )
    agree = (logits.argmax(-1).numpy() == stats.prediction).mean()
    assert agree >= 0.999  # float reassociation (channels-last training) may flip near-ties

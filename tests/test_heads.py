"""The exit head types beyond the first three (SDN mixed pooling, two-conv, depthwise-
separable): each trains in a run, exports to ONNX with the dynamo exporter, and gets a
profile row and a flops row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hapi_dse.models.heads import HEADS, MixedPool, sdn_head  # noqa: E402

NEW_HEADS = ("sdn", "conv2", "dws")


@pytest.mark.parametrize("head", NEW_HEADS)
@pytest.mark.parametrize("channels,size", [(16, 28), (32, 14), (64, 7), (8, 3)])
def test_new_head_exports_to_onnx_and_matches_torch(
    head: str, channels: int, size: int, tmp_path: Path
) -> None:
    from hapi_dse.onnx_tools import export_onnx

    torch.manual_seed(0)
    module = HEADS.create(head, channels=channels, height=size, width=size, num_classes=10)
    module.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        module(torch.randn(8, channels, size, size) * 2 + 0.5)
    module.eval()
    x = torch.randn(1, channels, size, size)
    report = export_onnx(
        module, (x,), tmp_path / f"{head}.onnx", input_names=["x"], output_names=["logits"]
    )
    assert max(report.max_abs_diff.values()) <= 1e-4


def test_mixed_pooling_mixes_max_and_average() -> None:
    pool = MixedPool(2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    with torch.no_grad():
        pool.alpha.fill_(50.0)  # sigmoid -> 1: max pooling
        torch.testing.assert_close(pool(x), torch.nn.functional.max_pool2d(x, 2))
        pool.alpha.fill_(-50.0)  # -> 0: average pooling
        torch.testing.assert_close(pool(x), torch.nn.functional.avg_pool2d(x, 2))


@pytest.mark.parametrize("size,side", [(28, 4), (14, 3), (7, 3), (4, 4), (2, 2)])
def test_sdn_head_reduces_the_map_to_about_four_by_four(size: int, side: int) -> None:
    fc = sdn_head(8, size, size, 10)[-1]
    assert fc.in_features == 8 * side * side


@pytest.fixture(scope="module")
def new_heads_run(tmp_path_factory: pytest.TempPathFactory, train_digits: Any) -> Path:
    out = tmp_path_factory.mktemp("runs") / "new-heads"
    return train_digits(out, heads=NEW_HEADS, limit=200)


def test_new_heads_get_exit_statistics_flops_and_profile_rows(
    new_heads_run: Path, tmp_path: Path, profile_host: Any
) -> None:
    from hapi_dse.profiling.table import load_table
    from hapi_dse.run import RunDir

    run = RunDir(new_heads_run)
    stats = run.stats("val")
    for head in NEW_HEADS:
        assert sum(1 for h in stats.head if h == head) == run.num_blocks
    flops = [r for r in run.flops() if r["segment"] == "head"]
    assert {r["head"] for r in flops} == set(NEW_HEADS) and all(r["flops"] > 0 for r in flops)
    profile_host(new_heads_run, tmp_path)
    rows = load_table("host", run.model_id, tmp_path).rows
    heads = rows[rows["segment"] == "head"]
    for head in NEW_HEADS:
        mine = heads[heads["head"] == head]
        assert len(mine) == run.num_blocks and (mine["latency_ms"] > 0).all()

"""An in-memory split is normalised when its images are read, bit for bit as normalising the
whole array at once (a command that reads 512 validation images of Fashion-MNIST no longer
normalises all 70,000: ``hapi export``'s inputs took 1.6-1.8 s in a new process, now 0.45 s)."""

from __future__ import annotations

import numpy as np

from hapi_dse.data.images import ArraySet, channel_stats


def _eager(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return (x - m) / s  # what ArraySet.normalised computed before, on the whole array


def test_lazy_normalisation_is_bit_identical_to_the_whole_array_at_once() -> None:
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (300, 3, 5, 4)).astype(np.float32) / np.float32(255.0)).astype(
        np.float32
    )
    labels = rng.integers(0, 10, 300).astype(np.int64)
    raw = ArraySet(x, labels)
    mean, std = channel_stats(raw, 10_000, 0)
    normed = raw.normalised(mean, std)
    whole = _eager(x, mean, std)
    assert normed.all().tobytes() == whole.tobytes()
    idx = rng.permutation(300)[:37]
    assert normed.take(idx).tobytes() == whole[idx].tobytes()
    sub = normed.subset(idx)
    assert sub.all().tobytes() == whole[idx].tobytes()
    assert np.array_equal(sub.labels, labels[idx])
    got = np.concatenate([xb for xb, _ in normed.batches(64)])
    assert got.tobytes() == whole.tobytes()
    assert raw.take(idx).tobytes() == x[idx].tobytes()  # the raw split is left as it was
    # statistics of a normalised split are those of its normalised images, not the raw ones
    m2, s2 = channel_stats(normed, 10_000, 0)
    m3, s3 = channel_stats(ArraySet(whole, labels), 10_000, 0)
    assert np.array_equal(m2, m3) and np.array_equal(s2, s3)
    assert not np.allclose(m2, mean)
    # normalising twice applies both, as it did on the array
    twice = normed.normalised(np.array([0.5, 0.25, 0.0]), np.array([2.0, 1.0, 4.0]))
    assert twice.all().tobytes() == _eager(whole, [0.5, 0.25, 0.0], [2.0, 1.0, 4.0]).tobytes()

"""Run a staged early-exit export (written by ``hapi export --format staged``).

Standalone: needs only numpy and onnxruntime (this file is copied next to the stage graphs).
Each stage graph computes its blocks, its exit head and the exit decision; this runtime
runs the stages in order and stops at the first stage whose decision fires. Thresholds and
temperatures are read from ``manifest.json`` (each stage graph takes its own as inputs): edit
them there, or call ``set_thresholds``. Not thread-safe: one instance per thread.

    from staged_runtime import StagedModel
    model = StagedModel("export_dir")
    logits, exit_index = model.run(x)   # x: float32 (1, C, H, W), normalised
    logits, exit_index = model.run(model.normalize(raw))   # raw: uint8 pixels

Command line: ``python staged_runtime.py input.npy`` prints the class and the exit taken.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

__all__ = ["StagedModel"]


_NP = {"tensor(float)": np.float32, "tensor(bool)": np.bool_, "tensor(int64)": np.int64}


def session_options(threads: int = 1) -> ort.SessionOptions:
    """The settings hapi profiles and checks a graph under (``threads`` intra-op threads,
    one inter-op thread, sequential, ``ORT_ENABLE_ALL``, errors only).

    A copy of hapi's own ``onnx_tools.session_options``: this file ships inside an export
    and runs with numpy and onnxruntime alone, so it cannot import hapi. hapi's tests hold
    the two to the same settings.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


#: A copy of hapi's own plain-name rule (``profiling/names.py``: ``NAME_RULE`` and
#: ``valid_name``): this file ships inside an export and cannot import hapi. hapi's
#: tests/test_plain_names.py holds the two copies to the same answers.
NAME_RULE = "letters, digits, '-', '_' or '.', not starting with '.'"


def valid_name(name: Any) -> bool:
    """A name that is safe as one path component: letters, digits, ``-``, ``_``, ``.``, not
    starting with ``.`` (so never ``.``, ``..``, a hidden file or a path)."""
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith(".")
        and all((c.isascii() and c.isalnum()) or c in "-_." for c in name)
    )


def stage_file(root: Path, name: Any) -> Path:
    """``root / name`` for a stage file named in the manifest; a name that is not a plain file
    name (a path, ``..``, a hidden file) could reach outside the export and is refused."""
    if not valid_name(name):
        raise ValueError(
            f"{root / 'manifest.json'}: stage file {name!r} is not a plain file name inside "
            f"{root} ({NAME_RULE}); expected a name like stage_0.onnx"
        )
    return root / name


class StagedModel:
    """The stages of one export, each an onnxruntime session, chained by I/O binding.

    Every buffer is bound once: the input image, each stage's features (an onnxruntime tensor
    that the next stage reads in place), its logits and its decision, and the thresholds. A
    call then costs one ``run_with_iobinding`` per stage run and nothing else.
    """

    def __init__(
        self, root: str | Path, *, threads: int = 1, providers: list[str] | None = None
    ) -> None:
        self.root = Path(root)
        self.manifest: dict[str, Any] = json.loads((self.root / "manifest.json").read_text())
        self.policy: str = self.manifest["policy"]
        self.patience: int = int(self.manifest.get("patience") or 0)
        opts = session_options(threads)
        stages = self.manifest["stages"]
        files = [stage_file(self.root, s.get("file")) for s in stages]  # all, before loading
        self._sessions = [
            ort.InferenceSession(str(f), opts, providers=providers or ["CPUExecutionProvider"])
            for f in files
        ]
        self.num_exits = len(self._sessions) - 1
        m = self.num_exits
        self._x = np.zeros(stages[0]["input_shape"], np.float32)
        self._thr = np.zeros((m, 1), np.float32)
        self._temp = np.ones((m, 1), np.float32)
        self._bindings = []
        self._logits: list[np.ndarray] = []
        self._flags: list[np.ndarray] = []
        self._keep: list[Any] = []  # OrtValues that must outlive the bindings
        prev = ort.OrtValue.ortvalue_from_numpy(self._x)
        for i, sess in enumerate(self._sessions):
            b = sess.io_binding()
            b.bind_ortvalue_input("x", prev)
            outs = {o.name: o for o in sess.get_outputs()}
            if i < m and self.policy != "patience":
                thr = ort.OrtValue.ortvalue_from_numpy(self._thr[i])
                temp = ort.OrtValue.ortvalue_from_numpy(self._temp[i])
                b.bind_ortvalue_input("threshold", thr)
                b.bind_ortvalue_input("temperature", temp)
                self._keep += [thr, temp]
            self._logits.append(self._bind(b, outs["logits"]))
            if i < m:
                flag = "prediction" if self.policy == "patience" else "fire"
                self._flags.append(self._bind(b, outs[flag]))
                feats = ort.OrtValue.ortvalue_from_shape_and_type(
                    outs["features"].shape, np.float32
                )
                b.bind_ortvalue_output("features", feats)
                self._keep.append(feats)
                prev = feats
            self._bindings.append(b)
        self.set_thresholds(self.manifest["thresholds"], self.manifest["temperatures"])

    @staticmethod
    def _bind(binding: Any, out: Any) -> np.ndarray:
        buf = np.zeros(out.shape, _NP[out.type])
        binding.bind_output(out.name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        return buf

    def set_thresholds(
        self, thresholds: list[float], temperatures: list[float] | None = None
    ) -> None:
        """Change the exit thresholds (and temperatures) of this runtime instance."""
        temps = self.manifest["temperatures"] if temperatures is None else temperatures
        if len(thresholds) != self.num_exits or len(temps) != self.num_exits:
            raise ValueError(f"expected {self.num_exits} thresholds and temperatures")
        self._thr[:, 0] = np.asarray(thresholds, np.float32)  # in place: already bound
        self._temp[:, 0] = np.asarray(temps, np.float32)

    def normalize(self, raw: np.ndarray, scale: float = 255.0) -> np.ndarray:
        """A raw image (pixels 0..``scale``, e.g. uint8; ``(C, H, W)``, or ``(H, W, C)`` as
        image libraries give it) as the stage graphs take it: float32 ``(1, C, H, W)``, scaled
        to 0..1 and normalised with the training split's mean and std recorded in the
        manifest (``normalization``: a number, or one per channel)."""
        norm = self.manifest.get("normalization") or {"mean": 0.0, "std": 1.0}
        x = np.asarray(raw, np.float32)
        c = self._x.shape[1]
        if x.ndim == 3 and x.shape[-1] == c and x.shape[0] != c:  # (H, W, C)
            x = x.transpose(2, 0, 1)
        x = x.reshape(self._x.shape)
        mean = np.asarray(norm["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(norm["std"], np.float32).reshape(1, -1, 1, 1)
        return ((x / np.float32(scale) - mean) / std).astype(np.float32)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Logits ``(1, classes)`` of the exit taken, and its index (``num_exits`` = final).

        ``x`` is a float32 image normalised as in training; a raw integer image (uint8
        pixels) is refused, as the graphs would read its 0..255 values as normalised ones:
        pass ``model.normalize(raw)``."""
        if getattr(x, "dtype", None) is None or x.dtype.kind != "f":  # ~0.1 us per call
            x = np.asarray(x)
        if x.dtype.kind != "f":
            norm = self.manifest.get("normalization") or {}
            raise ValueError(
                f"x is {x.dtype}: the stages take float32 images scaled to 0..1 and normalised "
                f"(mean {norm.get('mean')}, std {norm.get('std')}, from manifest.json); "
                "pass model.normalize(raw_pixels)"
            )
        self._x[...] = x
        sessions, bindings, flags = self._sessions, self._bindings, self._flags
        last = self.num_exits
        if self.policy == "patience":
            p = self.patience
            window: list[int] = []
            for i in range(last):
                sessions[i].run_with_iobinding(bindings[i])
                window.append(int(flags[i][0]))
                if len(window) >= p and len(set(window[-p:])) == 1:
                    return self._logits[i].copy(), i
        else:
            for i in range(last):
                sessions[i].run_with_iobinding(bindings[i])
                if flags[i][0]:
                    return self._logits[i].copy(), i
        sessions[last].run_with_iobinding(bindings[last])
        return self._logits[last].copy(), last

    def predict(self, x: np.ndarray) -> tuple[int, int]:
        """The predicted class and the exit index."""
        logits, exit_index = self.run(x)
        return int(np.argmax(logits)), exit_index


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: python staged_runtime.py INPUT.npy  (float32 (1, C, H, W), normalised as "
            "in training)",
            file=sys.stderr,
        )
        return 2
    model = StagedModel(Path(__file__).resolve().parent)
    x = np.load(argv[1], allow_pickle=False)
    try:
        cls, idx = model.predict(x)
    except ValueError as e:  # raw pixels: say how to normalise them
        print(f"{argv[1]}: {e}", file=sys.stderr)
        return 2
    names = model.manifest.get("classes") or []
    label = names[cls] if cls < len(names) else str(cls)
    print(json.dumps({"class": cls, "label": label, "exit_index": idx}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

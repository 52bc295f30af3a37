"""Write the frozen files of tests/data that come from a real run of mmal.

Run from the repository root, with the mmal whose files are to be frozen::

    python -m tests.data.make_frozen OUT_FOLDER

It trains round 0 of a tiny workspace over the built-in UCI data (two MLP
vector modalities of width 16, one epoch), selects 2 samples at random from
``tests/data/cache-v1.h5`` and imports labels for them, then copies
``model.pt``, ``metrics.json``, the selection's diagnostics and ``labels.json``
into OUT_FOLDER. The ``*-v1`` files were written by mmal 0.1.0 at commit
94f556b, before the common stamp (docs/files.md); they must keep loading.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).parent


def main(out: Path) -> None:
    from mmal.select import select
    from mmal.train import train_round
    from mmal.workspace import round_paths
    from tests.models.tiny import make_workspace

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ws = make_workspace(tmp, "uci", overrides={
            "train": {"epochs": 1, "batch_size": 16}, "al": {"initial_budget": 20}})
        train_round(ws, 0, device="cpu", progress=False)
        paths = round_paths(ws, 0)
        shutil.copy(paths.model, out / "model-v1.pt")
        shutil.copy(paths.metrics, out / "metrics-v1.json")
        select(DATA / "cache-v1.h5", "random", 2, seed=0, out=tmp / "pick.json")
        shutil.copy(tmp / "pick.diagnostics.npz", out / "diagnostics-v1.npz")
        _labels(ws, out)


def _labels(ws: Path, out: Path) -> None:
    """labels.json of round 0 after importing two rows of a CSV (its absolute path made relative)."""
    from mmal.annotation import import_labels
    from mmal.workspace import read_labeled, round_paths

    ids = read_labeled(ws, 0)[:2]
    csv = ws / "filled.csv"
    csv.write_text("id,label\n" + "".join(f"{i},{k}\n" for i, k in zip(ids, ("3", "7"),
                                                                        strict=True)))
    import_labels(ws, 0, csv)
    document = (round_paths(ws, 0).root / "labels.json").read_text()
    (out / "labels-v1.json").write_text(document.replace(str(csv.resolve()), "filled.csv"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

#!/usr/bin/env bash
# Build devdata/ (git-ignored) from ../shared: the face subset and models that `hyperobf eval --scale full`
# needs, small enough (<= ~50 MB) to travel with the working tree to a GPU machine.
#
#   bash scripts/make_devdata.sh [SHARED_DIR] [DEST]      (defaults: ../shared, devdata)
#
# Faces: exactly the files of the full-scale split (seed 0) — FR targets + distractors from celeba299,
# the attacker's public faces (leftover celeba299 identities), the PSP's glint24 subset — copied unmodified.
# Models: mobilefacenet.onnx and dlib_resnet_faceapi/. Research-use data: never commit devdata/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${1:-$REPO/../shared}"
DEST="${2:-$REPO/devdata}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[ -d "$SHARED/data/faces" ] || { echo "error: $SHARED/data/faces not found" >&2; exit 1; }
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/faces" "$DEST.tmp/models"
PYTHONPATH="$REPO/src" "$PY" - "$SHARED/data/faces" "$DEST.tmp/faces" <<'EOF'
import shutil, sys
from pathlib import Path
from hyperobf.eval.scales import get_scale
from hyperobf.eval.splits import list_identities, make_split

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
sc = get_scale("full")
split = make_split(src, sc, 0)
files = []
for t, v in split["targets"].items():
    files += [f"{split['fr_source']}/{t}/{f}" for f in v["train"] + v["test"]]
for d, v in split["distractors"].items():
    files += [f"{split['fr_source']}/{d}/{f}" for f in v["train"] + v["val"]]
files += [f"{split['public_source']}/{f}" for f in split["public"]["files"]]
psp = list_identities(src / split["psp_source"])
for ident in split["psp"]["identities"]:
    files += [f"{split['psp_source']}/{ident}/{f}" for f in psp[ident][: sc.psp_per_identity]]
for f in files:
    (dst / f).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / f, dst / f)
print(f"copied {len(files)} face images")
EOF
cp "$SHARED/models/mobilefacenet.onnx" "$DEST.tmp/models/"
cp -r "$SHARED/models/dlib_resnet_faceapi" "$DEST.tmp/models/"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
du -sh "$DEST" "$DEST"/faces/* "$DEST"/models

"""Face detection for face-region mode: an SCRFD-style ONNX detector run with onnxruntime.

The detector (e.g. ``scrfd_2.5g_bnkps.onnx``) takes one (1, 3, H, W) RGB image normalised as
(x − 127.5) / 128 with H, W multiples of 32, and returns, for each stride s in (8, 16, 32),
three tensors over its anchors: scores (A, 1), box distances (A, 4) and keypoint offsets (A, 10),
A = (H/s)·(W/s)·2 (two anchors per location). Anchor decoding and NMS are done here in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .session import SessionConfig, make_session

STRIDES = (8, 16, 32)
ANCHORS_PER_LOCATION = 2


class DetectorError(ValueError):
    """A detector file we cannot use (one-line reason)."""


@dataclass(frozen=True)
class Face:
    """One detected face in the coordinates of the image it was detected on."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    keypoints: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression. boxes (K, 4) x1y1x2y2, scores (K,) -> kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


def anchor_centers(height: int, width: int, stride: int) -> np.ndarray:
    """(H/s · W/s · 2, 2) anchor centres (x, y) in input pixels, row-major, each location twice."""
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centers = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, ANCHORS_PER_LOCATION, axis=0)


def decode(outputs: list[np.ndarray], height: int, width: int, score_threshold: float,
           iou_threshold: float) -> list[Face]:
    """Raw per-stride outputs of one image -> faces (input-pixel coordinates), best first.

    The outputs are matched to strides by shape (last dim 1/4/10; more anchors = finer stride),
    not by name or order, so re-exported detectors with other tensor names still decode.
    """
    by_kind: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
    for o in outputs:
        o = np.asarray(o, np.float32).reshape(-1, o.shape[-1])
        if o.shape[-1] not in by_kind:
            raise DetectorError(f"unexpected detector output shape {o.shape}")
        by_kind[o.shape[-1]].append(o)
    if any(len(v) != len(STRIDES) for v in by_kind.values()):
        raise DetectorError("detector outputs are not SCRFD-style (score/box/keypoints for 3 strides)")
    boxes, scores, kps = [], [], []
    for kind in by_kind.values():
        kind.sort(key=lambda a: -a.shape[0])  # stride 8 has the most anchors
    for i, stride in enumerate(STRIDES):
        s, d, k = by_kind[1][i][:, 0], by_kind[4][i], by_kind[10][i]
        centers = anchor_centers(height, width, stride)  # (A, 2)
        if centers.shape[0] != s.shape[0]:
            raise DetectorError(f"stride {stride}: {s.shape[0]} scores for {centers.shape[0]} anchors")
        sel = s >= score_threshold
        if not sel.any():
            continue
        c, d, k = centers[sel], d[sel] * stride, k[sel].reshape(-1, 5, 2) * stride
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1))  # distances (l, t, r, b) -> x1y1x2y2
        kps.append(c[:, None, :] + k)
        scores.append(s[sel])
    if not boxes:
        return []
    b, sc, kp = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
    return [Face(tuple(map(float, b[i])), float(sc[i]), kp[i]) for i in nms(b, sc, iou_threshold)]


class FaceDetector:
    """An SCRFD-style ONNX face detector. ``detect(rgb)`` -> faces in that image's pixels."""

    def __init__(self, path: str | Path, config: SessionConfig | None = None, det_size: int = 640,
                 score_threshold: float = 0.5, iou_threshold: float = 0.4) -> None:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DetectorError(f"cannot read detector {path}: {e.strerror or e}") from None
        try:
            self.session = make_session(data, config or SessionConfig())
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise DetectorError(f"not a loadable ONNX detector: {path.name} ({type(e).__name__})") from None
        ins = self.session.get_inputs()
        if len(ins) != 1 or len(ins[0].shape) != 4 or len(self.session.get_outputs()) != 9:
            raise DetectorError(f"{path.name}: not an SCRFD-style detector (1 input, 9 outputs with keypoints)")
        self.input_name = ins[0].name
        shape = ins[0].shape
        # A detector exported with a fixed input size must be fed exactly that size.
        self.fixed = (shape[2], shape[3]) if all(isinstance(v, int) for v in shape[2:]) else None
        self.det_size = det_size
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.path = path

    def detect(self, img: Image.Image) -> list[Face]:
        """Faces in an RGB Pillow image, in its pixel coordinates, best first.

        The image is resized (aspect kept) so its longer side is ``det_size`` and padded at the
        bottom/right to multiples of 32 (or to the detector's fixed size).
        """
        w, h = img.size
        if self.fixed:
            th, tw = self.fixed
            scale = min(th / h, tw / w)
        else:
            scale = self.det_size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if self.fixed:
            ph, pw = self.fixed
        else:
            ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        small = np.asarray(img.resize((nw, nh), Image.BILINEAR, reducing_gap=2.0), np.float32)  # (nh, nw, 3)
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :nh, :nw] = ((small - 127.5) / 128.0).transpose(2, 0, 1)
        outs = self.session.run(None, {self.input_name: x})
        faces = decode(outs, ph, pw, self.score_threshold, self.iou_threshold)
        sx, sy = w / nw, h / nh  # undo the resize exactly (rounding kept per axis)
        return [Face((f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy), f.score,
                     f.keypoints * np.array([sx, sy], np.float32)) for f in faces]

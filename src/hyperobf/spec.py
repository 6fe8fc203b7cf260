"""MaskNet architecture spec: the single source of truth.

The HyperNet generates weights for exactly the parameters named here, the exporter
bakes the spec into every model file's metadata, and the device runtime reads it back.
Pure Python (no torch): the on-device runtime imports this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

SPEC_FORMAT = 1


@dataclass(frozen=True)
class LayerSpec:
    """One convolution of the MaskNet.

    ``upsample`` > 1 means nearest-neighbour upsampling by that factor *before* the conv
    (used by decoder-style structures); ``stride`` > 1 downsamples.
    """

    name: str
    in_ch: int
    out_ch: int
    kernel: int = 3
    stride: int = 1
    upsample: int = 1
    act: str = "relu"  # "relu" | "none"

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_ch, self.in_ch, self.kernel, self.kernel)

    @property
    def bias_shape(self) -> tuple[int]:
        return (self.out_ch,)


@dataclass(frozen=True)
class MaskNetSpec:
    """A fully-convolutional perturbation generator.

    forward(x): h = layers(x); delta = rho_pixel * tanh(h); y = clamp(x + delta, 0, 1).
    x is RGB in [0, 1], shape (B, 3, H, W); H and W must be divisible by ``stride_product``.
    """

    name: str
    layers: tuple[LayerSpec, ...]
    rho_pixel: float = 0.03
    input_size: int = 112  # working resolution (ArcFace-aligned crops)
    in_channels: int = 3

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("MaskNetSpec needs at least one layer")
        ch = self.in_channels
        names = set()
        for layer in self.layers:
            if layer.in_ch != ch:
                raise ValueError(f"layer {layer.name}: in_ch {layer.in_ch} != previous out_ch {ch}")
            if layer.act not in ("relu", "none"):
                raise ValueError(f"layer {layer.name}: unknown activation {layer.act!r}")
            if layer.name in names:
                raise ValueError(f"duplicate layer name {layer.name!r}")
            names.add(layer.name)
            ch = layer.out_ch
        if ch != self.in_channels:
            raise ValueError(f"last layer must output {self.in_channels} channels, got {ch}")
        if self.layers[-1].act != "none":
            raise ValueError("last layer must have act='none' (tanh is applied by the MaskNet)")
        if not 0 < self.rho_pixel <= 1:
            raise ValueError("rho_pixel must be in (0, 1]")
        up = down = 1
        for layer in self.layers:
            up *= layer.upsample
            down *= layer.stride
        if up != down:
            raise ValueError("strides and upsampling must cancel (output size == input size)")

    # --- parameters -------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Ordered ``{param_name: shape}``; names match the torch MaskNet's state_dict."""
        out: dict[str, tuple[int, ...]] = {}
        for layer in self.layers:
            out[f"{layer.name}.weight"] = layer.weight_shape
            out[f"{layer.name}.bias"] = layer.bias_shape
        return out

    def num_params(self) -> int:
        total = 0
        for shape in self.param_shapes().values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total

    @property
    def stride_product(self) -> int:
        p = 1
        for layer in self.layers:
            p *= layer.stride
        return p

    # --- serialisation ----------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(l) for l in self.layers]
        d["spec_format"] = SPEC_FORMAT
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace) — the digest is taken over this."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "MaskNetSpec":
        d = dict(d)
        fmt = d.pop("spec_format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise ValueError(f"unsupported spec_format {fmt} (this build reads {SPEC_FORMAT})")
        layers = tuple(LayerSpec(**l) for l in d.pop("layers"))
        return cls(layers=layers, **d)

    @classmethod
    def from_json(cls, text: str) -> "MaskNetSpec":
        return cls.from_dict(json.loads(text))

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def _thesis_structure(name: str, c1: int, c2: int, fc: int, rho_pixel: float) -> MaskNetSpec:
    # Thesis §5.4.3 structures made fully convolutional: conv3x3 -> conv3x3 -> per-pixel FC
    # (1x1 conv) -> per-pixel projection to RGB.
    return MaskNetSpec(
        name=name,
        rho_pixel=rho_pixel,
        layers=(
            LayerSpec("conv1", 3, c1, 3),
            LayerSpec("conv2", c1, c2, 3),
            LayerSpec("fc", c2, fc, 1),
            LayerSpec("proj", fc, 3, 1, act="none"),
        ),
    )


def _encoder_decoder(name: str, rho_pixel: float) -> MaskNetSpec:
    # Structure D: larger receptive field (strided encoder, upsampling decoder), still
    # fully convolutional and a few tens of thousands of parameters.
    return MaskNetSpec(
        name=name,
        rho_pixel=rho_pixel,
        layers=(
            LayerSpec("enc1", 3, 16, 3, stride=2),
            LayerSpec("enc2", 16, 32, 3, stride=2),
            LayerSpec("enc3", 32, 48, 3, stride=2),
            LayerSpec("mid", 48, 48, 3),
            LayerSpec("dec1", 48, 32, 3, upsample=2),
            LayerSpec("dec2", 32, 16, 3, upsample=2),
            LayerSpec("dec3", 16, 16, 3, upsample=2),
            LayerSpec("proj", 16, 3, 1, act="none"),
        ),
    )


def builtin_spec(name: str, rho_pixel: float = 0.03) -> MaskNetSpec:
    """Named structures: A, B, C (thesis §5.4.3), D (encoder-decoder), tiny (tests/CI)."""
    key = name.upper()
    if key == "A":
        return _thesis_structure("A", 16, 32, 256, rho_pixel)
    if key == "B":
        return _thesis_structure("B", 16, 32, 128, rho_pixel)
    if key == "C":
        return _thesis_structure("C", 32, 32, 256, rho_pixel)
    if key == "D":
        return _encoder_decoder("D", rho_pixel)
    if key == "TINY":
        return _thesis_structure("tiny", 4, 8, 16, rho_pixel)
    raise ValueError(f"unknown MaskNet structure {name!r}; choose one of {', '.join(BUILTIN)}")


BUILTIN = ("A", "B", "C", "D", "tiny")

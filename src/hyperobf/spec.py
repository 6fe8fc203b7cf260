"""MaskNet architecture spec: the single source of truth.

The HyperNet generates weights for exactly the parameters named here, the exporter
bakes the spec into every model file's metadata, and the device runtime reads it back.
Pure Python (no torch): the on-device runtime imports this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Callable

# Format 1: plain chains (A, B, C, D, tiny). Format 2: some layer has a skip input (``concat``).
# A spec is written in the lowest format that expresses it, so every format-1 spec's JSON (and the
# digest baked into models already issued) is unchanged, and an older build that reads only format 1
# refuses a skip-connection spec with a one-line "unsupported spec_format 2" instead of a TypeError.
SPEC_FORMAT = 2  # the newest format this build reads and writes


@dataclass(frozen=True)
class LayerSpec:
    """One convolution of the MaskNet.

    ``upsample`` > 1 means nearest-neighbour upsampling by that factor *before* the conv
    (used by decoder-style structures); ``stride`` > 1 downsamples.

    ``concat`` names an earlier layer whose (activated) output is concatenated on the channel
    axis after the upsampling, before the conv: input = [previous output (upsampled), concat
    output], so ``in_ch`` counts both. None (the default) is a plain chain link and is left out
    of the serialised spec.
    """

    name: str
    in_ch: int
    out_ch: int
    kernel: int = 3
    stride: int = 1
    upsample: int = 1
    act: str = "relu"  # "relu" | "none"
    concat: str | None = None  # skip input: an earlier layer's name

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_ch, self.in_ch, self.kernel, self.kernel)

    @property
    def bias_shape(self) -> tuple[int]:
        return (self.out_ch,)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["concat"] is None:  # keeps format-1 JSON byte-identical to before skips existed
            del d["concat"]
        return d


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
        if not 0 < self.rho_pixel <= 1:
            raise ValueError("rho_pixel must be in (0, 1]")
        ch, scale = self.in_channels, Fraction(1)  # previous output's channels and size / input size
        seen: dict[str, tuple[int, Fraction]] = {}  # earlier layer -> (out_ch, output scale)
        for i, layer in enumerate(self.layers):
            if layer.name in seen:
                raise ValueError(f"duplicate layer name {layer.name!r}")
            if layer.act not in ("relu", "none"):
                raise ValueError(f"layer {layer.name}: unknown activation {layer.act!r}")
            if layer.kernel < 1 or layer.stride < 1 or layer.upsample < 1 or layer.out_ch < 1:
                raise ValueError(f"layer {layer.name}: kernel, stride, upsample and out_ch must be >= 1")
            scale *= layer.upsample
            want = ch
            if layer.concat is not None:
                src = seen.get(layer.concat)
                if src is None:
                    raise ValueError(f"layer {layer.name}: concat {layer.concat!r} is not an earlier layer")
                if layer.concat == self.layers[i - 1].name:
                    raise ValueError(f"layer {layer.name}: concat {layer.concat!r} is already its input")
                if src[1] != scale:
                    raise ValueError(f"layer {layer.name}: concat {layer.concat!r} is at {src[1]} of the input size, "
                                     f"its input at {scale} (skip resolution mismatch)")
                want += src[0]
            if layer.in_ch != want:
                extra = f" + concat {layer.concat}'s out_ch" if layer.concat else ""
                raise ValueError(f"layer {layer.name}: in_ch {layer.in_ch} != previous out_ch {ch}{extra} (= {want})")
            scale /= layer.stride
            ch = layer.out_ch
            seen[layer.name] = (ch, scale)
        if ch != self.in_channels:
            raise ValueError(f"last layer must output {self.in_channels} channels, got {ch}")
        if self.layers[-1].act != "none":
            raise ValueError("last layer must have act='none' (tanh is applied by the MaskNet)")
        if scale != 1:
            raise ValueError("strides and upsampling must cancel (output size == input size)")

    @property
    def spec_format(self) -> int:
        """1 for plain chains, 2 when a layer has a skip input (see SPEC_FORMAT)."""
        return 2 if any(layer.concat for layer in self.layers) else 1

    @property
    def skip_sources(self) -> frozenset[str]:
        """Names of the layers whose outputs a later layer concatenates (kept alive in a forward pass)."""
        return frozenset(layer.concat for layer in self.layers if layer.concat)

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
        d["layers"] = [l.to_dict() for l in self.layers]
        d["spec_format"] = self.spec_format
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace) — the digest is taken over this."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "MaskNetSpec":
        d = dict(d)
        fmt = d.pop("spec_format", 1)
        if fmt not in range(1, SPEC_FORMAT + 1):
            raise ValueError(f"unsupported spec_format {fmt} (this build reads 1 to {SPEC_FORMAT})")
        layers = tuple(LayerSpec(**l) for l in d.pop("layers"))
        spec = cls(layers=layers, **d)
        if spec.spec_format != fmt:  # one canonical JSON per spec, so one digest
            raise ValueError(f"spec_format {fmt} does not match its layers (needs {spec.spec_format})")
        return spec

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


def _unet(name: str, rho_pixel: float, c1: int, c2: int, c3: int, d2: int, d1: int) -> MaskNetSpec:
    # Encoder-decoder with skip connections (U-Net-like), fully convolutional. Shapes at 112²:
    #   enc1 (c1, 112²) -> enc2 (c2, 56²) -> enc3 (c3, 28²) -> mid (c3, 28²)
    #   dec2: up x2 (c3, 56²) ++ enc2 -> (d2, 56²);  dec1: up x2 (d2, 112²) ++ enc1 -> (d1, 112²)
    #   proj (3, 112²). The widest layers sit at 28², where a parameter costs 1/16 of the FLOPs
    #   it would at full resolution; the skips carry the full-resolution detail back to the output.
    return MaskNetSpec(
        name=name,
        rho_pixel=rho_pixel,
        layers=(
            LayerSpec("enc1", 3, c1, 3),
            LayerSpec("enc2", c1, c2, 3, stride=2),
            LayerSpec("enc3", c2, c3, 3, stride=2),
            LayerSpec("mid", c3, c3, 3),
            LayerSpec("dec2", c3 + c2, d2, 3, upsample=2, concat="enc2"),
            LayerSpec("dec1", d2 + c1, d1, 3, upsample=2, concat="enc1"),
            LayerSpec("proj", d1, 3, 1, act="none"),
        ),
    )


# The builtin structures: name -> spec at a given ρ_pixel. Adding a structure is one entry here.
STRUCTURES: dict[str, Callable[[float], MaskNetSpec]] = {
    "A": lambda rho: _thesis_structure("A", 16, 32, 256, rho),  # thesis §5.4.3
    "B": lambda rho: _thesis_structure("B", 16, 32, 128, rho),
    "C": lambda rho: _thesis_structure("C", 32, 32, 256, rho),
    "D": lambda rho: _encoder_decoder("D", rho),
    "U": lambda rho: _unet("U", rho, c1=16, c2=64, c3=128, d2=32, d1=16),  # ~0.94 GFLOP per 112² face
    "U-small": lambda rho: _unet("U-small", rho, c1=16, c2=32, c3=64, d2=32, d1=16),  # ~0.47 GFLOP
    "tiny": lambda rho: _thesis_structure("tiny", 4, 8, 16, rho),  # tests / CI
}
BUILTIN = tuple(STRUCTURES)


def builtin_spec(name: str, rho_pixel: float = 0.03) -> MaskNetSpec:
    """A named structure from :data:`STRUCTURES` (names are case-insensitive)."""
    key = {k.upper(): k for k in STRUCTURES}.get(name.upper())
    if key is None:
        raise ValueError(f"unknown MaskNet structure {name!r}; choose one of {', '.join(BUILTIN)}")
    return STRUCTURES[key](rho_pixel)


# --- cost ---------------------------------------------------------------------------------------

def layer_output_sizes(spec: MaskNetSpec, height: int | None = None, width: int | None = None) -> list[tuple[int, int]]:
    """(H, W) of each layer's output for an input of height x width (default input_size²),
    following the convs' arithmetic: upsample first, then floor((s + 2p - k) / stride) + 1."""
    h = height or spec.input_size
    w = width or spec.input_size
    out = []
    for layer in spec.layers:
        h, w = h * layer.upsample, w * layer.upsample
        p, k, st = layer.padding, layer.kernel, layer.stride
        h, w = (h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1
        out.append((h, w))
    return out


def flops(spec: MaskNetSpec, height: int | None = None, width: int | None = None) -> int:
    """Floating-point operations of one forward pass on one image (default input_size²).

    Counts each conv's multiply-adds twice (out_h·out_w·out_ch·in_ch·k², ×2), which is what the
    cost is made of: biases, ReLU, nearest upsampling, concatenation, tanh and the clip add
    O(pixels·channels) and are left out (< 1% for every builtin structure).
    """
    total = 0
    for layer, (h, w) in zip(spec.layers, layer_output_sizes(spec, height, width)):
        total += 2 * h * w * layer.out_ch * layer.in_ch * layer.kernel * layer.kernel
    return total

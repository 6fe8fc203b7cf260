"""Named protection presets (like Fawkes's low / mid / high, plus max): one DSSIM budget each.

The single table both sides read: ``hyperobf eval frontier`` measures every preset's budget and
writes the numbers into the protection record under the preset's name, and ``hyperobf protect
--preset`` enforces the preset's budget on the device (per face crop, after the net and any
refinement steps: the budget rule of :mod:`hyperobf.eval.limit`). Pure Python (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    rho: float  # per-image DSSIM budget on the 8-bit 112² face (the frontier's budget rule)
    note: str


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("low", 0.007, "least visible; the frontier's smallest budget"),
    Preset("mid", 0.012, "between the two"),
    Preset("high", 0.017, "Fawkes's highest budget; visible on close inspection"),
    # where the thesis's J1 moves a recogniser trained on the uploads most (results/frontier_resnet/strong)
    Preset("max", 0.025, "strongest; visible"),
)}


def preset_choices() -> str:
    """``low (0.007) | mid (0.012) | ...``: the table as help text."""
    return " | ".join(f"{p.name} ({p.rho:g})" for p in PRESETS.values())


def preset_for(rho: float) -> str | None:
    """The preset whose budget is ``rho`` (None if none is)."""
    return next((p.name for p in PRESETS.values() if abs(p.rho - rho) < 1e-12), None)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]

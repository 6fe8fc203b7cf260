"""`hyperobf structures`: the builtin MaskNet structures with their size and cost (torch-free).

Cost is ``spec.flops`` at the working size (112² faces): convolution multiply-adds ×2, which is
what a MaskNet's latency is made of on a CPU (benchmarks/results/apply_structures.json).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import fail
from ..spec import BUILTIN, MaskNetSpec, builtin_spec, flops


def describe(spec: MaskNetSpec) -> dict:
    """One structure's summary row (also what ``--json`` prints)."""
    return {
        "name": spec.name,
        "layers": len(spec.layers),
        "skips": [f"{l.concat}->{l.name}" for l in spec.layers if l.concat],
        "params": spec.num_params(),
        "gflop_per_face": round(flops(spec) / 1e9, 4),
        "input_size": spec.input_size,
        "size_multiple": spec.stride_product,  # H and W must be multiples of this
        "spec_format": spec.spec_format,
        "spec_digest": spec.digest(),
    }


def structures(
    rho_pixel: Annotated[float, typer.Option(help="Per-pixel clip the specs are built with (it enters the digest).")] = 0.03,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
) -> None:
    """List the builtin MaskNet structures: parameters, GFLOP per 112² face, skips, spec digest."""
    if not 0 < rho_pixel <= 1:
        fail("--rho-pixel must be in (0, 1]")
    rows = [describe(builtin_spec(name, rho_pixel)) for name in BUILTIN]
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"{'structure':<9} {'params':>8} {'GFLOP/face':>10} {'multiple':>8}  {'spec digest':<16}  skips")
    for r in rows:
        print(f"{r['name']:<9} {r['params']:>8,} {r['gflop_per_face']:>10.3f} {r['size_multiple']:>8}  "
              f"{r['spec_digest'][:16]}  {', '.join(r['skips']) or '-'}")
    print(f"(GFLOP: conv multiply-adds x2 per {rows[0]['input_size']}² face; digest: sha256 of the spec JSON "
          f"at rho_pixel {rho_pixel:g}, first 16 hex digits; --json for all of it)")

"""onnxruntime session options shared by the MaskNet and the face detector.

Defaults are the ones benchmarks/bench_apply.py found best for this tiny net on CPU:
sequential execution, full graph optimisation, one inter-op thread. Weights are never
overridden with ``SessionOptions.add_initializer`` (at ORT_ENABLE_ALL it silently gives
wrong outputs with onnxruntime 1.32).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnxruntime as ort

# Short names accepted on the command line -> onnxruntime execution providers.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}
OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def available_providers() -> list[str]:
    """Short names (cpu, cuda, ...) of the execution providers this onnxruntime build has; others by full name."""
    short = {v: k for k, v in PROVIDERS.items()}
    names = [short.get(p, p) for p in ort.get_available_providers()]
    return sorted(names, key=lambda n: (n not in PROVIDERS, n))  # short names first


@dataclass(frozen=True)
class SessionConfig:
    """How to run a model. threads=0 lets onnxruntime choose (one per physical core)."""

    threads: int = 0
    providers: tuple[str, ...] = ("cpu",)
    optimization: str = "all"  # disable | basic | extended | all
    parallel: bool = False  # ORT_PARALLEL execution mode (no gain on a chain of convs)
    spinning: bool | None = None  # intra-op thread spinning; None = onnxruntime's default

    def __post_init__(self) -> None:
        if self.optimization not in OPT_LEVELS:
            raise ValueError(f"unknown optimization level {self.optimization!r}; choose {', '.join(OPT_LEVELS)}")
        if self.threads < 0:
            raise ValueError("threads must be >= 0")
        known = set(PROVIDERS) | set(ort.get_all_providers())
        for p in self.providers:
            if p.lower() not in PROVIDERS and p not in known:
                raise ValueError(f"unknown execution provider {p!r}; available here: {', '.join(available_providers())}")

    def resolved_providers(self) -> list[str]:
        """Requested providers that this onnxruntime build has, CPU always last as the fallback."""
        avail = set(ort.get_available_providers())
        out = []
        for p in self.providers:
            name = PROVIDERS.get(p.lower(), p)
            if name in avail and name not in out:
                out.append(name)
        if "CPUExecutionProvider" not in out:
            out.append("CPUExecutionProvider")
        return out

    def missing_providers(self) -> list[str]:
        avail = set(ort.get_available_providers())
        return [p for p in self.providers if PROVIDERS.get(p.lower(), p) not in avail]


def session_options(cfg: SessionConfig) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # onnxruntime warnings would break the one-line error contract
    opts.graph_optimization_level = OPT_LEVELS[cfg.optimization]
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if cfg.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    if cfg.threads:
        opts.intra_op_num_threads = cfg.threads
    opts.inter_op_num_threads = 1
    if cfg.spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.spinning else "0")
    return opts


def make_session(model: bytes, cfg: SessionConfig) -> ort.InferenceSession:
    """A session over model bytes (ONNX or ORT format; onnxruntime tells them apart by content)."""
    return ort.InferenceSession(model, sess_options=session_options(cfg), providers=cfg.resolved_providers())

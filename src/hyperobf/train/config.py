"""Training configuration: a dataclass loaded from TOML, saved resolved beside outputs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..toml_config import check_keys, read_table

OBJECTIVE_ALIASES = {"classifier": "adversarial"}  # the adversarial objective's name before issue 13


def canonical_objective(name: str | None) -> str | None:
    """An objective's current name (old checkpoints and configs say "classifier")."""
    return OBJECTIVE_ALIASES.get(name, name) if name else name


@dataclass
class TrainConfig:
    # what is trained
    method: str = "hypernet"  # hypernet | static | ensemble | mcdropout
    structure: str = "A"  # MaskNet structure (spec.BUILTIN)
    rho_pixel: float = 0.03  # per-pixel clip (Eq. 2.4)
    # objective
    # auto = the measured winner (results/training-cpu): the feature objective whenever an embedder is
    # given, else the adversarial classifier objective (no model file needed); resolved on construction.
    # thesis = the thesis's J1 as written (Eq. 4.1/4.4: error-minimising, per user); adversarial = a
    # surrogate's error maximised ("classifier" is its old name, still accepted: old configs/checkpoints)
    objective: str = "auto"  # auto | adversarial (alias classifier) | thesis | feature
    # untargeted (measured winner) | targeted | centroid (push each user's protected centroid away from
    # its clean one; needs identity-grouped batches, pool_users > 0) — feature objective only
    feature_mode: str = "untargeted"
    target_push: float = 0.5  # targeted mode: weight of the untargeted push-away term added to the pull
    embedder: str = ""  # ONNX face embedder for the feature objective
    embedder_size: int = 0  # embedder input side; 0 = the ONNX model's declared size
    embedder_mean: float = 127.5  # embedder input = (x·255 − mean) / std  (ArcFace / mobilefacenet)
    embedder_std: float = 128.0
    # loss weights (Eq. 4.4 and Eq. 2.5)
    lambda_div: float = 1.0
    alpha: float = 0.0
    dssim_budget: float = 0.01  # rho
    lambda_dssim: float = 100.0
    # > 0: train as the budget rule ships with a fill — each face's δ scaled (bisection, no gradient through the
    # scale) to the largest s ≤ budget_fill whose DSSIM ≤ dssim_budget, so the nets learn a direction and every
    # user's faces use the budget (measured: nets that used less of ρ protected less). 0 = off (every recipe before)
    budget_fill: float = 0.0
    # weight of the per-user signature term (losses.signature_loss): each user's δ consistent across the user's
    # faces and unrelated to other users' δ — per-user class-wise noise, measured on the outputs, where J2 only
    # sees weights. 0 = off (every recipe before it)
    lambda_signature: float = 0.0
    # weight of the saturation term λ_sat·max(mean((δ/ρ_pixel)²) − saturation_cap, 0) on the net's own δ (before
    # any fill): keeps ρ_pixel·tanh(·) off its flat ends. Why: measured, the recipes' δ were sign patterns
    # (mean (δ/ρ_pixel)² 0.95–0.97), and with the fill J1 no longer sees the δ's own scale, so J2 = exp(−Var) grew
    # the weights unopposed from epoch ~20 (param_var 0.02 -> 4.4) while the nets' δ became alike.
    # 0 = off (every recipe before)
    lambda_saturation: float = 0.0
    saturation_cap: float = 0.5
    # HyperNet sizes
    z_dim: int = 64
    code_dim: int = 64
    mixer_hidden: int = 256
    gen_hidden: int = 128
    # optimisation
    epochs: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the training faces
    batch_images: int = 16  # images per net per step
    nets_per_step: int = 8  # generated MaskNets per step (diversity batch)
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = False  # CUDA only: bfloat16 autocast for MaskNet and objective forward passes
    compile: bool = False  # torch.compile the embedder / surrogate classifier
    deterministic: bool = False  # CUDA: deterministic kernels (slower), for bit-reproducible runs
    grad_clip: float = 0.0  # max global grad norm of the source; 0 = off
    # identity-grouped batches (train/sampler.py): each net plays one pseudo-user (z, identity), stable for
    # pool_refresh steps; 0 = faces drawn at random (the thesis objective then uses 8 × nets_per_step)
    pool_users: int = 0
    pool_refresh: int = 50
    pool_refresh_fraction: float = 0.25
    surrogate_width: int = 32  # thesis objective: the surrogate recogniser's width
    # the surrogate's own optimiser (thesis / adversarial): its learning rate (0 = the HyperNet's lr) and how many
    # steps it takes on each batch of perturbed faces. Why: with one step at the HyperNet's lr the users-label
    # surrogate stayed near chance (its loss 2.9–3.2 of ln 32 = 3.47 over 900 steps). Measured: a 2–4-epoch probe
    # at lr 2e-3 with 1 or 4 steps did not lower it (3.0–3.2), so no recipe sets them
    surrogate_lr: float = 0.0
    surrogate_steps: int = 1
    # thesis objective: the surrogate trains and scores on randomly flipped faces shifted by up to this many
    # pixels, as the from-scratch ResNet attacker augments (its fr_shift: 8); 0 = as they are
    surrogate_shift: int = 0
    # thesis objective: what the surrogate's classes are. identity = the faces' identities (a net's δ need only make
    # its faces' identity easy: any user's net can do that the same way); user = the pool's pseudo-users, as an
    # attacker's classes are its users (two users of one identity are told apart only by their δ: each user's δ
    # must be its own shortcut). Needs identity-grouped batches (pool_users > 0)
    surrogate_labels: str = "identity"
    # per-epoch evaluation on held-out faces
    eval_images: int = 64
    eval_nets: int = 4
    # data
    data: str = ""  # ImageFolder root; "" = the embedded synthetic set
    image_size: int = 112  # faces are resized to this side (MaskNets are fully convolutional; tests use less)
    holdout_fraction: float = 0.1
    max_identities: int = 0
    max_per_identity: int = 0
    # baselines
    ensemble_size: int = 10
    dropout: float = 0.3
    # upload robustness
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)
    resize_prob: float = 0.0
    resize_range: tuple[float, float] = (0.5, 1.0)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective == "auto":
            self.objective = "feature" if self.embedder else "adversarial"
        self.objective = OBJECTIVE_ALIASES.get(self.objective, self.objective)
        if self.objective == "thesis" and not self.pool_users:
            self.pool_users = 8 * self.nets_per_step

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "TrainConfig":
        return cls.from_dict(read_table(path, "train", overrides))

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        check_keys(cls, data)
        cfg = cls(**data)
        for name in ("jpeg_quality", "resize_range"):
            setattr(cfg, name, tuple(getattr(cfg, name)))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from .objectives import OBJECTIVES  # the registries (heavy: torch; imported when validating)
        from .sources import SOURCES

        if self.method not in SOURCES:
            raise ValueError(f"unknown method {self.method!r}")

        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.objective == "feature" and not self.embedder:
            raise ValueError("objective 'feature' needs an ONNX face embedder (embedder = PATH)")
        if self.epochs < 1 or self.batch_images < 1 or self.nets_per_step < 1:
            raise ValueError("epochs, batch_images and nets_per_step must be >= 1")
        if self.feature_mode not in ("targeted", "untargeted", "centroid"):
            raise ValueError(f"unknown feature_mode {self.feature_mode!r} (targeted | untargeted | centroid)")
        if self.objective == "feature" and self.feature_mode == "centroid" and not self.pool_users:
            raise ValueError("feature_mode 'centroid' needs identity-grouped batches: set pool_users > 0")
        if self.surrogate_labels not in ("identity", "user"):
            raise ValueError(f"unknown surrogate_labels {self.surrogate_labels!r} (identity | user)")
        if self.surrogate_labels == "user" and not (self.objective == "thesis" and self.pool_users):
            raise ValueError("surrogate_labels 'user' needs the thesis objective with identity-grouped batches (pool_users > 0)")
        if self.surrogate_lr < 0 or self.surrogate_steps < 1:
            raise ValueError("surrogate_lr must be >= 0 (0: the HyperNet's lr) and surrogate_steps >= 1")
        if not 0 <= self.surrogate_shift < self.image_size // 2:  # reflect padding needs pad < the side
            raise ValueError(f"surrogate_shift must be in [0, {self.image_size // 2}) for {self.image_size}² faces")
        if self.pool_users < 0 or self.pool_refresh < 0 or not 0 < self.pool_refresh_fraction <= 1:
            raise ValueError("pool_users, pool_refresh must be >= 0 and pool_refresh_fraction in (0, 1]")
        if not (self.budget_fill == 0 or 1 <= self.budget_fill <= 64):  # 64: the model metadata's bound
            raise ValueError("budget_fill must be 0 (off) or in [1, 64]")
        if self.lambda_signature < 0:
            raise ValueError("lambda_signature must be >= 0")
        if self.lambda_saturation < 0 or not 0 < self.saturation_cap <= 1:
            raise ValueError("lambda_saturation must be >= 0 and saturation_cap in (0, 1]")
        if self.target_push < 0:
            raise ValueError("target_push must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {self.device!r} (auto | cpu | cuda)")
        if not (0 <= self.jpeg_prob <= 1 and 0 <= self.resize_prob <= 1):
            raise ValueError("jpeg_prob and resize_prob must be in [0, 1]")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError("jpeg_quality must be [lo, hi] with 1 <= lo <= hi <= 100")
        lo, hi = self.resize_range
        if not 0 < lo <= hi <= 1:
            raise ValueError("resize_range must be [lo, hi] with 0 < lo <= hi <= 1")
        if self.image_size < 8:
            raise ValueError("image_size must be >= 8")
        if self.eval_images < 1 or self.eval_nets < 1:
            raise ValueError("eval_images and eval_nets must be >= 1")

    @property
    def ship_fill(self) -> float:
        """The largest scale the budget rule applies to this HyperNet's δ (1: scale down only; a net trained
        with ``budget_fill`` ships with it, written into its model's metadata as ``budget_fill``)."""
        return max(1.0, float(self.budget_fill))

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config (JSON: every field, defaults included)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

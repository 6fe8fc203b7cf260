"""Evaluation scales: how many identities, images, epochs and nets each experiment uses.

``tiny`` runs every experiment in about a minute on a CI CPU; ``reduced`` is the CPU-sized
run on real faces (stated in the report); ``full`` follows the thesis's protocol (§5.2.3: 50
distractor classes, 25 training images per class, 10×10 mix-inversion) sized for one GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class EvalScale:
    name: str
    # --- FR evaluation set (one source folder) -----------------------------------------
    n_targets: int = 10  # target users, each evaluated separately
    n_distractors: int = 50  # other classes the FR model is trained on (thesis: 50)
    train_per_class: int = 25  # training images per class (thesis §5.2.3)
    test_per_target: int = 5  # clean test images per target (at most; the rest of the folder)
    val_per_distractor: int = 5  # held-out distractor images: the FR's early-stopping signal
    # --- PSP (HyperNet) training set -----------------------------------------------------
    structure: str = "A"  # MaskNet structure (thesis §5.2.2)
    psp_identities: int = 24
    psp_per_identity: int = 20
    psp_epochs: int = 60
    psp_nets_per_step: int = 8
    psp_batch_images: int = 16
    # --- attacker's public set ---------------------------------------------------------
    public_images: int = 1200  # faces for InvNet training (and the FR backbone's pre-training)
    public_min_per_id: int = 8  # identities with at least this many images pre-train the FR trunk
    # --- ResNet-18 FR attacker -----------------------------------------------------------
    fr_width: int = 64  # 64 = standard ResNet-18
    fr_pretrain_epochs: int = 15
    fr_epochs: int = 10  # fine-tuning epochs at most (early stopping on distractor validation)
    fr_patience: int = 2
    fr_batch: int = 64  # images per model per step
    fr_lr: float = 1e-3
    fr_shift: int = 0  # random-translation augmentation (pixels; 0 = flips only)
    fr_onecycle: bool = False  # one-cycle learning rate over fr_epochs (else constant)
    fr_bank: int = 10  # FR models trained at once (grouped conv; on CPU one at a time is faster)
    # --- InvNet ----------------------------------------------------------------------------
    inv_epochs: int = 8
    inv_batch: int = 64
    inv_lr: float = 2e-3
    inv_identity_start: bool = False  # zero last layer: the untrained InvNet returns its input (thesis: random)
    # which draw of the attacker's own accounts (the z of its held nets) the frontier's inversion rows use; the
    # rows depend on it (an account may draw a net that perturbs like a target's): measure several, 0 = the first
    inv_draw: int = 0
    # --- experiments -----------------------------------------------------------------------
    mix_nets: int = 10  # E3: nets per method (thesis: 10x10)
    mix_users: int = 5  # E3/E5: target users of the mix matrices
    resnet_cells: int = 6  # E3: ResNet-attacked cells per user and method (0 = all); embedders do all
    held_draws: int = 2  # E4/E8: random draws of the attacker's held nets
    held_counts: tuple[int, ...] = (1, 2, 3)
    e4_pool: int = 16  # E4: nets generated in one batch (thesis: 16)
    e5_structures: tuple[str, ...] = ("A", "B", "C")
    e6_lambdas: tuple[float, ...] = (1.0, 10.0)
    e6_alphas: tuple[float, ...] = (0.01, 0.001, 0.0001)
    e6_epochs: tuple[int, ...] = (20, 40, 60)
    e6_nets: int = 16
    e7_resize: float = 0.5
    embedders: tuple[str, ...] = ("mobilefacenet", "dlib")
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **kw) -> "EvalScale":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


SCALES: dict[str, EvalScale] = {
    "tiny": EvalScale(
        name="tiny", n_targets=2, n_distractors=4, train_per_class=6, test_per_target=3, val_per_distractor=2,
        structure="tiny", psp_identities=4, psp_per_identity=8, psp_epochs=1, psp_nets_per_step=2,
        psp_batch_images=4, public_images=36, public_min_per_id=3, fr_width=8, fr_pretrain_epochs=1,
        fr_epochs=2, fr_patience=1, fr_batch=16, fr_bank=1, inv_epochs=1, inv_batch=8, mix_nets=2,
        mix_users=1, resnet_cells=1, held_draws=1, held_counts=(1, 2), e4_pool=4,
        e5_structures=("tiny", "B"), e6_lambdas=(1.0, 10.0), e6_alphas=(0.01,), e6_epochs=(1, 2),
        e6_nets=4, notes="CI smoke scale: numbers are not meaningful, only that every path runs.",
    ),
    "reduced": EvalScale(
        name="reduced", n_targets=5, n_distractors=20, structure="tiny", psp_identities=12, psp_per_identity=12,
        psp_epochs=8, psp_nets_per_step=4, psp_batch_images=8, public_images=600, fr_width=16, fr_pretrain_epochs=10,
        fr_epochs=10, fr_patience=3, fr_batch=32, fr_bank=1, inv_epochs=3, inv_batch=32, mix_nets=3,
        mix_users=2, resnet_cells=3, held_draws=1, e4_pool=8, e6_lambdas=(1.0, 10.0), e6_alphas=(0.01, 0.0001),
        e6_epochs=(2, 4, 8), e6_nets=8,
        notes="CPU scale (2 cores shared with other jobs): 20 distractors instead of 50, 5 targets, ResNet-18 at "
              "width 16 (pre-trained 10 epochs on 600 public faces, fine-tuned <= 10 epochs), MaskNet structure 'tiny' (conv 3-4-8, 1x1 16) instead of A (a "
              "structure-A HyperNet trains at ~2 min/epoch on this shared CPU), PSP trained 8 epochs on 144 "
              "glint24 faces of 12 identities (4 nets x 8 faces per step) instead of hundreds of epochs, 3x3 mix matrices on 2 users (3 off-diagonal + 1 "
              "diagonal ResNet-attacked cells per user), InvNets trained 3 epochs on 600 public faces.",
    ),
    "full": EvalScale(name="full", notes="Thesis protocol (50 distractors, 25 images per class, 10x10 mix "
                                          "matrices) sized for one H100."),
}


def get_scale(name: str, **overrides) -> EvalScale:
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; choose one of {', '.join(SCALES)}")
    known = set(EvalScale.__dataclass_fields__)
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown scale setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    # TOML lists (from --scale-set) become the dataclass's tuples
    return SCALES[name].with_overrides(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})

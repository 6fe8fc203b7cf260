"""Identity-disjoint splits for the evaluation (issue 6 §1), with a fixed seed.

Three roles, no identity in two of them:
* PSP training set — the HyperNet's faces (default ``glint24``);
* attacker's public set — faces the attacker perturbs with the MaskNets it holds to train
  InvNets, and pre-trains its ResNet-18 trunk on (default: the ``celeba299`` identities left
  over after the FR set is drawn: same crop style as the FR set, i.e. the stronger attacker);
* FR evaluation set — ``n_distractors`` classes plus the target users, all from ONE source
  folder (default ``celeba299``: 119 identities with >= 25 images), 25 training images per class.
  Targets are drawn from the identities with the most images, so each has clean test images.

The resolved split (every identity and file, relative to the faces root) goes into every result.

``holdout=True`` gives validation users: the same seed's test targets are drawn first and set aside (as
targets, distractors and public faces), then the targets are drawn among the rest. Choosing among nets on
them never looks at the test users' numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ..train.data import IMAGE_SUFFIXES, FaceSet, load_files


def is_holdout(result_or_split: dict) -> bool:
    """Whether a frontier result (or its split) measured held-out validation users; the one reader of the flag."""
    split = result_or_split.get("split", result_or_split)
    return bool(split.get("holdout"))


@dataclass
class Target:
    name: str
    train: torch.Tensor  # (n_train, 3, S, S) uint8: the images the user uploads (protected)
    test: torch.Tensor  # (n_test, 3, S, S) uint8: clean images the FR model is tested on


@dataclass
class EvalData:
    split: dict
    psp_root: Path
    public: FaceSet  # attacker's public faces; labels index split["public"]["pretrain_ids"], -1 if unused
    distractor_train: FaceSet
    distractor_val: FaceSet
    targets: list[Target]


def list_identities(root: Path) -> dict[str, list[str]]:
    """{identity: sorted image file names} of an ImageFolder root."""
    if not root.is_dir():
        raise FileNotFoundError(f"face folder not found: {root}")
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f.name for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[d.name] = files
    if not out:
        raise ValueError(f"no <identity>/<image> files under {root}")
    return out


def make_split(faces_root: str | Path, scale, seed: int, psp_source: str = "glint24",
               fr_source: str = "celeba299", public_source: str = "celeba299", holdout: bool = False) -> dict:
    """Choose identities and files; pure bookkeeping (no pixels read). Raises ValueError when
    the folders are too small for the scale."""
    root = Path(faces_root)
    rng = random.Random(seed)
    fr_ids = list_identities(root / fr_source)
    need = scale.train_per_class + 1
    eligible = [i for i, f in fr_ids.items() if len(f) >= need]
    if len(eligible) < scale.n_targets + scale.n_distractors:
        raise ValueError(f"{fr_source}: {len(eligible)} identities have >= {need} images; the '{scale.name}' scale "
                         f"needs {scale.n_targets} targets + {scale.n_distractors} distractors")
    # Targets: identities with the most images (most clean test images), chosen at random among them.
    by_count = sorted(eligible, key=lambda i: (-len(fr_ids[i]), i))
    full = [i for i in by_count if len(fr_ids[i]) >= scale.train_per_class + scale.test_per_target]
    pool = full if len(full) >= scale.n_targets else by_count[:max(scale.n_targets, len(full))]
    targets = sorted(rng.sample(pool, scale.n_targets))
    test_targets = set(targets) if holdout else set()
    if holdout:  # validation users: the test draw above, then targets among the identities it left
        pool = [i for i in pool if i not in test_targets]
        if len(pool) < scale.n_targets or len(eligible) - len(test_targets) < scale.n_targets + scale.n_distractors:
            raise ValueError(f"{fr_source}: too few identities for {scale.n_targets} held-out users beside the test users")
        targets = sorted(rng.sample(pool, scale.n_targets))
    rest = sorted(set(eligible) - set(targets) - test_targets)
    distractors = sorted(rng.sample(rest, scale.n_distractors))

    def files_of(ident: str, n_first: int, n_second: int) -> tuple[list[str], list[str]]:
        files = list(fr_ids[ident])
        rng.shuffle(files)
        return sorted(files[:n_first]), sorted(files[n_first:n_first + n_second])

    split = {"seed": seed, "faces_root": str(root), "fr_source": fr_source, "psp_source": psp_source,
             "public_source": public_source, "targets": {}, "distractors": {}}
    if holdout:
        split["holdout"] = True  # validation users (absent: the test users)
    for t in targets:
        tr, te = files_of(t, scale.train_per_class, scale.test_per_target)
        split["targets"][t] = {"train": tr, "test": te}
    for d in distractors:
        tr, va = files_of(d, scale.train_per_class, scale.val_per_distractor)
        split["distractors"][d] = {"train": tr, "val": va}

    # Public set: identities of public_source not in the FR set, files capped at public_images.
    used = set(targets) | set(distractors) | test_targets if public_source == fr_source else set()
    pub_ids = list_identities(root / public_source) if public_source != fr_source else fr_ids
    if psp_source == public_source:
        raise ValueError("the PSP training set and the attacker's public set must come from different folders")
    # Whole identities at random until the cap: identity-rich faces pre-train the attacker's trunk better.
    ids = [i for i in pub_ids if i not in used]
    rng.shuffle(ids)
    chosen = []
    for i in ids:
        if len(chosen) >= scale.public_images:
            break
        chosen += [(i, f) for f in pub_ids[i][:scale.public_images - len(chosen)]]
    chosen = sorted(chosen)
    counts: dict[str, int] = {}
    for i, _ in chosen:
        counts[i] = counts.get(i, 0) + 1
    pretrain_ids = sorted(i for i, c in counts.items() if c >= scale.public_min_per_id)
    split["public"] = {"files": [f"{i}/{f}" for i, f in chosen], "identities": len(counts),
                       "pretrain_ids": pretrain_ids}

    # PSP: what the training loop reads (first psp_identities identities, first psp_per_identity files).
    psp_ids = list_identities(root / psp_source)
    psp_names = list(psp_ids)[:scale.psp_identities]
    split["psp"] = {"identities": psp_names, "per_identity": scale.psp_per_identity,
                    "images": sum(min(len(psp_ids[i]), scale.psp_per_identity) for i in psp_names)}
    overlap = set(psp_names) & (set(targets) | set(distractors) | set(counts)) if psp_source in (fr_source, public_source) else set()
    if overlap:
        raise ValueError(f"identities in both the PSP set and an attacker set: {sorted(overlap)[:3]}")
    return split


def load_split(split: dict, size: int = 112) -> EvalData:
    """Read the pixels of a split made by :func:`make_split`."""
    root = Path(split["faces_root"])
    fr = root / split["fr_source"]
    targets = [Target(t, load_files([fr / t / f for f in v["train"]], size), load_files([fr / t / f for f in v["test"]], size))
               for t, v in split["targets"].items()]
    d_names = list(split["distractors"])
    tr_imgs, tr_lab, va_imgs, va_lab = [], [], [], []
    for k, d in enumerate(d_names):
        v = split["distractors"][d]
        tr_imgs.append(load_files([fr / d / f for f in v["train"]], size))
        tr_lab += [k] * len(v["train"])
        va_imgs.append(load_files([fr / d / f for f in v["val"]], size))
        va_lab += [k] * len(v["val"])
    pub_root = root / split["public_source"]
    pid = {n: k for k, n in enumerate(split["public"]["pretrain_ids"])}
    pub_files = split["public"]["files"]
    public = FaceSet(load_files([pub_root / f for f in pub_files], size),
                     torch.tensor([pid.get(f.split("/")[0], -1) for f in pub_files], dtype=torch.int64),
                     split["public"]["pretrain_ids"])
    return EvalData(
        split=split, psp_root=root / split["psp_source"], public=public,
        distractor_train=FaceSet(torch.cat(tr_imgs), torch.tensor(tr_lab), d_names),
        distractor_val=FaceSet(torch.cat(va_imgs), torch.tensor(va_lab), d_names),
        targets=targets,
    )

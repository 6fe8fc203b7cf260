"""`eval frontier-compare`: two methods paired user by user over several frontier runs."""

from __future__ import annotations

import json

import pytest

from hyperobf.eval.frontier_compare import compare, sign_test_p

KEY = "resnet18-scratch/gallery"


def _run(seed: int, rows: dict[str, list[float]], clean: list[float], holdout: bool = False) -> dict:
    """A frontier result on split ``seed`` whose targets t0… carry ``rows`` per-user values for KEY."""
    n = len(clean)
    split = {"seed": seed, "targets": {f"t{i:02d}": {} for i in range(n)}}
    if holdout:
        split["holdout"] = True
    mk = lambda p, v: {"protector": p, "rho": 0.025, "per_user": {KEY: v}, "acc": {KEY: {"mean": sum(v) / n}}}  # noqa: E731
    return {"split": split, "rows": [dict(mk("clean", clean), rho=0.0)] + [mk(p, v) for p, v in rows.items()]}


def test_sign_test_is_exact():
    assert sign_test_p(0, 10) == pytest.approx(2 / 1024)
    assert sign_test_p(5, 5) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(2, 6) == pytest.approx(2 * (1 + 8 + 28) / 256)


def test_a_clearly_below_b_is_resolved_and_pairs_only_the_same_users():
    clean = [0.6] * 10
    a = [0.0, 0.2, 0.0, 0.2, 0.0, 0.2, 0.0, 0.0, 0.2, 0.0]
    b = [0.4, 0.6, 0.4, 0.4, 0.6, 0.4, 0.6, 0.4, 0.4, 0.6]
    s0 = _run(0, {"net:h1 inverted (1 held)": a, "net:base inverted (1 held)": b}, clean)
    s1 = _run(1, {"net:h1 inverted (1 held)": a, "net:base inverted (1 held)": b}, clean)
    # the same row joined into a second table counts once; a B measured only on other users pairs with nothing
    joined = _run(0, {"net:h1 inverted (1 held)": a}, clean)
    other = _run(2, {"net:base inverted (1 held)": b}, clean)
    c = compare([("s0", s0), ("s1", s1), ("joined", joined), ("other", other)],
                ["net:h* inverted (1 held*"], ["net:base inverted*"], KEY, rho=0.025)
    assert c["users"] == 20 and c["identities"] == 10 and len(c["rows_a"]) == 2 and len(c["rows_b"]) == 3
    assert c["diff_mean"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / 10)
    assert c["lower"] == 20 and c["higher"] == 0 and c["sign_p"] < 1e-5
    assert c["ci95"][1] < 0 and c["verdict"] == "A below B" and c["clean_mean"] == pytest.approx(0.6)


def test_a_method_of_several_rows_is_their_mean_and_noise_is_not_resolved():
    clean = [0.6, 1.0, 0.4, 0.2, 0.4, 0.8, 0.4, 0.8, 0.6, 0.4]
    s0 = _run(0, {"net:h1 x": [0.2, 0.0, 0.4, 0.2, 0.0, 0.6, 0.0, 0.2, 0.4, 0.0],
                  "net:h2 x": [0.0, 0.4, 0.0, 0.2, 0.4, 0.0, 0.4, 0.2, 0.0, 0.4],
                  "net:b x": [0.2, 0.2, 0.0, 0.4, 0.2, 0.2, 0.0, 0.2, 0.4, 0.2]}, clean)
    c = compare([("s0", s0)], ["net:h1 x", "net:h2 x"], ["net:b x"], KEY)
    assert c["mean_a"] == pytest.approx(0.2) and c["mean_b"] == pytest.approx(0.2)
    assert c["verdict"] == "not resolved" and c["ci95"][0] < 0 < c["ci95"][1] and c["users_for_resolution"] is None
    with pytest.raises(ValueError, match="same users"):
        compare([("s0", s0), ("h", _run(0, {"net:z x": [0.0] * 10}, clean, holdout=True))], ["net:z x"], ["net:b x"], KEY)


def test_frontier_compare_cli(tmp_path):
    from typer.testing import CliRunner

    from hyperobf.cli import app

    clean = [0.6] * 10
    path = tmp_path / "f.json"
    path.write_text(json.dumps(_run(0, {"net:h x": [0.0] * 10, "net:b x": [0.4] * 5 + [0.2] * 5}, clean)))
    out = tmp_path / "c.json"
    r = CliRunner().invoke(app, ["eval", "frontier-compare", str(path), "--a", "net:h x", "--b", "net:b x",
                                 "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "10 paired users" in r.output and "verdict: A below B" in r.output
    assert json.loads(out.read_text())["lower"] == 10
    r = CliRunner().invoke(app, ["eval", "frontier-compare", str(path), "--a", "net:none", "--b", "net:b x"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "no row matches A" in r.output
    path.write_text("[1, 2]")
    r = CliRunner().invoke(app, ["eval", "frontier-compare", str(path), "--a", "net:h x", "--b", "net:b x"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "not a frontier.json" in r.output

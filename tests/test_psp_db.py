"""PSP storage and plumbing: Alembic migrations agree with the models (SQLite and PostgreSQL),
fingerprints estimate the functional distance, config from TOML, and `hyperobf serve` (migrate
only, one-line errors, a real uvicorn server on loopback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from typer.testing import CliRunner

from hyperobf.cli import app
from hyperobf.psp.config import PSPConfig
from hyperobf.psp.db import Base, make_engine
from hyperobf.psp.fingerprint import NearestIndex, probe_images, rms_distance
from hyperobf.psp.migrate import downgrade, head_revision, upgrade

runner = CliRunner()


def test_migrations_match_models(db_url):  # noqa: ANN001
    engine = make_engine(db_url)
    try:
        assert upgrade(engine) == head_revision()
        assert upgrade(engine) == head_revision()  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], diff
        assert downgrade(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert upgrade(engine) == head_revision()
        assert {"accounts", "tokens", "masknets"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_probe_images_fixed():
    a, b = probe_images(4, 32), probe_images(4, 32)
    assert a.shape == (4, 3, 32, 32) and a.dtype == np.float32 and np.array_equal(a, b)
    assert 0 <= a.min() and a.max() <= 1 and a.std() > 0.1


def test_fingerprint_estimates_functional_distance(psp_engine):  # noqa: ANN001
    from hyperobf.export.secrets_z import secure_normal

    z = secure_normal(24, psp_engine.z_dim)
    z[12:] = z[:12] + 0.05 * secure_normal(12, psp_engine.z_dim)  # some close pairs too
    weights, fp = psp_engine.generate(z)
    delta = psp_engine.fingerprinter.probe_delta(psp_engine.spec, {k: torch.from_numpy(v) for k, v in weights.items()})
    exact = rms_distance(delta, delta).numpy()
    est = np.sqrt(((fp[:, None] - fp[None]) ** 2).sum(-1))
    iu = np.triu_indices(len(z), 1)
    rel = est[iu] / exact[iu] - 1
    assert np.abs(rel).max() < 0.25 and abs(rel.mean()) < 0.05, (rel.mean(), np.abs(rel).max())
    assert exact[iu].min() > 0 and np.allclose(np.diag(est), 0)
    # the index finds the true nearest neighbour distance
    idx = NearestIndex(fp.shape[1])
    idx.add(fp[:12], last_id=12)
    np.testing.assert_allclose(idx.nearest(fp[12:]), est[12:, :12].min(1), rtol=1e-3, atol=1e-4)
    assert idx.last_id == 12 and len(idx) == 12


def test_index_grows_past_its_capacity():
    rng = np.random.default_rng(0)
    idx = NearestIndex(8)
    rows = rng.standard_normal((3000, 8)).astype(np.float32)
    for chunk in np.array_split(rows, 7):
        idx.add(chunk)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    brute = np.sqrt(((q[:, None] - rows[None]) ** 2).sum(-1)).min(1)
    assert len(idx) == 3000
    np.testing.assert_allclose(idx.nearest(q), brute, rtol=1e-4, atol=1e-4)


def test_config_from_toml(tmp_path):
    p = tmp_path / "psp.toml"
    p.write_text('[serve]\nmin_distance = 0.1\nmax_active_per_account = 3\nz_storage = "none"\n')
    cfg = PSPConfig.from_toml(p, db_url="sqlite:///x.db")
    assert (cfg.min_distance, cfg.max_active_per_account, cfg.z_storage, cfg.db_url) == (0.1, 3, "none", "sqlite:///x.db")
    p.write_text("[serve]\nmin_distanse = 0.1\n")
    with pytest.raises(ValueError, match="min_distanse"):
        PSPConfig.from_toml(p)
    with pytest.raises(ValueError, match="z_storage"):
        PSPConfig(z_storage="plain")


def test_cli_migrate_only_and_bad_input(tmp_path, monkeypatch):
    monkeypatch.delenv("HYPEROBF_PSP_KEY", raising=False)
    db = tmp_path / "m.db"
    r = runner.invoke(app, ["serve", "--migrate-only", "--db", f"sqlite:///{db}"])
    assert r.exit_code == 0 and f"at revision {head_revision()}" in r.output, r.output
    assert db.exists()
    r = runner.invoke(app, ["serve", "--db", f"sqlite:///{db}"])
    assert r.exit_code != 0 and "--checkpoint is required" in r.output
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    r = runner.invoke(app, ["serve", "--checkpoint", str(bogus), "--db", f"sqlite:///{db}"])
    assert r.exit_code != 0 and "not a HyperObf checkpoint" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["serve", "--migrate-only", "--db", "postgresql+psycopg://u:s3cret@127.0.0.1:1/x"])
    assert r.exit_code != 0 and "cannot use database" in r.output and "s3cret" not in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_serve_command_runs_uvicorn_on_loopback(tiny_checkpoint, tmp_path):  # noqa: ANN001
    port = _free_port()
    env = {**os.environ, "HYPEROBF_PSP_KEY": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperobf.cli", "serve", "--checkpoint", str(tiny_checkpoint), "--db",
         f"sqlite:///{tmp_path / 'srv.db'}", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
         "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.3)
        token = httpx.post(f"{base}/v1/accounts", json={}).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        net = httpx.post(f"{base}/v1/masknets", headers=h, timeout=30).json()
        assert httpx.get(f"{base}{net['download']}", headers=h).headers["x-content-sha256"] == net["sha256"]
        key = tmp_path / "srv.db.key"  # created beside the SQLite file, owner-only
        assert key.exists() and key.stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert token not in out


@pytest.mark.parametrize("structure", ["tiny", "D"])
def test_probe_delta_matches_the_masknet(structure):
    """The fingerprinter's own (channels-last) grouped conv is the MaskNet's δ / ρ on the probes."""
    from hyperobf.models.hypernet import HyperNet
    from hyperobf.models.masknet import delta_batched
    from hyperobf.psp.fingerprint import Fingerprinter
    from hyperobf.spec import builtin_spec

    spec = builtin_spec(structure)
    torch.manual_seed(0)
    with torch.no_grad():
        params = HyperNet(spec).generate(3)
    fpr = Fingerprinter(2, 16, 64)
    got = fpr.probe_delta(spec, params)
    x = fpr.probe.unsqueeze(0).expand(3, *fpr.probe.shape)
    want = (delta_batched(spec, params, x) / spec.rho_pixel).flatten(1)
    assert got.shape == (3, 2 * 3 * 16 * 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_engine_on_cuda_matches_cpu(request):  # noqa: ANN001
    """Generation and probe fingerprints on the GPU agree with the CPU (the service picks CUDA when present)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    tiny_checkpoint = request.getfixturevalue("tiny_checkpoint")  # trained only when it will be used
    from hyperobf.export.secrets_z import secure_normal
    from hyperobf.psp.engine import GenerationEngine, Variant

    gpu = GenerationEngine.from_checkpoint(tiny_checkpoint, "cuda")
    cpu = GenerationEngine.from_checkpoint(tiny_checkpoint, "cpu")
    assert gpu.fingerprinter.version == cpu.fingerprinter.version
    z = secure_normal(64, gpu.z_dim)
    (wg, fg), (wc, fc) = gpu.generate(z), cpu.generate(z)
    for k in wc:
        np.testing.assert_allclose(wg[k], wc[k], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fg, fc, atol=2e-3)
    files = gpu.renderer(Variant("onnx", "fp32", "fixed")).render({k: v[:2] for k, v in wg.items()}, ["0" * 24, "1" * 24])
    assert len(files) == 2 and files[0] != files[1]

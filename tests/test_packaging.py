"""The wheel a checkout builds (issue 14): it carries the whole device runtime and the PSP client, its
metadata admits any Python >= 3.11 and keeps torch out of the base and device installs, and the
runtime unpacked from it protects a photo with torch unimportable. (CI also installs the checkout
into a Python 3.13 venv with only the device extra: scripts/ci_device_py313.sh.)"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from PIL import Image

from runtime_support import build_model, env_without_torch, noise_image


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the checkout (the build must not litter the work tree)."""
    proj = tmp_path_factory.mktemp("proj")
    shutil.copy(REPO / "pyproject.toml", proj)
    shutil.copy(REPO / "README.md", proj)
    shutil.copytree(REPO / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", str(proj), "-w", str(dist)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [whl] = dist.glob("hyperobf-*.whl")
    return whl


def test_wheel_contains_the_runtime_and_light_metadata(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    src = REPO / "src"
    runtime = {str(p.relative_to(src)) for p in (src / "hyperobf" / "device_runtime").glob("*.py")}
    assert runtime and runtime <= names, sorted(runtime - names)
    for module in ("spec.py", "model_meta.py", "protection.py", "fsmodes.py", "psp_client.py", "model_formats.py",
                   "cli/protect_cmd.py", "cli/client_cmds.py", "models/onnx_torch.py"):
        assert f"hyperobf/{module}" in names, module
    [meta_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
    assert meta["Requires-Python"] == ">=3.11"
    requires = meta.get_all("Requires-Dist")
    base = [r for r in requires if "extra ==" not in r]
    device = [r for r in requires if "extra == \"device\"" in r]
    assert not any(r.startswith("torch") for r in base + device), requires
    assert any(r.startswith("onnxruntime") for r in device), requires


def test_runtime_from_the_wheel_protects_without_torch(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    model = build_model(tmp_path / "user.onnx")
    Image.fromarray(noise_image(40, 48)).save(tmp_path / "me.png")
    env = env_without_torch(tmp_path)
    env["PYTHONPATH"] = env["PYTHONPATH"].split(":", 1)[0] + ":" + str(site)  # poisoned torch, then the wheel
    script = (
        "import sys, hyperobf\n"
        f"assert hyperobf.__file__.startswith({str(site)!r}), hyperobf.__file__\n"
        "from hyperobf.cli import main\n"
        f"sys.argv = ['hyperobf', 'protect', {str(tmp_path / 'me.png')!r}, '-m', {str(model)!r}]\n"
        "try:\n    main()\nfinally:\n    assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "protected 1, skipped 0, failed 0" in r.stdout
    assert Image.open(tmp_path / "me_protected.png").size == (48, 40)

    # the PSP client from the wheel needs neither torch nor the service's packages
    poison = Path(env["PYTHONPATH"].split(":", 1)[0])
    for pkg in ("fastapi", "sqlalchemy", "httpx"):
        (poison / pkg).mkdir()
        (poison / pkg / "__init__.py").write_text(f"raise ImportError('{pkg} was imported by the client')\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = script.replace(f"'protect', {str(tmp_path / 'me.png')!r}, '-m', {str(model)!r}",
                            f"'account', 'create', '--server', 'http://127.0.0.1:{port}', "
                            f"'--account-file', {str(tmp_path / 'acc.json')!r}")
    r = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr == f"error: cannot reach the PSP at http://127.0.0.1:{port}: Connection refused\n"

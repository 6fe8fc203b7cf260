"""The web client (web/, issue 17) in headless Chromium: the real page, served from 127.0.0.1, driven
by web/test/drive.mjs in one browser session whose results the tests below read (see test_web.py for
the Node layer). Needs ``chromium`` and ``npm ci`` in web/; skips with the reason otherwise. Slow (one
browser session, ~50 s on 2 cores): run with ``-m slow``.
"""


import base64
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime_support import build_model, highpass_model
from web_support import (TOKEN, WEB, Recorder, hostile_files, image_array, jpeg_with_exif, need_browser, need_node,
                         start_servers, tampered_models)


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory):
    """One headless-Chromium session over the real page: every browser test reads its results."""
    chromium = need_browser()
    d = tmp_path_factory.mktemp("web")
    rng = np.random.default_rng(5)
    models = {
        "hp": highpass_model(d / "hp.onnx"),  # δ up to ρ = 0.03: a real pattern, not numerical noise
        "hp_fixed": highpass_model(d / "hp_fixed.onnx", shape="fixed"),  # 1×3×112×112: tiled
        "hp_big": highpass_model(d / "hp_big.onnx", rho_pixel=0.25),  # δ too large for codes: the float path
        "D": build_model(d / "D.onnx", structure="D", seed=3),  # stride 8: padded to multiples of 8
        # fixed 112² with a receptive field wider than the tiles' overlap: the tiling itself must match
        "D_fixed": build_model(d / "D_fixed.onnx", "fixed", structure="D", seed=3),
        "user": highpass_model(d / "user.onnx", gain=12.0),  # downloaded from the fake PSP
    }
    (d / "bad").mkdir()
    bad = tampered_models(d / "bad")
    work = Image.fromarray(image_array(rng, 192, 250))  # shorter side 192 = the work size: no resize anywhere
    work.save(d / "work.png")
    big = Image.fromarray(image_array(rng, 3000, 4000))  # 12 MP, stored landscape, EXIF says rotate: upright 3000×4000
    photo = jpeg_with_exif(big, d / "photo12mp.jpg", orientation=6)
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(Image.open(photo))
    upright.save(d / "photo12mp_decoded.png", compress_level=1)  # Pillow's decode, lossless: isolates the decoder
    hostile = hostile_files(d, photo)

    rec = Recorder()
    static, proxy = start_servers(rec, models["user"].read_bytes())
    origin = f"http://127.0.0.1:{static.server_address[1]}"
    model_url = f"{origin}/v1/masknets/user0042/file"
    steps = [
        {"do": "open"},
        {"do": "model", "file": str(models["hp"])},
        {"do": "photo", "file": str(d / "work.png"), "dump": "hp", "budget": "none"},
        {"do": "model", "file": str(models["hp_fixed"])},
        {"do": "photo", "file": str(d / "work.png"), "dump": "hp_fixed", "camera": True},
        {"do": "model", "file": str(models["D"])},
        {"do": "photo", "file": str(d / "work.png"), "dump": "D"},
        {"do": "model", "file": str(models["D_fixed"])},
        {"do": "photo", "file": str(d / "work.png"), "dump": "D_fixed"},
        {"do": "model", "file": str(models["hp_big"])},
        {"do": "photo", "file": str(d / "work.png"), "dump": "hp_big"},
        {"do": "photo", "file": str(d / "work.png"), "dump": "hp_big_mid", "budget": "mid"},
        {"do": "model_url", "url": model_url, "token": "wrong-token"},
        {"do": "model_url", "url": model_url, "token": TOKEN},
        {"do": "mark"},
        {"do": "photo", "file": str(photo), "dump": "big"},
        {"do": "eval", "js": _CANVAS_RESIZE_JS},
        {"do": "download", "format": "jpeg", "name": "big_protected.jpg"},
        {"do": "download", "format": "png", "name": "big_protected.png"},
        {"do": "screenshot", "name": "page_12mp.png"},
        {"do": "photo", "file": str(d / "photo12mp_decoded.png"), "dump": "bigpng"},
        {"do": "download", "format": "png", "name": "bigpng_protected.png"},
        {"do": "mark"},
        {"do": "photo", "file": str(hostile["nonimage"])},
        {"do": "photo", "file": str(hostile["truncated"])},
        {"do": "photo", "file": str(hostile["huge"])},
        *({"do": "model", "file": str(p), "name": n} for n, p in bad.items()),
        {"do": "model", "file": str(models["hp"])},
        {"do": "photo", "file": str(d / "work.png")},
        {"do": "mark"},
        {"do": "canary", "url": "https://hyperobf-canary.invalid/leak"},
    ]
    out = d / "out"
    plan = {"url": f"{origin}/", "chromium": chromium, "out": str(out), "proxy": f"127.0.0.1:{proxy.server_address[1]}",
            "steps": steps, "timeout_ms": 120000}
    (d / "plan.json").write_text(json.dumps(plan))
    try:
        r = subprocess.run([need_node(), str(WEB / "test" / "drive.mjs"), str(d / "plan.json")], capture_output=True,
                           text=True, timeout=900)
    finally:
        static.shutdown()
        proxy.shutdown()
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    result = json.loads((out / "result.json").read_text())
    failed = [(i, r) for i, r in enumerate(result["steps"]) if "error" in r]
    assert not failed, (failed, result["console"][-20:], result["errors"])
    return {"dir": d, "out": out, "result": result, "steps": steps, "models": models, "bad": bad, "rec": rec,
            "origin": origin, "model_url": model_url, "photo": photo, "work": np.asarray(work)}


# The naive way a page would shrink the photo: the browser's own high-quality resize (measured, not used).
_CANVAS_RESIZE_JS = """(async () => {
  const f = document.getElementById('photo-file').files[0];
  const [wh, ww] = window.hyperobf.last.work;
  const bmp = await createImageBitmap(f, { imageOrientation: 'from-image', colorSpaceConversion: 'none',
                                          resizeWidth: ww, resizeHeight: wh, resizeQuality: 'high' });
  const c = new OffscreenCanvas(ww, wh), ctx = c.getContext('2d');
  ctx.drawImage(bmp, 0, 0);
  const px = ctx.getImageData(0, 0, ww, wh).data;
  let s = ''; for (let i = 0; i < px.length; i += 0x8000) s += String.fromCharCode(...px.subarray(i, i + 0x8000));
  return btoa(s);
})()"""


def _step(run: dict, i: int) -> dict:
    return run["result"]["steps"][i]


def _dump(run: dict, name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    i = next(k for k, s in enumerate(run["steps"]) if s.get("dump") == name)
    last = _step(run, i)["last"]
    assert last is not None, _step(run, i)
    wh, ww = last["work"]
    delta = np.frombuffer((run["out"] / f"{name}_delta.f32").read_bytes(), np.float32).reshape(wh, ww, 3)
    work = np.frombuffer((run["out"] / f"{name}_work.u8").read_bytes(), np.uint8).reshape(wh, ww, 3)
    return delta, work, last


@pytest.mark.parametrize("name", ["hp", "hp_fixed", "D", "D_fixed", "hp_big"])
def test_browser_delta_matches_python(browser_run, name):
    """Same working-size PNG into the page and the Python runtime: δ within 1/255 everywhere."""
    from hyperobf.device_runtime import load_model
    from hyperobf.device_runtime.whole import delta_dynamic, delta_tiled

    delta, work, last = _dump(browser_run, name)
    assert np.array_equal(work, browser_run["work"])  # the page fed the net the PNG's own pixels
    m = load_model(browser_run["models"][name], threads=1)
    ref = delta_tiled(work, m) if m.fixed_size else delta_dynamic(work, m)
    err = float(np.abs(delta - ref).max())
    print(f"\n{name}: max |δ_browser − δ_python| = {err * 255:.2e}/255, max |δ| = {np.abs(ref).max() * 255:.2f}/255")
    assert np.abs(ref).max() * 255 > 1.0  # a δ that spans grey levels, so a wrong tiling/padding would show
    assert err <= 1 / 255  # the bar
    # Same pixels in, so only float rounding differs (WASM vs native kernels, ~1e-5/255 here): held 100× tighter
    # than the bar, which a tiling error (e.g. a 112² tile's overlap of 16 px where Python keeps 32: 0.53/255
    # for D_fixed) would not pass.
    assert err <= 0.01 / 255


def _python_whole(img: Image.Image, model_path: Path, rho: float | None) -> tuple[Image.Image, tuple[int, int], tuple]:
    """whole.whole_photo as `hyperobf protect` runs it (work size 192; budget (ρ, the net's ρ_pixel) or none)."""
    from hyperobf.device_runtime import load_model
    from hyperobf.device_runtime.whole import DEFAULT_WORK_SIZE, whole_photo

    m = load_model(model_path, threads=1)
    budget = None if rho is None else (rho, float(m.spec.rho_pixel))
    out = whole_photo(img, m, DEFAULT_WORK_SIZE / min(img.size), budget=budget)
    return out[0], out[1], out[3]


def test_browser_budget_matches_python(browser_run):
    """The default DSSIM budget (preset mid) on the working-size PNG: the same scale and δ' within 1/255."""
    from hyperobf.device_runtime import load_model
    from hyperobf.device_runtime.budget import fit_budget_windows
    from hyperobf.device_runtime.whole import delta_dynamic

    delta, work, last = _dump(browser_run, "hp_big_mid")
    assert last["preset"] == "mid" and last["rho"] == 0.012
    m = load_model(browser_run["models"]["hp_big"], threads=1)
    x = (work.astype(np.float32) * np.float32(1 / 255)).transpose(2, 0, 1)[None]
    raw = delta_dynamic(work, m).transpose(2, 0, 1)[None]
    fitted, s, dw = fit_budget_windows(x, raw, 0.012, float(m.spec.rho_pixel), 112)
    ref = (fitted - x)[0].transpose(1, 2, 0)
    print(f"\nbudget mid: scale browser {last['scale']:.6f} python {float(s[0]):.6f}; "
          f"max |δ'_browser − δ'_python| = {np.abs(delta - ref).max() * 255:.3f}/255")
    assert float(s[0]) < 1  # the budget bit: δ was scaled down
    assert abs(last["scale"] - float(s[0])) <= 2.0 ** -12
    assert np.abs(delta - ref).max() <= 1 / 255 + 1e-6
    assert abs(last["dssimWork"] - float(dw[0])) < 1e-5


def test_browser_12mp_photo_end_to_end(browser_run):
    """A 12 MP JPEG with EXIF rotation: upright, same working size, δ within 1/255 of Python's on the page's
    working image; the page's resize is Pillow's (exact on Pillow-decoded pixels), the rest is the JPEG decoder."""
    from hyperobf.device_runtime import load_model
    from hyperobf.device_runtime.budget import fit_budget_windows
    from hyperobf.device_runtime.files import open_image
    from hyperobf.device_runtime.whole import delta_dynamic

    run = browser_run
    delta, work, last = _dump(run, "big")
    assert (last["width"], last["height"]) == (3000, 4000)  # EXIF orientation 6 applied
    assert last["preset"] == "mid"  # the page's default budget, as hyperobf protect's
    upright = open_image(run["photo"]).image.convert("RGB")
    py_out, py_work, (py_scale, _, py_written) = _python_whole(upright, run["models"]["user"], 0.012)
    assert tuple(last["work"]) == py_work == (256, 192)
    m = load_model(run["models"]["user"], threads=1)
    x = (work.astype(np.float32) * np.float32(1 / 255)).transpose(2, 0, 1)[None]
    fitted, s, _ = fit_budget_windows(x, delta_dynamic(work, m).transpose(2, 0, 1)[None], 0.012, 0.03, 112)
    err = float(np.abs(delta - (fitted - x)[0].transpose(1, 2, 0)).max())
    assert err <= 1 / 255 + 1e-6
    assert abs(last["scale"] - py_scale) <= 2.0 ** -12
    assert abs(last["stats"]["dssimWindow"] - py_written) < 1e-5  # the DSSIM of the written photo, as the CLI prints

    pil_work = np.asarray(upright.resize((py_work[1], py_work[0]), Image.BILINEAR, reducing_gap=3.0))
    dec = np.abs(work.astype(int) - pil_work)
    js_out = np.asarray(Image.open(run["out"] / "big_protected.png").convert("RGB"))
    full = np.abs(js_out.astype(int) - np.asarray(py_out))

    # Pillow-decoded pixels (lossless PNG) into the page: resize and apply are Pillow's exactly.
    d2, w2, _ = _dump(run, "bigpng")
    assert np.array_equal(w2, pil_work)
    js_png = np.asarray(Image.open(run["out"] / "bigpng_protected.png").convert("RGB"))
    exact = np.abs(js_png.astype(int) - np.asarray(py_out))

    i = next(k for k, s in enumerate(run["steps"]) if s["do"] == "eval")
    canvas = np.frombuffer(base64.b64decode(_step(run, i)["value"]), np.uint8).reshape(256, 192, 4)[..., :3]
    naive = np.abs(canvas.astype(int) - pil_work)
    report = {
        "budget": {"preset": "mid", "scale_browser": last["scale"], "scale_python": py_scale,
                   "written_dssim_browser": last["stats"]["dssimWindow"], "written_dssim_python": py_written},
        "delta_max_abs_diff_255": err * 255,
        "working_image_jpeg_vs_pillow": {"max": int(dec.max()), "mean": float(dec.mean())},
        "protected_12mp_jpeg_vs_python": {"max": int(full.max()), "mean": float(full.mean()),
                                          "share_differing": float((full > 0).mean())},
        "protected_12mp_pillow_decoded_vs_python": {"max": int(exact.max()), "mean": float(exact.mean())},
        "browser_canvas_resize_vs_pillow": {"max": int(naive.max()), "mean": float(naive.mean())},
        "page_timings_ms": last["timings"],
    }
    print("\n12 MP parity:", json.dumps(report, indent=1))
    (run["dir"] / "parity.json").write_text(json.dumps(report, indent=1))
    assert exact.max() <= 1  # δ differs from Python's by ~1e-6: a code may cross a rounding edge
    assert (exact > 0).mean() < 1e-4
    # Chromium's and Pillow's JPEG decoders are both libjpeg-turbo: a few levels at most where they differ.
    assert dec.mean() < 0.5 and dec.max() <= 8
    assert full.mean() < 0.5


def _no_metadata(path: Path) -> None:
    data = path.read_bytes()
    with Image.open(path) as im:
        assert not im.getexif(), im.getexif()
        assert not any(k in im.info for k in ("exif", "xmp", "XML:com.adobe.xmp", "comment")), im.info.keys()
    assert b"Exif\x00\x00" not in data and b"HyperObfTestCam" not in data and b"http://ns.adobe.com/xap" not in data
    if data.startswith(b"\x89PNG"):
        i, chunks = 8, []
        while i < len(data):
            n = int.from_bytes(data[i:i + 4], "big")
            chunks.append(data[i + 4:i + 8])
            i += 12 + n
        assert not {b"eXIf", b"tEXt", b"iTXt", b"zTXt"} & set(chunks), chunks


def test_browser_downloads_carry_no_metadata(browser_run):
    run = browser_run
    with Image.open(run["photo"]) as src:  # the input had EXIF with GPS and a camera make
        assert src.getexif().get(0x010F) == "HyperObfTestCam" and src.getexif().get_ifd(0x8825)
    for name, fmt in (("big_protected.jpg", "JPEG"), ("big_protected.png", "PNG")):
        p = run["out"] / name
        with Image.open(p) as im:
            assert im.format == fmt and im.size == (3000, 4000)
        _no_metadata(p)
    dl = [s for s in run["result"]["steps"] if s["do"] == "download"]
    assert dl[0]["suggested"] == "photo12mp_protected.jpg" and dl[1]["suggested"] == "photo12mp_protected.png"


def test_browser_model_status_and_psp_download(browser_run):
    from hyperobf.protection import status_line

    run = browser_run
    by_model = [(s, r) for s, r in zip(run["steps"], run["result"]["steps"]) if s["do"] in ("model", "model_url")]
    s0, r0 = by_model[0]
    assert "spec digest verified" in r0["modelStatus"]
    assert status_line(None) in r0["modelStatus"]
    wrong, right = [r for s, r in by_model if s["do"] == "model_url"]
    assert "refused the token (HTTP 401)" in wrong["message"]
    assert right["message"] == "" and right["model"]["modelId"] == "highpass"
    auths = [h.get("Authorization") for m, p, h in run["rec"].static if p.startswith("/v1/masknets/")]
    assert auths == ["Bearer wrong-token", f"Bearer {TOKEN}"]


def test_browser_hostile_input_gets_one_line_messages(browser_run):
    run = browser_run
    msgs = {}
    for s, r in zip(run["steps"], run["result"]["steps"]):
        if s["do"] == "photo" and "dump" not in s and "work.png" not in s["file"]:
            msgs[Path(s["file"]).name] = r["message"]
        if s["do"] == "model" and "name" in s:
            msgs[s["name"]] = r["message"]
    assert "not an image this page can read" in msgs["notes.jpg"]
    assert "truncated JPEG" in msgs["cut.jpg"]
    assert "image too large (10000×10000 = 100 MP" in msgs["huge.jpg"]
    assert "spec digest does not match" in msgs["digest"]
    assert "not a HyperObf model" in msgs["plain"]
    assert "not a loadable ONNX model" in msgs["text"] and "not a loadable ONNX model" in msgs["cut"]
    assert "unknown model format version" in msgs["version"]
    for k, v in msgs.items():
        assert v and "\n" not in v, (k, v)
    last = run["result"]["steps"][-3]  # after all that, a good model and photo still work
    assert last["resultShown"] and last["message"] == ""
    assert not run["result"]["errors"], run["result"]["errors"]


def test_browser_makes_no_request_but_its_own_files_and_the_model(browser_run):
    """Every request of the session (Chromium's record of the page and its workers, and our servers' logs):
    only the page's own static files and the model download; nothing reaches the proxy that any other host
    would need — except the canary the test sends itself at the end, which proves both recorders work."""
    run = browser_run
    origin, reqs = run["origin"], run["result"]["requests"]
    marks = [r["requests_so_far"] for r in run["result"]["steps"] if r["do"] == "mark"]
    before_canary = reqs[:marks[-1]]
    allowed = {"/", "/style.css", "/vendor/ort.wasm.min.mjs", "/vendor/ort-wasm-simd-threaded.mjs",
               "/vendor/ort-wasm-simd-threaded.wasm", "/v1/masknets/user0042/file"}
    src = {f"/src/{p.name}" for p in (WEB / "src").glob("*.js")}
    for r in before_canary:
        url = r["url"]
        if url.startswith(("blob:" + origin + "/", "data:")):
            continue  # local: the download's object URL, the empty favicon
        assert url.startswith(origin + "/"), r
        path = url[len(origin):]
        assert path in allowed or path in src, r
        assert r["method"] == "GET", r
    # Protecting the 12 MP photo and downloading it twice: not one network request.
    during = [r for r in reqs[marks[0]:marks[1]] if not r["url"].startswith(("blob:", "data:"))]
    assert during == [], during
    # What reached the static server agrees (all GETs, nothing else), and the proxy saw only the canary.
    assert {m for m, p, h in run["rec"].static} == {"GET"}
    assert all(p.split("?")[0] in allowed | src or p == "/index.html" for m, p, h in run["rec"].static)
    assert all("Cookie" not in h and "Referer" not in h for m, p, h in run["rec"].static if p.startswith("/v1/"))
    # The proxy also sees Chromium's own background services (component updater, network time, sign-in):
    # they start with the browser, on about:blank too, whatever the flags, and are not the page's requests
    # (the page-level record above would show any request the page made, to those hosts as well).
    canary = ("CONNECT", "hyperobf-canary.invalid:443")
    assert canary in run["rec"].proxy
    others = [e for e in run["rec"].proxy if e != canary and not _host(e).endswith(CHROMIUM_SERVICES)]
    assert others == [], others
    assert reqs[-1]["url"] == "https://hyperobf-canary.invalid/leak"


CHROMIUM_SERVICES = (".google.com", ".googleapis.com", ".gvt1.com", ".gstatic.com")


def _host(entry: tuple[str, str]) -> str:
    from urllib.parse import urlsplit

    method, target = entry
    return "." + (target.rsplit(":", 1)[0] if method == "CONNECT" else (urlsplit(target).hostname or ""))

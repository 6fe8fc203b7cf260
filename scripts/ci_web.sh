#!/usr/bin/env bash
# CI: what tests/test_web.py needs — Chromium from the OS packages (root only; no browser download) and the
# web client's npm lockfile (onnxruntime-web, playwright-core; `npm ci` copies onnxruntime-web's WASM files
# into web/vendor/). Never fatal: it always exits 0; if an install fails the browser tests skip, each with
# its reason. .ci/run starts it in the background while pip installs, and waits for it before the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
log() { echo "ci_web: $*"; }
t0=$SECONDS

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    log "chromium already installed"
elif [ "$(id -u)" != 0 ]; then
    log "chromium is not installed and this is not root: the browser tests will skip"
elif ! command -v apt-get >/dev/null 2>&1; then
    log "chromium is not installed and apt-get is not available: the browser tests will skip"
else
    apt_install() {
        DEBIAN_FRONTEND=noninteractive timeout 420 apt-get -o DPkg::Lock::Timeout=120 install -y -qq \
            --no-install-recommends chromium >/tmp/ci_web_apt.log 2>&1
    }
    # Package lists may already be there: try without an update first (saves ~15 s).
    if apt_install || { timeout 300 apt-get -o DPkg::Lock::Timeout=120 update -qq >>/tmp/ci_web_apt.log 2>&1 && apt_install; }; then
        log "chromium installed ($(chromium --version 2>/dev/null | head -n 1))"
    else
        log "apt-get install chromium failed, the browser tests will skip: $(tail -n 1 /tmp/ci_web_apt.log)"
    fi
fi

if ! command -v npm >/dev/null 2>&1; then
    log "npm is not installed: the web tests will skip"
elif (cd web && timeout 300 npm ci --no-audit --no-fund --loglevel=error); then
    log "web/node_modules and web/vendor ready ($(cat web/vendor/VERSION 2>/dev/null))"
else
    log "npm ci in web/ failed: the browser tests will skip"
fi
log "done in $((SECONDS - t0)) s"
exit 0

"""File modes of what HyperObf writes: new files get what a plain ``open()`` would give them.

``tempfile.mkstemp`` creates 0600 files; a file written through one and renamed into place keeps
that, unlike a file opened directly (0666 less the umask). Writers that go through a temp file
``fchmod`` it to :func:`default_file_mode` first. No dependencies (used by the device runtime and
the PSP client).
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where /proc says it (Linux); elsewhere set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:  # os.umask can only be read by setting it
        old = os.umask(0o077)
        os.umask(old)
    return old


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()

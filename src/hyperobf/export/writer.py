"""Writing many small model files fast and atomically.

Everything goes into a hidden staging folder; only when every file is written, read back and
verified does it become the output (``Staging.commit``): a new or empty output folder is
replaced by the staging folder in one rename, otherwise files are renamed in one by one. On
any error the staging folder is removed and the output folder is left as it was.

Per file: exclusive create, write, read back and compare with the bytes meant to be there
(the cheap integrity check every file gets), sha256 for the manifest. Two writer threads:
file I/O and hashing release the GIL, so both cores stay busy.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import ExportError

_os_write = os.write  # module-level so tests can simulate a full disk (ENOSPC)
READ_BACK = True  # read every file back through its descriptor and compare (the per-file integrity check)
WORKERS = 2


def _write_file(path: str | Path, data: memoryview, check: bool = False) -> None:
    """Create ``path`` (never replacing a file) with ``data``; ``check``: read it back through the
    same descriptor and compare (OSError if the file does not hold exactly ``data``)."""
    fd = os.open(path, (os.O_RDWR if check else os.O_WRONLY) | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        done = 0
        while done < len(data):
            done += _os_write(fd, data[done:])
        if check:
            got = os.pread(fd, len(data) + 1, 0)
            # numpy compare (memcmp, ~3 us for 57 kB); `bytes != memoryview` goes element by element
            # through the buffer protocol (~45 us) while holding the GIL, which stalls the other writer.
            if len(got) != len(data) or not np.array_equal(np.frombuffer(got, np.uint8), np.frombuffer(data, np.uint8)):
                raise OSError(errno.EIO, "read-back does not match what was written", str(path))
    finally:
        os.close(fd)


def tree_sha256(files: dict[str, str]) -> str:
    """Digest of a package folder: sha256 over sorted ``"<relative path> <file sha256>\\n"`` lines."""
    lines = "".join(f"{rel} {files[rel]}\n" for rel in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


class Pending:
    """Writes in flight on the writer threads."""

    def __init__(self, futures: list) -> None:
        self.futures = futures

    def result(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for f in self.futures:
            out += f.result()
        return out


class Staging:
    """A staging folder for ``out``; :meth:`commit` makes its files the output."""

    def __init__(self, out: Path, overwrite: bool = False) -> None:
        self.out = Path(os.path.abspath(out))
        self.overwrite = overwrite
        if self.out.exists() and not self.out.is_dir():
            raise ExportError(f"output path exists and is not a folder: {self.out}")
        # Fast path: a new or empty output folder is replaced by the staging folder in one rename
        # (the whole export appears at once); otherwise stage inside it and rename file by file.
        self.whole = not self.out.exists() or not any(self.out.iterdir())
        parent = self.out.parent if self.whole else self.out
        self.created: list[Path] = []  # folders made for the output's parent; removed again on abort
        for p in [parent, *parent.parents]:
            if p.exists():
                break
            self.created.append(p)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "folder is not writable", str(parent))
            prefix = f".{self.out.name}.staging-" if self.whole else ".staging-"
            self.dir = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
        except BaseException:
            self._remove_created()
            raise
        self.names: list[str] = []
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="hyperobf-write")

    def check_free(self, names: list[str]) -> None:
        """Refuse to replace existing outputs unless overwriting was asked for."""
        if self.overwrite:
            return
        for name in names:
            if (self.out / name).exists():
                raise ExportError(f"{self.out / name} already exists; use an empty output folder "
                                  f"(or --overwrite to replace a previous export)")

    def write_users(self, names: list[str], files: dict[str, np.ndarray]) -> list[tuple[str, int]]:
        """Write n users' files and wait; returns [(sha256, bytes)] per user (see :meth:`submit`)."""
        return self.submit(names, files).result()

    def submit(self, names: list[str], files: dict[str, np.ndarray]) -> "Pending":
        """Start writing n users' files on the writer threads; ``.result()`` -> [(sha256, bytes)].

        ``files``: {relative path: (n, length) uint8}; the key "" means the user's file is
        ``names[i]`` itself, other keys are files inside the package folder ``names[i]``.
        """
        n = len(names)
        parts = [idx for idx in np.array_split(np.arange(n), min(WORKERS, max(n, 1))) if len(idx)]
        self.names += names
        return Pending([self._pool.submit(self._write_range, names, files, idx) for idx in parts])

    def _write_range(self, names: list[str], files: dict[str, np.ndarray], idx: np.ndarray) -> list[tuple[str, int]]:
        # A package's folders, parents first (made with one mkdir each, not mkdir -p per file).
        folders = sorted({str(Path(rel).parents[k]) for rel in files if rel for k in range(len(Path(rel).parents) - 1)},
                         key=lambda d: d.count("/"))
        res = []
        for i in idx:
            root = os.path.join(self.dir, names[i])
            if "" not in files:
                os.mkdir(root)
                for d in folders:
                    os.mkdir(os.path.join(root, d))
            digests: dict[str, str] = {}
            size = 0
            for rel, arr in files.items():
                row = memoryview(arr[i])
                _write_file(os.path.join(root, rel) if rel else root, row, check=READ_BACK)
                digests[rel] = hashlib.sha256(row).hexdigest()
                size += len(row)
            res.append((digests[""] if "" in digests else tree_sha256(digests), size))
        return res

    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self, extra: list[str] = ()) -> None:
        """Move every written name (and ``extra`` names, e.g. the manifest, last) into ``out``."""
        self._pool.shutdown(wait=True)
        if self.whole:
            os.chmod(self.dir, 0o755)  # mkdtemp made it 0700
            os.replace(self.dir, self.out)  # atomic; replaces an empty folder
            self.names = []
            return
        moved: list[str] = []
        trash = self.dir / ".replaced"
        try:
            for name in [*self.names, *extra]:
                dst = self.out / name
                if dst.is_dir() and not dst.is_symlink():  # overwrite mode: a previous package folder
                    trash.mkdir(exist_ok=True)
                    os.replace(dst, trash / name)
                os.replace(self.dir / name, dst)
                moved.append(name)
        except BaseException:
            for name in reversed(moved):  # put back what was moved: all or nothing
                try:
                    os.replace(self.out / name, self.dir / name)
                except OSError:
                    pass
            raise
        self.names = []

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def abort(self) -> None:
        self.close()
        self._remove_created()

    def _remove_created(self) -> None:
        for p in self.created:  # innermost first; only folders that are still empty
            try:
                p.rmdir()
            except OSError:
                break

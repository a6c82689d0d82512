"""Opening media for reading and writing outputs atomically, with errors that say what to do."""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import av

from .errors import MediaError

PathLike = str | os.PathLike


def require_input_file(path: PathLike) -> Path:
    """Return `path` as a Path, or raise MediaError if it is not an existing, readable file."""
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file not found", "check the path; relative paths are resolved from "
                         f"{os.getcwd()}")
    if not path.is_file():
        raise MediaError(path, "is not a file", "pass the path of a video or audio file")
    if not os.access(path, os.R_OK):
        raise MediaError(path, "file is not readable", "check its permissions")
    return path


@contextlib.contextmanager
def open_input(path: PathLike) -> Iterator[av.container.InputContainer]:
    """Open a media file for reading; failures to open become MediaError naming the file."""
    path = require_input_file(path)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.InvalidDataError, av.error.EOFError) as error:
        raise MediaError(path, f"not a media file or corrupt ({error.strerror})",
                         "re-export it as mp4/mkv/wav") from error
    except av.error.FFmpegError as error:
        raise MediaError(path, f"cannot be opened ({error.strerror})") from error
    try:
        yield container
    finally:
        container.close()


def check_output_path(path: PathLike, extensions: Iterable[str], *, overwrite: bool, kind: str) -> Path:
    """Validate an output path before any work is done: known extension, writable folder, no clobbering."""
    path = Path(path)
    extensions = sorted(extensions)
    suffix = path.suffix.lower()
    if suffix not in extensions:
        raise MediaError(path, f"unsupported {kind} output extension {suffix or '(none)'!r}",
                         f"use one of {', '.join(extensions)}")
    if path.exists() and not overwrite:
        raise MediaError(path, "output file already exists", "pass overwrite=True or choose another name")
    if path.exists() and not path.is_file():
        raise MediaError(path, "output path exists and is not a file", "choose another name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MediaError(path, "output folder does not exist", f"create {folder} first")
    if not os.access(folder, os.W_OK):
        raise MediaError(path, "output folder is not writable", "check its permissions or choose another folder")
    return path


def next_free_stem(folder: PathLike, stem: str) -> str:
    """`<stem>_NNNNN`, numbered one above every `<stem>_NNNNN...` file in `folder`, whatever its
    extension or suffix, so outputs of repeated runs never collide and sort in the order written."""
    numbered = re.compile(re.escape(stem) + r"_(\d+)(?=[._]|$)")
    folder = Path(folder)
    taken = [int(m.group(1)) for p in folder.glob(f"{glob_escape(stem)}_*") if (m := numbered.match(p.name))]
    return f"{stem}_{max(taken, default=0) + 1:05d}"


def write_report(path: PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write a text file (a JSON report, a summary) atomically, refusing to replace an existing one
    unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' already exists; pass --overwrite to replace it, or choose another name")
    with atomic_output(path, overwrite=overwrite) as partial:
        partial.write_text(text, encoding="utf-8")
    return path


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (threads may be writing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on failure delete it.

    The temporary name keeps the extension so muxers pick the right format from it, and lives in the
    same folder so the final os.replace is an atomic rename on the same file system.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.partial-", suffix=path.suffix)
    except OSError as error:
        raise MediaError(path, f"cannot create a file in {folder} ({error.strerror})",
                         "check that the folder exists and is writable") from error
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        yield temp_path
        if path.exists() and not overwrite:
            raise MediaError(path, "output file appeared while writing", "pass overwrite=True or choose another name")
        os.chmod(temp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp_path.unlink()
        raise

"""Where things live: the project root, ``data/`` and ``outputs/``, found from the package location.

Never from the working directory: notebooks run with ``notebooks/`` as their working directory
(papermill and Jupyter alike), the CLI runs from anywhere. ``MUSICRNN_DATA`` and
``MUSICRNN_OUTPUTS`` override the two folders (a shared data disk on a GPU host, say); for an
installed (non-editable) package, whose location is not inside a checkout, they default to
``~/.musicrnn/``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes them 0600)

_PACKAGE_DIR = Path(__file__).resolve().parent


def _find_root() -> Path:
    candidate = _PACKAGE_DIR.parent.parent  # lib/musicrnn -> lib -> root
    if (candidate / "pyproject.toml").is_file() and (candidate / "notebooks").is_dir():
        return candidate
    return Path.home() / ".musicrnn"


ROOT: Path = _find_root()
DATA: Path = Path(os.environ.get("MUSICRNN_DATA", ROOT / "data")).expanduser()
OUTPUTS: Path = Path(os.environ.get("MUSICRNN_OUTPUTS", ROOT / "outputs")).expanduser()
NOTEBOOKS: Path = ROOT / "notebooks"
CONFIGS: Path = ROOT / "configs"
RUNS: Path = OUTPUTS / "runs"


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's or a
    SLURM job's CPU set), not every core of the machine (``os.cpu_count``). Pools are sized by
    it: a pool of more processes than cores only pays their start-up."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """The data folder: ``override`` when given, else ``DATA``."""
    return Path(override).expanduser() if override else DATA


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file and a rename.

    A reader never sees a half-written file, and a crash leaves the old file (if any) intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_path(path: str | os.PathLike) -> "_AtomicPath":
    """Context manager giving a temporary path beside ``path``; renamed onto it on success.

    For writers that want a file name (``np.savez``, ``model.save``, ``pretty_midi.write``)::

        with atomic_path(out) as tmp:
            midi.write(str(tmp))
    """
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.stem}.", suffix=f".tmp{''.join(self.path.suffixes)}",
            dir=self.path.parent,
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None and self.tmp.exists():
            os.chmod(self.tmp, _FILE_MODE)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def read_yaml(path: str | Path, missing: str) -> object:
    """A YAML file's content (``{}`` for an empty one), read safely.

    ``missing`` finishes the error for a file that is not there ("see configs/ ...").
    """
    import yaml

    from .errors import MusicRNNError

    path = Path(path)
    if not path.is_file():
        raise MusicRNNError(f"no {missing}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MusicRNNError(f"{path} is not valid YAML: {exc}") from exc

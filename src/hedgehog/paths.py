"""Where the project lives on disk: its root, the run-output folder, the data cache, installed packages.

The root is found by a marker, not by counting parent folders: ``$HEDGEHOG_ROOT`` when set, else
the nearest folder above the current directory (then above this file) holding both
``pyproject.toml`` and ``conf/``. Data and tokenizers are cached under ``outputs/cache`` (or
``$HEDGEHOG_CACHE``); packages from the npm registry live in ``.npm/node_modules`` (``make install``
puts them there).
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path

MARKERS = ("pyproject.toml", "conf")


def _is_root(folder: Path) -> bool:
    return all((folder / m).exists() for m in MARKERS)


@cache
def project_root() -> Path:
    """The repository root: ``$HEDGEHOG_ROOT``, else the nearest folder with pyproject.toml and conf/."""
    if env := os.environ.get("HEDGEHOG_ROOT"):
        root = Path(env).resolve()
        if not _is_root(root):
            raise FileNotFoundError(
                f"HEDGEHOG_ROOT={env} holds no {' and '.join(MARKERS)}; point it at the repo"
            )
        return root
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if _is_root(folder):
                return folder
    raise FileNotFoundError(
        f"no folder above {Path.cwd()} holds {' and '.join(MARKERS)}; run from the hedgehog repository "
        "or set HEDGEHOG_ROOT to it"
    )


def output_dir() -> Path:
    """Where single runs write checkpoints, logs and records: <root>/outputs."""
    return project_root() / "outputs"


def cache_dir(*parts: str) -> Path:
    """A folder of the data cache (prepared corpora, trained tokenizers): ``$HEDGEHOG_CACHE`` or outputs/cache."""
    base = Path(os.environ["HEDGEHOG_CACHE"]) if "HEDGEHOG_CACHE" in os.environ else output_dir() / "cache"
    folder = base.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def npm_package_dir(name: str) -> Path:
    """The folder of an npm package installed by ``make install`` into <root>/.npm/node_modules."""
    folder = project_root() / ".npm" / "node_modules" / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the npm package {name} is not installed at {folder}; `make install` installs it (needs Node.js "
            f"and npm), or run `npm install --prefix .npm {name}` in the repository root"
        )
    return folder


def pypi_package_dir(module: str, install: str) -> Path:
    """The folder of an installed Python package found by import name, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the package {module} is not installed; install it with `{install}`")
    return Path(spec.origin).parent

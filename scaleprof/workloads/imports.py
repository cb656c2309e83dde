"""Importing the user's code: `module:function` strings from the experiment file.

The same import runs on the driver (to check everything before Ray starts) and in every Ray worker,
where the user's modules arrive through the run's runtime environment (`py_modules`, see
`code_modules`). Every failure is a `WorkloadError` naming the experiment field at fault.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The user's code directories on sys.path now, outermost scope first (see user_code); named in import errors.
_ACTIVE: list[str] = []
_DEPTH = [0]  # user_code scopes open now: the outermost one forgets the user's modules on its way out


class WorkloadError(Exception):
    """The user's model, data or loop cannot be used: `field` is the experiment field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def optional_package(module: str, extra: str, field: str) -> Any:
    """A package that only some experiments need (torchvision, transformers), or a WorkloadError
    naming the field that asked for it and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.partition(".")[0]
        raise WorkloadError(field, f"needs the {top} package: pip install 'scaleprof[{extra}]'") from None


@contextlib.contextmanager
def user_code(code_dirs: list[str] | None) -> Iterator[None]:
    """The user's code directories first on sys.path for as long as the block runs (driver side; workers
    get the code from Ray's `py_modules`). On the way out the directories this scope added leave sys.path
    and the modules imported from them leave sys.modules, so a second study in the same process (a
    notebook) imports its own code, even under the same module names. A module the program had imported
    before is left alone, and so is any library below a code directory (a .venv inside the project)."""
    added = [d for d in dict.fromkeys(code_dirs or []) if d not in sys.path]
    before = set(sys.modules)
    sys.path[:0] = added
    _ACTIVE.extend(added)
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        for directory in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(directory)
            _ACTIVE.remove(directory)
        if _DEPTH[0] == 0:
            _forget_own_modules(code_dirs, before)


def _forget_own_modules(code_dirs: list[str] | None, before: set[str]) -> None:
    """Drop the modules imported since `before` that are the user's own: what code_modules ships (the code
    directories' top-level files and packages) and their submodules, never a library that happens to live
    below a code directory (a project's .venv)."""
    own = {Path(path).stem if path.endswith(".py") else Path(path).name for path in code_modules(code_dirs)}
    for name in set(sys.modules) - before:
        if name.partition(".")[0] in own:
            del sys.modules[name]


def import_object(path: str, field: str) -> Callable[..., Any]:
    """The callable `module:function` names, or a WorkloadError saying why not."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            where = f" (looked in {', '.join(_ACTIVE)} and the Python path)" if _ACTIVE else ""
            raise WorkloadError(field, f"cannot import {module_name!r}: no module named {exc.name!r}{where}") from None
        raise WorkloadError(field, f"importing {module_name!r} failed: {_last_line(exc)}") from None
    except Exception as exc:  # the user's module raised while it was imported
        raise WorkloadError(field, f"importing {module_name!r} failed: {_last_line(exc)}") from None
    target = getattr(module, attr, None)
    if target is None:
        raise WorkloadError(field, f"module {module_name!r} ({_file(module)}) has no {attr!r}")
    if not callable(target):
        raise WorkloadError(field, f"{path} is a {type(target).__name__}, not a function")
    return target


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators before calling the user's factory, so a
    factory that draws from them (np.random.randn, torch.randn) builds the same thing on the driver
    and in every worker."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def call_user(function: Callable[..., Any], field: str, **kwargs: Any) -> Any:
    """Call the user's factory, turning its exceptions into a message that names the field."""
    try:
        return function(**kwargs)
    except TypeError as exc:
        raise WorkloadError(field, f"calling it with kwargs {sorted(kwargs)} failed: {_last_line(exc)}") from None
    except Exception as exc:
        raise WorkloadError(field, f"it raised {_last_line(exc)}") from None


def code_modules(code_dirs: list[str] | None) -> list[str]:
    """What Ray's `py_modules` ships so workers import the user's code as the driver does: each
    top-level `.py` file and each package directory (one with `__init__.py`) of the code directories.
    Data directories beside them are not shipped."""
    modules: list[str] = []
    for directory in code_dirs or []:
        root = Path(directory)
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") or entry.name in ("__init__.py", "__pycache__"):
                continue
            if entry.is_file() and entry.suffix == ".py" or entry.is_dir() and (entry / "__init__.py").is_file():
                modules.append(str(entry))
    return modules


def _last_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]


def _file(module: Any) -> str:
    return str(getattr(module, "__file__", None) or module.__name__)

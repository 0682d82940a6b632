"""Load `path/to/file.py:ATTR` or `package.module:ATTR` as an nn.Module (this runs the user's code, client side)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

from .refusals import CaptureError, user_code_failure


def load_module(source: str) -> nn.Module:
    """The module SOURCE names: an nn.Module attribute, or a zero-argument callable (class, factory) returning one."""
    target, sep, attr = source.rpartition(":")
    if not sep or not target or not attr:
        raise CaptureError(f"SOURCE {source!r}: expected path/to/file.py:ATTR or package.module:ATTR")
    if target.endswith(".py") or "/" in target or "\\" in target:
        mod = _load_file(Path(target))
    else:
        try:
            mod = importlib.import_module(target)
        except ImportError as e:
            raise CaptureError(f"cannot import {target!r}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the module's own top-level code failed
            raise user_code_failure(e, f"importing {target}") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CaptureError(f"{target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise CaptureError(f"{source} is a {type(obj).__name__}, not an nn.Module or a callable returning one")
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - the user's factory failed
            raise user_code_failure(e, f"calling {attr}()") from None
        if not isinstance(obj, nn.Module):
            raise CaptureError(f"{attr}() returned a {type(obj).__name__}, not an nn.Module")
    return obj


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise CaptureError(f"no such file: {path}")
    name = f"_morphserve_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CaptureError(f"cannot load {path} as Python")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    sys.path.insert(0, str(path.resolve().parent))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - the file's own top-level code failed
        raise user_code_failure(e, f"running {path}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return mod

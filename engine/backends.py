"""Choosing a backend by URL: the one shape of the three backend factories.

`engine.persistence.factory`, `engine.queues.factory` and `engine.matching.factory` each take
the scheme of their URL with `url_scheme`, branch on it, and import the chosen backend only
then: an embedded backend with a plain import in its branch, a backend of the `distributed`
extra by name with `import_backend` (so neither mypy nor the import system needs the extra
where it is not installed). Nothing registers at import time, so `cadenza dev` never imports
a distributed backend's driver. Every URL no backend takes raises `BackendUrlError`, worded
the same way by all three.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "distributed"


class BackendUrlError(ValueError):
    """A URL no backend takes, or whose backend is not installed (a configuration error:
    the CLI prints it and exits)."""


def url_scheme(url: str) -> str:
    """The scheme of `url`, lower case; "" when it has none."""
    return url.partition("://")[0].lower() if "://" in url else ""


def unsupported(role: str, url: str, expected: str) -> BackendUrlError:
    """The error for a `role` URL whose scheme no backend takes; `expected` lists the forms."""
    return BackendUrlError(f"unsupported {role} url {url!r}: expected {expected}")


def import_backend(role: str, url: str, module: str) -> ModuleType:
    """Import the backend `module` of the distributed extra, chosen by `url`.

    Raises:
        BackendUrlError: the module (or the driver it needs) is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUrlError(
            f"{role} url {url!r}: the {url_scheme(url)} backend is not installed ({exc}); "
            f"install the {EXTRA} extra (pip install 'cadenza[{EXTRA}]')"
        ) from exc

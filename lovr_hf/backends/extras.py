"""One clear error when an adapter's optional dependency is missing (never an "unknown backend").

Adapter modules import their heavy dependencies inside functions, so they always import and always
register their class and families; the constructor calls :func:`require_extra`, which names the pip extra.
"""

from __future__ import annotations

import importlib.util


def missing_modules(*modules: str) -> list[str]:
    """The top-level modules among ``modules`` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_extra(backend: str, extra: str, *modules: str) -> None:
    """Raise ``ImportError`` naming ``pip install 'lovr_hf[<extra>]'`` if any of ``modules`` is missing."""
    missing = missing_modules(*modules)
    if missing:
        raise ImportError(
            f"the {backend} backend needs {', '.join(missing)}: pip install 'lovr_hf[{extra}]'"
        )

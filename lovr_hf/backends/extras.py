"""One clear error when an adapter's optional dependency is missing (never an "unknown backend").

Adapter modules import their heavy dependencies inside functions, so they always import and always
register their class and families; the constructor calls :func:`require_extra`, which names the pip extra
(or the exact install line, for a package that cannot be a plain extra).
"""

from __future__ import annotations

import importlib.util


def missing_modules(*modules: str) -> list[str]:
    """The top-level modules among ``modules`` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_extra(backend: str, extra: str, *modules: str, install: str | None = None,
                  note: str | None = None) -> None:
    """Raise ``ImportError`` naming ``pip install 'lovr_hf[<extra>]'`` (or ``install``, the full install line,
    followed by ``note`` in brackets) if any of ``modules`` is missing."""
    missing = missing_modules(*modules)
    if missing:
        how = install or f"pip install 'lovr_hf[{extra}]'"
        raise ImportError(f"the {backend} backend needs {', '.join(missing)}: {how}" + (f" ({note})" if note else ""))

"""Registries by name for pluggable backends (captioners, LLMs, embedders, detectors, scorers).

A backend is found by its registered name, by ``module:Class`` (a user's own class, imported on
demand), or through the ``lovr_hf.<kind>`` entry-point group of an installed package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from lovr_hf.failures import UnknownName

T = TypeVar("T")


def _missing_extra(exc: ModuleNotFoundError) -> bool:
    """Whether ``exc`` says a third-party package (an optional extra such as ``open_clip``) is not installed:
    only that may hide a built-in backend. A lovr_hf module that is missing, or any other ``ImportError``
    (a name a module no longer has), is a bug and must not read as "unknown backend"."""
    name = exc.name or ""
    return bool(name) and name != "lovr_hf" and not name.startswith("lovr_hf.")


class Registry(Generic[T]):
    """Name -> class table for one backend family."""

    def __init__(self, kind: str, modules: tuple[str, ...] = (), base: type | None = None) -> None:
        self.kind = kind
        # the ABC every class of this family implements: a user's module:Class or entry point that does not
        # subclass it is refused by name (the stages read what the ABC declares, never probe for it)
        self.base = base
        self._classes: dict[str, type[T]] = {}
        # modules imported lazily on first lookup so that optional heavy backends register themselves
        self._modules = modules
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            self._classes[name] = cls
            return cls

        return deco

    def _load_builtin(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if not _missing_extra(exc):
                    self._loaded = False  # the next lookup raises it again, never "unknown backend"
                    raise
                # an optional extra is not installed: its names stay unavailable
            except ImportError:  # a broken import inside lovr_hf's own backend is a bug: it shows
                self._loaded = False
                raise

    def names(self) -> list[str]:
        self._load_builtin()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        if ":" in name and name not in self._classes:  # a user's module:Class: no built-in needs importing
            module, _, attr = name.partition(":")
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # the user's module imports something missing: its own error shows
                    raise
                raise UnknownName(f"{self.kind} {name!r}: no module {module!r} to import (is it on "
                                  "PYTHONPATH?)") from None
            if not hasattr(mod, attr):
                raise UnknownName(f"{self.kind} {name!r}: module {module!r} has no {attr!r}")
            return self._checked(name, getattr(mod, attr))
        self._load_builtin()
        if name in self._classes:
            return self._classes[name]
        for ep in entry_points(group=f"lovr_hf.{self.kind}"):
            if ep.name == name:
                return self._checked(name, ep.load())
        raise UnknownName(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())} (or use module:Class)")

    def _checked(self, name: str, cls: Any) -> type[T]:
        if self.base is not None and not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise UnknownName(f"{self.kind} {name!r} is not a {self.base.__module__}.{self.base.__qualname__} "
                              "subclass: a plug-in implements that class (see docs/architecture.md)")
        return cls

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

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


class Registry(Generic[T]):
    """Name -> class table for one backend family."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
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
            except ImportError:  # an optional extra is not installed: its names stay unavailable
                continue

    def names(self) -> list[str]:
        self._load_builtin()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        if ":" in name and name not in self._classes:  # a user's module:Class: no built-in needs importing
            module, _, attr = name.partition(":")
            return getattr(importlib.import_module(module), attr)
        self._load_builtin()
        if name in self._classes:
            return self._classes[name]
        for ep in entry_points(group=f"lovr_hf.{self.kind}"):
            if ep.name == name:
                return ep.load()
        raise UnknownName(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())} (or use module:Class)")

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

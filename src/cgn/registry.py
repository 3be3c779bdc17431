"""A small name → factory registry; duplicate names and unknown names are errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from cgn.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories, e.g. dataset classes or discriminators."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

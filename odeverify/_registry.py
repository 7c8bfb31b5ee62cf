"""One registry per concept (tableaus, solvers, problems, properties, ...).

Duplicate names are an error; an unknown name lists the choices and the closest match.
Everything that parametrizes (tests, CLI, suites, report) reads these registries.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping for one kind of thing (``kind`` is used in messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")
        key = name.lower()
        if key in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered; names must be unique")
        self._items[key] = obj
        return obj

    def get(self, name: str) -> T:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be given by name (str), got {type(name).__name__} {name!r}")
        try:
            return self._items[name.lower()]
        except KeyError:
            close = difflib.get_close_matches(name.lower(), list(self._items), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown {self.kind} {name!r}{hint} Choices: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

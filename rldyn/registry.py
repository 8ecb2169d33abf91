"""A tiny named registry: what studies swap (advantages, losses, rewards, taggers) is chosen by string."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to callables; unknown names raise a ValueError that lists the valid ones."""

  def __init__(self, kind: str):
    self.kind = kind
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def deco(fn: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.kind} {name!r} registered twice")
      self._items[name] = fn
      return fn
    return deco

  def get(self, name: str) -> T:
    if name not in self._items:
      raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._items))}")
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def __contains__(self, name: str) -> bool:
    return name in self._items

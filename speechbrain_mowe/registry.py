"""Name -> factory registries with entry-point discovery.

A registry maps short names used in YAML (``name: whisper``) to classes or
factory functions. Third-party packages add entries without touching this
package by declaring an entry point in the registry's group, e.g. in their
``setup.cfg``::

    [options.entry_points]
    speechbrain_mowe.encoders =
        my_encoder = my_package.encoders:MyEncoder

Discovery runs once, on first lookup. An extension that fails to import is
logged as a warning and skipped; it never stops the others from loading.
"""

import inspect
import logging
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, Iterator, List, Tuple

logger = logging.getLogger(__name__)


def load_entry_points(group: str, kind: str) -> Iterator[Tuple[str, Any]]:
    """``(name, object)`` of each entry point of ``group`` that loads; one that
    fails to import is logged as a warning (naming the ``kind`` of extension)
    and skipped."""
    for point in entry_points(group=group):
        try:
            loaded = point.load()
        except Exception as error:  # a broken extension must not break the others
            logger.warning(
                "Skipping %s extension '%s' (%s) from group %s: %s: %s",
                kind,
                point.name,
                point.value,
                group,
                type(error).__name__,
                error,
            )
            continue
        yield point.name, loaded


class Registry:
    """Names bound to factories whose products must be ``base`` instances.

    Arguments
    ---------
    kind : str
        What the registry holds, used in messages ("encoder").
    base : type
        Every product must be an instance of this class.
    group : str
        Entry-point group scanned for third-party factories.

    Example
    -------
    >>> import torch
    >>> reg = Registry("layer", torch.nn.Module, group="example.layers")
    >>> _ = reg.register("linear")(torch.nn.Linear)
    >>> reg.build("linear", in_features=2, out_features=3).out_features
    3
    >>> reg.build("conv")
    Traceback (most recent call last):
     ...
    KeyError: "Unknown layer 'conv'. Valid names: linear"
    """

    def __init__(self, kind: str, base: type, group: str):
        self.kind = kind
        self.base = base
        self.group = group
        self._factories: Dict[str, Callable[..., Any]] = {}
        self._discovered = False

    def register(self, name: str) -> Callable:
        """Decorator binding ``name`` to a class or factory function."""

        def decorator(factory: Callable) -> Callable:
            self._add(name, factory)
            return factory

        return decorator

    def _add(self, name: str, factory: Callable) -> None:
        if inspect.isclass(factory) and not issubclass(factory, self.base):
            raise TypeError(
                f"{self.kind} '{name}': {factory.__qualname__} is not a subclass of "
                f"{self.base.__qualname__}"
            )
        if not callable(factory):
            raise TypeError(f"{self.kind} '{name}': {factory!r} is not callable")
        known = self._factories.get(name)
        if known is not None and known is not factory:
            raise ValueError(f"{self.kind} name '{name}' is already bound to {known!r}")
        self._factories[name] = factory

    def discover(self) -> None:
        """Loads the factories declared in the entry-point group (once)."""
        if self._discovered:
            return
        self._discovered = True
        for name, factory in load_entry_points(self.group, self.kind):
            try:
                self._add(name, factory)
            except (TypeError, ValueError) as error:
                logger.warning("Skipping %s extension '%s': %s", self.kind, name, error)

    def names(self) -> List[str]:
        """Sorted list of the registered names."""
        self.discover()
        return sorted(self._factories)

    def get(self, name: str) -> Callable:
        """The factory bound to ``name``; KeyError lists the valid names."""
        self.discover()
        if name not in self._factories:
            raise KeyError(f"Unknown {self.kind} '{name}'. Valid names: {', '.join(self.names())}")
        return self._factories[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        """Builds ``name`` with ``kwargs`` and checks the product's type."""
        product = self.get(name)(**kwargs)
        if not isinstance(product, self.base):
            raise TypeError(
                f"{self.kind} '{name}' built a {type(product).__qualname__}, "
                f"not a {self.base.__qualname__}"
            )
        return product

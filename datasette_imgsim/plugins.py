"""Collects feature methods from every package that implements register_imgsim_methods."""
from __future__ import annotations

import pluggy

from . import hookspecs
from .methods.base import Method

pm = pluggy.PluginManager("datasette_imgsim")
pm.add_hookspecs(hookspecs)
pm.load_setuptools_entrypoints("datasette_imgsim")

from .methods import builtin  # noqa: E402  (registers the built-in methods through the same hook)

pm.register(builtin, name="datasette_imgsim.builtin")


class UnknownMethod(ValueError):
    pass


def get_methods() -> dict[str, Method]:
    """Every registered method by name; a later registration of a name wins."""
    methods: dict[str, Method] = {}
    # pluggy calls the most recently registered implementation first.
    for batch in reversed(pm.hook.register_imgsim_methods()):
        for method in batch or ():
            methods[method.name] = method
    return methods


def get_method(name: str) -> Method:
    methods = get_methods()
    try:
        return methods[name]
    except KeyError:
        raise UnknownMethod(
            f"unknown method {name!r}; available: {', '.join(sorted(methods))}"
        ) from None

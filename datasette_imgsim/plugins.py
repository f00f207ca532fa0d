"""Collects feature methods from every package that implements register_imgsim_methods.

Entry points are loaded on first use, not at import (as sqlite-utils' plugins.py does):
importing the package stays cheap for indexing workers and for Datasette's start-up."""
from __future__ import annotations

import threading

import pluggy

from . import hookspecs
from .errors import UnknownMethod
from .methods.base import Method

pm = pluggy.PluginManager("datasette_imgsim")
pm.add_hookspecs(hookspecs)
_loaded = False
_lock = threading.Lock()


def ensure_plugins_loaded() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        from .methods import builtin

        # Built-ins first: pluggy calls later registrations first, and a plugin may
        # replace a built-in by registering a method of the same name.
        pm.register(builtin, name="datasette_imgsim.builtin")
        pm.load_setuptools_entrypoints("datasette_imgsim")
        _loaded = True


def get_methods() -> dict[str, Method]:
    """Every registered method by name; a later registration of a name wins."""
    ensure_plugins_loaded()
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


def default_method_name() -> str:
    """The method `datasette imgsim index` builds when none is named."""
    return max(get_methods().values(), key=lambda m: m.default_priority).name


def default_index(specs: list):
    """Of a table's indexes, the one its queries use when no method is named: the built
    method with the highest default_priority (an index of a method no longer registered
    ranks last), the first built among equals."""
    methods = get_methods()

    def priority(spec):
        method = methods.get(spec.method)
        return method.default_priority if method is not None else -1

    return max(specs, key=priority)

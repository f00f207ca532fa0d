"""The plugin's own pluggy hook: how packages (and the built-ins) add feature methods."""
import pluggy

hookspec = pluggy.HookspecMarker("datasette_imgsim")
hookimpl = pluggy.HookimplMarker("datasette_imgsim")


@hookspec
def register_imgsim_methods():
    """Return a list of datasette_imgsim.methods.base.Method objects."""

"""The built-in methods, registered through the same hook other packages use."""
from ..hookspecs import hookimpl


@hookimpl
def register_imgsim_methods():
    from .cnn import cnn_method
    from .histogram import histogram_method
    from .hog import hog_method
    from .phash import phash_method

    return [histogram_method(), hog_method(), phash_method(), cnn_method()]

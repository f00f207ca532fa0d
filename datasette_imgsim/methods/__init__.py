"""Feature methods: one module each, all registered through register_imgsim_methods."""
from .base import Features, Method

__all__ = ["Features", "Method"]

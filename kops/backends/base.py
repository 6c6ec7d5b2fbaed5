"""The backend interface; it lives in :mod:`kops.backends.registry` (kept importable here)."""
from .registry import Backend, Capabilities, Case

__all__ = ["Backend", "Capabilities", "Case"]

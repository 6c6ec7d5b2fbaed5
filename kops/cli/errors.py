"""The command line's user errors: one line naming the argument, a non-zero exit status."""
from __future__ import annotations

import importlib

__all__ = ["UsageError", "require"]

#: optional dependency -> the extra of kops that installs it
EXTRAS = {"matplotlib": "plot", "tqdm": "progress", "pyarrow": "parquet", "sklearn": "data"}


class UsageError(Exception):
    """A bad argument or input: printed as ``kops CMD: error: MESSAGE`` with exit status 2.

    ``argument`` (e.g. ``"--centers"``) is prefixed to the message, as argparse does.
    """

    def __init__(self, message: str, argument: str | None = None):
        super().__init__(f"argument {argument}: {message}" if argument else message)


def require(module: str, what: str):
    """Import an optional dependency, or raise UsageError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        package = {"sklearn": "scikit-learn"}.get(top, top)
        extra = EXTRAS.get(top, top)
        raise UsageError(f"{what} needs {package}, which is not installed: pip install 'kops[{extra}]' "
                         f"(the {extra} extra; '.[{extra}]' in a checkout) or pip install {package}") from None

"""The torch/torchaudio pair audiodiff is built and tested with, and what to say when it is broken.

torchaudio ships a compiled library built against one torch release, and its metadata does not
say which: torchaudio 2.11.1 declares any torch >= 2.11, yet fails to load beside torch 2.11.0
(`undefined symbol: torch_exception_get_what_without_backtrace`). So setup.cfg pins the exact
pair below, and a pair that cannot load is reported as what it is, an installation fault, in
one line with the fix, never as bad audio or a traceback.

    python -m audiodiff.<command>   checks before anything else (audiodiff/__init__.py)
    torchaudio_functional()         the lazy import the library uses; raises InstallError
"""

from __future__ import annotations

import sys
from importlib import metadata

PINNED = {"torch": "2.11.0", "torchaudio": "2.11.0"}  # keep equal to setup.cfg (a test checks)
FIX = "pip install " + " ".join(f"{name}=={version}" for name, version in PINNED.items())


class InstallError(RuntimeError):
    """torch or torchaudio cannot load: an environment fault, not a fault of the user's data."""


def installed_versions() -> dict[str, str]:
    """The installed distributions' versions from their metadata (no import, so it works when
    the import is what fails); "not installed" for a missing one."""
    found = {}
    for name in PINNED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def pinned_pair_installed(found: dict[str, str] | None = None) -> bool:
    """Whether the installed versions are the pinned ones (a local tag such as +cpu is allowed,
    as pip's `==` allows it)."""
    found = installed_versions() if found is None else found
    return all(found[name].split("+")[0] == version for name, version in PINNED.items())


def describe(package: str, error: BaseException) -> str:
    """One line: what failed to load, the installed pair, the pair that works, the fix."""
    found = installed_versions()
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(detail) > 160:
        detail = detail[:157] + "..."
    have = " + ".join(f"{name} {version}" for name, version in found.items())
    want = " + ".join(f"{name} {version}" for name, version in PINNED.items())
    return (f"broken installation: {package} cannot load ({type(error).__name__}: {detail}); "
            f"installed {have}, audiodiff needs {want}: {FIX}")


def torchaudio_functional():
    """`torchaudio.functional`, or InstallError when torchaudio's compiled library cannot load."""
    try:
        import torchaudio.functional as AF
    except (OSError, ImportError) as e:
        raise InstallError(describe("torchaudio", e)) from e
    return AF


def check() -> None:
    """Import torch and torchaudio.functional; InstallError naming the fault if either fails."""
    try:
        import torch  # noqa: F401
    except (OSError, ImportError) as e:
        raise InstallError(describe("torch", e)) from e
    torchaudio_functional()


def exit_if_broken(prog: str = "audiodiff") -> None:
    """For command lines: print the one-line fault and exit 1 when the installation is broken."""
    try:
        check()
    except InstallError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)

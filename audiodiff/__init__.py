"""audiodiff: audio diffusion synthesis on mel spectrograms.

Public API: AudioDiffusionPipeline, MelSpec, AudioConfig, load_audio, save_audio.
Heavy modules load on first use, so `import audiodiff` stays quick.
"""

import sys

from audiodiff.version import __version__ as __version__

__all__ = ["AudioDiffusionPipeline", "AudioConfig", "MelSpec", "load_audio", "save_audio"]


def __getattr__(name):
    if name == "AudioDiffusionPipeline":
        from audiodiff.pipeline import AudioDiffusionPipeline

        return AudioDiffusionPipeline
    if name in ("AudioConfig", "MelSpec", "load_audio", "save_audio"):
        from audiodiff import audio

        return getattr(audio, name)
    raise AttributeError(f"module 'audiodiff' has no attribute {name!r}")



def _command_name() -> str:
    """`python -m audiodiff.prepare` from the interpreter's own command line."""
    argv = getattr(sys, "orig_argv", [])
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else __name__
    return f"python -m {module}"


# While `python -m audiodiff.<command>` starts, sys.argv[0] is "-m" (runpy sets the module's
# path only after importing its package). When the installed torch/torchaudio are not the pinned
# pair (read from their metadata, without importing them), the pair is loaded once here: one that
# cannot load is named in one line with the fix, and the command exits 1 before it could call the
# audio bad. The pinned pair costs nothing here (`--help` loads no torch).
if sys.argv[:1] == ["-m"]:
    from audiodiff.install import exit_if_broken, pinned_pair_installed

    if not pinned_pair_installed():
        exit_if_broken(_command_name())

"""audiodiff: audio diffusion synthesis on mel spectrograms.

Public API: AudioDiffusionPipeline, MelSpec, AudioConfig, load_audio, save_audio.
Heavy modules load on first use, so `import audiodiff` stays quick.
"""

__version__ = "0.1.0"
__all__ = ["AudioDiffusionPipeline", "AudioConfig", "MelSpec", "load_audio", "save_audio"]


def __getattr__(name):
    if name == "AudioDiffusionPipeline":
        from audiodiff.pipeline import AudioDiffusionPipeline

        return AudioDiffusionPipeline
    if name in ("AudioConfig", "MelSpec", "load_audio", "save_audio"):
        from audiodiff import audio

        return getattr(audio, name)
    raise AttributeError(f"module 'audiodiff' has no attribute {name!r}")

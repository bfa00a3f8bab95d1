"""Data set builders and layout parsers, one module a data set, each `python -m`-runnable.

Made offline, deterministic from a seed:
  digits   spoken "zero".."nine" through espeak-ng, an SC09 analogue
  notes    General MIDI notes rendered from the TimGM6mb SoundFont, an NSynth analogue
  drums    recorded drum one-shots from Debian's hydrogen-drumkits, labelled by instrument
Parsers of downloaded data sets (train/valid/test jsonl manifests):
  sc09     Speech Commands v0.02, the ten digits, with its own validation/testing lists
  ljspeech LJSpeech 1.1 (metadata.csv + wavs/)
  nsynth   NSynth (examples.json + audio/), labelled by instrument family
  folder   any folder of audio, with training settings picked from the data
"""

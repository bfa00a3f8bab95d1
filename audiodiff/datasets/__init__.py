"""Builders for data sets that can be made offline.

digits: spoken "zero".."nine" through espeak-ng, an SC09 analogue
(`python -m audiodiff.datasets.digits --out DIR`).
"""

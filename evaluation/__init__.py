"""Measuring audio-visual synchronization: onset F1 against known events, AV-Align, DeSync."""

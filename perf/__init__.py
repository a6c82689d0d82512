"""Measuring speed and memory: peak-memory tracking and the bench command."""

"""The synthetic world's sound: modal impacts at the exact contact times, plus motion noises.

An impact is a contact transient (a few ms of filtered noise) and a sum of exponentially decaying
modes whose frequencies, gains and decays come from the material; it starts at the contact time to
the sample (a sub-sample phase offset included) and its loudness follows the contact speed. While
a ball rolls or a block slides on the floor, a filtered noise (low rumble for rolling, a brighter
scrape for sliding) follows its speed. A very quiet white noise floor can be added under it all.
"""
from __future__ import annotations

import math

import numpy as np

from .materials import Material
from .physics import Body, Motion

REFERENCE_SPEED = 2.5  # picture heights / s: about the fastest landing, the loudest impact
QUIETEST = 0.2  # loudness of the softest audible contact, so every event stays detectable
CLICK_SECONDS = 0.002
ROLL_LEVEL, SLIDE_LEVEL = 0.06, 0.05  # RMS at full speed, against impacts peaking near 1
ROLL_BAND, SLIDE_BAND = (40.0, 350.0), (1500.0, 5000.0)  # Hz
PEAK = 0.9


def loudness(speed: float) -> float:
    """Impact gain from the contact speed (compressed, with a floor for the softest contacts)."""
    return float(min(1.0, max(QUIETEST, (speed / REFERENCE_SPEED) ** 0.7)))


def impact(material: Material, frequency: float, gain: float, time: float, sample_rate: int, length: int,
           rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """One contact's sound: (first sample index, samples). `frequency` is the body's lowest mode."""
    first = math.ceil(time * sample_rate)
    ring = min(length - first, math.ceil((6 * material.decay + 0.01) * sample_rate))
    if ring <= 0:
        return first, np.zeros(0)
    local = (first + np.arange(ring)) / sample_rate - time  # seconds since the contact, >= 0
    ratios = np.asarray(material.mode_ratios)
    frequencies = frequency * ratios * (1 + rng.normal(0, 0.004, ratios.shape))  # contact point varies
    decays = material.decay / ratios ** material.decay_exponent
    gains = np.asarray(material.mode_gains) / sum(material.mode_gains)
    modes = (gains[:, None] * np.exp(-local[None] / decays[:, None])
             * np.sin(2 * math.pi * frequencies[:, None] * local[None])).sum(0)
    click_length = min(ring, math.ceil(5 * CLICK_SECONDS * sample_rate))
    noise = rng.standard_normal(click_length)
    width = 1 + round((1 - material.click_brightness) * sample_rate / 2000)  # moving average = low-pass
    if width > 1:
        # [:click_length]: a click cut by the clip's end is shorter than the filter, and 'same' keeps the longer
        noise = np.convolve(noise, np.ones(width) / width, mode="same")[:click_length] * math.sqrt(width)
    modes[:click_length] += material.click * noise * np.exp(-local[:click_length] / CLICK_SECONDS) / 3
    return first, gain * modes


def _band_noise(rng: np.random.Generator, length: int, sample_rate: int, band: tuple[float, float]) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, 1 / sample_rate)
    low, high = band
    # Smooth second-order-like skirts, so the noise has no ringing edges.
    response = 1 / (1 + (low / np.maximum(frequencies, 1e-3)) ** 4) / (1 + (frequencies / high) ** 4)
    noise = np.fft.irfft(spectrum * response, n=length)
    return noise / max(float(noise.std()), 1e-12)


def synthesize(motion: Motion, bodies: list[Body], frequencies: list[float], length: int, sample_rate: int,
               rng: np.random.Generator, continuous: bool = True, background: float = 0.0015) -> np.ndarray:
    """The clip's mono soundtrack, float32 [length]: events and motion noises peak-normalised to 0.9."""
    audio = np.zeros(length)
    for contact in motion.contacts:
        share = 1.0 if len(contact.bodies) == 1 else 0.8  # both bodies of a collision ring
        for index in contact.bodies:
            first, sound = impact(bodies[index].material, frequencies[index], share * loudness(contact.speed),
                                  contact.time, sample_rate, length, rng)
            audio[first:first + sound.shape[0]] += sound
    if continuous:
        sample_times = np.arange(length) / sample_rate
        for index, body in enumerate(bodies):
            speed = motion.floor_speed[:, index]
            if not np.any(speed > 0):
                continue
            envelope = np.minimum(np.interp(sample_times, motion.times, speed), 1.0) ** 0.8
            rolling = body.shape == "ball"
            band, level = (ROLL_BAND, ROLL_LEVEL) if rolling else (SLIDE_BAND, SLIDE_LEVEL)
            audio += level * envelope * _band_noise(rng, length, sample_rate, band)
    peak = float(np.abs(audio).max())
    if peak > 0:
        audio *= PEAK / peak
    if background > 0:  # after the normalisation, so a clip with no event stays near silence
        audio += background * rng.standard_normal(length)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)

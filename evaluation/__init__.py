"""Measuring audio-visual synchronization without weights: onset F1 against known event times, AV-Align."""
from ..media.analysis import OnsetParams, motion_curve, onset_strength, read_grey_frames
from .av_align import AVAlign, av_align, video_peaks
from .onsets import OnsetScore, detect_onsets, match_onsets, merge_close, score_onsets
from .sync_eval import HeldOutClip, evaluate, folder_source, format_table, ground_truth_source, load_held_out

__all__ = [
    "AVAlign", "HeldOutClip", "OnsetParams", "OnsetScore", "av_align", "detect_onsets", "evaluate", "folder_source",
    "format_table", "ground_truth_source", "load_held_out", "match_onsets", "merge_close", "motion_curve",
    "onset_strength", "read_grey_frames", "score_onsets", "video_peaks",
]

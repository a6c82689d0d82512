"""Measuring audio-visual synchronization: DeSync by the Synchformer's offset head (or the demo's
stand-in), and without weights onset F1 against known event times and AV-Align."""
from ..media.analysis import OnsetParams, motion_curve, onset_strength, read_grey_frames
from .av_align import AVAlign, av_align, video_peaks
from .desync import OffsetModel, SyncCurve, desync, desync_from_features, rank_takes, suggest_offset
from .onsets import OnsetScore, detect_onsets, match_onsets, merge_close, score_onsets
from .sync_eval import HeldOutClip, evaluate, folder_source, format_table, ground_truth_source, load_held_out
from .sync_media import measure_sync, measure_video_sync, picture_features

__all__ = [
    "AVAlign", "HeldOutClip", "OffsetModel", "OnsetParams", "OnsetScore", "SyncCurve", "av_align", "desync",
    "desync_from_features", "detect_onsets", "evaluate", "folder_source", "format_table", "ground_truth_source",
    "load_held_out", "match_onsets", "measure_sync", "measure_video_sync", "merge_close", "motion_curve",
    "onset_strength", "picture_features", "rank_takes", "read_grey_frames", "score_onsets", "suggest_offset",
    "video_peaks",
]

"""Numbers from the study store: pure functions over pandas frames, no Ray."""

from scaleprof.analysis.usl import USLFit, fit_usl

__all__ = ["USLFit", "fit_usl"]

"""Numbers from the study store: pure functions over pandas frames, no Ray."""

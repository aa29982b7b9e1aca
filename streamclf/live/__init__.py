"""Live: the stream runner, the pipeline of N runners, sinks, control, smoothing, events,
overlay."""

"""The worker side: what runs inside each training process, and nothing else. `session` (the API a training
loop calls: steps, marks, the probes; public as `scaleprof.session`), `training` (the settings applied to any
loop: precision, compile, DDP/FSDP wrapping, gradient accumulation), `arrivals` (when each rank reached the
gradient exchange), `precision` (which precisions a device can run) and `flops` (a model's FLOPs per sample).

Data flows one way: the built-in loops (`scaleprof/workloads/`) and the driver's worker entry point
(`scaleprof/execution/worker.py`) import this package; it imports nothing from `execution/`, `plan.py`,
`workloads/`, `analysis/`, `report/` or `telemetry/` (tests/unit/test_code_shape.py keeps it so)."""

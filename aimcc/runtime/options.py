"""The runtime's named choices, importable without the runtime (torch): the command line
offers them in ``--help`` before anything runs."""

NOISE_MODELS = ("ideal", "quant", "pcm")
COMPENSATIONS = ("global", "column", "none")
DRIFT_TIMES = ("0s", "1h", "1d", "1w", "1month", "1y", "10y")  # eval's default times

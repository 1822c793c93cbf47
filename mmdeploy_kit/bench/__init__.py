"""Runtime and benchmark harness: backends, latency engine, task accuracy, verification, targets, environment,
reports, gates. The library entry point is ``mmdeploy_kit.bench(...)`` (``api.bench``)."""

"""Runtime: backends (torch, ONNX Runtime, TensorRT), metrics, the one verification function, the task evaluator,
latency engine, targets, environment, the benchmark harness, reports and gates.

Named ``runtime`` rather than ``bench``: a subpackage named like the public function ``mmdk.bench`` would replace
that function on the package as soon as anything imported it."""

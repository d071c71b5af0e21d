"""Chaos: breaking a running cluster by hand (`vcc chaos ACTION`) and the soak (`vcc chaos soak`)."""

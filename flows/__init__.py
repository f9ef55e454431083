"""Prefect flows: they order the steps and own the I/O; the logic lives in edustat/."""

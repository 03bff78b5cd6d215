"""Measurement as context managers the runner wraps around a method call. Methods never read clocks."""

"""The fault-injection suite: bad configs (in-process) and runtime faults (subprocesses); see harness.py."""

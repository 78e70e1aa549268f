"""Runners: execute machine-code jobs in a native harness and classify failures."""

from bitsearch.runners.base import BaseRunner, Buffer, Call, ErrorClass, Job, RunResult
from bitsearch.runners.local import LocalRunner

__all__ = ["BaseRunner", "Buffer", "Call", "ErrorClass", "Job", "LocalRunner", "RunResult"]

"""Errors that volbench reports to users as one clear line."""


class VolbenchError(Exception):
    """A user-facing error: the message names the dataset/file and the fix."""


class CodecUnavailable(VolbenchError):
    """A system library or tool a codec needs is missing."""


class CorruptFile(VolbenchError):
    """A compressed file is truncated or damaged."""

"""Errors that volbench reports to users as one clear line."""


class VolbenchError(Exception):
    """A user-facing error: the message names the dataset/file and the fix."""


class CodecUnavailable(VolbenchError):
    """A system library or tool a codec needs is missing."""


class CorruptFile(VolbenchError):
    """A compressed file is truncated or damaged."""


#: what a message about a damaged compressed file advises: a command that works (in the workflow,
#: a rerun redoes a cell whose decode found its file damaged: volbench.cellstate)
REENCODE = "re-encode it (in the workflow: run the same snakemake command again, it redoes the cell)"

"""volbench: benchmark compression codecs on 3D volumes."""

__version__ = "0.1.0"

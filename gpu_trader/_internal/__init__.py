"""Internal modules of gpu-trader: not part of the public API (see docs/design.md)."""

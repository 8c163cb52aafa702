"""CPU implementations (NumPy + numba), one module per public module."""

"""GPU implementations (CuPy arrays, numba.cuda kernels), one module per public module."""

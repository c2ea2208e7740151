"""What an architecture costs on a device: measured, table and analytical devices, the lookup
tables the profiler measures, the analytical energy model, and the cost model over an op graph
(:mod:`hwnas.ir`)."""

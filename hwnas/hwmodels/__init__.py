"""What an architecture costs on a device: its op graph, counts (params, FLOPs, BitOps), lookup
tables measured by the profiler, the analytical energy model and the device registry."""

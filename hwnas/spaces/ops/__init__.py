"""Operators of the supernets: elastic (sliced) layers for training and their fixed counterparts
for export and profiling. The fixed layer of an operator is what both the exported model and the
device profiler run, so a lookup-table entry times exactly the code that deployment executes."""

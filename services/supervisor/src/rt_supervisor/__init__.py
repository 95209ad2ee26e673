"""rt_supervisor: one per node, the node's parent process. Starts and restarts the sequencer
and archiver, serves REST on :6000 (hardReset, resetStatus), orchestrates resets across
nodes.
"""

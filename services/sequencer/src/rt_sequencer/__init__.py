"""rt_sequencer: one per node. Input copies, Raft over merge metadata, the merged log, dedup,
the backup path between nodes and the pull server.
"""

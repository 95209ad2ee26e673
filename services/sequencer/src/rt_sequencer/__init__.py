"""rt_sequencer: one per node. Input copies, Raft over merge metadata, the merged log, dedup,
the backup path between nodes and the pull server.

Packages: ``raft`` (the sans-I/O Raft core) and ``raftsim`` (its simulator); ``core`` (the
sans-I/O merge layer: proposals, apply, dedup, backup, checkpoints, snapshot installs,
gossip) and ``nodesim`` (whole nodes, Raft plus merge, in a seeded simulation). Modules:
``_node`` (the wiring), ``_driver`` (Raft against time, disk and network), ``_inputs``
(input copies), ``_files`` (the core's storage interfaces over files), ``_peers`` (links
to other nodes), ``_services`` (gRPC servicers). ``docs/sequencer.md`` and
``docs/raft.md`` describe the design.
"""

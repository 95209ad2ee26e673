"""rt_supervisor: one per node, the node's parent process (DESIGN sections 2, 8, 10).

It starts the node's sequencer and archiver as child processes, restarts a child that
dies (capped backoff), takes its children down with it however it dies, serves the
node's console and REST API (FastAPI on uvicorn; ``docs/operations.md``) and runs hard
resets across the cluster with the other supervisors over gRPC.

Modules: ``__main__`` (command line), ``node`` (ties the parts together and handles
signals), ``children`` (child processes and their restarts), ``health`` (the sequencer's
gRPC health probe), ``reset`` (the hard reset: steps, orchestration, recovery),
``control`` (the supervisors' gRPC Control service and client), ``rest`` (the REST app),
``console`` (the page at ``/`` and the cluster view it reads), ``logs`` (the one log
format, naming the node).
"""

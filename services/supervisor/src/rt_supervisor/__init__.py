"""rt_supervisor: one per node, the node's parent process (DESIGN sections 2, 8, 10).

It starts the node's sequencer and archiver as child processes, restarts a child that
dies (capped backoff), takes its children down with it however it dies, and serves the
node's REST API (FastAPI on uvicorn): ``/resetStatus`` and ``/health`` for now; the hard
reset (``/hardReset``) and its orchestration across nodes arrive with their own issue.

Modules: ``__main__`` (command line), ``node`` (ties the parts together and handles
signals), ``children`` (child processes and their restarts), ``deathsig`` (children die
with their parent), ``health`` (gRPC health probe of the sequencer), ``rest`` (the REST
app), ``logs`` (stderr logging with the node name).
"""

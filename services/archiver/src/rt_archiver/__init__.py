"""rt_archiver: one per node. Retention of the merged log, archival of publisher logs,
lead-subscriber truncation (DESIGN section 7).

Not implemented yet: the process starts, says so in one log line and idles until SIGTERM
or SIGINT (exit 0), so the supervisor has an honest child to run. ``__main__`` is the
command line.
"""

"""rt_archiver: one per node. Retention of the merged log, archival of publisher logs,
lead-subscriber truncation.
"""

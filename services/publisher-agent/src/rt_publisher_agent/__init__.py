"""rt_publisher_agent: the replicator. Ships a publisher's log directory to the nodes, resumes
after faults, garbage-collects archived files; also the gRPC Publish endpoint.
"""

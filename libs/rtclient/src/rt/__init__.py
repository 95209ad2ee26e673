"""rt: RT's user API (Publisher, Subscriber, prune), the `rt` command line and the local
cluster launcher. Only the command-line skeleton exists so far."""

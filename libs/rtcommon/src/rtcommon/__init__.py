"""rtcommon: RT's shared library: the log format, codecs, config, TLS and telemetry helpers."""

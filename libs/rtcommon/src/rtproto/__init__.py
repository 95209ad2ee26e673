"""Generated from protos/, do not edit: run `make protos` to regenerate."""

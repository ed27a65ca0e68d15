"""The `cxr` command line: one module per command group, each parser beside its handler. The top: it
may import every layer."""

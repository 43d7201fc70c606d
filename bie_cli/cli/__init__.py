"""The ``bie`` command line: one module per subcommand, one error boundary in ``app.main``."""

"""The ``.cai`` container: ``spec`` (constants), ``writer``, ``reader``. See docs/FORMAT.md."""

"""The dashboard's callbacks, a module a tab, each with ``register(app, <the service it calls>, ...)``."""

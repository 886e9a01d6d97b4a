"""The engine's real-component fixtures (tests/engine/conftest.py), for the engine's own signals."""

from tests.engine.conftest import crm, engine, graph, graph_http, make_crm_user, store

__all__ = ["crm", "engine", "graph", "graph_http", "make_crm_user", "store"]

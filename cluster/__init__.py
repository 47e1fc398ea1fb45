"""The service past one machine: front, app hosts, pooler and a PostgreSQL that fails over (see topology.py)."""

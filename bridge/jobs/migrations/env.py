"""Alembic environment: the engine comes from ``bridge.jobs.migrate`` (no ini file, no env reads)."""

from alembic import context
from sqlalchemy import text

from bridge.jobs.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with connection.begin():
        if connection.dialect.name == "postgresql":
            # several processes (pods) starting at once on an empty database: one migrates, the others
            # wait for it and then find nothing to do
            connection.execute(text("SELECT pg_advisory_xact_lock(7412031)"))
        context.run_migrations()

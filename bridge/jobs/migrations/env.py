"""Alembic environment: the engine comes from ``bridge.jobs.migrate`` (no ini file, no env reads)."""

from alembic import context

from bridge.jobs.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with connection.begin():
        context.run_migrations()

"""Alembic environment of the run registry. The registry calls Alembic programmatically and hands
over its open connection in `config.attributes["connection"]`; no alembic.ini is needed."""

from alembic import context

from likeness.training.registry.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  version_table="training_alembic_version", render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

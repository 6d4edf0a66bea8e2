from alembic import context

from likeness.orchestrator.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, version_table="orchestrator_alembic_version")
with context.begin_transaction():
    context.run_migrations()

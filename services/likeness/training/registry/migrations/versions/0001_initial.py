"""Run registry: runs, checkpoints, loss curve, skipped dataset items.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("base_model", sa.String(200), nullable=False),
        sa.Column("base_model_digest", sa.String(80), nullable=False),
        sa.Column("executor", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(253), nullable=False),
        sa.Column("resume_from", sa.String(40), nullable=False),
        sa.Column("dataset_digest", sa.String(64), nullable=False),
        sa.Column("captions_digest", sa.String(64), nullable=False),
        sa.Column("image_count", sa.Integer(), nullable=False),
        sa.Column("dataset_info", sa.JSON(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("total_steps", sa.BigInteger(), nullable=False),
        sa.Column("last_loss", sa.Float(), nullable=True),
        sa.Column("best_epoch", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("resume_state", sa.JSON(), nullable=True),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_training_runs_state", "training_runs", ["state"])
    op.create_index("ix_training_runs_created_at", "training_runs", ["created_at"])
    op.create_table(
        "training_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("training_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("diffusers_weights", sa.JSON(), nullable=False),
        sa.Column("kohya_weights", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("sample_grid", sa.JSON(), nullable=True),
        sa.Column("clip_score", sa.Float(), nullable=True),
        sa.Column("identity_similarity", sa.Float(), nullable=True),
        sa.Column("evaluation", sa.JSON(), nullable=False),
        sa.Column("best", sa.Boolean(), nullable=False),
        sa.Column("seconds", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_training_checkpoints_run_id", "training_checkpoints", ["run_id"])
    op.create_table(
        "training_loss",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("training_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.BigInteger(), primary_key=True),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.Column("lr", sa.Float(), nullable=False),
    )
    op.create_table(
        "training_skipped",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("training_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_training_skipped_run_id", "training_skipped", ["run_id"])


def downgrade() -> None:
    op.drop_table("training_skipped")
    op.drop_table("training_loss")
    op.drop_table("training_checkpoints")
    op.drop_table("training_runs")

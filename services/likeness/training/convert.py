"""Protobuf <-> domain translation for the training service (nothing else lives here).

proto3 cannot tell an unset number from 0, so 0 means "the documented default" for the fields
that have one (learning rates, batch size, accumulation, epochs, checkpoint interval, alpha,
resolution, sample steps); those defaulted fields are recorded in the run. `rank` has no
default: 0 is rejected, because an implicit rank makes runs differ in ways nobody chose.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from likeness.api.v1 import common_pb2, training_pb2
from likeness.training.compare import Comparison
from likeness.training.registry import ArtifactRef, CheckpointRecord, RunRecord
from likeness.training.runs import WatchEvent
from likeness.training.spec import KubernetesSpec, RunSpec

PRECISION = {training_pb2.PRECISION_UNSPECIFIED: "auto", training_pb2.PRECISION_FP32: "fp32",
             training_pb2.PRECISION_FP16: "fp16", training_pb2.PRECISION_BF16: "bf16"}
EXECUTOR = {training_pb2.EXECUTOR_UNSPECIFIED: "default", training_pb2.EXECUTOR_IN_PROCESS: "in_process",
            training_pb2.EXECUTOR_KUBERNETES_JOB: "kubernetes_job"}
CAPTION_POLICY = {training_pb2.MISSING_CAPTION_POLICY_UNSPECIFIED: "fail",
                  training_pb2.MISSING_CAPTION_POLICY_FAIL: "fail",
                  training_pb2.MISSING_CAPTION_POLICY_TRIGGER_ONLY: "trigger_only",
                  training_pb2.MISSING_CAPTION_POLICY_SKIP: "skip"}
STATE = {"queued": training_pb2.RUN_STATE_QUEUED, "running": training_pb2.RUN_STATE_RUNNING,
         "succeeded": training_pb2.RUN_STATE_SUCCEEDED, "failed": training_pb2.RUN_STATE_FAILED,
         "cancelled": training_pb2.RUN_STATE_CANCELLED}
STATE_NAME = {v: k for k, v in STATE.items()}
MAX_LOSS_POINTS = 2000
# proto field -> domain default used when the field is 0 (unset)
ZERO_MEANS_DEFAULT = {"unet_lr": 1e-4, "text_encoder_lr": 5e-5, "batch_size": 1, "gradient_accumulation": 1,
                      "epochs": 10, "checkpoint_every_epochs": 1}


def _enum(table: dict, value: int, field: str):
    from likeness.core.errors import InvalidArgument

    if value not in table:
        raise InvalidArgument(field, f"unknown enum value {value}")
    return table[value]


def spec_from_pb(pb: training_pb2.RunSpec) -> RunSpec:
    defaulted = tuple(name for name in ZERO_MEANS_DEFAULT if getattr(pb, name) == 0)
    values = {name: (getattr(pb, name) or default) for name, default in ZERO_MEANS_DEFAULT.items()}
    if not pb.lr_scheduler:
        defaulted += ("lr_scheduler",)
    return RunSpec(
        name=pb.name, base_model=pb.base_model, dataset_uri=pb.dataset_uri, trigger_token=pb.trigger_token,
        caption_dropout=pb.caption_dropout, shuffle_captions=pb.shuffle_captions, aspect_buckets=pb.aspect_buckets,
        rank=pb.rank, alpha=pb.alpha, train_text_encoder=pb.train_text_encoder, max_steps=pb.max_steps,
        resolution=pb.resolution, precision=_enum(PRECISION, pb.precision, "spec.precision"), seed=pb.seed,
        lr_scheduler=pb.lr_scheduler or "constant", lr_warmup_steps=pb.lr_warmup_steps,
        min_snr_gamma=pb.min_snr_gamma, sample_prompts=tuple(pb.sample_prompts),
        sample_seeds=tuple(pb.sample_seeds), sample_steps=pb.sample_steps,
        executor=_enum(EXECUTOR, pb.executor, "spec.executor"),
        kubernetes=KubernetesSpec(
            gpus=pb.kubernetes.gpus, node_selector=dict(pb.kubernetes.node_selector),
            tolerations=tuple({"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
                              for t in pb.kubernetes.tolerations),
            image=pb.kubernetes.image, memory=pb.kubernetes.memory, cpu=pb.kubernetes.cpu,
            nodes=pb.kubernetes.nodes or 1),
        missing_caption_policy=_enum(CAPTION_POLICY, pb.missing_caption_policy, "spec.missing_caption_policy"),
        output_prefix=pb.output_prefix, defaulted=defaulted, **values)


def spec_pb(d: dict) -> training_pb2.RunSpec:
    s = RunSpec.from_dict(d)
    k = s.kubernetes
    return training_pb2.RunSpec(
        name=s.name, base_model=s.base_model, dataset_uri=s.dataset_uri, trigger_token=s.trigger_token,
        caption_dropout=s.caption_dropout, shuffle_captions=s.shuffle_captions, aspect_buckets=s.aspect_buckets,
        rank=s.rank, alpha=s.alpha, unet_lr=s.unet_lr, text_encoder_lr=s.text_encoder_lr,
        train_text_encoder=s.train_text_encoder, batch_size=s.batch_size,
        gradient_accumulation=s.gradient_accumulation, epochs=s.epochs, max_steps=s.max_steps,
        resolution=s.resolution, precision={v: k2 for k2, v in PRECISION.items()}[s.precision], seed=s.seed,
        lr_scheduler=s.lr_scheduler, lr_warmup_steps=s.lr_warmup_steps, min_snr_gamma=s.min_snr_gamma,
        checkpoint_every_epochs=s.checkpoint_every_epochs, sample_prompts=list(s.sample_prompts),
        sample_seeds=list(s.sample_seeds), sample_steps=s.sample_steps,
        executor={v: k2 for k2, v in EXECUTOR.items()}[s.executor],
        kubernetes=training_pb2.KubernetesOptions(
            gpus=k.gpus, node_selector=k.node_selector, image=k.image, memory=k.memory, cpu=k.cpu, nodes=k.nodes,
            tolerations=[training_pb2.Toleration(**t) for t in k.tolerations]),
        missing_caption_policy={"fail": training_pb2.MISSING_CAPTION_POLICY_FAIL,
                                "trigger_only": training_pb2.MISSING_CAPTION_POLICY_TRIGGER_ONLY,
                                "skip": training_pb2.MISSING_CAPTION_POLICY_SKIP}[s.missing_caption_policy],
        output_prefix=s.output_prefix)


def artifact_pb(a: ArtifactRef | None) -> common_pb2.Artifact | None:
    if a is None:
        return None
    return common_pb2.Artifact(uri=a.uri, sha256=a.sha256, media_type=a.media_type, size_bytes=a.size)


def checkpoint_pb(c: CheckpointRecord) -> training_pb2.Checkpoint:
    return training_pb2.Checkpoint(
        epoch=c.epoch, step=c.step, diffusers_weights=artifact_pb(c.diffusers_weights),
        kohya_weights=artifact_pb(c.kohya_weights), state=artifact_pb(c.state),
        sample_grid=artifact_pb(c.sample_grid), clip_score=c.clip_score,
        identity_similarity=c.identity_similarity, best=c.best, loss=c.loss)


def _ts(value) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def thin(points: list, limit: int = MAX_LOSS_POINTS) -> list:
    """At most `limit` points, evenly spaced, always keeping the first and the last."""
    if len(points) <= limit:
        return points
    idx = sorted({round(i * (len(points) - 1) / (limit - 1)) for i in range(limit)})
    return [points[i] for i in idx]


def run_pb(r: RunRecord) -> training_pb2.Run:
    return training_pb2.Run(
        run_id=r.run_id, spec=spec_pb(r.spec), state=STATE[r.state],
        checkpoints=[checkpoint_pb(c) for c in r.checkpoints],
        loss=[training_pb2.LossPoint(step=p.step, loss=p.loss, lr=p.lr) for p in thin(r.loss)],
        best_epoch=r.best_epoch, dataset_digest=r.dataset_digest, captions_digest=r.captions_digest,
        skipped=[training_pb2.SkippedItem(uri=s.uri, reason=s.reason) for s in r.skipped],
        error=r.error, created_at=_ts(r.created_at), started_at=_ts(r.started_at),
        finished_at=_ts(r.finished_at), step=r.step, total_steps=r.total_steps, image_count=r.image_count,
        notes=r.notes, timings={k: float(v) for k, v in r.timings.items()})


def run_summary_pb(r: RunRecord) -> training_pb2.RunSummary:
    return training_pb2.RunSummary(
        run_id=r.run_id, state=STATE[r.state], best_epoch=r.best_epoch, dataset_digest=r.dataset_digest,
        error=r.error[:1000], created_at=_ts(r.created_at), started_at=_ts(r.started_at),
        finished_at=_ts(r.finished_at), step=r.step, total_steps=r.total_steps, image_count=r.image_count,
        name=r.name, base_model=r.base_model)


def watch_pb(e: WatchEvent) -> training_pb2.WatchRunResponse:
    return training_pb2.WatchRunResponse(
        run_id=e.run_id, state=STATE[e.state], step=e.step, total_steps=e.total_steps,
        loss=e.loss, eta_seconds=e.eta_seconds,
        checkpoint=checkpoint_pb(e.checkpoint) if e.checkpoint is not None else None, message=e.message)


def comparison_pb(c: Comparison) -> training_pb2.CompareRunsResponse:
    return training_pb2.CompareRunsResponse(
        run_ids=list(c.run_ids),
        rows=[training_pb2.ComparisonRow(field=r.field, category=r.category, values=list(r.values),
                                         differs=r.differs) for r in c.rows],
        differing_settings=list(c.differing_settings))


def state_filter(value: int) -> str:
    if value == training_pb2.RUN_STATE_UNSPECIFIED:
        return ""
    return _enum(STATE_NAME, value, "state")

"""Job flags generated from the spec messages (CurateSpec, TrainSpec.run, StoryboardSpec, OpenEyesSpec,
DiversitySpec), so every field has a flag and a field added to the protos gets one with no CLI edit.

  scalar field `top_k`              --top-k 40
  nested message `generate.seeds`   --generate-seeds 1 --generate-seeds 2   (repeated: repeat the flag)
  enum `sampler`                    --sampler euler_ancestral               (value names, lower case)
  bool `restore`                    --restore / --no-restore
  ImageInput `image`                a local file (sent inline) or a store URI
  repeated message `quotas`         --quota dimension=seed,group=*,max=2    (or a JSON object)

Unset flags leave the field unset, so the server's documented defaults apply. Help texts are the
field comments of protos/likeness/v1 when the sources are there (a checkout), else the field type."""

from __future__ import annotations

import functools
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

import typer
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from likeness.api.v1 import orchestrator_pb2

SPECS = {"curate": "CurateSpec", "train": "TrainSpec", "storyboard": "StoryboardSpec", "open_eyes": "OpenEyesSpec",
         "diversity": "DiversitySpec"}
FLATTEN = {"TrainSpec.run"}  # the run's fields are the train command's own flags
LEAF_MESSAGES = {"likeness.v1.ImageInput"}
# Short spellings kept for the commands' earlier flags.
ALIASES = {("curate", "target_count"): ["--target"], ("storyboard", "frame_prompts"): ["--frame"],
           ("storyboard", "skip_clip_check"): ["--skip-clip"]}
PROTOS = Path(__file__).resolve().parents[3] / "protos" / "likeness" / "v1"
PY_TYPES = {FieldDescriptor.TYPE_DOUBLE: float, FieldDescriptor.TYPE_FLOAT: float, FieldDescriptor.TYPE_BOOL: bool,
            FieldDescriptor.TYPE_STRING: str}


@functools.cache
def proto_comments() -> dict[tuple[str, str], str]:
    """(message, field) -> the comment above the field, from the .proto sources when present."""
    out: dict[tuple[str, str], str] = {}
    for path in sorted(PROTOS.glob("*.proto")):
        message, comment = "", []
        for line in path.read_text().splitlines():
            s = line.strip()
            if m := re.match(r"message (\w+) \{", s):
                message, comment = m.group(1), []
            elif s.startswith("//"):
                comment.append(s[2:].strip())
            elif m := re.match(r"(?:optional |repeated )?[\w.]+ (\w+) = \d+;", s):
                out[(message, m.group(1))] = " ".join(comment)
                comment = []
            else:
                comment = []
    return out


@dataclass
class Flag:
    path: tuple[str, ...]  # field names from the spec message down to the field
    field: FieldDescriptor
    names: list[str]  # --generate-seeds, and any aliases
    param: str  # the Python parameter name

    @property
    def repeated(self) -> bool:
        return self.field.is_repeated

    def enum_names(self) -> list[str]:
        return [enum_label(v.name, self.field.enum_type) for v in self.field.enum_type.values if v.number != 0]


def enum_label(name: str, enum) -> str:
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return name.removeprefix(prefix).lower()


def _walk(desc, kind: str, path: tuple[str, ...], prefix: tuple[str, ...]) -> list[Flag]:
    flags = []
    for f in desc.fields:
        nested = f.message_type is not None and f.message_type.full_name not in LEAF_MESSAGES
        if nested and not f.is_repeated:
            sub_prefix = prefix if f"{desc.name}.{f.name}" in FLATTEN else (*prefix, f.name)
            flags += _walk(f.message_type, kind, (*path, f.name), sub_prefix)
            continue
        name = "-".join((*prefix, f.name)).replace("_", "-")
        if nested and name.endswith("s"):  # --quota dimension=seed,... reads better than --quotas
            name = name[:-1]
        names = [f"--{name}", *ALIASES.get((kind, f.name), [])]
        flags.append(Flag((*path, f.name), f, names, name.replace("-", "_")))
    return flags


def flags_for(kind: str) -> list[Flag]:
    return _walk(getattr(orchestrator_pb2, SPECS[kind]).DESCRIPTOR, kind, (), ())


def _help(flag: Flag) -> str:
    owner = flag.field.containing_type.name
    text = proto_comments().get((owner, flag.field.name), "")
    if flag.field.enum_type is not None:
        text += f" One of: {', '.join(flag.enum_names())}."
    if flag.field.message_type is not None and flag.field.message_type.full_name in LEAF_MESSAGES:
        text += " A local file or a store URI."
    elif flag.field.message_type is not None:
        fields = ", ".join(f.name for f in flag.field.message_type.fields)
        text += f" Repeat for more; each `key=value,...` ({fields}) or a JSON object."
    elif flag.repeated:
        text += " Repeat for more."
    return text.strip() or flag.field.name


def parameters(kind: str) -> list[inspect.Parameter]:
    """typer parameters of every flag of `kind`, each defaulting to unset (None)."""
    out = []
    for flag in flags_for(kind):
        f = flag.field
        base = PY_TYPES.get(f.type, int) if f.message_type is None and f.enum_type is None else str
        annotation = list[base] if flag.repeated else (base | None)
        names = flag.names
        if base is bool and not flag.repeated:
            names = [f"{flag.names[0]}/--no-{flag.names[0][2:]}", *flag.names[1:]]
        option = typer.Option(None, *names, help=_help(flag), show_default=False, rich_help_panel=f"{kind} spec")
        out.append(inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return out


def _scalar(field: FieldDescriptor, text, where: str):
    if field.enum_type is not None:
        by_label = {enum_label(v.name, field.enum_type): v.number for v in field.enum_type.values}
        key = str(text).lower()
        if key not in by_label:
            raise typer.BadParameter(f"{where}: '{text}' is not one of {', '.join(sorted(by_label))}")
        return by_label[key]
    if not isinstance(text, str):
        return text
    try:
        if field.type == FieldDescriptor.TYPE_BOOL:
            return text.lower() in ("1", "true", "yes", "on")
        if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return float(text)
        if field.type == FieldDescriptor.TYPE_STRING:
            return text
        return int(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{where}: '{text}' is not a valid {field.name}") from exc


def parse_item(message_class, text: str, where: str):
    """`key=value,key=value` (values may not contain commas) or a JSON object -> message."""
    msg = message_class()
    if text.lstrip().startswith("{"):
        try:
            return json_format.Parse(text, msg)
        except json_format.ParseError as exc:
            raise typer.BadParameter(f"{where}: {exc}") from exc
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        field = msg.DESCRIPTOR.fields_by_name.get(key.strip())
        if not sep or field is None:
            raise typer.BadParameter(f"{where}: '{part}' is not key=value with a key among "
                                     f"{', '.join(f.name for f in msg.DESCRIPTOR.fields)}")
        if field.is_repeated:
            getattr(msg, field.name).append(_scalar(field, value.strip(), where))
        else:
            setattr(msg, field.name, _scalar(field, value.strip(), where))
    return msg


def image_input(text: str):
    from likeness.api.v1 import common_pb2

    path = Path(text).expanduser()
    return common_pb2.ImageInput(data=path.read_bytes()) if path.is_file() else common_pb2.ImageInput(uri=text)


def build_spec(kind: str, values: dict) -> orchestrator_pb2.JobSpec:
    """A JobSpec from the flag values (None / empty = unset)."""
    spec = orchestrator_pb2.JobSpec()
    inner = getattr(spec, kind)
    for flag in flags_for(kind):
        value = values.get(flag.param)
        if value is None or (flag.repeated and not value):
            continue
        target = inner
        for name in flag.path[:-1]:
            target = getattr(target, name)
        f, where = flag.field, flag.names[0]
        if f.message_type is not None and f.message_type.full_name in LEAF_MESSAGES:
            getattr(target, f.name).CopyFrom(image_input(value))
        elif f.message_type is not None:
            getattr(target, f.name).extend(parse_item(_message_class(f), v, where) for v in value)
        elif flag.repeated:
            getattr(target, f.name).extend(_scalar(f, v, where) for v in value)
        else:
            setattr(target, f.name, _scalar(f, value, where))
    return spec


def _message_class(field: FieldDescriptor):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(field.message_type)


def spec_json(spec: orchestrator_pb2.JobSpec) -> str:
    return json.dumps(json_format.MessageToDict(spec), indent=2)

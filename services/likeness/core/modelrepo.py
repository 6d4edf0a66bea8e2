"""The model repository: one folder (or store prefix) per model, described by its `model.yaml`.

    <root>/<name>/model.yaml
        name: tiny-sdxl
        kind: sdxl                # what the model is (services pick models by kind)
        backend: diffusers        # which code loads it
        files: [model_index.json, unet/config.json, ...]       # relative paths, sorted
        checksums: {model_index.json: <sha256>, ...}           # per file, so a bad file is named
        digest: <sha256>          # identity of the whole model (see `model_digest`)
        config: {...}             # backend options (scheduler, dtype, sizes ...)

A folder repository (`file:///models` or a plain path, e.g. a mounted volume) is used in place.
A store repository (`s3://bucket/models`, or any root inside the store given to the constructor)
is copied to `cache_dir/<name>/<digest[:16]>/` and verified file by file before the folder appears
(temp folder + rename), so a pod never serves a half-copied model and an updated model lands
beside the old one. A model that is absent or lacks
a file raises ModelMissing naming every missing path; a file whose bytes differ from `checksums`
raises FailedPrecondition naming it. Nothing is ever downloaded from a model hub.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from likeness.core.errors import FailedPrecondition, InvalidArgument, ModelMissing, NotFound
from likeness.core.settings import CommonSettings
from likeness.core.store import ArtifactStore, open_store, sha256_file
from likeness.core.uris import parse_uri, validate_key

log = logging.getLogger(__name__)

SPEC_FILE = "model.yaml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMPLETE = ".complete"  # marker in a verified folder: the digest it was verified against


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    backend: str
    files: tuple[str, ...]
    digest: str
    config: dict = field(default_factory=dict)
    checksums: dict = field(default_factory=dict)  # relative path -> sha256
    location: str = ""  # URI (or folder) of the model in the repository

    def to_yaml(self) -> str:
        body = {
            "name": self.name,
            "kind": self.kind,
            "backend": self.backend,
            "files": list(self.files),
            "checksums": dict(sorted(self.checksums.items())),
            "digest": self.digest,
            "config": self.config,
        }
        return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def model_digest(checksums: dict[str, str]) -> str:
    """sha256 over the files' sha256s, sorted by path: one `<sha256>  <path>` line per file (the
    `sha256sum` format, so `sha256sum` output can be checked by hand). Renaming a file or changing a
    byte changes the digest; the order files were written in does not."""
    lines = "".join(f"{checksums[p]}  {p}\n" for p in sorted(checksums))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument("model", f"model name {name!r} must match {_NAME_RE.pattern}")
    return name


def parse_spec(text: str, name: str, location: str) -> ModelSpec:
    """A validated ModelSpec from model.yaml text; FailedPrecondition naming the file if malformed."""

    def bad(why: str) -> FailedPrecondition:
        return FailedPrecondition("model", f"{location}/{SPEC_FILE} of model '{name}' is invalid: {why}")

    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise bad(f"not YAML ({exc})") from None
    if not isinstance(body, dict):
        raise bad("not a mapping")
    missing = [k for k in ("name", "kind", "backend", "files", "digest") if k not in body]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    if body["name"] != name:
        raise bad(f"name is {body['name']!r}, but the folder is '{name}'")
    files = body["files"]
    if not isinstance(files, list) or not files:
        raise bad("files must be a non-empty list")
    for path in files:
        try:
            validate_key(path, "files")
        except InvalidArgument as exc:
            raise bad(exc.detail) from None
    checksums = body.get("checksums") or {}
    if set(checksums) != set(files) or not all(_HEX64.match(str(v)) for v in checksums.values()):
        raise bad("checksums must give one sha256 for every entry of files")
    if model_digest(checksums) != body["digest"]:
        raise bad("digest does not match the checksums")
    config = body.get("config") or {}
    if not isinstance(config, dict):
        raise bad("config must be a mapping")
    return ModelSpec(
        name=name,
        kind=str(body["kind"]),
        backend=str(body["backend"]),
        files=tuple(files),
        digest=body["digest"],
        config=config,
        checksums=dict(checksums),
        location=location,
    )


class ModelRepository:
    """Models by name from a folder or a store prefix; `fetch` gives a verified local folder."""

    def __init__(self, root: str | Path, cache_dir: str | Path, store: ArtifactStore | None = None):
        root = str(root).rstrip("/")
        self._cache = Path(cache_dir)
        self._folder: Path | None = None
        self._store: ArtifactStore | None = None
        self._prefix = ""  # key prefix of the repository inside the store ("" or "models/")
        # Through the store when the root lies inside it (or is s3://); else a folder used in place.
        inside = store is not None and (root == store.root_uri or root.startswith(store.root_uri + "/"))
        if root.startswith("s3://") or inside:
            if store is None:
                raise FailedPrecondition(
                    "LIKENESS_MODEL_REPOSITORY", f"{root} needs a store; use ModelRepository.from_settings"
                )
            self._store = store
            if root != store.root_uri:
                self._prefix = store.key_of(root, field="LIKENESS_MODEL_REPOSITORY") + "/"
            self.root = root
        else:
            path = parse_uri(root, "LIKENESS_MODEL_REPOSITORY").path if "://" in root else root
            self._folder = Path(path)
            if not self._folder.is_absolute():
                raise InvalidArgument("LIKENESS_MODEL_REPOSITORY", f"folder {path!r} must be absolute")
            self.root = str(self._folder)

    @classmethod
    def from_settings(cls, settings: CommonSettings, store: ArtifactStore | None = None) -> ModelRepository:
        root = settings.model_repository.rstrip("/")
        if not root.startswith("s3://"):
            return cls(root, settings.model_cache_dir)  # a folder (e.g. a mounted volume), used in place
        inside = store is not None and (root == store.root_uri or root.startswith(store.root_uri + "/"))
        if not inside:
            store = open_store(settings, root)  # a repository in its own bucket or prefix
        return cls(root, settings.model_cache_dir, store)

    def __repr__(self) -> str:
        return f"ModelRepository({self.root!r}, cache_dir={str(self._cache)!r})"

    # -- reading specs ----------------------------------------------------------------------------

    def _location(self, name: str) -> str:
        if self._folder is not None:
            return str(self._folder / name)
        return self._store.uri(self._prefix + name)

    def _read_spec_text(self, name: str) -> str | None:
        if self._folder is not None:
            try:
                return (self._folder / name / SPEC_FILE).read_text()
            except (FileNotFoundError, NotADirectoryError):
                return None
        key = f"{self._prefix}{name}/{SPEC_FILE}"
        try:
            return self._store.get(key).decode()
        except NotFound:
            return None

    def names(self) -> list[str]:
        if self._folder is not None:
            if not self._folder.is_dir():
                return []
            return sorted(
                p.name for p in self._folder.iterdir() if (p / SPEC_FILE).is_file() and _NAME_RE.match(p.name)
            )
        suffix = "/" + SPEC_FILE
        found = []
        for key in self._store.list(self._prefix):
            rest = key[len(self._prefix) :]
            if rest.endswith(suffix) and rest.count("/") == 1 and _NAME_RE.match(rest[: -len(suffix)]):
                found.append(rest[: -len(suffix)])
        return sorted(found)

    def list(self) -> list[ModelSpec]:
        """Every model whose model.yaml parses; a broken one is logged and left out."""
        specs = []
        for name in self.names():
            try:
                specs.append(self.spec(name))
            except (FailedPrecondition, NotFound) as exc:
                log.warning("skipping model %s: %s", name, exc)
        return specs

    def spec(self, name: str) -> ModelSpec:
        check_name(name)
        text = self._read_spec_text(name)
        if text is None:
            available = ", ".join(self.names()) or "none"
            raise NotFound(
                "model", f"model '{name}' is not in the repository {self.root} (available: {available})"
            )
        return parse_spec(text, name, self._location(name))

    # -- fetching ---------------------------------------------------------------------------------

    def fetch(self, name: str) -> Path:
        """A local folder holding every file of the model, verified against its checksums."""
        try:
            spec = self.spec(name)
        except NotFound:
            raise ModelMissing(
                name,
                f"{self._location(name)}/{SPEC_FILE}",
                hint=f"available: {', '.join(self.names()) or 'none'}",
            ) from None
        if self._folder is not None:
            return self._verify_in_place(spec, self._folder / name)
        return self._fetch_from_store(spec)

    def _verify_in_place(self, spec: ModelSpec, folder: Path) -> Path:
        missing = [str(folder / p) for p in spec.files if not (folder / p).is_file()]
        if missing:
            raise ModelMissing(spec.name, missing)
        # Hash once; afterwards an unchanged (size, mtime) of every file proves it is the same.
        stamp = {p: _stamp(folder / p) for p in spec.files}
        marker = self._cache / ".verified" / f"{spec.name}.json"
        try:
            if json.loads(marker.read_text()) == {"digest": spec.digest, "files": stamp}:
                return folder
        except (OSError, ValueError):
            pass
        for path in spec.files:
            _check_sha(spec, path, sha256_file(folder / path)[0], folder / path)
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".{marker.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps({"digest": spec.digest, "files": stamp}))
        tmp.replace(marker)
        return folder

    def cache_path(self, spec: ModelSpec) -> Path:
        return self._cache / spec.name / spec.digest[:16]

    def _fetch_from_store(self, spec: ModelSpec) -> Path:
        target = self.cache_path(spec)
        if _complete(target, spec):
            return target
        base = f"{self._prefix}{spec.name}/"
        missing = [self._store.uri(base + p) for p in spec.files if not self._store.exists(base + p)]
        if missing:
            raise ModelMissing(spec.name, missing)
        self._cache.mkdir(parents=True, exist_ok=True)
        partial = self._cache / f".partial-{spec.name}-{uuid.uuid4().hex[:8]}"
        try:
            for path in spec.files:
                got = self._store.get_to_file(base + path, partial / path)
                _check_sha(spec, path, got.sha256, self._store.uri(base + path))
            (partial / SPEC_FILE).write_text(spec.to_yaml())
            (partial / _COMPLETE).write_text(spec.digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(partial, target)
            except OSError:  # another process finished the same copy first: use theirs
                if not _complete(target, spec):
                    raise
            log.info("model %s (%s) copied to %s", spec.name, spec.digest[:16], target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target

    # -- registering ------------------------------------------------------------------------------

    def register(
        self, name: str, folder: str | Path, kind: str, backend: str, config: dict | None = None
    ) -> ModelSpec:
        """Publishes the files under `folder` as model `name` (every file but a model.yaml) with a
        model.yaml holding their checksums and digest; model.yaml is written last, so readers see
        the previous version or the complete new one."""
        check_name(name)
        folder = Path(folder)
        files = _files_under(folder)
        if not files:
            raise InvalidArgument("folder", f"{folder} holds no files to register as model '{name}'")
        checksums = {p: sha256_file(folder / p)[0] for p in files}
        spec = ModelSpec(
            name=name,
            kind=kind,
            backend=backend,
            files=tuple(files),
            digest=model_digest(checksums),
            config=dict(config or {}),
            checksums=checksums,
            location=self._location(name),
        )
        if self._folder is not None:
            self._folder.mkdir(parents=True, exist_ok=True)
            # One registration of a name at a time, across threads and processes on this host (two
            # services building the deterministic tiny model at once): the folder swap below is not
            # safe against a concurrent swap of the same folder.
            with open(self._folder / f".{spec.name}.lock", "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    self._register_folder(spec, folder)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        else:
            self._register_store(spec, folder)
        return spec

    def _register_folder(self, spec: ModelSpec, source: Path) -> None:
        dest = self._folder / spec.name
        self._folder.mkdir(parents=True, exist_ok=True)
        if source.resolve() == dest.resolve() or self._same_files_present(spec, dest):
            # Registered in place, or the same bytes are already there (e.g. two services building
            # the deterministic tiny model at once): only model.yaml may change, atomically.
            tmp = dest / f".{SPEC_FILE}.{uuid.uuid4().hex[:8]}"
            tmp.write_text(spec.to_yaml())
            tmp.replace(dest / SPEC_FILE)
            return
        staging = self._folder / f".staging-{spec.name}-{uuid.uuid4().hex[:8]}"
        for path in spec.files:
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / path, staging / path)
        (staging / SPEC_FILE).write_text(spec.to_yaml())
        old = self._folder / f".old-{spec.name}-{uuid.uuid4().hex[:8]}"
        try:
            for attempt in range(3):  # a concurrent register may put its folder in place meanwhile
                try:
                    if dest.exists():
                        dest.rename(old if attempt == 0 else old.with_name(f"{old.name}-{attempt}"))
                    staging.rename(dest)
                    break
                except OSError:
                    if attempt == 2:
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            for leftover in self._folder.glob(f"{old.name}*"):
                shutil.rmtree(leftover, ignore_errors=True)

    def _same_files_present(self, spec: ModelSpec, dest: Path) -> bool:
        text = self._read_spec_text(spec.name)
        if text is None:
            return False
        try:
            current = parse_spec(text, spec.name, str(dest))
        except FailedPrecondition:
            return False
        return current.digest == spec.digest and all((dest / p).is_file() for p in spec.files)

    def _register_store(self, spec: ModelSpec, source: Path) -> None:
        base = f"{self._prefix}{spec.name}/"
        for path in spec.files:
            self._store.put_file(base + path, source / path)
        self._store.put(base + SPEC_FILE, spec.to_yaml().encode(), "application/yaml")
        keep = {base + p for p in spec.files} | {base + SPEC_FILE}
        for key in self._store.list(base):  # files of a previous version nobody references now
            if key not in keep:
                self._store.delete(key)


def _files_under(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise InvalidArgument("folder", f"{folder} is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .cache, .git ...
        rel = Path(dirpath).relative_to(folder)
        for name in filenames:
            path = (rel / name).as_posix()
            if path in (SPEC_FILE, _COMPLETE) or name.startswith("."):
                continue
            found.append(validate_key(path, "folder"))
    return sorted(found)


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _check_sha(spec: ModelSpec, path: str, actual: str, where) -> None:
    expected = spec.checksums[path]
    if actual != expected:
        raise FailedPrecondition(
            "model",
            f"model '{spec.name}': {where} has sha256 {actual[:16]}..., model.yaml records {expected[:16]}...; "
            "the copy is corrupt or the model changed without re-registering",
        )


def _complete(target: Path, spec: ModelSpec) -> bool:
    try:
        done = (target / _COMPLETE).read_text() == spec.digest
    except OSError:
        return False
    return done and all((target / p).is_file() for p in spec.files)

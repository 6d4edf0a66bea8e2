"""Model repository: layout, digests, in-place and cached fetches, and errors that name the path."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
import yaml

from likeness.core.errors import FailedPrecondition, InvalidArgument, ModelMissing, NotFound
from likeness.core.modelrepo import ModelRepository, model_digest
from likeness.core.settings import CommonSettings


def make_model(folder: Path, seed: bytes = b"v1") -> Path:
    files = {
        "model_index.json": b'{"_class_name": "Tiny"}',
        "unet/config.json": b'{"sample_size": 8}',
        "unet/diffusion_pytorch_model.safetensors": b"weights-" + seed * 100,
        "text_encoder/model.safetensors": b"te-" + seed,
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / ".cache").mkdir(exist_ok=True)
    (folder / ".cache/ignored").write_bytes(b"hub cache junk")
    return folder


@pytest.fixture
def source(tmp_path) -> Path:
    return make_model(tmp_path / "built")


@pytest.fixture
def folder_repo(tmp_path) -> ModelRepository:
    return ModelRepository(f"file://{tmp_path}/models", tmp_path / "cache")


def test_register_writes_layout_and_digest(folder_repo, source, tmp_path):
    spec = folder_repo.register("tiny-sdxl", source, "sdxl", "diffusers", {"scheduler": "euler"})
    folder = tmp_path / "models/tiny-sdxl"
    body = yaml.safe_load((folder / "model.yaml").read_text())
    assert body["name"] == "tiny-sdxl" and body["kind"] == "sdxl" and body["backend"] == "diffusers"
    assert body["files"] == [
        "model_index.json",
        "text_encoder/model.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    assert body["config"] == {"scheduler": "euler"}
    # digest = sha256 of sha256sum-style lines, sorted by path
    lines = "".join(
        f"{hashlib.sha256((source / p).read_bytes()).hexdigest()}  {p}\n" for p in sorted(body["files"])
    )
    assert body["digest"] == hashlib.sha256(lines.encode()).hexdigest() == spec.digest
    assert body["digest"] == model_digest(body["checksums"])
    assert not (folder / ".cache").exists()  # hidden folders are not part of a model
    assert folder_repo.spec("tiny-sdxl") == spec
    assert [s.name for s in folder_repo.list()] == ["tiny-sdxl"]


def test_folder_repository_is_used_in_place(folder_repo, source, tmp_path):
    folder_repo.register("tiny-sdxl", source, "sdxl", "diffusers")
    path = folder_repo.fetch("tiny-sdxl")
    assert path == tmp_path / "models/tiny-sdxl"
    assert folder_repo.fetch("tiny-sdxl") == path  # second call answers from the verified marker


def test_register_in_place_and_digest_changes_with_content(folder_repo, tmp_path):
    folder = make_model(tmp_path / "models/tiny-sdxl")
    first = folder_repo.register("tiny-sdxl", folder, "sdxl", "diffusers")
    (folder / "unet/config.json").write_bytes(b'{"sample_size": 16}')
    second = folder_repo.register("tiny-sdxl", folder, "sdxl", "diffusers")
    assert first.digest != second.digest
    assert folder_repo.fetch("tiny-sdxl") == folder


def test_missing_files_are_named(folder_repo, source, tmp_path):
    folder_repo.register("tiny-sdxl", source, "sdxl", "diffusers")
    folder = tmp_path / "models/tiny-sdxl"
    (folder / "unet/diffusion_pytorch_model.safetensors").unlink()
    (folder / "model_index.json").unlink()
    with pytest.raises(ModelMissing) as err:
        folder_repo.fetch("tiny-sdxl")
    assert err.value.code == "FAILED_PRECONDITION"
    assert err.value.missing == [
        str(folder / "model_index.json"),
        str(folder / "unet/diffusion_pytorch_model.safetensors"),
    ]
    assert str(folder / "unet/diffusion_pytorch_model.safetensors") in str(err.value)


def test_corrupt_file_is_detected_even_after_a_verified_fetch(folder_repo, source, tmp_path):
    folder_repo.register("tiny-sdxl", source, "sdxl", "diffusers")
    folder_repo.fetch("tiny-sdxl")
    (tmp_path / "models/tiny-sdxl/unet/config.json").write_bytes(b'{"sample_size": 9}')
    with pytest.raises(FailedPrecondition, match="unet/config.json has sha256"):
        folder_repo.fetch("tiny-sdxl")


def test_absent_model(folder_repo, source, tmp_path):
    folder_repo.register("tiny-sdxl", source, "sdxl", "diffusers")
    with pytest.raises(
        NotFound, match=r"model 'sdxl-base' is not in the repository .* \(available: tiny-sdxl\)"
    ):
        folder_repo.spec("sdxl-base")
    with pytest.raises(ModelMissing) as err:
        folder_repo.fetch("sdxl-base")
    assert err.value.missing == [str(tmp_path / "models/sdxl-base/model.yaml")]
    assert "available: tiny-sdxl" in str(err.value)


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x" * 200, "a\x00"])
def test_bad_model_names(folder_repo, name):
    with pytest.raises(InvalidArgument, match="model name"):
        folder_repo.spec(name)


def test_malformed_model_yaml_is_named_and_skipped_by_list(folder_repo, source, tmp_path):
    folder_repo.register("good", source, "sdxl", "diffusers")
    bad = tmp_path / "models/bad"
    bad.mkdir()
    (bad / "model.yaml").write_text(
        "name: bad\nkind: sdxl\nbackend: diffusers\nfiles: [../../etc/passwd]\ndigest: x\n"
    )
    with pytest.raises(
        FailedPrecondition, match=r"models/bad/model.yaml of model 'bad' is invalid: .*traversal"
    ):
        folder_repo.spec("bad")
    assert [s.name for s in folder_repo.list()] == ["good"]


def test_store_repository_copies_into_cache(tmp_store, source, tmp_path):
    repo = ModelRepository(tmp_store.uri("models"), tmp_path / "cache", tmp_store)
    spec = repo.register("tiny-sdxl", source, "sdxl", "diffusers", {"dtype": "float32"})
    assert tmp_store.exists("models/tiny-sdxl/model.yaml")
    assert spec.location == tmp_store.uri("models/tiny-sdxl")
    path = repo.fetch("tiny-sdxl")
    assert path == tmp_path / "cache/tiny-sdxl" / spec.digest[:16]
    for rel in spec.files:
        assert (path / rel).read_bytes() == (source / rel).read_bytes()
    assert yaml.safe_load((path / "model.yaml").read_text())["digest"] == spec.digest
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tiny-sdxl"]  # no partial folders left
    # A second fetch uses the cache without reading the files from the store again.
    tmp_store.delete("models/tiny-sdxl/unet/config.json")
    assert repo.fetch("tiny-sdxl") == path


def test_store_repository_missing_and_corrupt_files(tmp_store, source, tmp_path):
    repo = ModelRepository(tmp_store.uri("models"), tmp_path / "cache", tmp_store)
    repo.register("tiny-sdxl", source, "sdxl", "diffusers")
    tmp_store.delete("models/tiny-sdxl/unet/config.json")
    with pytest.raises(ModelMissing) as err:
        repo.fetch("tiny-sdxl")
    assert err.value.missing == [tmp_store.uri("models/tiny-sdxl/unet/config.json")]
    tmp_store.put("models/tiny-sdxl/unet/config.json", b"tampered")
    with pytest.raises(FailedPrecondition, match="unet/config.json has sha256"):
        repo.fetch("tiny-sdxl")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_reregistering_updates_the_model_and_drops_unreferenced_files(tmp_store, source, tmp_path):
    repo = ModelRepository(tmp_store.uri("models"), tmp_path / "cache", tmp_store)
    first = repo.register("tiny-sdxl", source, "sdxl", "diffusers")
    (source / "text_encoder/model.safetensors").unlink()
    (source / "vae.bin").write_bytes(b"vae")
    second = repo.register("tiny-sdxl", source, "sdxl", "diffusers")
    assert second.digest != first.digest
    assert "models/tiny-sdxl/text_encoder/model.safetensors" not in tmp_store.list("models/")
    assert repo.fetch("tiny-sdxl") == tmp_path / "cache/tiny-sdxl" / second.digest[:16]


def test_from_settings_folder(tmp_path, source):
    settings = CommonSettings(model_repository=str(tmp_path / "repo"), model_cache_dir=str(tmp_path / "c"))
    repo = ModelRepository.from_settings(settings)
    repo.register("m", source, "sdxl", "diffusers")
    assert repo.fetch("m") == tmp_path / "repo/m"


@pytest.mark.s3
def test_from_settings_s3_repository_on_seaweedfs(seaweed, source, tmp_path):
    root = f"s3://models/r-{uuid.uuid4().hex[:8]}"
    settings = seaweed.settings("artifacts", model_repository=root, model_cache_dir=str(tmp_path / "cache"))
    repo = ModelRepository.from_settings(settings)
    spec = repo.register("tiny-sdxl", source, "sdxl", "diffusers")
    assert [s.name for s in repo.list()] == ["tiny-sdxl"]
    path = repo.fetch("tiny-sdxl")
    assert (path / "unet/diffusion_pytorch_model.safetensors").read_bytes() == (
        source / "unet/diffusion_pytorch_model.safetensors"
    ).read_bytes()
    assert spec.location == f"{root}/tiny-sdxl"


def test_s3_root_without_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(FailedPrecondition, match="needs a store; use ModelRepository.from_settings"):
        ModelRepository("s3://models/prod", tmp_path)


def test_concurrent_registers_of_the_same_model_all_succeed(folder_repo, source, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        specs = list(
            pool.map(lambda i: folder_repo.register("tiny-sdxl", source, "sdxl", "diffusers"), range(8))
        )
    assert len({s.digest for s in specs}) == 1
    assert folder_repo.fetch("tiny-sdxl") == tmp_path / "models/tiny-sdxl"
    left = sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock"))
    assert left == ["tiny-sdxl"]  # no staging or old folder left


def test_reregistering_a_folder_model_with_new_files_replaces_it(folder_repo, source, tmp_path):
    folder_repo.register("m", source, "sdxl", "diffusers")
    (source / "unet/config.json").write_bytes(b"{}")
    spec = folder_repo.register("m", source, "sdxl", "diffusers", {"v": 2})
    assert folder_repo.spec("m") == spec
    assert (tmp_path / "models/m/unet/config.json").read_bytes() == b"{}"
    assert folder_repo.fetch("m") == tmp_path / "models/m"

"""ControlNet conditioning on tiny-sdxl with tiny-controlnet-sdxl (random weights: outputs are noise,
so these tests check mechanics: the control changes the output, scale 0 is the unconditioned image
bit for bit, several controls combine, every task and both engines serve it, bad input is named)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from likeness.api.v1 import common_pb2, generation_pb2
from tests.generation.conftest import engine_of
from tests.generation.test_service import pixels, png_bytes, req

G = generation_pb2
CONTROL = "tiny-controlnet-sdxl"


def control_image(seed: int, size=(64, 64)) -> common_pb2.ImageInput:
    """A landmark-map-like control: a few bright dots and lines on black."""
    rng = np.random.default_rng(seed)
    img = np.zeros((*size, 3), np.uint8)
    for _ in range(12):
        y, x = rng.integers(4, size[0] - 4), rng.integers(4, size[1] - 4)
        img[y - 2:y + 2, x - 2:x + 2] = rng.integers(128, 256, 3)
    return common_pb2.ImageInput(data=png_bytes(img))


def control(seed: int = 1, **fields) -> G.ControlInput:
    return G.ControlInput(image=control_image(seed), model=CONTROL, **fields)


def test_control_changes_the_output_and_scale_zero_is_the_plain_image(service):
    _, stub, _ = service
    plain = pixels(stub.Generate(req(seed=11, output_prefix="cn/")).images[0])
    zero = pixels(stub.Generate(req(seed=11, controls=[control(scale=0.0)], output_prefix="cn/")).images[0])
    one = pixels(stub.Generate(req(seed=11, controls=[control()], output_prefix="cn/")).images[0])
    other = pixels(stub.Generate(req(seed=11, controls=[control(seed=2)], output_prefix="cn/")).images[0])
    assert np.array_equal(zero, plain)  # the ControlNet ran with scale 0: nothing added
    assert np.abs(one.astype(int) - plain.astype(int)).mean() > 2  # the control steers the image
    assert not np.array_equal(one, other)  # and a different control steers it differently


def test_multi_controlnet_and_the_schedule(service):
    _, stub, _ = service
    single = stub.Generate(req(seed=12, steps=4, controls=[control(1)], output_prefix="cn/")).images[0]
    both = stub.Generate(req(seed=12, steps=4, controls=[control(1), control(2, scale=0.5)],
                             output_prefix="cn/")).images[0]
    late = stub.Generate(req(seed=12, steps=4, controls=[control(1, start=0.5)], output_prefix="cn/")).images[0]
    assert len({single.artifact.sha256, both.artifact.sha256, late.artifact.sha256}) == 3


@pytest.mark.parametrize("task", [G.TASK_IMAGE_TO_IMAGE, G.TASK_INPAINT])
def test_image_tasks_take_a_control_the_size_of_the_init_image(service, task):
    _, stub, _ = service
    rng = np.random.default_rng(3)
    init = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    fields = dict(task=task, init_image=common_pb2.ImageInput(data=png_bytes(init)), width=64, height=64, steps=2)
    if task == G.TASK_INPAINT:
        mask = np.zeros((80, 96, 3), np.uint8)
        mask[20:60, 20:70] = 255
        fields.update(mask=common_pb2.ImageInput(data=png_bytes(mask)), crop_padding=8, width=64, height=64)
    cn = G.ControlInput(image=control_image(4, (80, 96)), model=CONTROL)
    with_control = pixels(stub.Generate(req(**fields, controls=[cn], output_prefix="cn/")).images[0])
    without = pixels(stub.Generate(req(**fields, output_prefix="cn/")).images[0])
    assert with_control.shape == without.shape and not np.array_equal(with_control, without)


def test_the_onnx_engine_serves_controls_on_its_torch_path(onnx_service):
    thread, stub, _ = onnx_service
    batches = engine_of(thread).batches
    before = batches["torch:controlnet"]
    plain = pixels(stub.Generate(req(seed=13, output_prefix="cn-onnx/")).images[0])
    steered = pixels(stub.Generate(req(seed=13, controls=[control()], output_prefix="cn-onnx/")).images[0])
    assert batches["torch:controlnet"] == before + 1  # routed to the composed torch engine
    assert not np.array_equal(plain, steered)  # and the control took effect there


@pytest.mark.parametrize(("controls", "code", "field"), [
    ([G.ControlInput(image=control_image(1, (48, 64)), model=CONTROL)], "INVALID_ARGUMENT", "controls[0].image"),
    ([G.ControlInput(image=control_image(1), model="no-such-controlnet")], "NOT_FOUND", "controls[0].model"),
    ([G.ControlInput(image=control_image(1), model="tiny-sdxl")], "INVALID_ARGUMENT", "controls[0].model"),
    ([G.ControlInput(image=control_image(1), model=CONTROL, scale=2.5)], "INVALID_ARGUMENT", "controls[0].scale"),
    ([G.ControlInput(image=control_image(1), model=CONTROL, start=0.6, end=0.4)], "INVALID_ARGUMENT",
     "controls[0].end"),
    ([control(i) for i in range(5)], "INVALID_ARGUMENT", "controls"),
])
def test_bad_controls_are_refused_naming_the_field(service, controls, code, field):
    _, stub, _ = service
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(req(controls=controls, output_prefix="cn-bad/"))
    assert err.value.code().name == code and err.value.details().startswith(field), err.value.details()


def test_a_controlnet_without_its_weights_is_refused_naming_the_file(service, gen_root, tmp_path):
    thread, stub, _ = service
    repo = thread.runtime.service.servicers[0][1]._generator.manager.repo
    folder = tmp_path / "broken-controlnet"
    folder.mkdir()
    (folder / "README").write_text("weights not uploaded")
    repo.register("broken-controlnet", folder, kind="controlnet", backend="diffusers", config={"family": "sdxl"})
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(req(controls=[G.ControlInput(image=control_image(1), model="broken-controlnet")],
                          output_prefix="cn-bad/"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "config.json" in err.value.details()

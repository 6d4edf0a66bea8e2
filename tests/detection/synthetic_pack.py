"""A synthetic InsightFace pack: ONNX graphs with the real models' inputs, outputs and layout, but
made-up weights (the real buffalo_l weights cannot be had here). The detector graph returns a
planted face whatever the input; the recognition graph is a fixed random projection of the
aligned 112x112 chip. They exercise everything around the weights: the pack in the model
repository, session creation with the selected providers, SCRFD decoding, ArcFace alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DET_SIZE = 128
STRIDES = (8, 16, 32)
# the planted face: stride 16, cell (row 3, col 4), first anchor -> centre (64, 48) in input pixels
PLANTED_STRIDE, PLANTED_INDEX, PLANTED_CENTRE = 16, (3 * 8 + 4) * 2, (64.0, 48.0)
PLANTED_DISTANCES = np.array([2.0, 2.5, 2.0, 3.0], np.float32)  # l, t, r, b in stride units
PLANTED_KPS = np.array([[-0.7, -0.8], [0.7, -0.8], [0.0, 0.0], [-0.6, 1.2], [0.6, 1.2]], np.float32)
PLANTED_SCORE = 0.9


def scrfd_outputs(det_size: int = DET_SIZE, cell: tuple[int, int] = (3, 4)) -> list[np.ndarray]:
    scores, boxes, kps = [], [], []
    index = (cell[0] * (det_size // PLANTED_STRIDE) + cell[1]) * 2  # the cell's first anchor
    for stride in STRIDES:
        n = (det_size // stride) ** 2 * 2
        s, b, k = np.full((n, 1), 0.01, np.float32), np.ones((n, 4), np.float32), np.zeros((n, 10), np.float32)
        if stride == PLANTED_STRIDE:
            s[index, 0] = PLANTED_SCORE
            b[index] = PLANTED_DISTANCES
            k[index] = PLANTED_KPS.ravel()
        scores.append(s)
        boxes.append(b)
        kps.append(k)
    return scores + boxes + kps


def _constant_model(outputs: list[np.ndarray], input_name: str, input_shape: list):
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for i, value in enumerate(outputs):
        inits.append(numpy_helper.from_array(value, f"const{i}"))
        nodes.append(helper.make_node("Add", [f"const{i}", "nothing"], [f"out{i}"]))
        outs.append(helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "synthetic-scrfd", [helper.make_tensor_value_info(
        input_name, TensorProto.FLOAT, input_shape)], outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _projection_model(dim: int = 512):
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(7).standard_normal((3 * 14 * 14, dim)).astype(np.float32)
    nodes = [helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["683"])]
    graph = helper.make_graph(nodes, "synthetic-arcface",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [None, 3, 112, 112])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT, [None, dim])],
                              initializer=[numpy_helper.from_array(weights, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def write_pack(folder: Path, with_recognition: bool = True, det_size: int = DET_SIZE,
               cell: tuple[int, int] = (3, 4)) -> Path:
    """`cell` (row, col) of the stride-16 grid holds the planted face; the grid's centre cell puts it
    mid-image, where the mirrored pass of flip averaging finds it again."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    model = _constant_model(scrfd_outputs(det_size, cell), "input.1", [1, 3, det_size, det_size])
    model.ir_version = 8
    onnx.save(model, str(folder / "det_10g.onnx"))
    if with_recognition:
        rec = _projection_model()
        rec.ir_version = 8
        onnx.save(rec, str(folder / "w600k_r50.onnx"))
    return folder

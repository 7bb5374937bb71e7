"""One contract for every SessionEncoder (PyTorch reference, ONNX Runtime CPU), plus ONNX parity."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.core.features import CLICK, MAX_QUERY_TOKENS, PURCHASE, SEARCH, ModelInputs  # noqa: E402
from stream_rec.core.seams import SessionEncoder  # noqa: E402
from stream_rec.errors import BundleError, ConfigError  # noqa: E402
from stream_rec.model import SASRecConfig, SessionTransformer, TorchEncoder, export_onnx  # noqa: E402
from stream_rec.model.export import random_inputs  # noqa: E402
from stream_rec.model.incremental import STEP_FILE, export_incremental  # noqa: E402
from stream_rec.runtime.encoder import OnnxEncoder  # noqa: E402
from stream_rec.runtime.incremental import IncrementalEncoder  # noqa: E402

from .tiny_model import spread  # noqa: E402

CONFIG = SASRecConfig(n_items=300, dim=64, n_layers=2, n_heads=2, ffn_dim=128, max_len=50, query_buckets=97)
PARITY_ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> SessionTransformer:
    torch.manual_seed(0)
    return spread(SessionTransformer(CONFIG))  # untrained weights are too uniform to catch much


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "encoder.onnx")


@pytest.fixture(scope="module")
def incremental_dir(model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("incremental")
    export_incremental(model, directory)
    return directory


@pytest.fixture(params=["torch", "onnx-cpu", "incremental"])
def encoder(request, model, onnx_path, incremental_dir) -> SessionEncoder:
    if request.param == "torch":
        return TorchEncoder(model)
    if request.param == "incremental":  # its un-keyed path, from scratch (test_incremental.py: keyed)
        return IncrementalEncoder(incremental_dir / STEP_FILE, max_len=CONFIG.max_len, cache_bytes=1 << 20,
                                  providers="cpu")
    return OnnxEncoder(onnx_path, providers="cpu")


def _session(n: int, seed: int) -> ModelInputs:
    return random_inputs(CONFIG.n_items, CONFIG.query_buckets, batch=1, length=n, seed=seed, lengths=[n])


def _left_pad(x: ModelInputs, length: int) -> ModelInputs:
    pad = length - x.items.shape[1]
    return ModelInputs(
        items=np.pad(x.items, ((0, 0), (pad, 0))),
        types=np.pad(x.types, ((0, 0), (pad, 0))),
        queries=np.pad(x.queries, ((0, 0), (pad, 0), (0, 0))),
    )


def test_is_a_session_encoder(encoder):
    assert isinstance(encoder, SessionEncoder)
    assert encoder.dim == CONFIG.dim


def test_output_shape_dtype_and_unit_norm(encoder):
    out = encoder.encode(random_inputs(CONFIG.n_items, CONFIG.query_buckets, batch=5, length=9, seed=1))
    assert out.shape == (5, CONFIG.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_left_padding_does_not_change_the_vector(encoder):
    x = _session(6, seed=2)
    ref = encoder.encode(x)
    for length in (7, 13, CONFIG.max_len):
        np.testing.assert_allclose(encoder.encode(_left_pad(x, length)), ref, atol=1e-5, rtol=0)


def test_a_session_gets_the_same_vector_alone_or_in_a_batch(encoder):
    batch = random_inputs(CONFIG.n_items, CONFIG.query_buckets, batch=6, length=20, seed=3)
    together = encoder.encode(batch)
    for b in range(6):
        alone = encoder.encode(ModelInputs(batch.items[b : b + 1], batch.types[b : b + 1], batch.queries[b : b + 1]))
        np.testing.assert_allclose(alone[0], together[b], atol=1e-5, rtol=0)


def test_event_types_and_queries_change_the_vector(encoder):
    x = _session(4, seed=4)
    ref = encoder.encode(x)
    types = x.types.copy()
    types[0, -1] = PURCHASE if types[0, -1] != PURCHASE else CLICK
    assert not np.allclose(encoder.encode(ModelInputs(x.items, types, x.queries)), ref)
    search = ModelInputs(np.zeros((1, 1), np.int64), np.full((1, 1), SEARCH), np.array([[[5, 0, 0]]]))
    other = ModelInputs(search.items, search.types, np.array([[[6, 0, 0]]]))
    assert not np.allclose(encoder.encode(search), encoder.encode(other))


# The dynamo exporter is the fallback for when torch drops the TorchScript one; it takes ~8 s.
@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_onnx_matches_pytorch_on_padded_batches_of_every_length(model, onnx_path, tmp_path, exporter):
    path = onnx_path if exporter == "torchscript" else export_onnx(model, tmp_path / "e.onnx", exporter="dynamo")
    lengths = list(range(1, CONFIG.max_len + 1))
    batch = random_inputs(CONFIG.n_items, CONFIG.query_buckets, len(lengths), CONFIG.max_len, seed=5, lengths=lengths)
    assert {int(t) for t in np.unique(batch.types)} == {0, CLICK, SEARCH, PURCHASE}
    assert (batch.queries > 0).any() and (batch.items == 0).any()
    onnx_out = OnnxEncoder(path, providers="cpu").encode(batch)
    torch_out = TorchEncoder(model).encode(batch)
    assert np.abs(onnx_out - torch_out).max() <= PARITY_ATOL
    short = ModelInputs(batch.items[:7, -3:], batch.types[:7, -3:], batch.queries[:7, -3:])  # other B, L
    assert np.abs(OnnxEncoder(path, providers="cpu").encode(short) - TorchEncoder(model).encode(short)).max() <= PARITY_ATOL


def test_onnx_graph_contract(onnx_path):
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == ["items", "types", "queries"]
    assert [o.name for o in graph.output] == ["session"]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert all(isinstance(d[0], str) and isinstance(d[1], str) for d in dims)  # batch, length dynamic
    assert dims[2][2] == MAX_QUERY_TOKENS


def test_onnx_cpu_reports_its_provider(onnx_path):
    assert OnnxEncoder(onnx_path, providers="cpu").providers == ["CPUExecutionProvider"]


def test_onnx_auto_falls_back_to_cpu_with_one_quiet_line(onnx_path, caplog, capfd):
    with caplog.at_level(logging.INFO, logger="stream_rec.encoder"):
        enc = OnnxEncoder(onnx_path, providers="auto")
    if "CUDAExecutionProvider" in enc.providers:
        pytest.skip("a GPU is usable here")
    assert enc.providers == ["CPUExecutionProvider"]
    lines = [r.getMessage() for r in caplog.records if r.name == "stream_rec.encoder"]
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert lines == ["onnxruntime: CUDA unavailable, using CPUExecutionProvider"]
    assert "onnxruntime" not in capfd.readouterr().err


def test_onnx_cuda_is_an_error_when_cuda_cannot_run(onnx_path):
    try:
        enc = OnnxEncoder(onnx_path, providers="cuda")
    except ConfigError as exc:
        assert "cuda" in str(exc).lower()
    else:
        assert enc.providers[0] == "CUDAExecutionProvider"


def test_onnx_bad_arguments(onnx_path, tmp_path):
    with pytest.raises(ConfigError, match="providers"):
        OnnxEncoder(onnx_path, providers="tpu")  # type: ignore[arg-type]
    with pytest.raises(BundleError, match="does not exist"):
        OnnxEncoder(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(BundleError, match="cannot load"):
        OnnxEncoder(tmp_path / "bad.onnx", providers="cpu")

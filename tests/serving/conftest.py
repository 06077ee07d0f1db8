"""Fixtures for the serving tests: tiny real ONNX model repositories and running servers.

The models are built with ``onnx.helper`` (no TensorFlow): embedding Gather on
``input_ids`` (+ token-type embedding), masked mean pool with ``attention_mask``,
MatMul + Add -> ``logits``; token classification skips the pool. Weights come from a
fixed seed, so a different seed makes a version that answers differently.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _make_serving_importable() -> None:
    """Before ``pip install -e .`` maps ``tfllm_serving`` -> ``serving/``, link it by hand
    (also for server subprocesses, through PYTHONPATH)."""
    if importlib.util.find_spec("tfllm_serving") is not None:
        return
    link_root = Path(tempfile.mkdtemp(prefix="tfllm-serving-path-"))
    atexit.register(shutil.rmtree, link_root, ignore_errors=True)
    (link_root / "tfllm_serving").symlink_to(REPO_ROOT / "serving")
    sys.path.insert(0, str(link_root))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(link_root), *filter(None, [os.environ.get("PYTHONPATH")])]
    )


_make_serving_importable()

from tfllm_serving.config import ServerConfig  # noqa: E402
from tfllm_serving.process import ServerProcess, free_port  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an and or but not no is are was were be been it this that these those of in on "
    "at to for with by from as film movie story one good bad great best worst funny boring "
    "love hate like very too more most much well just all some its his her their about "
    "into than then so if when what who how there here out up down time work make made "
    "performance characters director script comedy drama fun dull smart charming mess "
    "quick brown fox jumps over lazy dog"
).split()
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
PUNCT = list(".,!?'\"-;:()&$%/*`")


def tiny_vocab() -> list[str]:
    """Specials, whole words, single characters and their ``##`` forms: every ASCII word
    tokenizes (into characters at worst), so real sentences exercise real WordPiece."""
    vocab = SPECIALS + WORDS + LETTERS + PUNCT + ["##" + c for c in LETTERS]
    seen: dict[str, None] = {}
    for tok in vocab:
        seen.setdefault(tok, None)
    return list(seen)


def build_tokenizer_json(path: Path, vocab: list[str]) -> None:
    from tfllm_serving.wordpiece import build_bert_tokenizer

    build_bert_tokenizer(vocab, lowercase=True).save(str(path))
    path.with_name("vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def build_onnx_model(
    path: Path,
    vocab_size: int,
    num_labels: int,
    task: str = "classification",
    id_dtype: type = np.int64,
    seed: int = 0,
    hidden: int = 16,
) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    elem = TensorProto.INT64 if id_dtype == np.int64 else TensorProto.INT32
    inits = [
        numpy_helper.from_array(rng.normal(size=(vocab_size, hidden)).astype(np.float32), "E"),
        numpy_helper.from_array(rng.normal(size=(2, hidden)).astype(np.float32), "T"),
        numpy_helper.from_array(rng.normal(size=(hidden, num_labels)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(num_labels,)).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["tok_emb"]),
        helper.make_node("Gather", ["T", "token_type_ids"], ["type_emb"]),
        helper.make_node("Add", ["tok_emb", "type_emb"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
    ]
    output = "embedding" if task == "embedding" else "logits"
    if task in ("classification", "embedding"):
        inits += [
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "eps"),
        ]
        nodes += [
            helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
            helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
            helper.make_node("Add", ["count", "eps"], ["count_safe"]),
            helper.make_node("Div", ["summed", "count_safe"], ["pooled"]),
            helper.make_node("MatMul", ["pooled", "W"], ["proj"]),
        ]
        out_shape = ["batch", num_labels]
    else:
        nodes += [helper.make_node("MatMul", ["masked", "W"], ["proj"])]
        out_shape = ["batch", "seq", num_labels]
    if task == "embedding":  # unit rows, as exported embedders give them
        nodes += [helper.make_node("Add", ["proj", "b"], ["raw"]),
                  helper.make_node("ReduceL2", ["raw"], ["norm"], axes=[1], keepdims=1),
                  helper.make_node("Div", ["raw", "norm"], [output])]
    else:
        nodes.append(helper.make_node("Add", ["proj", "b"], [output]))
    graph = helper.make_graph(
        nodes,
        "tiny_bert_like",
        [
            helper.make_tensor_value_info(n, elem, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_version(
    repo: Path,
    name: str = "sst2",
    version: int = 1,
    task: str = "classification",
    labels: list[str] | None = None,
    id_dtype: type = np.int64,
    seed: int = 0,
    max_len: int = 128,
    text_pair: bool = False,
) -> Path:
    """Write ``repo/name/version/`` exactly as the export stage does; model_config.json last,
    because the server treats a version folder without it as still being written. An
    ``embedding`` model is the pooled classifier graph with an 8-wide ``embedding`` output."""
    if labels is None:
        labels = {"classification": ["negative", "positive"],
                  "embedding": [str(i) for i in range(8)]}.get(task, ["O", "B-X", "I-X"])
    vdir = repo / name / str(version)
    vdir.mkdir(parents=True)
    vocab = tiny_vocab()
    build_tokenizer_json(vdir / "tokenizer.json", vocab)
    build_onnx_model(vdir / "model.onnx", len(vocab), len(labels), task, id_dtype, seed)
    extra = {}
    if task == "embedding":
        extra = {"embedding_dim": len(labels)}
    else:
        (vdir / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    config = {
        **extra,
        "task": task,
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "outputs": ["embedding" if task == "embedding" else "logits"],
        "max_len": max_len,
        "lowercase": True,
        "text_pair": text_pair,
        "artifacts": {"onnx": "model.onnx"},
    }
    (vdir / "model_config.json").write_text(json.dumps(config), encoding="utf-8")
    return vdir


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    """A repository with ``sst2`` (classification, v1) and ``ner`` (token classification,
    int32 ids, v1)."""
    repo = tmp_path / "repo"
    write_version(repo, "sst2", 1)
    write_version(repo, "ner", 1, task="token_classification", id_dtype=np.int32, seed=3)
    return repo


@pytest.fixture(scope="session")
def write_model_version() -> Callable[..., Path]:
    return write_version


def reference_logits(version_dir: Path, texts: list[str], max_len: int = 128) -> np.ndarray:
    """Plain onnxruntime + tokenizers, one sentence at a time (no padding, no server code):
    the ground truth the server's answers are compared with."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
    tok.enable_truncation(max_len)
    session = ort.InferenceSession(str(version_dir / "model.onnx"))
    dtype = np.int32 if session.get_inputs()[0].type == "tensor(int32)" else np.int64
    rows = []
    for text in texts:
        enc = tok.encode(text)
        feed = {
            "input_ids": np.array([enc.ids], dtype=dtype),
            "attention_mask": np.array([enc.attention_mask], dtype=dtype),
            "token_type_ids": np.array([enc.type_ids], dtype=dtype),
        }
        rows.append(session.run(["logits"], feed)[0][0])
    return np.stack(rows)


@pytest.fixture(scope="session")
def in_process_logits() -> Callable[..., np.ndarray]:
    return reference_logits


def sst2_dev_sentences(limit: int = 64) -> list[str]:
    """Real SST-2 dev sentences from the shared data folder (never copied into the repo)."""
    root = Path(os.environ.get("TFLLM_DATA", REPO_ROOT.parent / "shared" / "data"))
    path = root / "sst2" / "dev.tsv"
    if not path.exists():
        pytest.skip(f"SST-2 dev not found at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines[:limit]]


@pytest.fixture(scope="session")
def sst2_sentences() -> list[str]:
    return sst2_dev_sentences()


def launch_server(repo: Path, config: dict | None = None, grpc: bool = False,
                  extra_args: list[str] | None = None, tmp: Path | None = None) -> ServerProcess:
    """``python -m tfllm_serving.cli`` in a subprocess, on free 127.0.0.1 ports."""
    import yaml

    port = free_port()
    grpc_port = free_port() if grpc else 0
    tmp = tmp or Path(tempfile.mkdtemp(prefix="tfllm-serve-"))
    cfg_path = tmp / f"serve-{port}.yaml"
    cfg = {"file_system_poll_wait_seconds": 0.2, **(config or {})}
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    args = ["--model-repo", str(repo), "--port", str(port), "--grpc-port", str(grpc_port),
            "--config", str(cfg_path), *(extra_args or [])]
    return ServerProcess(args, port, tmp / f"serve-{port}.log", grpc_port=grpc_port)


class ServerStarter:
    """Starts servers on demand and stops them all at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[ServerProcess] = []

    def __call__(self, repo: Path, config: dict | None = None, grpc: bool = False,
                 extra_args: list[str] | None = None, ready: bool = True) -> ServerProcess:
        server = launch_server(repo, config, grpc, extra_args, self.tmp)
        self.started.append(server)
        if ready:
            # Every worker up before the test's load starts, or one worker takes it all.
            workers = ServerConfig.from_dict(config or {}).worker_count()
            server.wait_ready(workers=workers)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerStarter]:
    """Start servers for one test."""
    starter = ServerStarter(tmp_path)
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerStarter]:
    """Start servers shared by the tests of one module (a server start costs ~1.5 s)."""
    starter = ServerStarter(tmp_path_factory.mktemp("servers"))
    yield starter
    starter.stop_all()

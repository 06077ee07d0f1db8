"""Serving benchmark: `tfllm-serve` (REST) vs. plain onnxruntime in-process, same artifact.

    .venv/bin/python bench/serve.py                      # build a BERT-shaped model, full run
    .venv/bin/python bench/serve.py --quick              # a few seconds, prints only
    .venv/bin/python bench/serve.py --model-repo REPO --model sst2   # an exported model

One run measures, on the same ONNX file and tokenizer.json:

1. in-process onnxruntime (no server): latency p50/p95/p99 at B=1 (tokenize + run +
   softmax, as the server does per request) and throughput (sequences/s) at batch sizes
   1, 8, 32, 64, the best of which is "best batched";
2. `tfllm-serve` started as a subprocess on free 127.0.0.1 ports (gRPC off) with batching
   on, once per `--workers` count (1 = one process; N = N processes on the port): REST
   `:predict` latency at B=1 from one client, and requests/s at 1, 8, 32 and 128
   concurrent clients (threads, one `httpx.Client` each, one sentence per request);
3. the server with the most workers and `batching.enabled: false`: requests/s at the
   highest client count.

Every phase stops after `--requests` requests (sequences for in-process batches) or
`--seconds`, whichever comes first; the only address ever contacted is 127.0.0.1. The
request texts are SST-2 dev sentences (`$TFLLM_DATA/sst2/dev.tsv`, default
`../shared/data` next to the repository). Without `--model-repo` the artifact is built here
without TensorFlow: a WordPiece tokenizer.json trained with `tokenizers` on the SST-2 train
sentences and an `onnx.helper` BERT encoder (embeddings + LayerNorm, `--layers` blocks of
12-head self-attention with the padding mask and a GELU feed-forward, tanh pooler on [CLS],
2-label classifier) with random weights at MiniLM width (hidden 384, FFN 1536).

Results: `bench/results/serve.json` and the "Serving" section of docs/results.md (not with
`--quick`, unless `--write`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import REPO, markdown_table, write_results  # noqa: E402
from tfllm_serving.config import ServerConfig  # noqa: E402
from tfllm_serving.process import ServerProcess, free_port  # noqa: E402

HOST = "127.0.0.1"  # the only address this benchmark talks to
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TITLE = "Serving: `tfllm-serve` REST vs. in-process onnxruntime"
# --providers -> (onnxruntime providers, results name, the device in the section title)
PROVIDERS = {"cpu": (("CPUExecutionProvider",), "serve", "CPU"),
             "cuda": (("CUDAExecutionProvider", "CPUExecutionProvider"), "serve-cuda",
                      "GPU, CUDA execution provider")}
TARGETS = {"p50_gap_ms": 1.5, "vs_in_process_best_batched": 0.8, "vs_batching_off": 3.0}


# ---- data ----------------------------------------------------------------------------


def data_root() -> Path:
    return Path(os.environ.get("TFLLM_DATA", REPO.parent / "shared" / "data"))


def sst2_sentences(split: str) -> list[str]:
    path = data_root() / "sst2" / f"{split}.tsv"
    if not path.exists():
        raise SystemExit(f"SST-2 {split} not found at {path} (set TFLLM_DATA)")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line.strip()]


# ---- the artifact ---------------------------------------------------------------------


def build_tokenizer(path: Path, corpus: list[str], vocab_size: int = 30522) -> int:
    """BERT-style WordPiece tokenizer.json trained on the SST-2 train sentences."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                               show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.save(str(path))
    return tok.get_vocab_size()


def build_bert_onnx(path: Path, vocab_size: int, layers: int = 4, hidden: int = 384,
                    heads: int = 12, ffn: int = 1536, max_len: int = 128, labels: int = 2,
                    seed: int = 0) -> int:
    """A BERT encoder + classifier in plain ONNX ops (opset 17), random weights.

    The ops are the ones a keras/tf2onnx BERT export has (Gather embeddings, LayerNormalization,
    MatMul/Add projections, Reshape/Transpose heads, masked Softmax attention, Erf GELU), so
    onnxruntime's BERT fusions apply as they would to a real export. Returns the parameter count.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: list = []
    nodes: list = []
    n_params = 0

    def weight(name: str, shape: tuple[int, ...], kind: str = "normal") -> str:
        nonlocal n_params
        if kind == "ones":
            arr = np.ones(shape, np.float32)
        elif kind == "zeros":
            arr = np.zeros(shape, np.float32)
        else:
            arr = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        n_params += arr.size
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def const(name: str, value, dtype) -> str:
        inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def dense(x: str, prefix: str, d_in: int, d_out: int) -> str:
        y = node("MatMul", [x, weight(f"{prefix}.kernel", (d_in, d_out))], f"{prefix}.mm")
        return node("Add", [y, weight(f"{prefix}.bias", (d_out,), "zeros")], f"{prefix}.out")

    def layer_norm(x: str, prefix: str) -> str:
        return node("LayerNormalization", [x, weight(f"{prefix}.gamma", (hidden,), "ones"),
                                           weight(f"{prefix}.beta", (hidden,), "zeros")],
                    f"{prefix}.out", axis=-1, epsilon=1e-12)

    head_dim = hidden // heads
    const("i0", 0, np.int64)
    const("i1", 1, np.int64)
    const("f1", 1.0, np.float32)
    const("neg", -10000.0, np.float32)
    const("scale", 1.0 / math.sqrt(head_dim), np.float32)
    const("sqrt2", math.sqrt(2.0), np.float32)
    const("half", 0.5, np.float32)
    const("axes12", [1, 2], np.int64)
    const("heads_shape", [0, 0, heads, head_dim], np.int64)
    const("hidden_shape", [0, 0, hidden], np.int64)

    # Embeddings: word + position + token type, LayerNorm.
    words = node("Gather", [weight("emb.word", (vocab_size, hidden)), "input_ids"], "emb.w")
    seq = node("Gather", [node("Shape", ["input_ids"], "ids.shape"), "i1"], "seq")
    positions = node("Range", ["i0", seq, "i1"], "positions")
    pos = node("Gather", [weight("emb.pos", (max_len, hidden)), positions], "emb.p")
    types = node("Gather", [weight("emb.type", (2, hidden)), "token_type_ids"], "emb.t")
    x = node("Add", [node("Add", [words, pos], "emb.wp"), types], "emb.sum")
    x = layer_norm(x, "emb.ln")
    # Additive attention mask [batch, 1, 1, seq]: 0 for tokens, -10000 for padding.
    mask = node("Cast", ["attention_mask"], "mask.f", to=TensorProto.FLOAT)
    mask = node("Mul", [node("Sub", ["f1", mask], "mask.inv"), "neg"], "mask.bias")
    mask = node("Unsqueeze", [mask, "axes12"], "mask.4d")

    for i in range(layers):
        p = f"l{i}"

        def split_heads(t: str, perm: list[int], name: str) -> str:
            return node("Transpose", [node("Reshape", [t, "heads_shape"], f"{name}.r")],
                        f"{name}.t", perm=perm)

        q = split_heads(dense(x, f"{p}.q", hidden, hidden), [0, 2, 1, 3], f"{p}.qh")
        k = split_heads(dense(x, f"{p}.k", hidden, hidden), [0, 2, 3, 1], f"{p}.kh")
        v = split_heads(dense(x, f"{p}.v", hidden, hidden), [0, 2, 1, 3], f"{p}.vh")
        scores = node("Mul", [node("MatMul", [q, k], f"{p}.qk"), "scale"], f"{p}.scaled")
        probs = node("Softmax", [node("Add", [scores, mask], f"{p}.masked")], f"{p}.probs",
                     axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"{p}.ctx")], f"{p}.ctx.t",
                   perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "hidden_shape"], f"{p}.ctx.r")
        attn = dense(ctx, f"{p}.o", hidden, hidden)
        x = layer_norm(node("Add", [x, attn], f"{p}.res1"), f"{p}.ln1")
        h = dense(x, f"{p}.ffn1", hidden, ffn)
        erf = node("Erf", [node("Div", [h, "sqrt2"], f"{p}.gelu.d")], f"{p}.gelu.erf")
        gelu = node("Mul", [node("Mul", [h, node("Add", [erf, "f1"], f"{p}.gelu.a")],
                                 f"{p}.gelu.m"), "half"], f"{p}.gelu")
        out = dense(gelu, f"{p}.ffn2", ffn, hidden)
        x = layer_norm(node("Add", [x, out], f"{p}.res2"), f"{p}.ln2")

    cls = node("Gather", [x, "i0"], "cls", axis=1)
    pooled = node("Tanh", [dense(cls, "pooler", hidden, hidden)], "pooled")
    y = node("MatMul", [pooled, weight("classifier.kernel", (hidden, labels))], "cls.mm")
    node("Add", [y, weight("classifier.bias", (labels,), "zeros")], "logits")

    graph = helper.make_graph(
        nodes, "bert_classifier",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
         for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return n_params


def build_repo(root: Path, layers: int, hidden: int, max_len: int) -> tuple[Path, dict]:
    """REPO/sst2/1/ laid out as `tfllm export` writes it; model_config.json last."""
    vdir = root / "sst2" / "1"
    vdir.mkdir(parents=True)
    vocab = build_tokenizer(vdir / "tokenizer.json", sst2_sentences("train"))
    heads = 12 if hidden % 12 == 0 else max(1, hidden // 64)
    params = build_bert_onnx(vdir / "model.onnx", vocab, layers=layers, hidden=hidden,
                             heads=heads, ffn=4 * hidden, max_len=max_len)
    (vdir / "labels.json").write_text(json.dumps(["negative", "positive"]), encoding="utf-8")
    config = {"task": "classification", "inputs": ["input_ids", "attention_mask",
                                                  "token_type_ids"],
              "outputs": ["logits"], "max_len": max_len, "lowercase": True,
              "text_pair": False, "artifacts": {"onnx": "model.onnx"}}
    (vdir / "model_config.json").write_text(json.dumps(config), encoding="utf-8")
    info = {"source": "built by bench/serve.py (random weights, no TensorFlow)",
            "layers": layers, "hidden": hidden, "heads": heads, "ffn": 4 * hidden,
            "vocab": vocab, "max_len": max_len, "parameters": params}
    return vdir, info


def latest_version(repo: Path, name: str) -> Path:
    versions = [p for p in (repo / name).iterdir()
                if p.is_dir() and p.name.isdigit() and (p / "model_config.json").exists()]
    if not versions:
        raise SystemExit(f"no version with model_config.json under {repo / name}")
    return max(versions, key=lambda p: int(p.name))


# ---- measuring ------------------------------------------------------------------------


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "n": 0}
    ms = np.asarray(seconds) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3), "mean_ms": round(float(ms.mean()), 3),
            "n": len(seconds)}


class InProcess:
    """Plain onnxruntime + tokenizers, ORT's default session options (all cores)."""

    def __init__(self, vdir: Path, intra_op_threads: int = 0,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        config = json.loads((vdir / "model_config.json").read_text(encoding="utf-8"))
        if config.get("text_pair"):
            raise SystemExit("this benchmark sends single sentences; the model takes pairs")
        artifact = (config.get("artifacts") or {"onnx": "model.onnx"})["onnx"]
        self.model_path = vdir / artifact
        self.tok = Tokenizer.from_file(str(vdir / "tokenizer.json"))
        pad = self.tok.token_to_id("[PAD]") or 0
        self.tok.enable_padding(pad_id=pad, pad_token="[PAD]")
        self.tok.enable_truncation(int(config.get("max_len", 512)))
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.model_path), sess_options=options,
                                            providers=list(providers))
        if self.session.get_providers()[0] != providers[0]:
            raise SystemExit(f"onnxruntime did not start {providers[0]} (available: "
                             f"{ort.get_available_providers()}); install onnxruntime-gpu "
                             "and the CUDA 13 runtime, or use --providers cpu")
        types = {"tensor(int32)": np.int32}
        self.inputs = {i.name: types.get(i.type, np.int64) for i in self.session.get_inputs()}
        names = [o.name for o in self.session.get_outputs()]
        self.output = "logits" if "logits" in names else names[0]

    def __call__(self, texts: list[str]) -> np.ndarray:
        encs = self.tok.encode_batch(texts)
        arrays = {"input_ids": [e.ids for e in encs], "attention_mask":
                  [e.attention_mask for e in encs], "token_type_ids": [e.type_ids for e in encs]}
        feed = {n: np.array(arrays[n], dtype=t) for n, t in self.inputs.items()}
        (logits,) = self.session.run([self.output], feed)
        z = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)


def time_batches(model: InProcess, batches: list[list[str]], seconds: float) -> dict:
    """Sequences/s over `batches` (until `seconds` pass), after two untimed warm-up runs."""
    for batch in batches[:2]:  # new shapes: first runs allocate
        model(batch)
    done, started = 0, time.perf_counter()
    for batch in batches:
        model(batch)
        done += len(batch)
        if time.perf_counter() > started + seconds:
            break
    wall = time.perf_counter() - started
    return {"sequences": done, "seconds": round(wall, 3),
            "sequences_per_s": round(done / wall, 1)}


def bench_in_process(model: InProcess, texts: list[str], requests: int, seconds: float,
                     batch_sizes: list[int]) -> dict:
    for text in texts[:10]:
        model([text])
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    for i in range(requests):
        t0 = time.perf_counter()
        model([texts[i % len(texts)]])
        lat.append(time.perf_counter() - t0)
        if t0 > deadline:
            break
    result = {"b1_latency": percentiles(lat), "batched": []}
    print(f"in-process B=1: {fmt_lat(result['b1_latency'])}", flush=True)
    # Sentences in arrival order, then the same sentences sorted by token count before
    # batching (less padding: what an offline user would do, and the strongest rows).
    for sort in (False, True):
        for b in batch_sizes:
            if sort and b == 1:
                continue
            pool = [texts[i % len(texts)] for i in range(max(2, -(-requests // b)) * b)]
            if sort:
                pool.sort(key=lambda t: len(model.tok.encode(t).ids))
            batches = [pool[j:j + b] for j in range(0, len(pool), b)]
            row = {"batch_size": b, **({"sorted": True} if sort else {}),
                   **time_batches(model, batches, seconds)}
            result["batched"].append(row)
            print(f"in-process batch {b}{', length-sorted' if sort else ''}: "
                  f"{row['sequences_per_s']:.1f} seq/s", flush=True)
    best = max(result["batched"], key=lambda r: r["sequences_per_s"])
    result["best_batched"] = {"batch_size": best["batch_size"],
                              "sorted": best.get("sorted", False),
                              "sequences_per_s": best["sequences_per_s"]}
    return result


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and every live process under it (the server's workers),
    from /proc (0.0 where /proc is missing)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


class Server(ServerProcess):
    """`tfllm-serve` on a free 127.0.0.1 port with the benchmark's config, gRPC off."""

    def __init__(self, repo: Path, name: str, settings: dict, workers: int, work: Path) -> None:
        import yaml

        cfg = yaml.safe_load((REPO / "configs" / "serve" / "default.yaml").read_text()) or {}
        port = free_port()
        cfg.update(host=HOST, port=port, grpc_port=0, model_repo=str(repo),
                   models=[{"name": name}], workers=workers)
        for section, values in settings.items():
            cfg.setdefault(section, {}).update(values)
        self.config = cfg
        tag = f"workers-{workers}-batching-{'on' if cfg['batching']['enabled'] else 'off'}"
        cfg_path = work / f"serve-{tag}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        super().__init__(["--config", str(cfg_path)], port, work / f"serve-{tag}.log",
                         host=HOST)
        self.predict_url = f"{self.base}/v1/models/{name}:predict"
        self.status_url = f"{self.base}/v1/models/{name}"

    def wait_ready(self, timeout: float = 120.0, workers: int = 0) -> None:
        super().wait_ready(timeout, workers or ServerConfig.from_dict(self.config).worker_count())

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def batch_stats(self) -> tuple[float, float]:
        """(sum, count) of the server's batch-size histogram from /metrics."""
        import httpx

        text = httpx.get(self.base + "/metrics", timeout=10.0).text
        total = {"sum": 0.0, "count": 0.0}
        for m in re.finditer(r"^tfllm_serving_batch_size_(sum|count)\{[^}]*\} (\S+)$", text,
                             re.MULTILINE):
            total[m[1]] += float(m[2])
        return total["sum"], total["count"]


def request_body(text: str) -> bytes:
    return json.dumps({"instances": [text]}).encode("utf-8")


def run_clients(server: Server, bodies: list[bytes], clients: int, requests: int,
                seconds: float, get_url: str | None = None) -> dict:
    """`clients` threads, one keep-alive `httpx.Client` each, share `requests` requests
    (one sentence each) until done or `seconds` pass. Non-200 answers and transport
    errors count as errors. With ``get_url`` each request is that GET instead (no model run:
    the HTTP floor)."""
    import httpx

    def send(http: httpx.Client, i: int) -> httpx.Response:
        if get_url is not None:
            return http.get(get_url)
        return http.post(server.predict_url, content=bodies[i % len(bodies)], headers=headers)

    counter = itertools.count()
    start = threading.Barrier(clients + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    deadline = [math.inf]
    headers = {"content-type": "application/json"}

    def client(k: int) -> None:
        local_lat: list[float] = []
        local_err: list[str] = []
        with httpx.Client(timeout=60.0) as http:
            try:  # open the connection before the clock starts
                send(http, k)
            except httpx.HTTPError:
                pass
            start.wait()
            while True:
                i = next(counter)
                if i >= requests or time.perf_counter() > deadline[0]:
                    break
                t0 = time.perf_counter()
                try:
                    r = send(http, i)
                    if r.status_code != 200:
                        local_err.append(f"HTTP {r.status_code}: {r.text[:200]}")
                        continue
                except httpx.HTTPError as exc:
                    local_err.append(f"{type(exc).__name__}: {exc}")
                    continue
                local_lat.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(local_lat)
            errors.extend(local_err)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    batches_before = server.batch_stats()
    cpu_server, cpu_client = server.cpu(), time.process_time()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu_server, cpu_client = server.cpu() - cpu_server, time.process_time() - cpu_client
    batches_after = server.batch_stats()
    n_batches = batches_after[1] - batches_before[1]
    ok = len(latencies)
    answered = ok + len(errors)
    return {
        "clients": clients, "requests": answered, "ok": ok, "errors": len(errors),
        "error_samples": sorted(set(errors))[:5], "seconds": round(wall, 3),
        "requests_per_s": round(ok / wall, 1) if wall else None,
        "latency": percentiles(latencies),
        "mean_batch_size": round((batches_after[0] - batches_before[0]) / n_batches, 2)
        if n_batches else None,
        "server_cpu_ms_per_request": round(1e3 * cpu_server / answered, 3) if answered else None,
        "client_cpu_ms_per_request": round(1e3 * cpu_client / answered, 3) if answered else None,
    }


def check_answers(server: Server, texts: list[str], model: InProcess) -> float:
    """Largest |server probability - in-process probability| over a few sentences."""
    import httpx

    worst = 0.0
    with httpx.Client(timeout=30.0) as http:
        for text in texts:
            r = http.post(server.predict_url, content=request_body(text),
                          headers={"content-type": "application/json"})
            r.raise_for_status()
            got = np.asarray(r.json()["predictions"][0]["probabilities"])
            worst = max(worst, float(np.abs(got - model([text])[0]).max()))
    return worst


def fmt_lat(lat: dict) -> str:
    if not lat["n"]:
        return "no answers"
    return (f"p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, "
            f"p99 {lat['p99_ms']:.2f} ms (n={lat['n']})")


def bench_server(server: Server, bodies: list[bytes], texts: list[str], model: InProcess,
                 requests: int, seconds: float, clients: list[int], label: str,
                 latency: bool) -> dict:
    server.wait_ready()
    result: dict = {"config": {k: server.config[k] for k in ("workers", "batching", "runtime",
                                                            "access_log", "log_level")}}
    loaded = [json.loads(line) for line in server.log().splitlines()
              if '"version_loaded"' in line]
    result["server_providers"] = loaded[-1].get("providers") if loaded else None
    wanted = server.config["runtime"]["providers"]
    if not result["server_providers"] or result["server_providers"][0] != wanted[0]:
        raise SystemExit(f"the server runs {result['server_providers']}, not {wanted[0]}:\n"
                         f"{server.log(2000)}")
    result["max_abs_probability_diff_vs_in_process"] = check_answers(server, texts[:16], model)
    # Warm the server's shapes and the connection path before timing.
    run_clients(server, bodies, max(clients), min(4 * max(clients), requests), seconds)
    if latency:
        floor = run_clients(server, bodies, 1, requests, seconds, get_url=server.status_url)
        result["http_floor"] = floor
        print(f"server GET model status, 1 client: {fmt_lat(floor['latency'])}", flush=True)
        lat = run_clients(server, bodies, 1, requests, seconds)
        result["b1_latency"] = lat
        print(f"server ({label}) B=1, 1 client: {fmt_lat(lat['latency'])}, "
              f"errors {lat['errors']}", flush=True)
    result["throughput"] = []
    for c in clients:
        row = run_clients(server, bodies, c, requests, seconds)
        result["throughput"].append(row)
        print(f"server ({label}) {c} clients: {row['requests_per_s']} req/s, "
              f"p50 {row['latency']['p50_ms']} ms, errors {row['errors']}, "
              f"mean batch {row['mean_batch_size']}", flush=True)
    return result


# ---- report ---------------------------------------------------------------------------


def ms(lat: dict) -> list[str]:
    return [f"{lat[k]:.2f}" if lat.get(k) is not None else "–"
            for k in ("p50_ms", "p95_ms", "p99_ms")]


def server_row(label: str, run: dict, batch: bool = True) -> list[str]:
    """One table row from a `run_clients` result."""
    return [label, *ms(run["latency"]), f"{run['requests_per_s']} req/s", str(run["errors"]),
            str(run["mean_batch_size"]) if batch else "–"]


def report(results: dict, quick: bool) -> tuple[str, str, dict]:
    ip, servers = results["in_process"], results["servers"]
    on = {int(k.split("-")[1]): v for k, v in servers.items() if k.endswith("batching-on")}
    off = next(v for k, v in servers.items() if k.endswith("batching-off"))
    lone_off = next((v for k, v in servers.items() if k.endswith("lone-off")), None)
    most = max(on)
    rows = [["in-process ORT, B=1 (tokenize + run)", *ms(ip["b1_latency"]),
             f"{1e3 / ip['b1_latency']['mean_ms']:.1f} seq/s", "–", "1"]]
    for b in ip["batched"]:
        rows.append([f"in-process ORT, batch {b['batch_size']}"
                     + (", length-sorted sentences" if b.get("sorted") else ""), "–", "–", "–",
                     f"{b['sequences_per_s']:.1f} seq/s", "–", str(b["batch_size"])])
    for workers, part in sorted(on.items()):
        who = f"server REST, {workers} worker{'s' if workers > 1 else ''}"
        rows.append(server_row(f"{who}, GET model status, 1 client (HTTP floor, no model)",
                               part["http_floor"], batch=False))
        rows.append(server_row(f"{who}, B=1, 1 client (latency)", part["b1_latency"]))
        rows += [server_row(f"{who}, batching on, {row['clients']} clients", row)
                 for row in part["throughput"]]
    rows += [server_row(f"server REST, {most} workers, batching off, {row['clients']} clients",
                        row) for row in off["throughput"]]
    if lone_off is not None:
        who = f"server REST, {most} workers, lone requests on their worker's share"
        rows.append(server_row(f"{who}, B=1, 1 client", lone_off["b1_latency"]))
        rows += [server_row(f"{who}, batching on, {row['clients']} clients", row)
                 for row in lone_off["throughput"]]
    table = markdown_table(["measurement", "p50 ms", "p95 ms", "p99 ms", "throughput",
                            "errors", "mean batch"], rows)

    def at(part: dict, clients: int) -> float:
        return next(r["requests_per_s"] for r in part["throughput"] if r["clients"] == clients)

    best = ip["best_batched"]["sequences_per_s"]
    clients = sorted(r["clients"] for r in on[most]["throughput"])
    top, mid = clients[-1], (32 if 32 in clients else clients[-1])
    gap = on[most]["b1_latency"]["latency"]["p50_ms"] - ip["b1_latency"]["p50_ms"]
    vs_best = {c: at(on[most], c) / best for c in (mid, top)}
    vs_one = {c: at(on[most], c) / at(on[1], c) for c in (mid, top)} if 1 in on else {}
    vs_off = at(on[most], mid) / at(off, mid)
    unsorted = max((b for b in ip["batched"] if not b.get("sorted")),
                   key=lambda b: b["sequences_per_s"])
    vs_unsorted = at(on[most], mid) / unsorted["sequences_per_s"]
    ratios = {
        "workers": most,
        "server_p50_minus_in_process_p50_ms": round(gap, 3),
        **{f"server_{c}_clients_over_in_process_best_batched": round(v, 3)
           for c, v in vs_best.items()},
        **{f"workers_{most}_over_1_at_{c}_clients": round(v, 3) for c, v in vs_one.items()},
        f"batching_on_over_off_{mid}_clients": round(vs_off, 3),
        f"server_{mid}_clients_over_in_process_best_unsorted_batch": round(vs_unsorted, 3),
        "met": {"p50_gap": gap <= TARGETS["p50_gap_ms"],
                "vs_in_process_best_batched":
                    vs_best[mid] >= TARGETS["vs_in_process_best_batched"],
                "workers_no_slower": all(v >= 1.0 for v in vs_one.values()),
                "vs_batching_off": vs_off >= TARGETS["vs_batching_off"]},
    }
    yes = {True: "yes", False: "**no**"}
    met = ratios["met"]
    batch = f"{ip['best_batched']['batch_size']}" + (
        ", length-sorted" if ip["best_batched"].get("sorted") else "")
    ratio_rows = [["server p50 − in-process p50 at B=1 "
                   f"({most} workers)", f"{gap:+.2f} ms", f"≤ {TARGETS['p50_gap_ms']} ms",
                   yes[met["p50_gap"]]]]
    for c, v in vs_best.items():
        target = TARGETS["vs_in_process_best_batched"]
        ratio_rows.append([f"server {c} clients ({most} workers) ÷ in-process best batched "
                           f"(batch {batch})", f"{v:.2f}×", f"≥ {target}×" if c == mid else
                           "–", yes[v >= target] if c == mid else "–"])
    ratio_rows.append([f"server {mid} clients ({most} workers) ÷ in-process best batch of "
                       f"sentences in arrival order (batch {unsorted['batch_size']}; issue "
                       "24's \"today\" measure)", f"{vs_unsorted:.2f}×", "–", "–"])
    for c, v in vs_one.items():
        ratio_rows.append([f"{most} workers ÷ 1 worker, {c} clients", f"{v:.2f}×", "≥ 1×",
                           yes[v >= 1.0]])
    ratio_rows.append([f"batching on ÷ batching off, {mid} clients ({most} workers)",
                       f"{vs_off:.2f}×", f"≥ {TARGETS['vs_batching_off']}×",
                       yes[met["vs_batching_off"]]])
    table += "\n\n" + markdown_table(["ratio", "measured", "target", "met"], ratio_rows)
    return table, notes_text(results, quick, on[most], mid), ratios


def notes_text(results: dict, quick: bool, part: dict, clients: int) -> str:
    ip, m, cfg = results["in_process"], results["model"], part["config"]
    b, rt = cfg["batching"], cfg["runtime"]
    model = (f"{m['layers']}-layer BERT encoder, hidden {m['hidden']}, {m['heads']} heads, FFN "
             f"{m['ffn']}, vocab {m['vocab']:,} (WordPiece trained on SST-2 train), "
             f"{m['parameters'] / 1e6:.1f} M parameters, random weights, built with "
             "`onnx.helper` by the benchmark") if "layers" in m else f"`{m['path']}`"
    row = next(r for r in part["throughput"] if r["clients"] == clients)
    b1 = next((r for r in ip["batched"] if r["batch_size"] == 1), None)
    gain = ip["best_batched"]["sequences_per_s"] / b1["sequences_per_s"] if b1 else None
    ceiling = (f"In-process, the best batch runs {gain:.2f}× as many sequences/s as batch 1: "
               "that bounds what batching on ÷ off can reach on this device. ") if gain else ""
    return (
        f"{'**Quick run (tiny counts, not a measurement).** ' if quick else ''}"
        f"Execution providers (server and in-process): "
        f"{', '.join(rt['providers'])}. "
        f"Artifact: {model}; max_len {m['max_len']}. Requests: SST-2 dev sentences, one "
        "per REST `:predict` request (`{\"instances\": [text]}`, row format, text tokenized "
        "by the server), cycled; the in-process side tokenizes with the same tokenizer.json "
        "(padding to the batch's longest, truncation to max_len), runs onnxruntime "
        "(default session options: intra-op threads = cores, idle threads spinning) and "
        "applies softmax. "
        f"Each phase: at most {results['requests']:,} requests (sequences for the batched "
        f"in-process rows) or {results['seconds']:.0f} s. Clients: Python threads with one "
        "keep-alive `httpx.Client` each, on the same machine as the server (they share the "
        f"{results['cores']} cores; at {clients} clients and {cfg['workers']} workers the "
        f"client side used {row['client_cpu_ms_per_request']} ms CPU per request, the server "
        f"{row['server_cpu_ms_per_request']} ms, all its processes). {ceiling}"
        "The HTTP floor row is `GET /v1/models/NAME` (routing, JSON, access log; no "
        "tokenizer or model): most of the B=1 gap that is not model time. "
        "Server: `configs/serve/default.yaml` with gRPC off, `workers` as in the row (N "
        "processes on the port, each with its own batcher and onnxruntime session, threads "
        "= cores ÷ workers), batching "
        f"max_batch_size {b['max_batch_size']}, max_padding_ratio "
        f"{b.get('max_padding_ratio', 0)} (0 = by device: 1.3 on CPU), batch_timeout_micros "
        f"{b['batch_timeout_micros']}, num_batch_threads {b['num_batch_threads']} (per "
        f"worker), max_enqueued_batches {b['max_enqueued_batches']}, "
        f"runtime.intra_op_threads {rt['intra_op_threads']} (0 = a worker's cores ÷ its "
        "batch threads), runtime.intra_op_spinning "
        f"{str(rt.get('intra_op_spinning')).lower()}, runtime.lone_request_all_cores "
        f"{str(rt.get('lone_request_all_cores', False)).lower()} (a one-row batch runs on a "
        "second session on every core when no other run is going on in any worker), "
        f"access_log {str(cfg['access_log']).lower()} (to a file); the batching-off server "
        "is the same with `batching.enabled: false`, the *lone requests on their worker's "
        "share* rows with `runtime.lone_request_all_cores: false`. Server answers equal "
        "in-process ones (max |Δ "
        f"probability| {part['max_abs_probability_diff_vs_in_process']:.1e}). *Mean batch* "
        "is rows per model run from the server's `/metrics` (summed over workers). Targets "
        "(issues 7, 24): server p50 ≤ in-process p50 + 1.5 ms; 32-client throughput ≥ 0.8× "
        "in-process best batched and ≥ 3× batching off; N workers no slower than 1."
    )


# ---- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repo", type=Path, help="TF-Serving-layout repository (REPO/NAME/V)")
    p.add_argument("--model", default="sst2", help="model name in --model-repo (default sst2)")
    p.add_argument("--layers", type=int, default=4, help="built model: encoder blocks (4)")
    p.add_argument("--hidden", type=int, default=384, help="built model: hidden size (384)")
    p.add_argument("--max-len", type=int, default=128, help="built model: max_len (128)")
    p.add_argument("--requests", type=int, default=2000,
                   help="requests per phase and concurrency level (default 2000)")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="time cap per phase and concurrency level (default 60)")
    p.add_argument("--clients", default="1,8,32,128",
                   help="concurrency levels (default 1,8,32,128)")
    p.add_argument("--workers", default=f"1,{os.cpu_count()}",
                   help="server worker counts to compare (default 1,<cores>)")
    p.add_argument("--batch-sizes", default="1,8,32,64",
                   help="in-process batch sizes (default 1,8,32,64)")
    p.add_argument("--num-batch-threads", type=int, default=1,
                   help="server batching.num_batch_threads (default 1)")
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="server runtime.intra_op_threads (default 0 = cores / batch threads)")
    p.add_argument("--intra-op-spinning", action="store_true",
                   help="server runtime.intra_op_spinning: let idle ORT threads busy-wait")
    p.add_argument("--batch-timeout-micros", type=int, default=0,
                   help="server batching.batch_timeout_micros (default 0)")
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="server batching.max_batch_size (default 32)")
    p.add_argument("--max-padding-ratio", type=float, default=0.0,
                   help="server batching.max_padding_ratio (default 0 = by device)")
    p.add_argument("--providers", choices=sorted(PROVIDERS), default="cpu",
                   help="cpu (default), or cuda: the CUDA execution provider for both the "
                        "in-process session and the server; results go to serve-cuda")
    p.add_argument("--quick", action="store_true",
                   help="tiny run (2-layer model, 40 requests, 3 s caps); prints, writes nothing")
    p.add_argument("--write", action="store_true", help="write results even with --quick")
    p.add_argument("--no-write", action="store_true",
                   help="print only (trying a setting); bench/results and docs stay as they are")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.seconds = min(args.requests, 40), min(args.seconds, 3.0)
        args.layers = min(args.layers, 2)
    clients = sorted({int(c) for c in args.clients.split(",")})
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    texts = sst2_sentences("dev")
    bodies = [request_body(t) for t in texts]

    work = Path(tempfile.mkdtemp(prefix="tfllm-bench-serve-"))
    servers: list[Server] = []
    try:
        if args.model_repo:
            repo, name = args.model_repo.resolve(), args.model
            vdir = latest_version(repo, name)
            cfg = json.loads((vdir / "model_config.json").read_text(encoding="utf-8"))
            model_info = {"source": "--model-repo", "path": str(vdir),
                          "max_len": cfg.get("max_len")}
        else:
            t0 = time.perf_counter()
            repo, name = work / "repo", "sst2"
            vdir, model_info = build_repo(repo, args.layers, args.hidden, args.max_len)
            print(f"built {model_info['layers']}-layer hidden-{model_info['hidden']} model "
                  f"({model_info['parameters'] / 1e6:.1f} M params, vocab "
                  f"{model_info['vocab']}) in {time.perf_counter() - t0:.1f} s", flush=True)

        providers, results_name, device = PROVIDERS[args.providers]
        model = InProcess(vdir, providers=providers)
        results: dict = {"model": model_info, "requests": args.requests,
                         "seconds": args.seconds, "cores": os.cpu_count(),
                         "quick": args.quick, "texts": "SST-2 dev"}
        results["in_process"] = bench_in_process(model, texts, args.requests, args.seconds,
                                                 batch_sizes)
        settings = {"batching": {"max_batch_size": args.max_batch_size,
                                 "batch_timeout_micros": args.batch_timeout_micros,
                                 "num_batch_threads": args.num_batch_threads,
                                 "max_padding_ratio": args.max_padding_ratio},
                    "runtime": {"intra_op_threads": args.intra_op_threads,
                                "intra_op_spinning": args.intra_op_spinning,
                                "lone_request_all_cores": True,
                                "providers": list(providers)}}
        worker_counts = sorted({int(w) for w in args.workers.split(",")})
        mid = 32 if 32 in clients else max(clients)  # the batching-off comparison
        results["servers"] = {}
        most = worker_counts[-1]
        # (workers, batching, lone requests on every core): the last two phases are the
        # comparisons, batching off and lone requests kept to their worker's share.
        phases = [(w, True, True) for w in worker_counts] + [(most, False, True)]
        if most > 1:
            phases.append((most, True, False))
        for workers, enabled, lone in phases:
            phase = {s: dict(v) for s, v in settings.items()}
            phase["batching"]["enabled"] = enabled
            phase["runtime"]["lone_request_all_cores"] = lone
            server = Server(repo, name, phase, workers, work)
            servers.append(server)
            key = (f"workers-{workers}-batching-{'on' if enabled else 'off'}"
                   + ("" if lone else "-lone-off"))
            results["servers"][key] = bench_server(
                server, bodies, texts, model, args.requests, args.seconds,
                clients if enabled and lone else [mid], key, latency=enabled)
            server.stop()
        table, notes, ratios = report(results, args.quick)
        results["ratios"] = ratios
        results["targets"] = TARGETS
        print()
        print(table)
        print()
        print(notes)
        if (not args.quick or args.write) and not args.no_write:
            write_results(results_name, f"{TITLE} ({device})", results, table, notes)
            print(f"\nwrote bench/results/{results_name}.json and docs/results.md")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Text classification for the applications: a local exported ONNX artifact (no TF) or a
running tfllm-serve / TF Serving endpoint.

Local: `--model REPO/NAME[/VERSION]` (the latest version when none is given) is loaded
with `tfllm_serving`'s runtime, the same code path the server runs. Remote:
`--serving-url http://127.0.0.1:8501/v1/models/NAME` calls `:predict` for probabilities;
the label names come from `labels` (a labels.json: TF Serving knows no names) or, when
not given, from one tfllm-serve `:classify` call, which returns them.

Example:

    clf = load_classifier(model="repo/fpb")
    clf.labels, clf.predict(["Operating profit rose to EUR 13.1 mn ."]).shape   # (3 labels), (1, 3)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from tfllm.errors import InputError


class LocalClassifier:
    """An exported version folder run with onnxruntime."""

    def __init__(self, path: str | Path, batch_size: int = 64):
        from tfllm_serving.runtime import ModelRuntime

        version_dir = _version_dir(Path(path))
        try:
            self.runtime = ModelRuntime.load(version_dir)
        except (OSError, ValueError) as err:
            raise InputError(f"--model {path}: cannot load the exported model ({err})") from err
        if self.runtime.task != "classification":
            raise InputError(f"--model {path}: a {self.runtime.task} model, not a classifier")
        self.labels = list(self.runtime.labels)
        self.batch_size = batch_size
        self.source = str(version_dir)

    def predict(self, texts: list[str]) -> np.ndarray:
        """Probabilities [len(texts), len(labels)]."""
        out = [self.runtime.run(self.runtime.encode_texts(texts[i:i + self.batch_size]))
               .probabilities for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), "float32")


class RemoteClassifier:
    """A TF Serving REST endpoint (tfllm-serve or TF Serving itself)."""

    def __init__(self, url: str, labels: list[str] | None = None, token: str | None = None,
                 timeout: float = 30.0, batch_size: int = 64):
        self.url = url.rstrip("/")
        self.token, self.timeout, self.batch_size = token, timeout, batch_size
        self.source = self.url
        self.labels = labels or self._labels_from_classify()

    def _post(self, verb: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.url}:{verb}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:300]
            raise InputError(f"--serving-url {self.url}:{verb}: HTTP {err.code} {detail}") from err
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as err:
            raise InputError(f"--serving-url {self.url}:{verb}: {err}") from err

    def _labels_from_classify(self) -> list[str]:
        result = self._post("classify", {"examples": [{"text": "ok"}]})["result"][0]
        return [label for label, _ in result]

    def predict(self, texts: list[str]) -> np.ndarray:
        rows = []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i:i + self.batch_size]
            body = self._post("predict", {"instances": [{"text": t} for t in chunk]})
            rows += [p["probabilities"] for p in body["predictions"]]
        probabilities = np.asarray(rows, dtype="float32").reshape(len(texts), -1)
        if probabilities.shape[1] != len(self.labels):
            raise InputError(f"--serving-url {self.url}: {probabilities.shape[1]} outputs but "
                             f"{len(self.labels)} labels")
        return probabilities


def _version_dir(path: Path) -> Path:
    if (path / "model_config.json").is_file():
        return path
    versions = sorted(int(p.name) for p in path.glob("*")
                       if p.name.isdigit() and (p / "model_config.json").is_file())
    if not versions:
        raise InputError(f"--model {path}: no exported version (expected REPO/NAME/VERSION with "
                         "model_config.json, written by `tfllm export`)")
    return path / str(versions[-1])


def load_classifier(model: str | None = None, serving_url: str | None = None,
                    labels: str | None = None, token_file: str | None = None):
    """A LocalClassifier for `model`, else a RemoteClassifier for `serving_url`."""
    if bool(model) == bool(serving_url):
        raise InputError("give exactly one of --model (exported folder) or --serving-url")
    if model:
        return LocalClassifier(model)
    names = None
    if labels:
        try:
            names = json.loads(Path(labels).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"--labels {labels}: {err}") from err
    token = Path(token_file).read_text().strip() if token_file else None
    return RemoteClassifier(serving_url, names, token)

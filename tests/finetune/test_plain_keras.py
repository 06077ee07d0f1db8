"""A fine-tuned run in a script that imports only keras, keras_hub and numpy: the README's
"From plain Keras" block, run as it is on a small real run."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from tfllm.finetune.inference import predict_texts

REPO = Path(__file__).resolve().parents[2]


def readme_block() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- plain-keras -->\n```python\n(.*?)```\n<!-- /plain-keras -->", text,
                      re.DOTALL)
    assert block, "README.md lost its plain-keras block"
    return block.group(1)


def test_the_readme_block_predicts_evaluates_fits_and_loads_the_preset_without_tfllm(
        tmp_path, tiny_run, sst2_slice):
    code = readme_block().replace('RUN, DEV = "out/finetune-run", "../shared/data/sst2/dev.tsv"',
                                  f"RUN, DEV = {str(tiny_run)!r}, {str(sst2_slice['dev'])!r}")
    assert str(tiny_run) in code
    code += ('\nimport sys\nprint("RESULT " + json.dumps({"probs": probs.tolist(), '
             '"accuracy": accuracy, "preset": preset_probs.tolist(), '
             '"preset_class": type(same).__name__, "tfllm": [m for m in sys.modules '
             'if m.split(".")[0] in ("tfllm", "tfllm_serving", "tfllm_export")]}))\n')
    script = tmp_path / "plain_keras.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["tfllm"] == []
    assert result["preset_class"] == "BertTextClassifier"

    header, *rows = sst2_slice["dev"].read_text(encoding="utf-8").splitlines()
    texts = [row.rsplit("\t", 1)[0] for row in rows]
    names = json.loads((tiny_run / "labels.json").read_text())
    expected = np.array([[row["probabilities"][n] for n in names]
                         for row in predict_texts(tiny_run, texts, out=io.StringIO())])
    # tfllm predict rounds to 6 decimals; the models agree to float error
    np.testing.assert_allclose(result["probs"], expected, atol=1e-5)
    np.testing.assert_allclose(result["preset"], result["probs"], atol=1e-6)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert abs(result["accuracy"] - metrics["accuracy"]) < 1e-6

"""ModelRuntime in process: tokenization, padding invariance, dtypes, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tfllm_serving.errors import InvalidInput
from tfllm_serving.runtime import ModelRuntime
from tokenizers import Tokenizer


@pytest.mark.parametrize("max_padding_ratio", [1.0, 1.3, float("inf")])
def test_merged_padded_batch_equals_one_by_one_onnxruntime_on_sst2_dev(
    model_repo: Path, sst2_sentences: list[str], max_padding_ratio: float,
) -> None:
    vdir = model_repo / "sst2" / "1"
    rt = ModelRuntime.load(vdir, max_padding_ratio=max_padding_ratio)
    requests = [rt.encode_texts(sst2_sentences[i : i + 3]) for i in range(0, 24, 3)]
    runs: list[int] = []
    run = rt.run
    rt.run = lambda batch: runs.append(batch.size) or run(batch)  # count the session calls
    merged = rt.run_many(requests)
    # 1.0: only equal widths merge; no limit: one run; the CPU default in between
    assert (len(runs) == 1) == (max_padding_ratio == float("inf"))
    if max_padding_ratio == 1.0:
        assert len(runs) == len({r.width for r in requests})

    tok = Tokenizer.from_file(str(vdir / "tokenizer.json"))
    tok.enable_truncation(128)
    session = ort.InferenceSession(str(vdir / "model.onnx"))
    for i, sentence in enumerate(sst2_sentences[:24]):
        enc = tok.encode(sentence)
        feed = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        (want,) = session.run(["logits"], feed)
        got = merged[i // 3].logits[i % 3]
        np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-5)


def test_int32_token_classification_model_gets_cast_inputs_and_word_starts(
    model_repo: Path,
) -> None:
    rt = ModelRuntime.load(model_repo / "ner" / "1")
    assert set(rt.input_dtypes.values()) == {np.dtype(np.int32)}
    batch = rt.encode_texts(["Paris hosts dogs", "x"])
    assert batch.words == [["Paris", "hosts", "dogs"], ["x"]]
    starts = batch.first_token[0].tolist()
    assert starts[0] == 1 and starts == sorted(set(starts)) and batch.first_token[1, 0] == 1
    out = rt.run(batch)
    assert out.logits.shape == (2, batch.width, 3)
    np.testing.assert_allclose(out.probabilities.sum(-1), 1.0, rtol=1e-5)


def test_over_length_text_is_truncated_or_rejected_as_configured(model_repo: Path) -> None:
    long_text = "film " * 300
    truncating = ModelRuntime.load(model_repo / "sst2" / "1", max_sequence_length=32)
    assert truncating.encode_texts([long_text]).width == 32
    rejecting = ModelRuntime.load(model_repo / "sst2" / "1", over_length="reject")
    with pytest.raises(InvalidInput, match="exceed max sequence length 128"):
        rejecting.encode_texts([long_text])


def test_sentence_pairs_are_required_exactly_when_the_model_takes_pairs(
    tmp_path: Path, write_model_version
) -> None:
    single = ModelRuntime.load(write_model_version(tmp_path, "single", 1))
    with pytest.raises(InvalidInput, match="single texts"):
        single.encode_texts(["a"], ["b"])
    pair = ModelRuntime.load(write_model_version(tmp_path, "pair", 1, text_pair=True))
    batch = pair.encode_texts(["a film"], ["the film"])
    assert batch.token_type_ids[0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    with pytest.raises(InvalidInput, match="sentence pairs"):
        pair.encode_texts(["a"])


def test_a_corrupt_or_mismatched_version_fails_validation(
    tmp_path: Path, write_model_version
) -> None:
    corrupt = write_model_version(tmp_path, "m", 1)
    (corrupt / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(Exception, match="(?i)protobuf|invalid|load"):
        ModelRuntime.load(corrupt)
    wrong_labels = write_model_version(tmp_path, "m", 2)
    (wrong_labels / "labels.json").write_text('["a", "b", "c"]')
    rt = ModelRuntime.load(wrong_labels)
    with pytest.raises(ValueError, match="expected \\(1, 3\\)"):
        rt.validate_and_warm_up(4)


def test_cuda_provider_is_chosen_first_when_onnxruntime_offers_it(monkeypatch) -> None:
    from tfllm_serving import runtime

    monkeypatch.setattr(runtime.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert runtime.choose_providers() == ["CPUExecutionProvider"]
    assert runtime.choose_providers(["TensorrtExecutionProvider"]) == ["CPUExecutionProvider"]


def test_the_configured_artifact_is_served_and_non_onnx_ones_are_refused(
    tmp_path: Path, write_model_version
) -> None:
    import json
    import shutil

    vdir = write_model_version(tmp_path, "m", 1, seed=1)
    other = write_model_version(tmp_path, "other", 1, seed=2)
    shutil.copy(other / "model.onnx", vdir / "model-int8.onnx")
    (vdir / "model.tflite").write_bytes(b"tflite")
    config = json.loads((vdir / "model_config.json").read_text())
    config["artifacts"] = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx",
                           "tflite": "model.tflite"}
    (vdir / "model_config.json").write_text(json.dumps(config))
    fp32 = ModelRuntime.load(vdir)
    int8 = ModelRuntime.load(vdir, artifact="onnx-int8")
    ref = ModelRuntime.load(other)
    batch = fp32.encode_texts(["a film"])
    np.testing.assert_allclose(int8.run(batch).logits, ref.run(batch).logits)
    assert not np.allclose(fp32.run(batch).logits, ref.run(batch).logits)
    with pytest.raises(ValueError, match="not ONNX"):
        ModelRuntime.load(vdir, artifact="tflite")
    with pytest.raises(ValueError, match="not in model_config.json artifacts"):
        ModelRuntime.load(vdir, artifact="onnx-fp16")

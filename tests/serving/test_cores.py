"""A lone request runs on every core when no other run is going on (tfllm_serving.cores)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from tfllm_serving.cores import CoreLease
from tfllm_serving.runtime import ModelRuntime


def test_an_ordinary_run_waits_while_a_lone_run_has_every_core(tmp_path: Path) -> None:
    path = tmp_path / "cores.lock"
    lone, ordinary, another = CoreLease(path), CoreLease(path), CoreLease(path)  # 3 workers
    entered = threading.Event()

    def ordinary_run() -> None:
        with ordinary.shared():
            entered.set()

    with lone.exclusive_or_not() as alone:
        assert alone
        worker = threading.Thread(target=ordinary_run)
        worker.start()
        assert not entered.wait(0.3)  # held back while the lone run has the cores
    worker.join(timeout=5)
    assert entered.is_set()
    with ordinary.shared(), another.shared():  # ordinary runs go on side by side
        with lone.exclusive_or_not() as alone:
            assert not alone  # and a lone request then keeps its worker's share
    for lease in (lone, ordinary, another):
        lease.close()


def test_a_lone_row_takes_every_core_only_when_no_other_run_holds_the_lease(
    tmp_path: Path, model_repo: Path, sst2_sentences: list[str],
) -> None:
    lease = CoreLease(tmp_path / "cores.lock")
    rt = ModelRuntime.load(model_repo / "sst2" / "1", intra_op_threads=1, lone_threads=2,
                           lease=lease)
    assert rt.lone_session is not None
    rt.validate_and_warm_up(max_batch_size=4)
    warm = rt.lone_runs
    one, three = rt.encode_texts(sst2_sentences[:1]), rt.encode_texts(sst2_sentences[:3])
    alone = rt.run(one)
    assert rt.lone_runs == warm + 1
    several = rt.run(three)  # a batch of several rows keeps the worker's share
    assert rt.lone_runs == warm + 1
    with CoreLease(lease.path).shared():  # another worker is running
        crowded = rt.run(one)
    assert rt.lone_runs == warm + 1
    np.testing.assert_allclose(alone.logits, crowded.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone.logits[0], several.logits[0], rtol=1e-5, atol=1e-5)
    # without a lease, or when the share is every core already: one session
    assert ModelRuntime.load(model_repo / "sst2" / "1", intra_op_threads=2, lone_threads=2,
                             lease=lease).lone_session is None
    assert ModelRuntime.load(model_repo / "sst2" / "1", intra_op_threads=1,
                             lone_threads=2).lone_session is None
    lease.close()

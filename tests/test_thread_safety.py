"""Process-wide state touched by concurrent ``passnet serve`` sessions stays consistent."""

from __future__ import annotations

import threading
import time

import torch

from passnet_core import coilmaps, inference


def test_overlapping_single_thread_sections_restore_the_thread_count():
    original = torch.get_num_threads()
    torch.set_num_threads(3)
    a_in, b_in, a_out, b_checked = (threading.Event() for _ in range(4))
    seen: dict[str, int] = {}

    def first() -> None:
        with coilmaps._single_thread():
            a_in.set()
            b_in.wait(10)
        a_out.set()  # leaves while the second is still inside

    def second() -> None:
        a_in.wait(10)
        with coilmaps._single_thread():
            b_in.set()
            a_out.wait(10)
            seen["second, after first left"] = torch.get_num_threads()
        b_checked.set()

    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert b_checked.is_set()
        assert seen["second, after first left"] == 1  # not restored under the second's feet
        # not left pinned once both are out: a later session thread gets the full count
        later: list[int] = []
        fresh = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        fresh.start()
        fresh.join(10)
        assert later == [3]
    finally:
        torch.set_num_threads(original)


def test_model_cache_loads_each_model_once_under_concurrent_callers(weights_file, monkeypatch):
    calls = []
    real_load = inference.load_weights

    def slow_load(path, map_location=None):
        calls.append(path)
        time.sleep(0.2)  # a window for every other caller to miss the cache
        return real_load(path, map_location=map_location)

    monkeypatch.setattr(inference, "load_weights", slow_load)
    monkeypatch.setattr(inference, "_MODEL_CACHE", {})
    models: list = []
    barrier = threading.Barrier(8)

    def caller() -> None:
        barrier.wait()
        models.append(inference.cached_model(weights_file, "cpu"))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(calls) == 1
    assert len(models) == 8 and all(m is models[0] for m in models)

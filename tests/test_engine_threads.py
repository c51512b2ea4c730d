"""samgis.engine.threads: decodes on one long-lived torch thread, encoder passes on threads that end."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from samgis.engine.backends.sam1 import engine as sam
from samgis.engine.protocol import Prompts
from samgis.engine.threads import in_fresh_thread, is_torch_thread, on_torch_thread, set_torch_threads
from tests.conftest import textured_image


def test_torch_thread_is_one_thread_and_reentrant():
    idents = {on_torch_thread(threading.get_ident) for _ in range(5)}
    assert len(idents) == 1 and threading.get_ident() not in idents
    assert on_torch_thread(lambda: on_torch_thread(threading.get_ident)) in idents  # no deadlock
    assert on_torch_thread(is_torch_thread) and not is_torch_thread()


def test_fresh_thread_per_call_inline_on_the_torch_thread():
    a, b = in_fresh_thread(threading.current_thread), in_fresh_thread(threading.current_thread)
    assert a is not b and threading.current_thread() not in (a, b)
    assert not a.is_alive() and not b.is_alive()
    assert on_torch_thread(lambda: in_fresh_thread(threading.get_ident) == threading.get_ident())
    # work on a fresh thread may queue calls for the torch thread
    assert on_torch_thread(threading.get_ident) == in_fresh_thread(on_torch_thread, threading.get_ident)


def test_errors_reach_the_caller():
    with pytest.raises(ZeroDivisionError):
        on_torch_thread(lambda: 1 / 0)
    with pytest.raises(KeyError, match="missing"):
        in_fresh_thread(lambda: {}["missing"])
    assert on_torch_thread(lambda: 7) == 7  # the thread survived


def test_engine_decodes_on_the_torch_thread_and_embeds_on_fresh_threads(tiny_engine, monkeypatch):
    seen: dict[str, list[threading.Thread]] = {"embed": [], "decode": [], "rows": []}

    def spy(name, real):
        def wrapped(*args, **kwargs):
            seen[name].append(threading.current_thread())
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(tiny_engine, "_embed", spy("embed", tiny_engine._embed))
    monkeypatch.setattr(tiny_engine, "_decode", spy("decode", tiny_engine._decode))
    monkeypatch.setattr(tiny_engine, "_decode_point_rows", spy("rows", tiny_engine._decode_point_rows))
    emb = tiny_engine.embed(textured_image(64, 64))
    tiny_engine.embed(textured_image(64, 64))
    tiny_engine.decode(emb, Prompts(points=[[10, 10]], labels=[1]))
    tiny_engine.decode_point_batch(emb, np.full((5, 1, 2), 20.0), np.ones((5, 1)))
    torch_thread = on_torch_thread(threading.current_thread)
    assert seen["embed"][0] is not seen["embed"][1] and torch_thread not in seen["embed"]
    assert set(seen["decode"]) == {torch_thread}
    assert set(seen["rows"]) == {torch_thread} and len(seen["rows"]) == -(-5 // tiny_engine.point_batch_rows)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_an_encoder_pass_leaves_no_threads_behind(tiny_engine):
    """The encoder's thread ends, and with it the OpenMP workers its parallel ops started; a long-lived
    second team is what made every later decode slower (see samgis.engine.threads)."""
    emb = tiny_engine.embed(textured_image(64, 64))
    tiny_engine.decode(emb, Prompts(points=[[10, 10]], labels=[1]))  # torch thread and its team exist now

    def count() -> int:
        return len(os.listdir("/proc/self/task"))

    before = count()
    tiny_engine.embed(textured_image(96, 96))
    deadline = time.monotonic() + 5
    while count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count() <= before


def test_checkpoint_loads_off_the_calling_thread(tiny_checkpoint, monkeypatch):
    from tests.conftest import TINY

    where = []
    real = sam.load_sam
    monkeypatch.setattr(sam, "load_sam", lambda *a: where.append(threading.get_ident()) or real(*a))
    sam.SamEngine.from_spec(TINY, tiny_checkpoint, device="cpu")
    assert where and where[0] != threading.get_ident() and where[0] != on_torch_thread(threading.get_ident)


def test_set_torch_threads_reaches_the_torch_thread():
    """PyTorch reads the thread count into a thread once; the long-lived torch thread must be told too."""
    import torch

    on_torch_thread(lambda: torch.ones(1 << 20).add_(1))  # the torch thread has read its count
    previous = set_torch_threads(1)
    try:
        assert torch.get_num_threads() == 1 and on_torch_thread(torch.get_num_threads) == 1
        assert in_fresh_thread(torch.get_num_threads) == 1
    finally:
        set_torch_threads(previous)
    assert on_torch_thread(torch.get_num_threads) == previous


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_torch_thread():
    on_torch_thread(threading.get_ident)  # the parent's thread exists
    pid = os.fork()
    if pid == 0:  # child: would hang on the parent's (absent) thread without the at-fork reset
        code = 0 if on_torch_thread(lambda: 41) + 1 == 42 else 1
        os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the forked child hung on the parent's torch thread")

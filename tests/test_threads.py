"""run_blocks: the runner of the block kernels (every block once, on several threads at once,
errors re-raised only when every thread has stopped, usable after a fork)."""
import multiprocessing
import sys
import threading
import time

import pytest

from mfrec._threads import run_blocks


@pytest.mark.parametrize("n_blocks, n_threads", [(0, 1), (1, 4), (5, 1), (5, 2), (100, 3)])
def test_every_block_runs_once(n_blocks, n_threads):
    seen = []
    lock = threading.Lock()

    def kernel(tag, blk):
        with lock:
            seen.append((tag, blk))

    run_blocks(kernel, ("t",), n_blocks, n_threads)
    assert sorted(seen) == [("t", b) for b in range(n_blocks)]


def test_one_thread_runs_the_blocks_in_order_in_the_caller():
    calls = []
    run_blocks(lambda blk: calls.append((blk, threading.get_ident())), (), 4, 1)
    assert calls == [(b, threading.get_ident()) for b in range(4)]


def test_blocks_run_at_the_same_time():
    # two blocks that each wait for the other pass only if two threads run them together
    meet = threading.Barrier(2, timeout=20)
    threads = set()

    def kernel(blk):
        threads.add(threading.get_ident())
        if blk < 2:
            meet.wait()

    run_blocks(kernel, (), 6, 2)
    assert threading.get_ident() in threads and len(threads) == 2


def test_an_error_propagates_after_every_block_has_stopped():
    finished = []

    def kernel(blk):
        if blk == 0:
            time.sleep(0.3)  # still running when block 1 fails
            finished.append(blk)
        elif blk == 1:
            raise ValueError("block 1 failed")
        else:
            finished.append(blk)

    with pytest.raises(ValueError, match="block 1 failed"):
        run_blocks(kernel, (), 2, 2)
    assert finished == [0]
    # blocks not yet taken when one fails are skipped, and the pool still works afterwards
    taken = []

    def failing_first(blk):
        taken.append(blk)
        if blk == 0:
            raise KeyError(blk)

    with pytest.raises(KeyError):
        run_blocks(failing_first, (), 50, 1)
    assert taken == [0]
    run_blocks(lambda blk: None, (), 3, 2)


def _child(queue):
    meet = threading.Barrier(2, timeout=20)
    run_blocks(lambda blk: meet.wait(), (), 2, 2)
    queue.put("done")


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_forked_child_gets_its_own_pool():
    run_blocks(lambda blk: None, (), 4, 2)  # the parent's pool exists before the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("run_blocks hung in a forked child")
    assert child.exitcode == 0 and queue.get(timeout=5) == "done"

"""Group commit: what piles up during a commit goes in the next one, each caller gets its own outcome."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dataexport.warehouse.group_commit import CommitterClosed, GroupCommitter


class Recorder:
    """commit_group that records each group, and holds the first one until released."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.first_entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, items):
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.first_entered.set()
            assert self.release.wait(10)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


def wait_queued(committer: GroupCommitter, count: int) -> None:
    deadline = time.monotonic() + 10
    while committer._queue.qsize() < count:  # the submitters are blocked in the queue, not yet taken
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_an_item_alone_is_committed_at_once():
    recorder = Recorder()
    recorder.release.set()
    committer = GroupCommitter(recorder, max_group_size=100)
    assert committer.submit(4) == 40
    assert recorder.groups == [[4]]
    committer.close()


def test_what_waits_during_a_commit_is_committed_together_with_its_own_outcomes():
    recorder = Recorder()
    committer = GroupCommitter(recorder, max_group_size=100)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(committer.submit, 1)
        assert recorder.first_entered.wait(10)
        later = {i: pool.submit(committer.submit, i) for i in (2, 3, -4, 5)}
        wait_queued(committer, 4)
        recorder.release.set()
        assert first.result() == 10
        assert {i: f.exception() is None and f.result() for i, f in later.items() if i > 0} == {2: 20, 3: 30, 5: 50}
        with pytest.raises(ValueError, match="bad -4"):
            later[-4].result()
    assert recorder.groups[0] == [1] and sorted(recorder.groups[1]) == [-4, 2, 3, 5] and len(recorder.groups) == 2
    committer.close()


def test_a_group_stays_within_its_bound():
    recorder = Recorder()
    committer = GroupCommitter(recorder, max_group_size=5, size_of=lambda i: i)
    with ThreadPoolExecutor(8) as pool:
        pool.submit(committer.submit, 1)
        assert recorder.first_entered.wait(10)
        futures = [pool.submit(committer.submit, i) for i in (2, 2, 2, 4)]
        wait_queued(committer, 4)
        recorder.release.set()
        assert sorted(f.result() for f in futures) == [20, 20, 20, 40]
    assert all(sum(g) <= 5 for g in recorder.groups[1:]) and sorted(sum(recorder.groups[1:], [])) == [2, 2, 2, 4]
    committer.close()


def test_a_failed_group_fails_every_caller_in_it():
    def broken(items):
        raise ConnectionError("catalog unreachable")

    committer = GroupCommitter(broken, max_group_size=10)
    with pytest.raises(ConnectionError, match="catalog"):
        committer.submit(1)
    committer.close()


def test_close_commits_what_was_submitted_and_refuses_the_rest():
    recorder = Recorder()
    committer = GroupCommitter(recorder, max_group_size=10)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(committer.submit, 1)
        assert recorder.first_entered.wait(10)
        second = pool.submit(committer.submit, 2)
        wait_queued(committer, 1)
        closing = pool.submit(committer.close)
        recorder.release.set()
        closing.result(10)
        assert (first.result(), second.result()) == (10, 20)
    with pytest.raises(CommitterClosed):
        committer.submit(3)


def test_after_a_group_of_several_the_committer_lingers_for_more():
    recorder = Recorder()
    committer = GroupCommitter(recorder, max_group_size=2, linger=30.0)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(committer.submit, 1)
        assert recorder.first_entered.wait(10)
        pair = [pool.submit(committer.submit, i) for i in (2, 3)]
        wait_queued(committer, 2)
        recorder.release.set()
        assert first.result() == 10 and [f.result() for f in pair] == [20, 30]
        # The group before was of two: the next item waits for company (here until the group is full).
        alone = pool.submit(committer.submit, 4)
        time.sleep(0.2)  # without the linger, 4 would be committed alone by now
        assert committer.submit(5) == 50 and alone.result() == 40
    assert recorder.groups[:2] == [[1], [2, 3]] and sorted(recorder.groups[2]) == [4, 5] and len(recorder.groups) == 3
    committer.close()


def test_after_a_group_of_one_nothing_lingers():
    recorder = Recorder()
    recorder.release.set()
    committer = GroupCommitter(recorder, max_group_size=100, linger=60.0)
    started = time.monotonic()
    assert committer.submit(1) == 10 and committer.submit(2) == 20
    assert time.monotonic() - started < 30  # a linger would have held each for a minute
    assert recorder.groups == [[1], [2]]
    committer.close()


def test_a_negative_linger_is_refused():
    with pytest.raises(ValueError, match="linger"):
        GroupCommitter(Recorder(), max_group_size=1, linger=-1)

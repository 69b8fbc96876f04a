"""Say only what is true (issue 13): collectives on a destroyed group raise, thread counts
are bounded by the machine, big ints save (tests/test_serialization.py has the round trip)."""
import os
from datetime import timedelta

import numpy as np
import pytest

import ddl
import ddl.distributed as dist


@pytest.mark.timeout(60)
def test_a_subgroup_is_unusable_after_destroy_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0,
                            world_size=1, timeout=timedelta(seconds=20))
    try:
        sub = dist.new_group([0])
        a = np.ones(4, np.float32)
        dist.all_reduce(a, group=sub)  # works while the world lives
        assert a.tolist() == [1.0] * 4
    finally:
        dist.destroy_process_group()
    with pytest.raises(RuntimeError, match="destroyed"):
        dist.all_reduce(a, group=sub)
    with pytest.raises(RuntimeError):
        dist.all_reduce(a)


def test_set_num_threads_is_bounded_by_the_machine():
    old = ddl.get_num_threads()
    cap = min(1024, 4 * os.cpu_count())
    try:
        with pytest.warns(RuntimeWarning, match=f"using {cap}"):
            ddl.set_num_threads(10**9)
        assert ddl.get_num_threads() == cap
        with pytest.warns(RuntimeWarning):
            ddl.set_num_threads(10**30)  # beyond a C long: clamped too, no OverflowError
        assert ddl.get_num_threads() == cap
        with pytest.raises(ValueError):
            ddl.set_num_threads(-(10**30))
        ddl.set_num_threads(1)
        assert ddl.get_num_threads() == 1
    finally:
        ddl.set_num_threads(old)

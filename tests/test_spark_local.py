"""ddl.spark.Distributor without Spark: local_mode=True runs the ranks through ddl.run on this
machine (functions of importable modules, scripts), and the argument checks."""
import operator

import pytest

from ddl.spark import Distributor, RankData, RankFailedError


@pytest.mark.timeout(120)
def test_local_mode_function_and_script(tmp_path):
    lines = []
    assert Distributor(2, log=lines.append).run(operator.add, 2, 3) == 5
    script = tmp_path / "s.py"
    script.write_text("import sys\nimport ddl.distributed as dist\n"
                      "print('rank', dist.get_rank(), 'of', dist.get_world_size(), sys.argv[1:])\n"
                      "if dist.get_rank() == 1 and '--fail' in sys.argv:\n"
                      "    raise KeyError('missing shard')\n")
    assert Distributor(2, log=lines.append).run(script, "--a", 1) is None
    assert any(line.startswith("[rank1]:") and "rank 1 of 2 ['--a', '1']" in line
               for line in lines), lines
    with pytest.raises(RankFailedError, match="KeyError: 'missing shard'") as e:
        Distributor(2, log=lines.append).run(script, "--fail")
    assert e.value.rank == 1


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="num_processes must be an int >= 1"):
        Distributor(0)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Distributor(2, timeout=0)
    with pytest.raises(TypeError, match="a function or a script path"):
        Distributor(2).run(42)
    with pytest.raises(FileNotFoundError, match="no script"):
        Distributor(2).run(str(tmp_path / "nope.py"))
    with pytest.raises(TypeError, match="command-line arguments"):
        Distributor(2).run(str(tmp_path), x=1)
    assert repr(Distributor(3, local_mode=False)) == "Distributor(num_processes=3, local_mode=False)"


def test_rank_data_from_plain_rows():
    data = RankData.from_rows([{"features": [1.0, 2.0], "label": 1, "id": 7},
                               {"features": [0.0, 3.0], "label": 0, "id": 8}], others=("id",))
    assert data.X.tolist() == [[1.0, 2.0], [0.0, 3.0]]
    assert data.y.tolist() == [1.0, 0.0] and data.w is None
    assert data.columns["id"].tolist() == [7, 8] and len(data) == 2
    with pytest.raises(ValueError, match="vectors of different sizes"):
        RankData.from_rows([{"features": [1.0], "label": 0}, {"features": [1.0, 2.0], "label": 1}])
    with pytest.raises(TypeError, match="not a Spark ML vector"):
        RankData.from_rows([{"features": "text", "label": 0}])

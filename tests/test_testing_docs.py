"""The example test files of docs/testing.md run, and pass, as written (through pytester)."""
import os
import re

pytest_plugins = ["pytester"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples():
    with open(os.path.join(ROOT, "docs", "testing.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.DOTALL)
    return [b for b in blocks if "\ndef test_" in b]


def test_the_guide_examples_pass(pytester, monkeypatch):
    examples = _examples()
    assert len(examples) == 4  # the plugin's first example and the three of the guide
    pytester.makefile(".ini", pytest="[pytest]\nfilterwarnings = error\n")
    for i, code in enumerate(examples):
        pytester.makepyfile(**{f"test_example{i}": code})
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = pytester.runpytest_subprocess("-p", "ddl.testing.pytest_plugin", "-p",
                                           "no:cacheprovider")
    result.assert_outcomes(passed=4)

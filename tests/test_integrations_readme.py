"""The README's examples of the kernel operator and the adapters run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples():
    text = README.read_text()
    section = text.split("## Kernel operator and adapters", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_its_three_examples():
    assert len(_examples()) == 3


@pytest.mark.parametrize("index", range(3))
def test_readme_example_runs(index):
    exec(compile(_examples()[index], f"README.md example {index + 1}", "exec"), {})

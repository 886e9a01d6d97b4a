"""LICENSE matches pyproject's license, and CONTRIBUTING's commands name things that exist."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.conftest import REPO_ROOT

CONTRIBUTING = REPO_ROOT / "CONTRIBUTING.md"


def test_license_is_the_mit_text_pyproject_declares() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) ")
    assert re.search(r"^Copyright \(c\) \d{4} crmsync contributors$", text, re.MULTILINE)
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_contributing_make_targets_exist() -> None:
    text = CONTRIBUTING.read_text()
    targets = set(re.findall(r"^([a-z]+):", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE))
    used = set(re.findall(r"\bmake ([a-z]+)\b", text))
    assert {"test", "demo", "sandbox", "bench"} <= used
    assert used <= targets, sorted(used - targets)


def test_contributing_single_test_commands_name_real_tests() -> None:
    text = CONTRIBUTING.read_text()
    node_ids = re.findall(r"pytest -q (tests/\S+)", text)
    assert node_ids, "CONTRIBUTING shows no single-test command"
    for node_id in node_ids:
        path, _, name = node_id.partition("::")
        assert (REPO_ROOT / path).exists(), node_id
        if name:
            assert re.search(
                rf"^(async )?def {re.escape(name)}\(", (REPO_ROOT / path).read_text(), re.MULTILINE
            )


def test_contributing_benchmarks_exist() -> None:
    benches = re.findall(r"python -m bench\.(\w+)", CONTRIBUTING.read_text())
    assert benches
    for name in benches:
        assert (REPO_ROOT / "bench" / f"{name}.py").is_file(), name

"""Registry.merge_edit: an edit begun at an older version, merged with the latest one."""

from __future__ import annotations

from pathlib import Path

from promptrev import Registry

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "prompts" / "summarize.prompty").read_text()
FAR = "Summarize the following text"  # eight lines below "precise"


def _two_versions(registry: Registry) -> None:
    registry.save("s", TEXT, base=0)
    registry.save("s", TEXT.replace("precise", "meticulous"), base=1)


def test_other_lines_merge(registry: Registry) -> None:
    _two_versions(registry)
    head = registry.store.head()
    merge = registry.merge_edit("s", TEXT.replace(FAR, "Condense the following text"), 1)
    assert merge is not None and merge.latest.number == 2
    assert merge.text == TEXT.replace("precise", "meticulous").replace(
        FAR, "Condense the following text")
    assert merge.theirs == merge.mine == merge.text
    assert registry.store.head() == head and registry.resolve("s").number == 2  # no write


def test_same_lines_give_both_sides(registry: Registry) -> None:
    _two_versions(registry)
    edit = TEXT.replace("precise", "thorough").replace(FAR, "Condense the following text")
    merge = registry.merge_edit("s", edit, 1)
    assert merge is not None and merge.text is None
    # Both sides carry every change that does not clash; they differ only where both
    # changed the same line.
    assert merge.theirs == edit.replace("thorough", "meticulous")
    assert merge.mine == edit


def test_an_edit_that_changes_nothing_is_the_latest_version(registry: Registry) -> None:
    _two_versions(registry)
    merge = registry.merge_edit("s", TEXT, 1)
    assert merge is not None and merge.text == registry.get("s").text


def test_nothing_to_merge_with(registry: Registry) -> None:
    _two_versions(registry)
    assert registry.merge_edit("s", TEXT, 2) is None  # begun at the latest version
    assert registry.merge_edit("s", TEXT, 0) is None  # created meanwhile by someone else
    assert registry.merge_edit("s", TEXT, 7) is None  # no such version
    registry.delete("s", base=2)
    assert registry.merge_edit("s", TEXT, 1) is None  # deleted meanwhile

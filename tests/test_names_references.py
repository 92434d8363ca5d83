import pytest

from promptrev.errors import InvalidName, InvalidReference
from promptrev.model.names import validate_label, validate_name
from promptrev.model.references import parse_reference
from promptrev.server.errors import http_status


@pytest.mark.parametrize("name", ["summarize", "support/reply", "act-as-a-linux-terminal",
                                  "a/b.c/d_e", "v1.2", "x" * 255])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a//b", ".hidden", "a/.git", "a/../b", "/abs",
                                  "trail/", "sp ace", "x" * 256, "a\\b", "a/b.lock", "-x",
                                  "ümlaut", "a\x00b", None, 5])
def test_invalid_names(name):
    with pytest.raises(InvalidName) as err:
        validate_name(name)
    assert http_status(err.value) == 400
    assert err.value.message


def test_invalid_name_message_names_the_segment():
    with pytest.raises(InvalidName, match="empty path segment"):
        validate_name("a//b")
    with pytest.raises(InvalidName, match="'.hidden'"):
        validate_name("team/.hidden")


@pytest.mark.parametrize("label", ["production", "staging", "exp-1", "A.b_c"])
def test_valid_labels(label):
    assert validate_label(label) == label


@pytest.mark.parametrize("label", ["", "1abc", "latest", "a b", "x" * 64, "a/b"])
def test_invalid_labels(label):
    with pytest.raises(InvalidName):
        validate_label(label)


@pytest.mark.parametrize("text,name,kind,selector,number", [
    ("summarize", "summarize", None, None, None),
    ("summarize@4", "summarize", None, "4", 4),
    ("summarize@004", "summarize", None, "4", 4),
    ("summarize@2718281", "summarize", None, "2718281", 2718281),
    ("summarize@0123", "summarize", None, "0123", 123),
    ("summarize@latest", "summarize", None, None, None),
    ("summarize@production", "summarize", None, "production", None),
    ("summarize@3f2a9c1", "summarize", None, "3f2a9c1", None),
    ("support/reply@staging", "support/reply", None, "staging", None),
    ("dataset:sentiment@2", "sentiment", "dataset", "2", 2),
    ("prompt:support/reply@production", "support/reply", "prompt", "production", None),
])
def test_parse_reference(text, name, kind, selector, number):
    ref = parse_reference(text)
    assert (ref.name, ref.kind, ref.selector, ref.number) == (name, kind, selector, number)


def test_reference_round_trips():
    for text in ["a", "a@3", "dataset:a/b@prod", "a@deadbeef"]:
        assert str(parse_reference(text)) == text


def test_selector_kinds():
    assert parse_reference("a@3f2a9c1").may_be_commit
    assert not parse_reference("a@3f2a9c1").may_be_label
    both = parse_reference("a@deadbeef")
    assert both.may_be_label and both.may_be_commit
    assert not parse_reference("a@production").may_be_commit
    assert parse_reference("a@2718281").may_be_commit  # digits only: a version or a commit
    assert not parse_reference("a@27").may_be_commit


@pytest.mark.parametrize("text,needle", [
    ("", "non-empty"),
    ("a@", "nothing after"),
    ("a@0", "numbered from 1"),
    ("a@b@c", "more than one"),
    ("../x@1", "segment"),
    ("a@-x", "after '@'"),
    ("model:x", "unknown kind"),
    ("a@!!", "after '@'"),
])
def test_bad_references(text, needle):
    with pytest.raises(InvalidReference, match=needle):
        parse_reference(text)


def test_kind_mismatch():
    with pytest.raises(InvalidReference, match="a prompt is expected"):
        parse_reference("dataset:x", kind="prompt")

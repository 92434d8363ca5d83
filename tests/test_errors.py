"""One error family, one JSON shape, statuses a transport can use."""

import inspect

import promptrev.errors as errors
from promptrev.server.errors import http_status


def all_errors():
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, errors.PromptrevError)]


def test_every_error_has_status_code_and_shape():
    codes = set()
    for cls in all_errors():
        exc = cls("something the user can act on")
        assert "status" not in vars(cls), f"{cls} carries a transport status"
        assert 400 <= http_status(exc) <= 599, cls
        assert exc.code and exc.code.replace("_", "").isalpha(), cls
        codes.add(exc.code)
        shape = exc.to_dict()
        assert list(shape) == ["error"]
        assert set(shape["error"]) == {"code", "message", "details"}
        assert shape["error"]["message"] == "something the user can act on"
    assert len(codes) == len(all_errors())  # codes are distinct


def test_validation_problems_travel_in_details():
    exc = errors.ValidationFailed("bad", [{"file": "a", "line": 3, "message": "m"}])
    assert exc.to_dict()["error"]["details"]["problems"][0]["line"] == 3

"""The API's one error shape: every field's errors are a list of messages."""

from rest_framework import status
from rest_framework.exceptions import PermissionDenied, ValidationError

from leanml_site.api import exception_handler


def _body(exc):
    response = exception_handler(exc, {})
    return response.status_code, response.data


def test_a_bare_message_on_a_field_becomes_a_list():
    code, body = _body(ValidationError({"priority": "Give a new priority and/or reason."}))
    assert code == status.HTTP_400_BAD_REQUEST
    assert body == {
        "message": "Give a new priority and/or reason.",
        "field": "priority",
        "errors": {"priority": ["Give a new priority and/or reason."]},
    }


def test_messages_about_no_field_sit_under_non_field_errors():
    for exc in (ValidationError("Send an object."), ValidationError(["Send an object."])):
        _code, body = _body(exc)
        assert body == {
            "message": "Send an object.",
            "field": None,
            "errors": {"non_field_errors": ["Send an object."]},
        }


def test_nested_fields_keep_their_path_and_lists():
    _code, body = _body(
        ValidationError(
            {"changes": {"review": "The text may not be empty."}, "note": ["Too long."]}
        )
    )
    assert body["field"] == "changes.review"
    assert body["errors"] == {
        "changes": {"review": ["The text may not be empty."]},
        "note": ["Too long."],
    }


def test_other_errors_keep_their_detail():
    code, body = _body(PermissionDenied("Your role may not label samples."))
    assert code == 403
    assert body == {
        "message": "Your role may not label samples.",
        "field": None,
        "errors": {"detail": "Your role may not label samples."},
    }

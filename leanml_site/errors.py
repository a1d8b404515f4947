"""The one shape of a refusal that services raise and pages and the API show."""


class Refusal(ValueError):
    """A request a service refuses. ``str(error)`` (also ``message``) says
    why, for people; ``field`` names the input at fault when one is
    (``mix``, ``rules.3``). Pages show it beside that field; the API answers
    400 ``{"message", "field", "errors"}`` (``leanml_site.api.refusal``)."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field

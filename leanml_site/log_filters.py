"""Filters for the log configuration in settings.LOGGING."""

import logging


class ClientErrorWithoutTraceback(logging.Filter):
    """django.request logs a refused request (403, 404) with the exception
    that refused it, and its traceback then buries the server errors an
    operator looks for. A 4xx keeps its one line (status, path, reason);
    a 5xx keeps its traceback."""

    def filter(self, record):
        status = getattr(record, "status_code", None)
        if status is not None and status < 500 and record.exc_info:
            record.exc_info = None
            record.exc_text = None
        return True

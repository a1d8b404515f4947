from django import template

from ml.drift import number

register = template.Library()


@register.filter(name="sig")
def sig(value, digits=3):
    """A number with ``digits`` significant digits, written out: a threshold
    of 0.0001 reads 0.0001, not a rounded-away 0.000."""
    if value is None or value == "":
        return ""
    return number(float(value), int(digits))

from django import template

from ml.drift import number

register = template.Library()

# A number with three significant digits, written out: a threshold of 0.0001
# reads 0.0001, not a rounded-away 0.000. The same words as the alert sentences.
register.filter("sig", number)

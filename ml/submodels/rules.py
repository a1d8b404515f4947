"""Keyword rules written by domain experts: the way expert knowledge enters
the model without code."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .base import SubModel, SubModelError, register
from .tfidf import clean_text

RULE_KEYS = {"pattern", "class", "weight", "regex"}


class RuleError(SubModelError):
    """A keyword rule is malformed; the message names the rule and pattern."""


@dataclass(frozen=True)
class Rule:
    pattern: str
    label: object
    weight: float
    regex: bool
    compiled: re.Pattern


def parse_rules(rules) -> list[Rule]:
    """Validate the experts' rules and compile them.

    Each rule is a mapping ``{"pattern": str, "class": label, "weight": float
    (default 1), "regex": bool (default False)}``. A plain pattern is one or
    more words matched as whole words in that order (any whitespace between
    them); a regex pattern is used as written. Both ignore case.
    """
    if not isinstance(rules, list | tuple):
        raise RuleError(f"rules must be a list, got {type(rules).__name__}")
    parsed = []
    for number, rule in enumerate(rules, start=1):
        where = f"rule {number}"
        if not isinstance(rule, Mapping):
            raise RuleError(f"{where}: must be a mapping with pattern and class, got {rule!r}")
        pattern = rule.get("pattern")
        if pattern is not None:
            where += f" (pattern {pattern!r})"
        unknown = sorted(set(rule) - RULE_KEYS, key=str)
        if unknown:
            raise RuleError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(RULE_KEYS)}")
        if not isinstance(pattern, str) or not pattern.strip():
            raise RuleError(f"{where}: pattern must be a non-empty string")
        label = rule.get("class")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise RuleError(f"{where}: class is missing")
        weight = rule.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise RuleError(f"{where}: weight must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight <= 0:
            raise RuleError(f"{where}: weight must be a positive finite number, got {weight!r}")
        is_regex = rule.get("regex", False)
        if not isinstance(is_regex, bool):
            raise RuleError(f"{where}: regex must be true or false, got {is_regex!r}")
        if is_regex:
            try:
                compiled = re.compile(pattern, re.IGNORECASE)
            except re.error as error:
                raise RuleError(f"{where}: invalid regular expression: {error}") from None
            if compiled.search(""):
                raise RuleError(f"{where}: the regular expression matches empty text")
        else:
            words = pattern.split()
            compiled = re.compile(
                r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)", re.IGNORECASE
            )
        parsed.append(Rule(pattern, label, float(weight), is_regex, compiled))
    return parsed


@dataclass
class KeywordRulesParams:
    rules: list = field(default_factory=list)
    # Add-alpha smoothing of the votes: one rule with weight 1 firing for
    # "great" on a two-class project gives (1+1)/(1+2) = 2/3, not 1.
    alpha: float = 1.0


@register
class KeywordRules(SubModel):
    """Each rule whose pattern occurs in the text (all fields joined) votes
    its weight for its class; probabilities are the smoothed votes, uniform
    when no rule fires. Nothing is learned: ``fit`` only checks the rules
    against the classes present in the labels."""

    name = "keyword_rules"
    version = "1"
    Params = KeywordRulesParams

    def __init__(self, *, fields, params=None, key=None):
        super().__init__(fields=fields, params=params, key=key)
        # Validate when configured, not only at training time, so the rules
        # page can show the error as soon as the expert saves.
        parse_rules(self.params.rules)
        if not (isinstance(self.params.alpha, int | float) and self.params.alpha > 0):
            raise RuleError(f"alpha must be a positive number, got {self.params.alpha!r}")

    @property
    def rules(self) -> list[Rule]:
        # Compiled on use, never stored: skops refuses to load re.Pattern
        # objects, and re's own cache makes recompiling nearly free.
        return parse_rules(self.params.rules)

    def _fit(self, frame, y, seed):
        known = set(self.classes_.tolist())
        for number, rule in enumerate(self.rules, start=1):
            if rule.label not in known:
                raise RuleError(
                    f"rule {number} (pattern {rule.pattern!r}) names class {rule.label!r}, "
                    f"which is not among the labels {sorted(map(str, known))}"
                )

    def _predict_proba(self, frame):
        rules = self.rules
        matches = self._matches(frame, rules)
        position = {c: i for i, c in enumerate(self.classes_)}
        votes = np.zeros((len(frame), len(self.classes_)))
        for rule, fired in zip(rules, matches, strict=True):
            votes[fired, position[rule.label]] += rule.weight
        alpha = float(self.params.alpha)
        total = votes.sum(axis=1, keepdims=True)
        return (votes + alpha) / (total + alpha * len(self.classes_))

    def fired(self, frame) -> pd.DataFrame:
        """Which rules fire on which rows (one boolean column per rule):
        lets the rules page show an expert what their rule matches."""
        rules = self.rules
        matches = self._matches(frame, rules)
        return pd.DataFrame(
            {
                f"{n}: {r.pattern}": m
                for n, (r, m) in enumerate(zip(rules, matches, strict=True), 1)
            },
            index=frame.index,
        )

    def _matches(self, frame, rules) -> list[np.ndarray]:
        # Python's re on purpose: pandas may hand string columns to pyarrow's
        # RE2, whose syntax differs from what parse_rules validated.
        texts = self._text(frame).tolist()
        return [
            np.fromiter((r.compiled.search(t) is not None for t in texts), bool, len(texts))
            for r in rules
        ]

    def _text(self, frame) -> pd.Series:
        parts = [clean_text(frame[f]) for f in self.fields]
        text = parts[0]
        for part in parts[1:]:
            text = text + "\n" + part
        return text

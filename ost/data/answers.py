"""The final answer of a written solution, found the ways real SFT sets write it.

OST scores the answer text, so a record needs no parsed final to be scored; evaluation does (exact match of
the final). `find_final` tries, in this order, and takes the last match of the first pattern that matches:

1. `Answer: X`             the synthetic pool's form (the last line that starts the final)
2. `The answer is X`       MathV360K and most chain-of-thought sets ("the final answer is (B).")
3. `\\boxed{X}`             LaTeX solutions (one level of nested braces)
4. `#### X`                GSM8K style
5. a single choice letter  the whole answer is "B", "(B)" or "B." (multiple choice)
6. a bare short answer     the whole answer is at most `SHORT_ANSWER` characters ("12", "3/4")

A pattern of your own (`pattern=`, a regex with one group) is tried before all of them.
"""
import re

SHORT_ANSWER = 20
PATTERNS = {
    "answer_line": re.compile(r"Answer:(?!.*Answer:)\s*(.+?)\s*(?:\n|$)"),  # the line's last Answer:
    "the_answer_is": re.compile(r"the (?:final |correct )?answer is[:\s]*(.+?)\s*(?:\n|$)", re.IGNORECASE),
    "boxed": re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}"),
    "hashes": re.compile(r"####\s*(.+?)\s*(?:\n|$)"),
    "choice_letter": re.compile(r"^\s*\(?([A-Ha-h])\)?\.?\s*$"),
}


def _clean(value: str) -> str:
    """Trailing period, surrounding brackets of a choice ("(B)"), spaces and a '$' pair."""
    v = value.strip().rstrip(".").strip()
    if re.fullmatch(r"\([A-Ha-h]\)", v):
        v = v[1:-1]
    if len(v) > 1 and v.startswith("$") and v.endswith("$"):
        v = v[1:-1].strip()
    return v


def find_final(text: str, pattern: str | re.Pattern | None = None) -> str:
    """The final answer `text` states, '' when none of the patterns finds one."""
    text = str(text)
    tries = ([re.compile(pattern) if isinstance(pattern, str) else pattern] if pattern else []) + list(PATTERNS.values())
    for regex in tries:
        found = regex.findall(text)
        if found:
            last = found[-1]
            return _clean(last if isinstance(last, str) else last[0])
    bare = text.strip()
    return _clean(bare) if 0 < len(bare) <= SHORT_ANSWER else ""


def which_pattern(text: str, pattern=None) -> str:
    """The name of the rule `find_final` used ('custom', a key of PATTERNS, 'short', or '' for none)."""
    if pattern and re.search(pattern, str(text)):
        return "custom"
    for name, regex in PATTERNS.items():
        if regex.search(str(text)):
            return name
    return "short" if 0 < len(str(text).strip()) <= SHORT_ANSWER else ""

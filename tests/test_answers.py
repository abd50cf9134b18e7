"""ost.data.answers: the final answer, written the ways real SFT sets write it."""
import pytest

from ost.data import answers, schema


@pytest.mark.parametrize("text, final, rule", [
    ("The digits are 7 and 5. 7 + 5 = 12. Answer: 12", "12", "answer_line"),
    ("Step 1 ... Answer: 3\nCheck: fine.\nAnswer: 4.", "4", "answer_line"),
    ("First add the sides. The answer is 27.", "27", "the_answer_is"),
    ("Looking at the chart, the correct answer is (B).", "B", "the_answer_is"),
    ("so the area is $\\boxed{\\frac{3}{4}}$", "\\frac{3}{4}", "boxed"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", "hashes"),
    ("(C)", "C", "choice_letter"),
    ("b.", "b", "choice_letter"),
    ("12", "12", "short"),
    ("3/4 of the circle", "3/4 of the circle", "short"),
    ("A long explanation that never states the result in any of the known forms.", "", ""),
    ("", "", ""),
])
def test_patterns_in_order(text, final, rule):
    assert answers.find_final(text) == final
    assert answers.which_pattern(text) == rule


def test_the_synthetic_form_reads_as_before():
    """Evaluation reads finals with find_final now; on the pool's form nothing moves."""
    for text in ("The digits are 1 and 2. 1 + 2 = 3. Answer: 3", "x Answer: 10.", "Answer:  7 \nmore",
                 "Answer: 3. Answer: 12.", "Answer: 4\nAnswer: 9"):
        assert answers.find_final(text) == schema.extract_final(text)


def test_a_pattern_of_your_own_comes_first():
    text = "Result => 42. The answer is 41."
    assert answers.find_final(text) == "41"
    assert answers.find_final(text, r"Result => (\d+)") == "42"
    assert answers.which_pattern(text, r"Result => (\d+)") == "custom"

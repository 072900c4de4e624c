import pytest

from nudging.evals import scoring
from nudging.evals.scoring import extract, extract_choice, extract_letters, extract_number, extract_yes_no, is_correct

CSQA_OPTIONS = ("bank", "library", "department store", "store", "mall")


@pytest.mark.parametrize(
    "output, expected",
    [
        ("The answer is 18.", "18"),
        ("The final answer is: 42", "42"),
        ("So the answer is -5.", "-5"),
        ("The answer is $1,000.", "1000"),
        ("She makes $1,234.50 in total.", "1234.5"),
        ("The answer is 1,000,000.", "1000000"),
        ("The answer is 18.0", "18"),
        ("The answer is 2.50 dollars", "2.5"),
        ("I get 3.5 hours.", "3.5"),
        ("So 3 + 4 = 7, and 7 * 2 = 14", "14"),
        ("12 apples. The answer is 7 apples, not 12.", "7"),
        ("The answer is twenty (20).", "20"),
        ("The answer is 18.\nQuestion: What is 3 + 4?\nThe answer is 7.", "18"),
        ("Answer is 5.\nQ: And 3 + 5?\n8", "5"),
        ("5 + 6 = 11\n  question: next one, 2 + 2 = 4", "11"),
        ("", None),
        ("There are no numbers here.", None),
        ("\nQuestion: 7 apples?", None),
    ],
)
def test_extract_number(output, expected):
    assert extract_number(output) == expected


@pytest.mark.parametrize(
    "output, expected",
    [
        ("The answer is B.", "B"),
        ("The answer is (C).", "C"),
        ("The answer is option D", "D"),
        ("The correct answer is: (E)", "E"),
        ("Final Answer: (C)", "C"),
        ("So the answer is (b).", "B"),
        ("the answer is e)", "E"),
        ("The answer is B.\nQuestion: Where else?\nThe answer is A.", "B"),
        ("B", "B"),
        ("B.", "B"),
        ("B) library", "B"),
        ("Banks are busy, so I pick (A).", "A"),
        ("The answer is F.", None),
        ("(A) is wrong, I pick (B)", None),
        ("A. bank\nB. library", None),
        ("I think A is right", None),
        ("", None),
        ("The best place is a library.", "B"),
        ("The answer is a bank.", "A"),
        ("It is a department store.", "C"),
        ("You find it in a store.", "D"),
        ("Not a store: a department store.", "C"),
        ("A bank or a library.", None),
        ("It could be anywhere.", None),
        ("It is a library.\nQuestion: Where is money kept?\nA bank.", "B"),
    ],
)
def test_extract_choice(output, expected):
    assert extract_choice(output, CSQA_OPTIONS) == expected


def test_extract_choice_ignores_letters_beyond_the_options():
    assert extract_choice("The answer is C.", ("yes", "no")) is None
    assert extract_choice("The answer is B.", ("yes", "no")) == "B"


@pytest.mark.parametrize(
    "output, expected",
    [
        ("Yes.", "yes"),
        ("No, because it is winter.", "no"),
        ("So, no.", "no"),
        ("The answer is yes.", "yes"),
        ("The answer is: No", "no"),
        ("Answer: yes", "yes"),
        ('Thus the answer is "yes".', "yes"),
        ("The answer is **No**", "no"),
        ("Note: no one knows. The answer is yes.", "yes"),
        ("It is not heads up anymore, but the answer is no", "no"),
        ("So the answer is true.", "yes"),
        ("The answer is false", "no"),
        ("The statement is true.", "yes"),
        ("The sentence is plausible.", "yes"),
        ("The sentence is implausible.", "no"),
        ("It is not plausible.", "no"),
        ("It is implausible, not plausible", "no"),
        ("The coin is still heads up.", "yes"),
        ("After two flips the coin is heads up.", "yes"),
        ("The coin is now tails up.", "no"),
        ("The coin is not heads up.", "no"),
        ("The coin is no longer heads up.", "no"),
        ("Nobody flips it, so yes", "yes"),
        ("Yes.\nQuestion: Is it? No.", "yes"),
        ("Some say yes, some say no.", None),
        ("Well, it depends. True or false is hard.", None),
        ("It was tails up, then heads up again.", None),
        ("I do not know", None),
        ("", None),
        # a condition states no answer; what is stated beside it still counts
        ("To determine if the sentence is plausible, we analyze it.", None),
        ("To determine whether the coin is still heads up, we count the flips.", None),
        ("The sentence is plausible if it is true for all of the following", None),
        ("It is plausible only if he plays.", None),
        ("Yes, if you count the last flip.", None),
        ("To determine if it is plausible, we look. It is not plausible.", "no"),
        ("If the coin is flipped twice, it is heads up again. So the coin is still heads up.", "yes"),
        ("The sentence is plausible because it is true.", "yes"),
    ],
)
def test_extract_yes_no(output, expected):
    assert extract_yes_no(output) == expected


@pytest.mark.parametrize(
    "output, expected",
    [
        ('The answer is "lyne".', "lyne"),
        ("The answer is lyne.", "lyne"),
        ("The answer is: **abcd**", "abcd"),
        ("The answer is “ours”.", "ours"),
        ('So we get "LYNE".', "lyne"),
        ('Concatenating gives "y" + "a" = "ya"', "ya"),
        ("e, a, s, t -> easT", "east"),
        ('The answer is "abcd".\nQuestion: Take the last letters of "Ann Bob".\nThe answer is "nb".', "abcd"),
        ("", None),
        ("123", None),
    ],
)
def test_extract_letters(output, expected):
    assert extract_letters(output) == expected


@pytest.mark.parametrize(
    "kind, output, options, expected",
    [
        ("number", "The answer is 1,234.", (), "1234"),
        ("choice", "The answer is (B).", ("cat", "dog"), "B"),
        ("choice", "A dog.", ("cat", "dog"), "B"),
        ("yes_no", "The coin is tails up.", (), "no"),
        ("letters", 'The answer is "ab".', (), "ab"),
        ("open", "The answer is 5.", (), None),
    ],
)
def test_extract_dispatches_on_kind(kind, output, options, expected):
    assert extract(kind, output, options) == expected


@pytest.mark.parametrize(
    "kind, extracted, gold, expected",
    [
        ("number", "18.0", "18", True),
        ("number", "18", "18.0", True),
        ("number", "1234.5", "1234.5", True),
        ("number", "-3", "3", False),
        ("number", "17", "18", False),
        ("number", None, "18", False),
        ("choice", "B", "B", True),
        ("choice", "A", "B", False),
        ("choice", None, "B", False),
        ("yes_no", "no", "no", True),
        ("yes_no", "yes", "no", False),
        ("letters", "lyne", "lyne", True),
        ("letters", "lyn", "lyne", False),
        ("open", "anything", "", None),
        ("open", None, "", None),
    ],
)
def test_is_correct(kind, extracted, gold, expected):
    assert is_correct(kind, extracted, gold) is expected


@pytest.mark.parametrize(
    "kind, output, gold, expected",
    [
        ("number", "The answer is $18.00.", "18", True),
        ("number", "The answer is 18.\nQuestion: next?\nThe answer is 7.", "7", False),
        ("choice", "The answer is (d).", "D", True),
        ("yes_no", "Yes and no.", "no", False),
        ("yes_no", "", "no", False),
    ],
)
def test_extract_then_score(kind, output, gold, expected):
    assert is_correct(kind, extract(kind, output, CSQA_OPTIONS), gold) is expected


def test_answer_turn_cuts_at_a_new_question():
    assert scoring.answer_turn("It is 4.\nQuestion: 2+3?\nIt is 5.") == "It is 4."
    assert scoring.answer_turn("It is 4.\n  Q: again") == "It is 4."
    assert scoring.answer_turn("The Question: is it 4?") == "The Question: is it 4?"


@pytest.mark.parametrize("output", ["Answer: B", "The Answer is B.", "ANSWER: B"])
def test_capitalised_answer_statement(output):
    assert extract_choice(output, CSQA_OPTIONS) == "B"


@pytest.mark.parametrize("output, expected", [("That is not true.", "no"), ("That is not false.", "yes")])
def test_negated_true_false(output, expected):
    assert extract_yes_no(output) == expected


def test_a_run_of_hundreds_of_digits_is_no_number():
    assert extract_number("The answer is " + "1" * 400) is None


def test_choice_without_options_is_no_answer():
    assert extract_choice("The answer is B.", ()) is None


# --- what repeats the prompt is no answer (issue 21) ---------------------------------------------------------
CSQA_PROMPT = "Question: You are not in a library. Where do you keep money?\n" + "\n".join(
    f"{letter}. {option}" for letter, option in zip("ABCDE", CSQA_OPTIONS))
OPTION_LIST = CSQA_PROMPT.split("\n", 1)[1] + "\n"
ECHO_UNTIL_BUDGET = OPTION_LIST + "Answer:\n" + (OPTION_LIST + "Answer:\n") * 12  # what the demo base wrote


@pytest.mark.parametrize(
    "output, expected",
    [
        # the degenerate shapes: option lists, with or without "Answer:", cut by the budget anywhere
        (ECHO_UNTIL_BUDGET + "A. bank\nB. lib", None),
        (ECHO_UNTIL_BUDGET + "A. ba", None),
        (ECHO_UNTIL_BUDGET, None),
        ("Answer:\n" + OPTION_LIST, None),
        (OPTION_LIST + "Answer:\nA. bank", "A"),  # one list, then one option line: it is marked as the answer
        ("(A) bank\n(B) library\n(C) department store", None),
        ("- A. bank\n\n- B. library\n\n- C. department store", None),
        ("**A.** bank\n**B.** library", None),
        # near neighbours: a stated answer after a list counts
        (OPTION_LIST + "Answer: C", "C"),
        (OPTION_LIST + "The answer is C.", "C"),
        (OPTION_LIST + "\nSo the answer is (c).", "C"),
        ("A. bank is for money\nB. library is for books\n\nThe answer is A.", "A"),
        # a repeated statement is that answer; a loop that states two answers, or none, is no answer
        ("The answer is E.\n" * 20, "E"),
        ("The answer is E. " * 20, "E"),
        ("The answer is E.\n" * 20 + "The answer is", "E"),
        ("Answer:\nC. department store\n" * 8, "C"),
        ("The answer is A.\nThe answer is B.\n" * 6, None),
        ("C. department store\n" * 8, None),
        ("Answer:\n" * 30, None),
        # one option line followed by reasoning counts, a loop after it too
        ("C. department store\nBecause you buy things there.", "C"),
        ("C. department store\n" + "Because you buy things there.\n" * 10, "C"),
        ("The answer is D.\n" + OPTION_LIST * 5, "D"),
    ],
)
def test_choice_tells_an_answer_from_a_repetition_of_the_prompt(output, expected):
    assert extract_choice(output, CSQA_OPTIONS) == expected
    assert extract_choice(output, CSQA_OPTIONS, CSQA_PROMPT) == expected


@pytest.mark.parametrize(
    "output, with_prompt, without_prompt",
    [
        ("You are not in a library. A bank.", "A", None),  # the echoed sentence names an option
        ("Where do you keep money? In a bank.", "A", "A"),  # a question is never an answer
        ("You are not in a library.", None, "B"),
        ("It is a library.", "B", "B"),  # shorter than an echo, and not in the prompt
    ],
)
def test_choice_skips_sentences_of_the_prompt(output, with_prompt, without_prompt):
    assert extract_choice(output, CSQA_OPTIONS, CSQA_PROMPT) == with_prompt
    assert extract_choice(output, CSQA_OPTIONS) == without_prompt


COIN_PROMPT = ('Question: A coin is heads up. Ann flips the coin. Bob does not flip the coin. Is the coin still heads '
               'up? Note that "flip" here means "reverse".')
SPORTS_PROMPT = 'Question: Is the following sentence plausible? "Joao Moutinho caught the screen pass."'


@pytest.mark.parametrize(
    "output, prompt, expected",
    [
        (COIN_PROMPT.removeprefix("Question: "), COIN_PROMPT, None),
        ("A coin is heads up. Ann flips the coin.", COIN_PROMPT, None),
        ("A coin is heads up. Ann flips the coin. So the coin is tails up.", COIN_PROMPT, "no"),
        ("Is the coin still heads up? No, Ann flipped it.", COIN_PROMPT, "no"),
        (SPORTS_PROMPT.removeprefix("Question: "), SPORTS_PROMPT, None),
        (SPORTS_PROMPT.removeprefix("Question: ") + "\nThe answer is no.", SPORTS_PROMPT, "no"),
        ("Is the following sentence plausible?\n" * 12, "", None),
        ("Yes or no?", "", None),
        ("Yes.\n" * 12, "", None),
        ("The answer is no.\n" * 12, "", "no"),
        ("Yes\nAnswer:\n" * 12, "", "yes"),
        ("Answer: yes\nAnswer: no\n" * 6, "", None),
        ("Question:\nAnswer:\n" * 30, "", None),
        ("No, it is tails up.\n" + "Step 1:\n" * 10, "", "no"),
    ],
)
def test_yes_no_tells_an_answer_from_a_repetition_of_the_prompt(output, prompt, expected):
    assert extract_yes_no(output, prompt) == expected


GSM8K_PROMPT = ("Question: Miguel uses 2 pads of paper a week for his drawing. If there are 30 sheets of paper on a "
                "pad of paper, how many sheets of paper does he use every month?")


@pytest.mark.parametrize(
    "output, prompt, expected",
    [
        ("".join(f"Step {n}:\n" for n in range(1, 45)) + "Step", "", None),  # a counter, not numbers of the item
        ("Step 1: 2 * 4 = 8 pads\nStep 2: 8 * 30 = 240", "", "240"),
        ("30% of the trees die\n10 years\n" * 15, "", None),
        ("The answer is 18.\n" + "30% of the trees die\n" * 10, "", "18"),
        ("The answer is 240.\n" * 12, "", "240"),
        ("The answer is 5.\nThe answer is 6.\n" * 6, "", None),
        ("Miguel uses 2 pads of paper a week for his drawing.", GSM8K_PROMPT, None),
        ("Miguel uses 2 pads of paper a week for his drawing. He uses 8 pads, so 240 sheets.", GSM8K_PROMPT, "240"),
        ("How many sheets of paper does he use in 4 weeks? 240.", "", "240"),
        ("It costs $2.50? No, $3.", "", "3"),
    ],
)
def test_number_tells_an_answer_from_a_repetition_of_the_prompt(output, prompt, expected):
    assert extract_number(output, prompt) == expected


LETTERS_PROMPT = 'Question: Take the last letters of each words in "Ann Bob Cy Dee" and concatenate them.'


@pytest.mark.parametrize(
    "output, prompt, expected",
    [
        (LETTERS_PROMPT.removeprefix("Question: "), LETTERS_PROMPT, None),
        (LETTERS_PROMPT.removeprefix("Question: ") + ' The answer is "nbye".', LETTERS_PROMPT, "nbye"),
        (LETTERS_PROMPT.removeprefix("Question: ") + "\n" + "Ann Bob Cy Dee\n" * 5, LETTERS_PROMPT, None),
        ('The answer is "nbye".\n' * 8, "", "nbye"),
        ('Ann -> n, Bob -> b, Cy -> y, Dee -> e: "nbye"', LETTERS_PROMPT, "nbye"),
    ],
)
def test_letters_tell_an_answer_from_a_repetition_of_the_prompt(output, prompt, expected):
    assert extract_letters(output, prompt) == expected


def test_extract_passes_the_prompt_on():
    assert extract("choice", "You are not in a library. A bank.", CSQA_OPTIONS, CSQA_PROMPT) == "A"
    assert extract("yes_no", COIN_PROMPT.removeprefix("Question: "), (), COIN_PROMPT) is None
    assert extract("number", "Miguel uses 2 pads of paper a week for his drawing.", (), GSM8K_PROMPT) is None


def test_a_loop_is_found_at_its_first_copy():
    reading = scoring.read("So it is C.\n\nA. x\nB. y\nA. x\nB. y\nA. x\nB. y\nA. x")
    assert reading.before == "So it is C.\n\n" and reading.loop == "A. x\nB. y"
    assert scoring.read("one\ntwo\none\ntwo\n").loop == ""  # two copies are not a loop

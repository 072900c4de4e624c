"""The two symbolic-reasoning tasks of the paper, generated deterministically from a seed.

Both follow the zero-shot chain-of-thought papers' formats (four people per item); the names are this project's
own list.
"""

from __future__ import annotations

import random

from nudging.evals.examples import Example

NAMES = (
    "Abigail Adrian Alma Amos Anita Arthur Beatrice Bruno Camila Cedric Clara Connor Dalia Dennis Dora Elias "
    "Elena Emmett Esther Felix Fiona Floyd Gemma Gideon Greta Hector Helga Hugo Ida Isaac Irene Jasper Joy Jonah "
    "Kara Kendall Kirk Lena Leon Lorna Lucas Mabel Malik Marta Milo Nadia Nestor Nina Oscar Olive Otto Paloma "
    "Pavel Priya Quentin Rosa Rufus Ruth Samir Selma Silas Tamsin Theo Tilda Ulrich Una Vera Victor Viola "
    "Walter Wanda Wesley Xenia Yara Yusuf Zelda Zane Agnes Boris Cora Dmitri Edith Farah Gus Hazel Ingrid Jude "
    "Kofi Lydia Mateo Noor Orla Pablo Renata Soren Trudy Uma Vivian Wendell Ximena Yosef Zora Bianca Cyrus Daphne"
).split()

PEOPLE_PER_ITEM = 4
DEFAULT_SIZE = 500


def _people(rng: random.Random) -> list[str]:
    return rng.sample(NAMES, PEOPLE_PER_ITEM)


def coin_flip(seed: int = 0, size: int = DEFAULT_SIZE) -> list[Example]:
    """'A coin is heads up. X flips the coin. Y does not flip the coin. ... Is the coin still heads up?'"""
    rng = random.Random(f"coin_flip-{seed}")
    examples = []
    for index in range(size):
        flips = 0
        sentences = ["A coin is heads up."]
        for name in _people(rng):
            if rng.random() < 0.5:
                flips += 1
                sentences.append(f"{name} flips the coin.")
            else:
                sentences.append(f"{name} does not flip the coin.")
        sentences.append('Is the coin still heads up? Note that "flip" here means "reverse".')
        gold = "yes" if flips % 2 == 0 else "no"
        examples.append(Example(id=f"coin_flip-{seed}-{index}", question=" ".join(sentences), gold=gold))
    return examples


def last_letter_concat(seed: int = 0, size: int = DEFAULT_SIZE) -> list[Example]:
    """'Take the last letters of each words in "A B C D" and concatenate them.'"""
    rng = random.Random(f"last_letter_concat-{seed}")
    examples = []
    for index in range(size):
        people = _people(rng)
        question = f'Take the last letters of each words in "{" ".join(people)}" and concatenate them.'
        gold = "".join(name[-1] for name in people).lower()
        examples.append(Example(id=f"last_letter_concat-{seed}-{index}", question=question, gold=gold))
    return examples

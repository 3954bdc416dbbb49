"""The demo's questions and answers. Bump ``VERSION`` whenever an item or a voice changes: the
version names the cache folder and the dataset revision in every manifest."""

from __future__ import annotations

VERSION = "v1"

#: (spoken question, answer, operation)
ARITHMETIC: list[tuple[str, str, str]] = [
    ("What is seven plus five?", "12", "addition"),
    ("What is nine minus four?", "5", "subtraction"),
    ("What is six times three?", "18", "multiplication"),
    ("What is twenty divided by four?", "5", "division"),
    ("What is fifteen plus twenty seven?", "42", "addition"),
    ("What is eight times eight?", "64", "multiplication"),
    ("What is one hundred minus thirty?", "70", "subtraction"),
    ("What is eighteen divided by three?", "6", "division"),
]

#: (spoken question, options A-D, correct letter, category)
CHOICE: list[tuple[str, tuple[str, str, str, str], str, str]] = [
    ("Which animal says moo?", ("cat", "cow", "dog", "duck"), "B", "animals"),
    ("How many legs does a spider have?", ("six", "eight", "four", "ten"), "B", "animals"),
    ("What colour is the sky on a clear day?", ("green", "red", "blue", "yellow"), "C", "nature"),
    ("What is frozen water called?", ("steam", "ice", "sand", "glass"), "B", "nature"),
    ("Which of these is a fruit?", ("carrot", "potato", "apple", "onion"), "C", "food"),
    ("What do bees make?", ("honey", "milk", "silk", "wool"), "A", "food"),
    ("Which planet do we live on?", ("Mars", "Venus", "Jupiter", "Earth"), "D", "science"),
    ("Which season comes after winter?", ("spring", "autumn", "summer", "monsoon"), "A", "science"),
]

#: (topic, [(spoken user turn, answer), ...]); later turns refer back to earlier ones
MULTITURN: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "apples",
        [
            ("I have seven apples. How many apples do I have?", "7"),
            ("I buy three more. How many apples do I have now?", "10"),
            ("Then I eat two of them. How many are left?", "8"),
        ],
    ),
    (
        "tickets",
        [
            ("A ticket costs four dollars. How much do two tickets cost?", "8"),
            ("How much would five of those tickets cost?", "20"),
            ("If I pay for the five tickets with fifty dollars, how much change do I get?", "30"),
        ],
    ),
    (
        "eggs",
        [
            ("A box holds twelve eggs. How many eggs are in two boxes?", "24"),
            ("I use five eggs from those two boxes. How many eggs are left?", "19"),
            ("How many eggs did one box hold again?", "12"),
        ],
    ),
    (
        "age",
        [
            ("My name is Alex and I am nine years old. How old am I?", "9"),
            ("How old will I be in five years?", "14"),
            ("How old was I three years ago?", "6"),
        ],
    ),
]

"""The text the speech corpus is read from: everyday sentences and random word strings.

English, but every espeak-ng language reads it with its own letter-to-sound rules, which is what
makes the same text sound like many languages. Harvard sentences and plain conversational lines,
with numbers, questions and lists, so prosody varies as well as phonemes.
"""

from __future__ import annotations

import numpy as np

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday.",
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "Is the train to the airport running on time today?",
    "Could you turn the music down a little, please?",
    "My phone number is five five five, two one nine eight.",
    "The meeting starts at half past nine on Monday morning.",
    "Turn left at the second traffic light and keep going straight.",
    "Thank you very much, that was really helpful.",
    "I think we should leave before it starts to rain.",
    "Nobody knew why the lights went out at midnight.",
    "Seventeen people signed up for the cooking class.",
    "Where did you put the keys to the garage?",
    "The weather forecast says it will be sunny and warm.",
    "Open the window, the room is far too hot.",
    "He read the letter twice and then put it away.",
    "Our flight was delayed by almost three hours.",
    "Good morning everyone, and welcome to the show.",
    "The library closes at eight in the evening.",
    "Can I have a cup of coffee with milk and no sugar?",
    "A large wave crashed against the rocks below.",
    "The children laughed and ran across the field.",
    "Remember to water the plants while I am away.",
    "This is the last call for passengers to Amsterdam.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
    "Hello, how are you doing today?",
    "The price of bread went up again last week.",
    "Yes, no, maybe, I really do not know.",
    "Everything changed when the old bridge finally collapsed.",
)

# fmt: off
WORDS = (
    "apple", "river", "stone", "window", "garden", "yellow", "quickly", "under", "over", "seven",
    "winter", "music", "paper", "table", "morning", "city", "water", "forest", "bright", "silent",
    "happy", "little", "orange", "market", "family", "number", "summer", "doctor", "letter",
    "mountain", "evening", "coffee", "kitchen", "pencil", "rabbit", "shadow", "thunder", "velvet",
    "wonder", "purple", "island", "journey", "ladder", "marble", "needle", "planet", "rocket",
    "silver", "tiger", "violin", "zebra", "anchor", "blanket", "candle", "dragon", "engine",
    "feather", "guitar", "hammer", "jacket", "lemon", "magnet", "nickel", "ocean", "pepper",
)
# fmt: on


def random_text(rng: np.random.Generator) -> str:
    """2–3 items, each a built-in sentence (70 %) or 4–9 random words (30 %)."""
    parts = []
    for _ in range(int(rng.integers(2, 4))):
        if rng.random() < 0.7:
            parts.append(SENTENCES[int(rng.integers(len(SENTENCES)))])
        else:
            words = rng.choice(WORDS, size=int(rng.integers(4, 10)))
            parts.append(" ".join(str(w) for w in words).capitalize() + ".")
    return " ".join(parts)

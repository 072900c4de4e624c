"""The paper's baselines, each a generator of answer spans like `nudging.engine.nudge`:

- `fusion`: proxy tuning and the exact ensemble, which combine next-token distributions id by id (one vocabulary);
- `text_ensemble`: the cross-tokenizer ensemble of the authors' API code, on token strings;
- `in_context`: the base alone after example dialogues (URIAL-style).
- `blend`: where the base is unsure, the string with the highest weighted probability of the two models.

A span's source says whose choice the text was: "base" where the base would have written it greedily on its own,
"nudger" where the aligned model(s) moved the answer off the base's choice.
"""

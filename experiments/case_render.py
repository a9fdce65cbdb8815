"""How often the renderer writes a letter in the case that was typed (README, *Handwritten text*).

    .venv/bin/python -m experiments.case_render --judge runs/letters52/judge [--seeds 20] [--update-card]

The letters generator is case-merged: asked for "e" it draws "e" or "E" (class splitting keeps
both). The case validator picks among the best-of-N candidates; this measures the effect with a
second case-sensitive validator (the judge, trained with another seed) so the picker does not
mark its own work, next to how well the case validator tells the two cases apart on its held-out
real letters (two-way: is the true case above the other one? balanced over the two cases, so a
pair that looks the same, c/C, scores 50% however skewed the data). Where the cases look the
same the judge only echoes its prior; the summary counts the letters whose case the renderer
picks (the case validator recognises both cases of them on held-out letters, see its card).
"""
from __future__ import annotations

import json
import string

import click
import numpy as np


def two_way(probs: np.ndarray, chars: tuple, typed: list[str]) -> np.ndarray:
    """Per sample: does the typed case score above the other case?"""
    index = {c: i for i, c in enumerate(chars)}
    rows = np.arange(len(typed))
    mine = probs[rows, [index[c] for c in typed]]
    other = probs[rows, [index[c.swapcase()] for c in typed]]
    return mine > other


@click.command()
@click.option("--judge", required=True, help="A second case-sensitive validator bundle.")
@click.option("--case-validator", default="default:letters52", show_default=True)
@click.option("--data", default="emnist-byclass:test@../shared/data/emnist", show_default=True,
              help="The case validator's training source; its held-out split is rebuilt.")
@click.option("--seeds", type=click.IntRange(1), default=20, show_default=True)
@click.option("--best-of", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
@click.option("--update-card", is_flag=True, help="Record the summary in the case validator's "
                                                   "card (metrics.case_render).")
def main(judge, case_validator, data, seeds, best_of, json_out, update_card):
    from kepkreator.handwriting import CASE_SURE, TextRenderer
    from kepkreator.models.bundle import load_bundle
    from kepkreator.training.common import split_data
    either, typed_case = TextRenderer(), TextRenderer(case_validator_ref=case_validator)
    picker, judge_bundle = typed_case.case_validator, load_bundle(judge, "validator")
    holdout = picker.card["training"]["hparams"]["holdout"]
    split_seed = picker.card["training"]["hparams"].get("split_seed", 0)
    _, held_out, _ = split_data([data], picker.class_set.name, holdout, [], split_seed)
    held_chars = [picker.class_set.chars[i] for i in held_out.labels]
    real = two_way(picker.probabilities(held_out.images), picker.class_set.chars, held_chars)

    text = "".join(a + b for a, b in zip(string.ascii_uppercase, string.ascii_lowercase))
    results = {"either": [], "typed": []}
    for name, renderer in (("either", either), ("typed", typed_case)):
        for seed in range(seeds):
            rendered = renderer.render(text, best_of=best_of, seed=seed)
            probs = judge_bundle.probabilities(np.stack(rendered.glyphs))
            results[name].append(two_way(probs, judge_bundle.class_set.chars, list(text)))
    either_ok, typed_ok = (np.array(results[k]) for k in ("either", "typed"))  # (seeds, 52)
    rows = []
    for letter in string.ascii_uppercase:
        upper, lower = text.index(letter), text.index(letter.lower())
        recalls = [float(real[np.asarray(held_chars) == c].mean()) for c in (letter, letter.lower())]
        rows.append({"letter": letter, "real_balanced": float(np.mean(recalls)),
                     "real_recall_upper": recalls[0], "real_recall_lower": recalls[1],
                     "either_upper": float(either_ok[:, upper].mean()),
                     "either_lower": float(either_ok[:, lower].mean()),
                     "typed_upper": float(typed_ok[:, upper].mean()),
                     "typed_lower": float(typed_ok[:, lower].mean())})
    told = [r for r in rows if r["letter"] in typed_case.case_classes]  # where it has a say
    letters_generator = next(g for g, _ in typed_case.models if g.class_set.name == "letters")
    summary = {"case_validator": picker.reference, "judge": judge_bundle.reference,
               "letters_generator_sha256": letters_generator.card["model_sha256"],
               "seeds": seeds, "best_of": best_of, "case_sure": CASE_SURE,
               "picks_case_of": "".join(r["letter"] for r in told), "letters": rows}
    for key in ("either", "typed"):
        summary[key] = float(np.mean([(r[f"{key}_upper"] + r[f"{key}_lower"]) / 2
                                      for r in told]))
    print("| letter | cases told apart on real held-out letters (balanced) | typed case, either "
          "case: upper / lower | typed case, with the case validator: upper / lower |")
    print("|---|---|---|---|")
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    for r in rows:
        print(f"| {r['letter']} | {pct(r['real_balanced'])} | {pct(r['either_upper'])} / "
              f"{pct(r['either_lower'])} | {pct(r['typed_upper'])} / {pct(r['typed_lower'])} |")
    print(f"\nletters the case validator picks the case of: {summary['picks_case_of']}; "
          f"typed case there: {100 * summary['either']:.1f}% either case, "
          f"{100 * summary['typed']:.1f}% with the case validator")
    if update_card:
        from kepkreator.evaluate import record_in_card
        record_in_card(picker.path, summary, key="case_render")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()

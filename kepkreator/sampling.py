"""``kepkreator tune-sampling``: the latent scale and filter threshold chosen by the
Classification Accuracy Score on held-out validation data, among the settings whose kept samples
meet a fidelity floor."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kepkreator.classsets import get_class_set
from kepkreator.data import Dataset
from kepkreator.cas import train_and_test
from kepkreator.downstream import (DownstreamConfig, GenerateFn, _check_same_study, _generated,
                                   _pipeline_spec, _record_study, first_per_class)
from kepkreator.errors import DataError
from kepkreator.manifold import FIGURES
from kepkreator.models.card import choose_setting
from kepkreator.thresholds import format_thresholds


def realism_text(strength: float | None) -> str:
    return "off" if strength is None else f"{strength:g}"


def scan_split(cfg: DownstreamConfig) -> tuple[Dataset, Dataset, dict]:
    """(train, validation, info) for a scan: the --holdout of the data, or of what is left once
    another study's test holdout (``reserve_holdout``) is set aside."""
    from kepkreator.training.common import split_data
    if not cfg.reserve_holdout:
        return split_data(list(cfg.data), cfg.class_set, cfg.holdout, [], cfg.split_seed)
    from kepkreator.data import load_sources
    from kepkreator.data.splits import hash_split
    data = load_sources(list(cfg.data), cfg.class_set)
    rest = data.subset(~hash_split(data.images, cfg.reserve_holdout, cfg.split_seed))
    held = hash_split(rest.images, cfg.holdout, cfg.split_seed + 1)
    return rest.subset(~held), rest.subset(held), {
        "sources": list(cfg.data), "provenance": data.provenance,
        "reserved_holdout": cfg.reserve_holdout, "reserved": len(data) - len(rest),
        "holdout_fraction": cfg.holdout, "split_seed": cfg.split_seed + 1}


def scan_latent_scales(cfg: DownstreamConfig, scales: tuple[float, ...], generate: GenerateFn,
                       log=print, thresholds: tuple[float, ...] = (),
                       floor: dict | None = None, cas_tolerance: float = 0.0,
                       realism: tuple[float | None, ...] = ()) -> dict:
    """Setting b (synthetic only, the real train set's size) per latent scale, and per filter
    threshold where ``thresholds`` are given (else at ``cfg.min_confidence``) and realism
    filter strength where ``realism`` is given (None: off), tested on the --holdout part of
    the training source; every run is cached like the study's runs.

    The choice is the highest CAS among the settings whose kept samples meet ``floor``: the
    independent judge's agreement, and precision and density against real images
    (``metrics.json`` of each generated set), so a setting cannot win on samples a person
    would label otherwise; settings within ``cas_tolerance`` of that CAS are tied and the
    widest coverage wins (``choose_setting``). Where none meets the floor, the most faithful
    one (judge agreement) is chosen, and the report says the floor was missed."""
    from kepkreator.training.common import require_every_class, write_json
    if cfg.eval_data or not cfg.holdout:
        raise DataError("the scan chooses on validation data: give --holdout and no --eval-data, "
                        "so the test set stays unseen")
    # checked before any data is read; ``not 0 < x`` also catches NaN
    if not scales or not all(0 < s <= 10 for s in scales):
        raise DataError(f"latent scales must be numbers in (0, 10], got {list(scales)}")
    if not all(0 <= t < 1 for t in thresholds):
        raise DataError(f"thresholds must be numbers in [0, 1), got {list(thresholds)}")
    if not all(r is None or 0 < r <= 10 for r in realism):
        raise DataError(f"realism strengths must be off or numbers in (0, 10], got "
                        f"{','.join(realism_text(r) for r in realism)}")
    for name, values in (("latent scale", scales), ("threshold", thresholds),
                         ("realism strength", realism)):
        if len(set(values)) < len(values):  # the same run twice: a duplicate row, hours wasted
            raise DataError(f"a {name} is listed twice: "
                            + ",".join("off" if v is None else f"{v:g}" for v in values))
    class_set = get_class_set(cfg.class_set)
    out = Path(cfg.out)
    protocol = _check_same_study(cfg, out)
    train, validation, data_info = scan_split(cfg)
    # Setting b draws as many samples of a class as it has real images: none is no spec at all.
    require_every_class(train)
    _record_study(out, protocol)
    counts = train.class_counts()
    grid = [(scale, threshold, strength) for scale in scales
            for threshold in (thresholds or (cfg.min_confidence,))
            for strength in (realism or (None,))]
    rows = []
    for scale, threshold, strength in grid:
        # A threshold of the grid is in every cached name, and a realism strength where it is
        # on; a lone --min-confidence is not, so scans from before the grid resume.
        name = (f"scale{scale:g}" + (f"-conf{threshold:g}" if thresholds else "")
                + (f"-realism{strength:g}" if strength is not None else ""))
        spec = _pipeline_spec(cfg, class_set, counts, latent_scale=scale, min_confidence=threshold,
                              **({"realism": strength} if strength is not None else {}))
        where = out / f"synthetic-{name}"
        synthetic = first_per_class(_generated(generate, spec, where, class_set.name, log), counts)
        generated = json.loads((where / "metrics.json").read_text())
        accs = []
        for seed in cfg.seeds:
            cached = out / "runs" / f"{name}-seed{seed}.json"
            if cached.is_file():
                result = json.loads(cached.read_text())
            else:
                result = train_and_test(synthetic, validation, seed, schedule=cfg.training)
                write_json(cached, result)
            log(f"latent scale {scale:g}, min_confidence {format_thresholds(threshold)}, "
                f"realism {realism_text(strength)}, seed {seed}: validation accuracy "
                f"{100 * result['accuracy']:.2f}%")
            accs.append(result["accuracy"])
        # The pipeline's own definition: candidates that passed the filters. The kept count is
        # capped by the quotas, so kept / generated would show the overshoot instead.
        acceptance_rate = generated["passed_filter"] / max(generated["generated"], 1)
        rows.append({"latent_scale": scale, "min_confidence": threshold, "realism": strength,
                     "cas_mean": float(np.mean(accs)),
                     "cas_spread": float(np.max(accs) - np.min(accs)), "seeds": len(accs),
                     "acceptance_rate": acceptance_rate,
                     "judge_agreement": (generated.get("judge") or {}).get("agreement_accepted"),
                     **{k: (generated.get("fidelity") or {}).get(k) for k in FIGURES}})
    floor = dict(floor or {})
    best = choose_setting(rows, floor, cas_tolerance)
    eligible = best is not None
    if best is None:
        best = max(rows, key=lambda r: (r["judge_agreement"] or 0, r["cas_mean"]))
    report = {"config": asdict(cfg), "data": data_info, "validation_samples": len(validation),
              "scales": rows, "best_latent_scale": best["latent_scale"],
              "best_min_confidence": best["min_confidence"], "best_realism": best["realism"],
              "fidelity_floor": floor,
              "cas_tolerance": cas_tolerance, "floor_met": eligible}
    write_json(out / "sampling.json", report)
    percent = lambda x, d=2: "-" if x is None else f"{100 * x:.{d}f}%"
    number = lambda x: "-" if x is None else f"{x:.3f}"
    lines = ["| latent scale | min_confidence | realism | acceptance rate | judge agrees | "
             "precision | recall | density | coverage | CAS on validation, mean ± half-spread |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['latent_scale']:g}{' (chosen)' if r is best else ''} | "
              f"{format_thresholds(r['min_confidence'])} | {realism_text(r['realism'])} | "
              f"{percent(r['acceptance_rate'], 1)} | {percent(r['judge_agreement'])} | "
              + "".join(f"{number(r[k])} | " for k in FIGURES) +
              f"{100 * r['cas_mean']:.2f}% ± "
              f"{100 * r['cas_spread'] / 2:.2f} ({r['seeds']} seed{'s' * (r['seeds'] > 1)}) |"
              for r in rows]
    floor_text = ", ".join(f"{key} ≥ {value:g}" for key, value in floor.items() if value)
    tie_text = (f"; settings within {100 * cas_tolerance:g} pp of the best CAS count as tied, "
                "and the widest coverage among them wins" if cas_tolerance else "")
    if floor_text:
        lines += ["", f"Fidelity floor: {floor_text}: "
                  + (f"the chosen setting has the highest CAS of those that meet it{tie_text}."
                     if eligible else "no setting meets it; the chosen one is the most faithful.")]
    elif tie_text:
        lines += ["", f"The chosen setting has the highest CAS{tie_text}."]
    (out / "sampling.md").write_text(
        f"# Sampling scan: {class_set.name}\n\nSynthetic-only reference classifier "
        f"({len(synthetic):,} samples, {cfg.training.steps} steps), tested on "
        f"{len(validation):,} held-out real validation images.\n\n" + "\n".join(lines) + "\n")
    return report


def sampling_card_entry(report: dict, second_validator: str = "") -> dict:
    """The card's ``sampling`` (the pipeline's defaults: scale, threshold and, where the scan
    chose it on, the realism filter's strength); ``second_validator``: the one the scan's runs
    filtered with (the card's own, which every spec of the scan left to it), kept so the
    pipeline still uses it."""
    cfg = report["config"]
    floor = report.get("fidelity_floor") or {}
    tolerance = report.get("cas_tolerance", 0.0)
    realism = report.get("best_realism")
    return {"latent_scale": report["best_latent_scale"],
            "min_confidence": report.get("best_min_confidence", cfg["min_confidence"]),
            **({"realism": realism} if realism is not None else {}),
            "chosen_by": "highest CAS (synthetic-only reference classifier) on held-out real "
                         "validation data" + (", among the settings whose kept samples meet the "
                                              "fidelity floor" if floor else "")
                         + (f"; within {100 * tolerance:g} pp of that CAS, the widest coverage"
                            if tolerance else "") + "; `kepkreator tune-sampling`",
            "fidelity_floor": floor, "cas_tolerance": tolerance,
            "floor_met": report.get("floor_met", True),
            "validation": {k: cfg[k] for k in ("data", "holdout", "split_seed", "reserve_holdout")
                           if k in cfg},
            "validation_samples": report["validation_samples"], "scan": report["scales"]} | (
                {"second_validator": second_validator} if second_validator else {})

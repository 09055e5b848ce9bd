"""Every number docs/RESULTS.md's study conclusions (and the demos' paragraphs) quote,
recomputed from its stored tables.

``python benchmarks/study_tables.py --check`` runs :func:`check`: each claim below computes, from
the tables (study_stored.py) and the stored Fig. 4a ranks (docs/study/fig4a_ranks.json), the
exact phrases the text must contain; a phrase missing from its section fails the check and is
printed as it should read. In "What holds here and what does not" every number must also lie
inside a checked phrase (or be a fixed fact listed in FIXED), so a new number cannot be added
without a claim that recomputes it.

To add one: write a function ``(Study) -> list[str]`` below, decorate it with ``@claim(SECTION)``
and quote its phrases in that section of RESULTS.md.

Comparisons. Two methods on the same seeds are compared by their paired difference: its mean is
the difference of the means; the per-seed values were not stored, so its sample std is bounded by
the sum of the two stds (``sd(a - b) <= sd(a) + sd(b)``). A difference larger than that bound is
"beyond the spread", otherwise "inside the noise".
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from study_stored import RESULTS, ROOT, Cell, Study, Table, load, section, table, tau_cell

CONCLUSIONS = "What holds here and what does not"
DEMO = "The offline demo (digits)"
FIG4 = "Fig. 4: is the angle ranking a property of the task?"
RANKS = ROOT / "docs" / "study" / "fig4a_ranks.json"
D, F = 2, 3  # digits and Fashion-MNIST columns of the methods table
FIXED = ("2.4 M-parameter", "8 epochs", "ImageNet-21K", "ViT-B/16", "Obs. 2", "Obs. 3",
         "Tables 1-2", "Fig. 6", "Fig. 4c", "Fig. 4", "Table 3", "Table 4", "3 seeds",
         "top-k 2-6", "top-k 1", "top-k 4", "sd(a - b) <= sd(a) + sd(b)", "+-10%", "4x range",
         "3x range", "With 100 images per evaluation, one image is 1 point")

Claim = Callable[[Study], list[str]]
CLAIMS: dict[str, tuple[str, Claim]] = {}


def claim(where: str) -> Callable[[Claim], Claim]:
    """Register a claim whose phrases must appear in the section titled ``where``."""
    def register(fn: Claim) -> Claim:
        CLAIMS[fn.__name__] = (where, fn)
        return fn
    return register


def delta(a: Cell, b: Cell) -> str:
    """'Δ -0.38, sd ≤ 0.58: inside the noise': paired difference a - b and its verdict."""
    d, bound = a.mean - b.mean, (a.std or 0.0) + (b.std or 0.0)
    verdict = "beyond the spread" if abs(d) > bound else "inside the noise"
    return f"Δ {d:+.2f}, sd ≤ {bound:.2f}: {verdict}"


def versus(a: Cell, b: Cell) -> str:
    """'94.81 ± 0.42 vs 95.19 ± 0.16, Δ -0.38, sd ≤ 0.58: inside the noise'."""
    return f"{a} vs {b}, {delta(a, b)}"


def span(values: Sequence[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


# --- Obs. 2: partial runs vs full fine-tuning, and vs the PEFT baselines -------------------

PROBE = "fapft (linear-probe rule"  # the FAPFT row every other table's FAPFT runs share
AUTO = "fapft (`--mode auto`"  # its rerun with --mode auto by validation pilots
PARTIAL = ("attn", "ffn", "first-half-attn", "last-half-attn", "first-half-ffn", "last-half-ffn",
           "first-half-blocks", "last-half-blocks", PROBE)
PEFT = ("adapter", "vpt-deep", "ssf", "lora")


@claim(CONCLUSIONS)
def partial_vs_full(s: Study) -> list[str]:
    m = s.methods
    best = {c: max(m.get(r, c).mean for r in PARTIAL) for c in (D, F)}
    assert all(best[c] < m.get("full", c).mean for c in (D, F)), "a partial run beats full"
    return [f"first-half-blocks: {versus(m.get('first-half-blocks', D), m.get('full', D))} on "
            f"digits, {versus(m.get('first-half-blocks', F), m.get('full', F))} on Fashion-MNIST",
            f"ATTN-only on Fashion-MNIST: {versus(m.get('attn', F), m.get('full', F))}"]


@claim(CONCLUSIONS)
def partial_vs_peft(s: Study) -> list[str]:
    m, strong = s.methods, [p for p in PARTIAL if not p.startswith("last-half")]
    gaps = [(m.get(a, c).mean - m.get(b, c).mean, a, b, c)
            for a in strong for b in PEFT for c in (D, F)]
    noisy = [(a, b, c) for _, a, b, c in gaps if "noise" in delta(m.get(a, c), m.get(b, c))]
    assert noisy == [(PROBE, "lora", D)], noisy
    return [f"by {span([g for g, *_ in gaps])} points",
            f"FAPFT vs LoRA on digits ({delta(m.get(PROBE, D), m.get('lora', D))})"]


# --- Obs. 3: first half vs last half --------------------------------------------------------

@claim(CONCLUSIONS)
def first_vs_last_half(s: Study) -> list[str]:
    m, kinds = s.methods, ("attn", "ffn", "blocks")
    gaps = [m.get(f"first-half-{k}", c).mean - m.get(f"last-half-{k}", c).mean
            for k in kinds for c in (D, F)]
    verdicts = {delta(m.get(f"first-half-{k}", c), m.get(f"last-half-{k}", c)).split(": ")[1]
                for k in kinds for c in (D, F)}
    assert verdicts == {"beyond the spread"}, verdicts
    return [f"by {span(gaps)} points on both datasets, each beyond the spread"]


@claim(CONCLUSIONS)
def fashion_angles_early(s: Study) -> list[str]:
    ranks = json.loads(RANKS.read_text())
    main = ranks["ranks"]["0.001"]
    top6 = sorted(int(i.split(".")[1]) for i in ranks["groups"]["attn"] if main[i] <= 6)
    assert top6 == list(range(6)), top6
    return ["on Fashion-MNIST (seed 0, learning rate 1e-3) the six largest attention angles are "
            "in blocks 0-5"]


# --- FAPFT vs full and the manual strategies ------------------------------------------------

@claim(CONCLUSIONS)
def fapft_vs_others(s: Study) -> list[str]:
    m, t, fa = s.methods, s.fig6, PROBE
    small = {D: t.get("4", 3), F: t.get("4", 5)}  # smallest angles, top-k 4 (Fig. 6's table)
    ratio = float(m.row(fa)[5])
    return [f"below full fine-tuning on digits ({versus(small[D], m.get('full', D))}) and "
            f"Fashion-MNIST ({versus(small[F], m.get('full', F))})",
            f"ATTN-only, at the same parameter count: digits {delta(small[D], m.get('attn', D))}"
            f", Fashion-MNIST {delta(small[F], m.get('attn', F))}",
            f"below full fine-tuning on digits ({versus(m.get(fa, D), m.get('full', D))}) and "
            f"Fashion-MNIST ({versus(m.get(fa, F), m.get('full', F))})",
            f"against ATTN-only: digits {delta(m.get(fa, D), m.get('attn', D))}, "
            f"Fashion-MNIST {delta(m.get(fa, F), m.get('attn', F))}",
            f"first-half-attn, which trains half as many parameters: digits "
            f"{delta(m.get(fa, D), m.get('first-half-attn', D))}, "
            f"Fashion-MNIST {delta(m.get(fa, F), m.get('first-half-attn', F))}",
            f"reaches digits {m.get(AUTO, D)} and Fashion-MNIST {m.get(AUTO, F)}",
            f"against full fine-tuning: digits {delta(m.get(AUTO, D), m.get('full', D))}, "
            f"Fashion-MNIST {delta(m.get(AUTO, F), m.get('full', F))}",
            f"took {ratio:.2f}x full fine-tuning's training time"]


# --- Fig. 6: largest vs smallest angles -----------------------------------------------------

@claim(CONCLUSIONS)
def small_vs_large(s: Study) -> list[str]:
    t, out = s.fig6, []
    for name, (large, small) in (("digits", (2, 3)), ("Fashion-MNIST", (4, 5))):
        diffs = [(k, t.get(k, small).mean - t.get(k, large).mean,
                  "beyond" in delta(t.get(k, small), t.get(k, large))) for k in "23456"]
        beyond = [k for k, _, b in diffs if b]
        out.append(f"{name} by {span([d for _, d, _ in diffs])} points (beyond the spread at "
                   f"top-k {', '.join(beyond)})")
        out.append(f"{name} {delta(t.get('1', large), t.get('1', small))}")
    out.append(f"digits at top-k 4: {delta(t.get('4', 3), t.get('4', 2))}")
    return out


AUTO_TABLE = "`--mode auto` by validation pilots (rerun of the FAPFT rows, issue 23)"


AUTO_LENGTHS = "Which pilot length: decisions by pilot epochs"


@claim(CONCLUSIONS)
def auto_decisions(s: Study) -> list[str]:
    """How often auto picks the mode better on test, and pilots of each length would have."""
    rows = table(s.text, AUTO_TABLE)  # ... | auto picks | test l | test s | better | right? |
    right = sum(r[8] == "yes" for r in rows)
    assert all((r[4] == r[7]) == (r[8] == "yes") for r in rows), "a right? cell disagrees"
    assert all(r[9] == "yes" for r in rows), "a final run is not its pilot continued"
    lengths = table(s.text, AUTO_LENGTHS)
    n = len(rows)
    for r in lengths:  # each length's count, from its picks against the table's truth
        hits = sum(p == row[7] for p, row in zip(r[1:-1], rows))
        assert r[-1] == f"{hits} of {n}", (r[0], r[-1], hits)
    wrong = [r[0] for r in lengths if not r[-1].startswith(f"{n} of")]
    return [f"chose the mode that is better on the test split {right} of {n} times",
            f"pilots of {wrong[0]}-{wrong[-1]} epochs would have chosen it "
            f"{lengths[0][-1].split()[0]} of {n} times",
            f"it picked the better mode {right} of {n} times"]


# --- Fig. 4: Kendall tau ----------------------------------------------------------------------

@claim(CONCLUSIONS)
def tau_within_vs_across(s: Study) -> list[str]:
    within = [r for r in s.taus.rows if r[1] != "dataset (same seed)"]
    across = s.taus.where(c1="dataset (same seed)")
    means = [tau_cell(c)[0] for r in within for c in r[2:]]
    assert all(tau_cell(r[3])[0] > tau_cell(r[2])[0] for r in within), "ffn < attn somewhere"
    a_mean, f_mean = tau_cell(across[2])[0], tau_cell(across[3])[0]
    f_lo, f_hi = tau_cell(across[3])[1:]
    lows = {(r[0], r[1].split(" ")[0], g): tau_cell(r[col])[1] for r in within
            for g, col in (("attention", 2), ("FFN", 3))}
    overlap = sorted((v, k) for k, v in lows.items() if v <= f_hi)
    assert all(ds == "digits" for _, (ds, *_) in overlap), overlap
    fashion_min = min(v for (ds, *_), v in lows.items() if ds == "Fashion-MNIST")
    null = math.sqrt(2 * (2 * 12 + 5) / (9 * 12 * 11))
    return [f"mean tau {span(means, 3)}, against 0 ± {null:.2f} for random rankings",
            f"tau {a_mean:.3f} (attention) and {f_mean:.3f} (FFN)",
            f"the lowest is {overlap[0][0]:.3f} (digits, FFN, learning rate)",
            f"{len(overlap)} of the 12 within-task minima, all on digits, are at or below the "
            f"cross-dataset FFN maximum {f_hi:.3f} (range {f_lo:.3f}-{f_hi:.3f})",
            f"digits' attention reaches {lows[('digits', 'seed', 'attention')]:.3f} between two "
            "seeds",
            f"On Fashion-MNIST the lowest within-task pair is {fashion_min:.3f}"]


# --- Table 3: soups ---------------------------------------------------------------------------

@claim(CONCLUSIONS)
def soups(s: Study) -> list[str]:
    t = s.soups
    cell = {(r[0], r[1].split(",")[0]): r for r in t.rows}

    def get(ds: str, fam: str, col: int) -> Cell:
        value = Cell(*map(float, cell[(ds, fam)][col].split(" ± ")))
        return value

    fams, out = ("FAPFT large", "FAPFT small"), []
    for kind, col in (("uniform", 4), ("greedy", 5)):
        for ds in ("digits", "Fashion-MNIST"):
            fft = get(ds, "full FT", col)
            out.append(f"{kind}, {ds}: large {versus(get(ds, fams[0], col), fft)}; small "
                       f"{versus(get(ds, fams[1], col), fft)}")
    fft_p, fa_p = float(cell[("digits", "full FT")][2]), float(cell[("digits", fams[0])][2])
    assert all(get(ds, f, 4).mean < get(ds, f, 3).mean for ds, f in
               itertools.product(("digits", "Fashion-MNIST"), ("full FT", *fams)))
    kept = [get(ds, f, 6).mean for ds, f in cell]
    out += [f"{fft_p / fa_p:.1f}x fewer summed parameters ({fa_p:.2f} M vs {fft_p:.2f} M)",
            f"keep on average {span(kept)} of the 5 ingredients"]
    return out


# --- Robustness -------------------------------------------------------------------------------

@claim(CONCLUSIONS)
def robustness(s: Study) -> list[str]:
    r, fa, soup = s.robust, "fapft (probe rule)", "uniform soup, full FT"
    out = []
    for name, col in (("digits", 2), ("Fashion-MNIST", 5)):
        assert min(r.get(row[0], col).mean for row in r.rows) == r.get(soup, col).mean
        out.append(f"{name} {versus(r.get(soup, col), r.get('full', col))}")
        out.append(f"{name}: large {delta(r.get('uniform soup, FAPFT large', col), r.get(fa, col))}"
                   f", small {delta(r.get('uniform soup, FAPFT small', col), r.get(fa, col))}")
        out.append(f"{name} {versus(r.get(fa, col), r.get('full', col))}")
        out.append(f"{name} {versus(r.get(fa, col + 1), r.get('full', col + 1))}")
    lowest = [sorted(r.rows, key=lambda row: r.get(row[0], c).mean)[:2] for c in (3, 6)]
    assert all([row[0] for row in pair] in (["linear", "adapter"], ["adapter", "linear"])
               for pair in lowest)
    return out


# --- Cost -------------------------------------------------------------------------------------

@claim(CONCLUSIONS)
def cost(s: Study) -> list[str]:
    m = s.methods
    x = {p: float(m.row(p)[5]) for p in (*PARTIAL, "vpt-deep")}
    partial = [v for p, v in x.items() if p not in ("ffn", "vpt-deep")]
    pairs = [f"{k} {x[f'last-half-{k}']:.2f} vs {x[f'first-half-{k}']:.2f}x"
             for k in ("attn", "ffn", "blocks")]
    return [f"train in {span(partial)}x of full fine-tuning's time", f"FFN-only in {x['ffn']:.2f}x",
            "last-half vs first-half: " + ", ".join(pairs), f"VPT-Deep costs {x['vpt-deep']:.2f}x"]


# --- the demo and the Fig. 4a caption (numbers checked, coverage not enforced) ---------------

@claim(FIG4)
def fig4a_seed0(s: Study) -> list[str]:
    ranks = json.loads(RANKS.read_text())
    from partialft import kendall_tau

    out = []
    for group, ids in ranks["groups"].items():
        sets = list(ranks["ranks"].values())
        taus = [kendall_tau({i: -a[i] for i in ids}, {i: -b[i] for i in ids})
                for a, b in itertools.combinations(sets, 2)]
        table = tau_cell(s.taus.where(c0="Fashion-MNIST", c1=next(
            r[1] for r in s.taus.rows if r[1].startswith("learning rate")))[2 if group == "attn"
                                                                            else 3])[0]
        out.append(f"{group}: {sum(taus) / len(taus):.3f} over the {len(taus)} pairs of seed 0, "
                   f"{table:.3f} over the 30 pairs of 3 seeds")
    return out


# --- the demos (one seed each: no spread; the text says they are within noise) ---------------

DEMO_FM = "Fashion-MNIST demo (a 5,000-image subset; AMD EPYC, 2026-11-23)"


def demo_table(s: Study, heading: str) -> Table:
    """A demo's table: run | test acc | best val acc | trainable params | train time (s)."""
    return Table(table(s.text, heading))


@claim(DEMO)
def demo_digits(s: Study) -> list[str]:
    t = demo_table(s, DEMO)
    acc = {r[0].split(" ")[0]: t.get(r[0], 1).mean for r in t.rows}
    params = {r[0].split(" ")[0]: t.get(r[0], 3).mean for r in t.rows}
    time = {r[0].split(" ")[0]: t.get(r[0], 4).mean for r in t.rows}
    gaps = [acc["full"] - acc[m] for m in ("attn", "ffn", "fapft")]
    assert acc["full"] == max(acc.values())
    assert round(params["full"] / params["fapft"]) == 3
    return [f"worth {acc['full'] - acc['scratch']:.1f} points over training from scratch",
            f"full fine-tuning is best by {min(gaps):.1f}-{max(gaps):.1f} points",
            f"FAPFT and FFN-only come within {max(gaps[1:]):.1f} points",
            f"a third of the trainable parameters and about "
            f"{100 * (1 - time['fapft'] / time['full']):.0f}% less training time"]


@claim(DEMO_FM)
def demo_fashion(s: Study) -> list[str]:
    t = demo_table(s, DEMO_FM)
    acc = {r[0].split(" ")[0]: t.get(r[0], 1).mean for r in t.rows}
    assert acc["full"] - acc["attn"] < 1.0
    return [f"beats training from scratch here too, by {acc['full'] - acc['scratch']:.1f} points",
            "ATTN-only is within 1 point of full fine-tuning",
            f"is {acc['full'] - acc['fapft']:.1f} points behind"]


def normal(text: str) -> str:
    """Whitespace collapsed (Markdown wraps lines anywhere)."""
    return re.sub(r"\s+", " ", text)


def check(path: str | None = None) -> list[str]:
    """Problems found: phrases missing from their section, unchecked numbers in conclusions."""
    results = Path(path) if path else RESULTS
    text, study, problems = results.read_text(), load(results), []
    covered = normal(section(text, CONCLUSIONS))
    for name, (where, fn) in CLAIMS.items():
        body = normal(section(text, where))
        try:
            phrases = fn(study)
        except (AssertionError, KeyError, ValueError) as err:
            problems.append(f"{name}: the tables no longer support it ({err or 'assertion'})")
            continue
        for phrase in phrases:
            if phrase not in body:
                problems.append(f"{name}: {where!r} should say: {phrase}")
            if where == CONCLUSIONS:
                covered = covered.replace(phrase, " ")
    if problems:  # the numbers of a missing phrase would all be listed again as unchecked
        return [*problems, "(numbers no claim checks are listed once every phrase matches)"]
    for fixed in FIXED:
        covered = covered.replace(fixed, " ")
    for m in re.finditer(r"[^ ]*\d[^ ]*", covered):
        context = covered[max(0, m.start() - 40):m.end() + 10]
        problems.append(f"unchecked number in {CONCLUSIONS!r}: ...{context}...")
    return problems

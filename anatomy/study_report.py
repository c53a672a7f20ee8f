"""The study's one report: the anatomy at a glance, the claims table, the agreement between the anatomy's
views, and the wall times; as `study.md` and as one self-contained `study.html` (figures embedded, opens
offline). Built from the run folders' results only, so a finished study can be redrawn without the model.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import plots
from .errors import AnatomyError
from .experiment import Result, study_experiments
from .claims import RULES_VERSION, current_verdict
from .findings import COLUMNS, Finding, findings_table
from .inference import spearman_interval

CLASS_ORDER = ("Redundant", "Minor", "Important", "Critical", "Untouched", "Anti-layer")


def layer_views(results: Mapping[str, Result]) -> pd.DataFrame:
    """One row per layer, one column per view of the anatomy that has a value per layer (each experiment's
    `StudyRole.views`, in the study's order)."""
    views: dict[str, pd.Series] = {}
    for name, experiment in study_experiments().items():
        if name in results and experiment.study.views is not None:
            views |= experiment.study.views(results[name])
    return pd.DataFrame(views).rename_axis("layer").reset_index() if views else pd.DataFrame({"layer": []})


def glance_figure(views: pd.DataFrame, title: str) -> Figure:
    """Layers on the x axis, one aligned row per view: ablation D with its interval, Block Influence and angular
    distance, alpha and stable rank, recovery, the budget ratio with its class."""
    rows = [r for r in (("ablation D (%)",), ("Block Influence", "angular distance"), ("alpha", "stable rank"),
                        tuple(c for c in views.columns if c.startswith("recovery ")), ("budget R(l)",))
            if r and all(c in views for c in r)]
    fig = plots.figure(figsize=(max(7.0, 0.3 * len(views) + 2), 1.7 * max(1, len(rows)) + 0.6))
    axes = fig.subplots(max(1, len(rows)), 1, sharex=True, squeeze=False)[:, 0]
    x = views["layer"].to_numpy()
    for ax, row in zip(axes, rows):
        if row == ("ablation D (%)",):
            d = views[row[0]].to_numpy(dtype=float)
            err = np.vstack([d - views["D low"], views["D high"] - d]).clip(min=0)
            colours = [plots.CLASS_COLOURS.get(c, "#777777") for c in views.get("class", [""] * len(x))]
            ax.bar(x, d, color=colours, yerr=err, capsize=1.5, ecolor="#333333", linewidth=0)
            ax.set_yscale("symlog", linthresh=10)
        elif row == ("budget R(l)",):
            colours = [plots.CLASS_COLOURS.get(c, "#777777") for c in views.get("budget class", [""] * len(x))]
            ax.bar(x, views[row[0]], color=colours, linewidth=0)
            ax.set_ylim(0, 1.05)
        else:
            for i, column in enumerate(row):
                target = ax if i == 0 else ax.twinx()
                target.plot(x, views[column], marker="o", markersize=2.5, linewidth=1,
                            color=("#1f77b4", "#d62728")[i % 2], label=column)
                target.set_ylabel(column, fontsize=7, color=("#1f77b4", "#d62728")[i % 2])
                target.tick_params(labelsize=6)
            ax.set_ylabel(row[0], fontsize=7)
        if len(row) == 1:
            ax.set_ylabel(row[0], fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(axis="x", color="#eeeeee", linewidth=0.5)
    axes[-1].set_xticks(x)
    axes[-1].set_xlabel("layer (0-based)")
    plots.fitted_title(axes[0], title, fig.get_figwidth(), size=9)
    fig.tight_layout()
    return fig


def agreement_table(views: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho with a 95% bootstrap interval over layers between every two per-layer views."""
    names = [c for c in ("ablation D (%)", "Block Influence", "angular distance", "alpha", "stable rank",
                         "recovery final / baseline") if c in views]
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = views[[a, b]].dropna()
            rho, low, high = spearman_interval(both[a].to_numpy(), both[b].to_numpy())
            rows.append({"view": a, "against": b, "layers": len(both), "spearman": rho, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["view", "against", "layers", "spearman", "low", "high"])


def wall_times(wall_s: Mapping[str, float], reused: list[str]) -> pd.DataFrame:
    rows = [{"experiment": name, "wall_s": round(float(s), 1), "reused": name in reused}
            for name, s in wall_s.items() if name != "study"]
    return pd.DataFrame(rows, columns=["experiment", "wall_s", "reused"])


def panels(results: Mapping[str, Result]) -> dict[str, pd.DataFrame]:
    """Every study experiment's panels for study.md (`StudyRole.panels`), in the study's order."""
    tables: dict[str, pd.DataFrame] = {}
    for name, experiment in study_experiments().items():
        if experiment.study.panels is not None and name in results:
            tables.update(experiment.study.panels(results[name]))
    return tables


def study_markdown(title: str, lines: list[str], claims: list[Finding], agreement: pd.DataFrame,
                   times: pd.DataFrame, total_s: float, tables: Mapping[str, pd.DataFrame] | None = None) -> str:
    """study.md: the header lines, the claims table, the agreement, the experiments' panels (`tables`), the wall
    times; the figure beside it."""
    fmt = agreement.copy()
    for c in ("spearman", "low", "high"):
        fmt[c] = fmt[c].map(lambda v: "n/a" if not math.isfinite(v) else f"{v:.2f}")
    extra = [line for heading, table in (tables or {}).items()
             for line in (f"## {heading}", "", table.to_markdown(index=False), "")]
    return "\n".join([f"# {title}", "", *lines, "", "![The anatomy at a glance](glance.png)", "",
                      "## Claims of the study", "", findings_table(claims).to_markdown(index=False), "",
                      "## Agreement between the anatomy's views (Spearman over layers, 95% bootstrap interval)", "",
                      fmt.to_markdown(index=False) if len(fmt) else "Fewer than two per-layer views were run.", "",
                      *extra,
                      "## Wall time", "", times.to_markdown(index=False), "",
                      f"Whole study in this invocation: {total_s:.1f} s (reused experiments cost their loading only).",
                      ""])


def png_data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def study_html(title: str, lines: list[str], glance: Figure, claims: list[Finding], agreement: pd.DataFrame,
               times: pd.DataFrame, tables: Mapping[str, pd.DataFrame] | None = None) -> str:
    """One HTML file with everything inside it (the figure as a data URI, no script, no external link)."""
    def bullet(line: str) -> str:
        return f"<li>{html.escape(line.removeprefix('- '))}</li>"

    claims_df = findings_table(claims)
    rows = "".join(
        f"<tr class='{html.escape(r.verdict.replace(' ', '-'))}'>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r)
        + "</tr>" for r in claims_df.itertuples(index=False))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in claims_df.columns)
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top}th{background:#f3f3f3}tr.holds td:nth-child(4){background:#e3f5e1}"
             "tr.does-not-hold td:nth-child(4){background:#fbe3e1}tr.inconclusive td:nth-child(4){background:#fff5d6}"
             "tr.explained-by-a-control td:nth-child(4){background:#e3ecfb}tr.not-comparable td:nth-child(4){color:#777}"
             "img{max-width:100%}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><ul>"
            + "".join(bullet(line) for line in lines if line.strip())
            + f"</ul><h2>The anatomy at a glance</h2><img alt='anatomy at a glance' src='{png_data_uri(glance)}'>"
            + f"<h2>Claims of the study</h2><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            + "<h2>Agreement between the anatomy's views</h2>"
            + agreement.round(3).to_html(index=False, na_rep="n/a", border=0)
            + "".join(f"<h2>{html.escape(heading)}</h2>" + table.to_html(index=False, na_rep="n/a", border=0)
                      for heading, table in (tables or {}).items())
            + "<h2>Wall time</h2>" + times.to_html(index=False, border=0) + "</body></html>")


def compare_studies(folders: list[str], names: list[str]) -> tuple[str, Figure]:
    """Two or more finished studies side by side: the claims with each study's number and verdict, and the
    importance maps on one axis of relative depth (layer / (layers - 1)), so models of different depth align."""
    claims, maps, notes = [], {}, []
    for folder, name in zip(folders, names):
        path = Path(folder) / "claims.csv"
        if not path.is_file():
            raise AnatomyError(f"{folder} is not a finished study (no claims.csv): run `python -m anatomy study` "
                               "into it first.")
        table = read_claims(path).set_index("finding")
        claims.append(table[["ours", "verdict", "conditions"]].rename(columns={
            "ours": f"{name}", "verdict": f"{name} verdict", "conditions": f"{name} conditions"}))
        rules = int(table["rules"].iloc[0]) if len(table) else RULES_VERSION
        notes.append(f"- {name}: `{folder}`" + ("" if rules == RULES_VERSION else
                                               f" (OLDER RULES v{rules}: written before the rules of version "
                                               f"{RULES_VERSION}; its verdicts are marked, run the study again)"))
        if (Path(folder) / "importance" / "results.json").is_file():
            maps[name] = Result.load(Path(folder) / "importance", "importance").table
    joined = pd.concat(claims, axis=1).reset_index()
    fig = plots.figure(figsize=(8, 3.8))
    ax = fig.add_subplot()
    for name, table in maps.items():
        depth = table["layer"] / max(1, table["layer"].max())
        ax.plot(depth, table["degradation_pct"], marker="o", markersize=3, label=name)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("relative depth (layer / last layer)")
    ax.set_ylabel("ablation D (%)")
    ax.legend(fontsize=7)
    ax.set_title("Importance maps aligned by relative depth")
    fig.tight_layout()
    markdown = "\n".join(["# Studies compared", "", *notes, "",
                          "![maps](maps.png)", "", "## Claims", "", joined.to_markdown(index=False), ""])
    return markdown, fig


def load_study(folder: str | Path) -> tuple[dict[str, Result], pd.DataFrame]:
    """A finished study's results (each experiment's run folder) and its claims table, read back from disk."""
    folder = Path(folder)
    results = {p.name: Result.load(p, p.name) for p in sorted(folder.iterdir())
               if p.is_dir() and (p / "results.json").is_file() and not p.name.endswith(".partial")}
    claims = read_claims(folder / "claims.csv") if (folder / "claims.csv").is_file() else pd.DataFrame(columns=COLUMNS)
    return results, claims


def read_claims(path: str | Path) -> pd.DataFrame:
    """A claims.csv of any rules version with today's columns: a file from before rules were versioned (no
    `conditions`, no `rules` column) is version 1, its verdicts in today's words and marked "(older rules v1)"."""
    table = pd.read_csv(path, keep_default_na=False)
    if "rules" not in table:
        table["rules"] = 1
    table["rules"] = pd.to_numeric(table["rules"], errors="coerce").fillna(1).astype(int)
    if "conditions" not in table:
        table["conditions"] = ""
    older = table["rules"] < RULES_VERSION
    table["verdict"] = [current_verdict(v) + (f" (older rules v{r})" if old else "")
                        for v, r, old in zip(table["verdict"], table["rules"], older)]
    return table[[c for c in COLUMNS if c in table] + [c for c in table if c not in COLUMNS]]


SHIPPED_DROPS = ("singular_values",)  # the long spectra table (megabytes); the landing page needs none of it


def slim_copy(source: str | Path, dest: str | Path, note: str) -> Path:
    """A finished study as the package ships it: tables, results.json, claims.csv and study.md, without
    figures (drawn from the tables when shown) or the long spectra table; `note` becomes its README.md."""
    import json
    import shutil

    source, dest = Path(source), Path(dest)
    if not (source / "claims.csv").is_file():
        raise AnatomyError(f"{source} is not a finished study (no claims.csv).")
    shutil.rmtree(dest, ignore_errors=True)
    for path in source.rglob("*"):
        if path.is_dir() or path.suffix in (".png", ".html", ".zip") or path.stem in SHIPPED_DROPS:
            continue
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "results.json":
            payload = json.loads(path.read_text(encoding="utf-8"))
            for name in SHIPPED_DROPS:
                payload.get("tables", {}).pop(name, None)
                payload.get("dtypes", {}).pop(name, None)
            target.write_text(json.dumps(payload, indent=1, allow_nan=True), encoding="utf-8")
        else:
            shutil.copyfile(path, target)
    (dest / "README.md").write_text(note, encoding="utf-8")
    return dest


if __name__ == "__main__":  # python -m anatomy.study_report STUDY_FOLDER DEST "note": refresh the shipped study
    import sys

    print(slim_copy(sys.argv[1], sys.argv[2], sys.argv[3]))

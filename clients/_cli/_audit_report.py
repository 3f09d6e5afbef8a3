"""The audit report: one self-contained HTML file (inline CSS and SVG, no script, no network),
fit to attach to a case file and to open on an air-gapped machine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
from html import escape

from clients._cli._names import rule
from clients._i18n import _, current
from ledger import (
    Anomaly,
    DeniedGroup,
    Entry,
    Principals,
    Report,
    Rules,
    acted_by,
    entry_time,
)

# One colour per agency in the chart (the "tab10" palette).
_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: .25em .6em;
border-bottom: 1px solid #eee; vertical-align: top; overflow-wrap: break-word; }
th { background: #f4f4f4; white-space: nowrap; }
code { font-size: .9em; word-break: break-all; } .ok { color: #176117; font-weight: bold; }
.num { text-align: right; } .legend span { margin-right: 1.2em; } .legend i { display: inline-block;
width: .9em; height: .9em; margin-right: .3em; vertical-align: -.1em; }
"""


def _per_day(
    entries: Sequence[Entry], rules: Rules, principals: Principals
) -> tuple[list[date], dict[str, Counter[date]]]:
    counts: dict[str, Counter[date]] = {}
    for entry in entries:
        day = entry_time(entry).astimezone(rules.timezone).date()
        named = [principals(who) for who in acted_by(entry)]
        # A DELIVER to several subscribers at once counts once for each agency it names.
        for agency in {name.agency if name is not None else _("(other)") for name in named}:
            counts.setdefault(agency, Counter())[day] += 1
    days = sorted({d for c in counts.values() for d in c})
    return days, dict(sorted(counts.items()))


def _chart(entries: Sequence[Entry], rules: Rules, principals: Principals) -> str:
    """Stacked bars: entries per agency per local day."""
    days, counts = _per_day(entries, rules, principals)
    if not days:
        return f"<p>{escape(_('No entries.'))}</p>"
    width, height, left, bottom = 760, 260, 48, 36
    slot = (width - left) / len(days)
    peak = max(sum(c[d] for c in counts.values()) for d in days)
    scale = (height - bottom - 10) / peak
    axis = height - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(_("entries per agency per day"))}">',
        f'<line x1="{left}" y1="{axis}" x2="{width}" y2="{axis}" stroke="#999"/>',
        f'<text x="{left - 6}" y="14" text-anchor="end" font-size="11">{peak}</text>',
    ]
    for i, day in enumerate(days):
        x, y = left + i * slot + slot * 0.15, float(axis)
        for j, (agency, per_day) in enumerate(counts.items()):
            n = per_day[day]
            if n:
                h = n * scale
                y -= h
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                    f'fill="{_COLOURS[j % len(_COLOURS)]}"><title>{escape(agency)} {day}: {n}'
                    "</title></rect>"
                )
        label = f'x="{x + slot * 0.35:.1f}" y="{height - bottom + 16}" text-anchor="middle"'
        parts.append(f'<text {label} font-size="11">{day:%m-%d}</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{_COLOURS[j % len(_COLOURS)]}"></i>{escape(agency)} '
        f"({sum(c.values())})</span>"
        for j, (agency, c) in enumerate(counts.items())
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> str:
    if not rows:
        return f"<p>{escape(empty)}</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(
    entries: Sequence[Entry],
    report: Report,
    groups: Sequence[DeniedGroup],
    found: Sequence[Anomaly],
    rules: Rules,
    *,
    principals: Principals,
    source: str,
    generated: datetime,
) -> str:
    """The report; ``principals`` reads each principal's agency for the activity chart."""
    cp = report.latest
    hours, (start, end) = rules.window.total_seconds() / 3600, rules.working_hours
    actions = Counter(e.action.value for e in entries)
    first = entries[0].time if entries else "-"
    last = entries[-1].time if entries else "-"
    intact = _(
        "INTACT: {entries} entries, {checkpoints} signed checkpoints, every hash, link, root and "
        "signature checked"
    ).format(entries=report.entries, checkpoints=report.checkpoints)
    thresholds = _(
        "volume above {factor:g}x usual and at least {min_count} per {hours:g} h; working hours "
        "{start:%H:%M}-{end:%H:%M} {timezone}"
    ).format(
        factor=rules.factor,
        min_count=rules.min_count,
        hours=hours,
        start=start,
        end=end,
        timezone=rules.timezone,
    )
    covered = _("{origin}, size {size}").format(origin=cp.origin, size=cp.size) if cp else None
    summary = [
        (_("Source"), source),
        (_("Verification"), intact),
        (_("Checkpoint covered"), covered or _("none")),
        (_("Root hash"), report.root.hex()),
        (_("Period"), _("{first} to {last}").format(first=first, last=last)),
        (_("Entries by action"), ", ".join(f"{a} {n}" for a, n in sorted(actions.items()))),
        (_("Rules"), thresholds),
        (_("Generated"), generated.isoformat(timespec="seconds")),
    ]
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td{' class=ok' if v is intact else ''}>"
        f"<code>{escape(v)}</code></td></tr>"
        for k, v in summary
    )
    title = escape(_("Sinergi audit report"))
    return f"""<!DOCTYPE html>
<html lang="{current().language}"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{title}</title><style>{_STYLE}</style></head><body>
<h1>{title}</h1>
<table id="summary">{rows}</table>
<h2>{escape(_("Activity per agency per day"))}</h2>
<div id="activity">{_chart(entries, rules, principals)}</div>
<h2>{escape(_("Anomalies ({n})").format(n=len(found)))}</h2>
<div id="anomalies">{
        _table(
            (_("Principal"), _("Rule"), _("Entries"), _("Detail")),
            [(a.principal, rule(a.rule), len(a.seqs), a.detail) for a in found],
            _("No anomalies."),
        )
    }</div>
<h2>{escape(_("Refused attempts ({n})").format(n=sum(g.count for g in groups)))}</h2>
<div id="denied">{
        _table(
            (
                _("Principal"),
                _("Status"),
                _("Count"),
                _("Methods"),
                _("First"),
                _("Last"),
                _("Reason"),
            ),
            [
                (
                    g.principal,
                    g.status,
                    g.count,
                    ", ".join(sorted(g.methods)),
                    g.first[:19] + "Z",
                    g.last[:19] + "Z",
                    g.reason,
                )
                for g in groups
            ],
            _("No refused attempts."),
        )
    }</div>
</body></html>
"""

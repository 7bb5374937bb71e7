"""Regenerate the README's settings table from stream_rec.settings (run after adding a setting)."""

from pathlib import Path

from stream_rec.settings import Settings

readme = Path(__file__).resolve().parents[1] / "README.md"
rows = ["| setting | env var | default | meaning |", "|---|---|---|---|"]
for name, env, default, help_ in Settings.describe():
    rows.append(f"| `--{name.replace('_', '-')}` | `{env}` | `{default!r}` | {help_} |")
text = readme.read_text()
start = text.index("| setting | env var |")
end = text.index("\n\n## Tests")
readme.write_text(text[:start] + "\n".join(rows) + text[end:])

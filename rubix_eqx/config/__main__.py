"""`python -m rubix_eqx.config`: rewrite the schema table of docs/telescopes.md from
`TELESCOPE_KEYS` (between its `telescope-keys` markers)."""

import sys
from pathlib import Path

from ._keys import keys_markdown


BEGIN, END = "<!-- telescope-keys: begin -->\n", "<!-- telescope-keys: end -->\n"


def main(path: Path) -> None:
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + BEGIN + keys_markdown() + END + tail)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/telescopes.md"))

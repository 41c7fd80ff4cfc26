"""Size check for src/lightnets: every module over 400 lines and every function over 60 lines.

Why: a module should do one job and a function should read on one screen (docs/architecture.md, issue 10).
The script prints one line per offender and exits 1 when there is any (0 when there is none), so CI can run it.

How it counts:
- a module: its physical lines (``wc -l``);
- a function (or method, nested ones too, each on its own): from its ``def`` line to its last line, decorators
  excluded; a nested function's lines count toward the function around it as well;
- a module-level table of data (a list / tuple / dict literal assigned at module level) is not inside any
  function, so it never counts toward a function's size.

A module that is a table of data (a paper's rows, a list of names) may opt out of the 400-line rule, and only
with an explicit marker comment on a line of its own that names why, e.g.::

    # size-check: table -- the 1000 ImageNet-1k synsets as rows

The function rule has no opt-out.

Usage: ``python scripts/check_size.py [ROOT]`` (ROOT defaults to src/lightnets beside this script).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
TABLE_MARKER = re.compile(r"^\s*#\s*size-check:\s*table\b")
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "src" / "lightnets"


@dataclass(frozen=True)
class Offender:
    path: Path
    line: int  # 1 for a module
    name: str  # the function's qualified name; "" for a module
    lines: int
    limit: int

    def __str__(self) -> str:
        what = f"function {self.name}" if self.name else "module"
        return f"{self.path}:{self.line}: {what} has {self.lines} lines (> {self.limit})"


def is_table_module(text: str) -> bool:
    """True when the module carries the ``# size-check: table`` marker on a line of its own."""
    return any(TABLE_MARKER.match(line) for line in text.splitlines())


def function_sizes(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(qualified name, def line, lines from def to end) for every function and method in ``tree``."""
    sizes: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                sizes.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return sizes


def check_file(path: Path, shown: Path) -> list[Offender]:
    """The offenders in one module (``shown`` is the path printed for it)."""
    text = path.read_text(encoding="utf-8")
    found: list[Offender] = []
    n_lines = len(text.splitlines())
    if n_lines > MAX_MODULE_LINES and not is_table_module(text):
        found.append(Offender(shown, 1, "", n_lines, MAX_MODULE_LINES))
    for name, line, size in function_sizes(ast.parse(text, filename=str(path))):
        if size > MAX_FUNCTION_LINES:
            found.append(Offender(shown, line, name, size, MAX_FUNCTION_LINES))
    return found


def check_tree(root: Path) -> list[Offender]:
    """Every offender under ``root``, modules in path order."""
    found: list[Offender] = []
    for path in sorted(root.rglob("*.py")):
        found.extend(check_file(path, _shown(path)))
    return found


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it is under it (src/lightnets/... from the repo root)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else DEFAULT_ROOT
    if not root.is_dir():
        print(f"check_size: not a folder: {root}", file=sys.stderr)
        return 2
    offenders = check_tree(root)
    for offender in offenders:
        print(offender)
    modules = sum(1 for o in offenders if not o.name)
    print(f"{modules} module(s) over {MAX_MODULE_LINES} lines, {len(offenders) - modules} function(s) over "
          f"{MAX_FUNCTION_LINES} lines", file=sys.stderr)
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())

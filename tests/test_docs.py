"""The documentation site builds with `mkdocs build --strict`, and documents every public name."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"


def test_mkdocs_build_strict(tmp_path):
    # Strict: a broken link, a missing anchor, an unresolved [`rubix_eqx.X`][] reference
    # or a guide missing from the nav fails the build.
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a hung build, not a speed goal (those live in benchmarks/)
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    assert (tmp_path / "site" / "reference" / "pipeline" / "index.html").exists(), output


def _exported(path: Path, namespace: str) -> list[tuple[str, ...]]:
    """Public names of a package `__init__.py` (`from ._x import Y as Y`), or the public
    functions and classes defined in a module: for each, the paths it may be documented
    under (a re-export such as `rx.Galaxy`, which is `rx.galaxy.Galaxy`, is documented once)."""
    tree = ast.parse(path.read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is not None:
            source = node.module.split(".")[0]
            for alias in node.names:
                if alias.asname and not alias.asname.startswith("_"):
                    paths = (f"{namespace}.{alias.asname}", f"rubix_eqx.{alias.asname}")
                    if not source.startswith("_"):
                        paths += (f"rubix_eqx.{source}.{alias.asname}",)
                    names.append(paths)
        elif (
            path.name != "__init__.py"
            and isinstance(node, ast.FunctionDef | ast.ClassDef)
            and not node.name.startswith("_")
        ):
            names.append((f"{namespace}.{node.name}", f"rubix_eqx.{node.name}"))
    return names


def test_reference_covers_public_names():
    documented = set()
    for page in REFERENCE.glob("*.md"):
        documented |= set(re.findall(r"^::: *(\S+)", page.read_text(), flags=re.MULTILINE))
    package = ROOT / "rubix_eqx"
    namespaces = {"rubix_eqx": package / "__init__.py"}
    for sub in sorted(package.iterdir()):
        if sub.name.startswith("_"):
            continue
        if (sub / "__init__.py").exists():
            namespaces[f"rubix_eqx.{sub.name}"] = sub / "__init__.py"
        elif sub.suffix == ".py" and sub.stem != "cli":
            namespaces[f"rubix_eqx.{sub.stem}"] = sub
    missing = [
        paths[0]
        for namespace, path in namespaces.items()
        for paths in _exported(path, namespace)
        if not documented.intersection(paths)
    ]
    assert not missing, (
        "public names without a `::: name` entry in docs/reference/*.md: " + ", ".join(missing)
    )

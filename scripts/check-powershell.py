#!/usr/bin/env python3
"""Syntax check for every PowerShell script in the repository.

Parses each ``*.ps1`` under the repository (the host scripts in
``aetherv-hyperv/assets/powershell`` and the deployment helpers in
``aetherv-hyperv/assets/deploy``, and any other) with the tree-sitter-powershell grammar and
reports every ERROR or MISSING node as ``file:line:column``. A self-test (a broken snippet
must be detected, a correct one must pass) always runs first, so a checker that silently
accepts everything fails instead.

Usage: scripts/check-powershell.py [--self-test] [--root DIR] [FILE ...]

Exit status: 0 when every script parses, 1 when any does not, 2 when the self-test or the
setup fails. The last line printed is ``N passed, M failed``.
Requires the packages pinned in scripts/requirements-test.txt (tree-sitter,
tree-sitter-powershell).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Directories never searched for scripts.
SKIP_DIRS = {".git", ".venv", "target", "node_modules", "__pycache__"}

# A script the grammar must reject (unclosed condition and block) and one it must accept.
BROKEN_SNIPPET = b"if ($x -eq 1 {\n    Write-Output 'never closed'\n"
VALID_SNIPPET = (
    b"Set-StrictMode -Version Latest\n"
    b"$ErrorActionPreference = 'Stop'\n"
    b"try { $r = [Console]::In.ReadToEnd() | ConvertFrom-Json } catch { exit 1 }\n"
    b"foreach ($p in @(1, 2)) { if ($p -gt 1) { Write-Output \"p=$p\" } }\n"
)


def make_parser():
    """A parser for PowerShell, or exits with status 2 and a hint when the packages are missing."""
    try:
        import tree_sitter
        import tree_sitter_powershell
    except ImportError as e:
        print(
            f"error: {e}; install the pinned packages: pip install -r scripts/requirements-test.txt",
            file=sys.stderr,
        )
        sys.exit(2)
    language = tree_sitter.Language(tree_sitter_powershell.language())
    return tree_sitter.Parser(language)


def problems(parser, source: bytes) -> list[tuple[int, int, str]]:
    """Every ERROR and MISSING node as (line, column, description), 1-based."""
    tree = parser.parse(source)
    found = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if not node.has_error and not node.is_missing:
            continue
        row, col = node.start_point
        if node.is_missing:
            found.append((row + 1, col + 1, f"missing {node.type!r}"))
        elif node.is_error:
            snippet = source[node.start_byte : min(node.end_byte, node.start_byte + 40)]
            text = snippet.decode("utf-8", "replace").splitlines()[0] if snippet else ""
            found.append((row + 1, col + 1, f"syntax error near {text!r}"))
        stack.extend(reversed(node.children))
    found.sort()
    return found


def self_test(parser) -> bool:
    """The checker must reject a broken snippet and accept a valid one."""
    ok = True
    if not problems(parser, BROKEN_SNIPPET):
        print("self-test failed: a broken snippet was not detected", file=sys.stderr)
        ok = False
    valid = problems(parser, VALID_SNIPPET)
    if valid:
        print(f"self-test failed: a valid snippet was rejected: {valid}", file=sys.stderr)
        ok = False
    return ok


def find_scripts(root: Path) -> list[Path]:
    scripts = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if name.lower().endswith(".ps1"):
                scripts.append(Path(directory) / name)
    return scripts


def main() -> int:
    default_root = Path(__file__).resolve().parent.parent
    parser_args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser_args.add_argument("--self-test", action="store_true", help="run only the self-test")
    parser_args.add_argument("--root", type=Path, default=default_root, help="repository root")
    parser_args.add_argument("files", nargs="*", type=Path, help="check these files instead")
    args = parser_args.parse_args()

    parser = make_parser()
    if not self_test(parser):
        print("0 passed, 1 failed")
        return 2
    if args.self_test:
        print("self-test passed")
        print("1 passed, 0 failed")
        return 0

    scripts = args.files or find_scripts(args.root)
    passed = failed = 0
    for path in scripts:
        try:
            source = path.read_bytes()
        except OSError as e:
            print(f"{path}: cannot read: {e}")
            failed += 1
            continue
        shown = path.relative_to(args.root) if path.is_relative_to(args.root) else path
        found = problems(parser, source)
        if found:
            failed += 1
            for line, column, what in found:
                print(f"{shown}:{line}:{column}: {what}")
        else:
            passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

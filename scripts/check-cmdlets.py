#!/usr/bin/env python3
"""Check every PowerShell script's cmdlet calls against Microsoft's cmdlet reference.

Parses each ``*.ps1`` under the repository with the tree-sitter-powershell grammar (as
scripts/check-powershell.py does) and looks at every command invocation whose name is a
Verb-Noun command, optionally module-qualified (``Hyper-V\\Get-VM``). The reference is
``scripts/reference/powershell-cmdlets.json`` (Microsoft's platyPS cmdlet reference for
Windows Server 2019 and Windows PowerShell 5.1, extracted to JSON; see its README). It reports:

* an unknown cmdlet: a Verb-Noun command that is neither in the reference, nor a function
  defined in the same script or in ``aetherv-hyperv/assets/powershell/AethervCommon.ps1``
  (which every host script dot-sources), nor in the small ``ALLOWED_EXTRA`` list below;
* a wrong or unknown module qualifier (``Hyper-V\\X`` where X belongs to another module);
* an unknown parameter, or a prefix that matches more than one parameter (PowerShell accepts
  any unambiguous prefix of a parameter name or alias; the common parameters such as
  ``-ErrorAction`` or ``-WhatIf`` are always allowed);
* named parameters that no single parameter set takes together (a parameter whose ``sets``
  holds ``(All)`` is in every set);
* a literal argument (bareword or quoted string without variables) outside a parameter's
  ``accepted_values`` when the reference lists them (case-insensitive; a comma-separated
  list is checked element by element).

``-Name:value`` counts as the parameter ``Name``. Splatting counts when the splatted variable
is assigned a literal hashtable exactly once in the same script: its keys, plus keys added
later with a literal index or member (``$p['Key'] = ...`` or ``$p.Key = ...``), are the named
parameters. Any other splatting (a hashtable built from variables, ``$p.Add(...)``, computed
keys, an array, a variable assigned twice) is skipped.

Not covered: positional arguments (not bound to a parameter), mandatory parameters that are
missing, aliases of commands (``where``, ``%``), parameters of the project's own functions,
argument types, anything dynamic (``& $command``), and what a cmdlet does at run time.

A self-test always runs first: one snippet per kind of mistake must be reported and a correct
snippet must pass, so a checker that silently accepts everything fails instead.

Usage: scripts/check-cmdlets.py [--self-test] [--root DIR] [FILE ...]

Exit status: 0 when every script passes, 1 when any does not, 2 when the self-test or the
setup fails. Output is one ``file:line:column: message`` line per problem and a last line
``N passed, M failed``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path


def _syntax_checker():
    """scripts/check-powershell.py, whose parser set-up and script discovery this check shares."""
    path = Path(__file__).resolve().parent / "check-powershell.py"
    spec = importlib.util.spec_from_file_location("check_powershell", path)
    if spec is None or spec.loader is None:
        print(f"error: cannot load {path}", file=sys.stderr)
        sys.exit(2)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SYNTAX = _syntax_checker()
make_parser = _SYNTAX.make_parser
find_scripts = _SYNTAX.find_scripts
REFERENCE = Path("scripts") / "reference" / "powershell-cmdlets.json"
COMMON_SCRIPT = Path("aetherv-hyperv") / "assets" / "powershell" / "AethervCommon.ps1"

# Common parameters every cmdlet accepts (with their aliases). The reference does not list
# them. WhatIf and Confirm are accepted everywhere as well, as the task asks.
COMMON_PARAMETERS = {
    "Verbose": ["vb"],
    "Debug": ["db"],
    "ErrorAction": ["ea"],
    "WarningAction": ["wa"],
    "InformationAction": ["infa"],
    "ErrorVariable": ["ev"],
    "WarningVariable": ["wv"],
    "InformationVariable": ["iv"],
    "OutVariable": ["ov"],
    "OutBuffer": ["ob"],
    "PipelineVariable": ["pv"],
    "WhatIf": ["wi"],
    "Confirm": ["cf"],
}

# Values of the common parameters whose type is ActionPreference (PowerShell 5.1).
ACTION_PREFERENCE = ["SilentlyContinue", "Stop", "Continue", "Inquire", "Ignore", "Suspend"]
COMMON_ACCEPTED = {"ErrorAction": ACTION_PREFERENCE, "WarningAction": ACTION_PREFERENCE, "InformationAction": ACTION_PREFERENCE}

# Commands Windows PowerShell 5.1 has that the reference does not describe. Each entry says
# why; parameters of these commands are not checked. Keep it minimal.
ALLOWED_EXTRA: dict[str, str] = {}

VERB_NOUN = re.compile(r"^[A-Za-z]+-[A-Za-z0-9]+$")
MODULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9.-]*$")
PLAIN_WORD = re.compile(r"^[A-Za-z0-9_.+-]+$")


class Cmdlet:
    """One cmdlet of the reference, with lookups for parameters and parameter sets."""

    def __init__(self, name: str, data: dict):
        self.name = name
        self.module = data["module"]
        self.set_names = [s["name"] for s in data["parameter_sets"]]
        # Parameter name -> set of parameter-set names it belongs to (None: every set).
        self.membership: dict[str, set[str] | None] = {}
        self.accepted: dict[str, list[str]] = {}
        self.switch: set[str] = set()
        self.lookup: dict[str, str] = {}  # lowercase name or alias -> canonical name
        listed: dict[str, set[str]] = {}
        for s in data["parameter_sets"]:
            for p in s["parameters"]:
                listed.setdefault(p["name"], set()).add(s["name"])
        for pname, pdata in data["parameters"].items():
            sets = set(pdata.get("sets") or [])
            if "(All)" in sets or not self.set_names:
                member = None
            else:
                member = set(listed.get(pname, set()))
                for sname in sets:
                    # Some provider-specific set names are listed shortened ("LiteralPath" for
                    # "LiteralPath - FileSystem provider").
                    member |= {n for n in self.set_names if n == sname or n.startswith(sname + " ")}
                if not member:
                    member = None  # the reference does not say; do not guess
            self.membership[pname] = member
            if pdata.get("accepted_values"):
                self.accepted[pname] = list(pdata["accepted_values"])
            if (pdata.get("type") or "").split(".")[-1] == "SwitchParameter":
                self.switch.add(pname)
            self.lookup[pname.lower()] = pname
            for alias in pdata.get("aliases") or []:
                self.lookup.setdefault(alias.lower(), pname)
        for pname, aliases in COMMON_PARAMETERS.items():
            if pname.lower() not in self.lookup:
                self.membership[pname] = None
                self.lookup[pname.lower()] = pname
                if pname in ("Verbose", "Debug", "WhatIf", "Confirm"):
                    self.switch.add(pname)
                if pname in COMMON_ACCEPTED:
                    self.accepted[pname] = COMMON_ACCEPTED[pname]
            for alias in aliases:
                self.lookup.setdefault(alias, pname)

    def resolve(self, written: str) -> tuple[str | None, str | None]:
        """(canonical parameter, None) or (None, problem) for a name as written."""
        key = written.lower()
        if key in self.lookup:
            return self.lookup[key], None
        matches = sorted({canon for k, canon in self.lookup.items() if k.startswith(key)})
        if len(matches) == 1:
            return matches[0], None
        if not matches:
            return None, f"{self.name}: unknown parameter -{written}"
        return None, f"{self.name}: ambiguous parameter -{written} (matches {', '.join('-' + m for m in matches)})"


class Reference:
    def __init__(self, path: Path):
        data = json.loads(path.read_text(encoding="utf-8"))
        self.cmdlets = {name.lower(): Cmdlet(name, c) for name, c in data["cmdlets"].items()}
        self.modules = {c.module.lower(): c.module for c in self.cmdlets.values()}


def function_names(root) -> set[str]:
    names = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "function_statement":
            for child in node.children:
                if child.type == "function_name":
                    names.add(child.text.decode("utf-8", "replace").lower())
        stack.extend(node.children)
    return names


def walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def unquote(text: str) -> str | None:
    """The value of a literal bareword or quoted string, or None when it is not a plain literal."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1]
        if text[0] == '"' and ("$" in inner or "`" in inner):
            return None
        if "'" in inner or '"' in inner:
            return None
        return inner
    if PLAIN_WORD.match(text) and not text.startswith("-"):
        return text
    return None


def literal_values(text: str) -> list[str] | None:
    """Values of a literal argument (comma-separated list allowed), or None when not literal."""
    if not text or "$" in text or "(" in text or "@" in text:
        return None
    values = []
    for part in text.split(","):
        v = unquote(part)
        if v is None:
            return None
        values.append(v)
    return values


def hashtable_keys(hash_node) -> list[tuple[str, str | None, object]] | None:
    """[(key, value text, node)] of a literal hashtable, or None when a key is not literal."""
    entries = []
    for entry in walk(hash_node):
        if entry.type != "hash_entry":
            continue
        # Only entries of this hashtable, not of nested ones.
        parent = entry.parent
        while parent is not None and parent.type != "hash_literal_expression":
            parent = parent.parent
        if parent != hash_node:
            continue
        key_node = next((c for c in entry.children if c.type == "key_expression"), None)
        if key_node is None:
            return None
        key = unquote(key_node.text.decode("utf-8", "replace"))
        if key is None:
            return None
        value_node = None
        seen_eq = False
        for c in entry.children:
            if c.type == "=":
                seen_eq = True
            elif seen_eq and c.is_named:
                value_node = c
                break
        value = value_node.text.decode("utf-8", "replace") if value_node is not None else None
        entries.append((key, value, key_node))
    return entries


def single_hashtable(node):
    """The hash_literal_expression a value node consists of, or None."""
    n = node
    while n is not None:
        if n.type == "hash_literal_expression":
            return n
        named = [c for c in n.children if c.is_named]
        if len(named) != 1 or len(n.children) != 1:
            return None
        n = named[0]
    return None


def splat_tables(root, source: bytes) -> dict[str, list | None]:
    """Variable name (lowercase, without sigil) -> literal hashtable entries, or None if unusable."""
    tables: dict[str, list | None] = {}
    extra: dict[str, list] = {}
    for node in walk(root):
        if node.type != "assignment_expression":
            continue
        left = node.child_by_field_name("left") or node.children[0]
        op = next((c for c in node.children if c.type == "assignement_operator"), None)
        value = node.child_by_field_name("value")
        ltext = left.text.decode("utf-8", "replace").strip()
        whole = re.fullmatch(r"\$([A-Za-z_][\w]*)", ltext)
        member = re.fullmatch(r"\$([A-Za-z_][\w]*)(?:\[\s*('[^'$`]*'|\"[^\"$`]*\")\s*\]|\.([A-Za-z_]\w*))", ltext)
        is_plain = op is not None and op.text.decode() == "="
        if whole:
            name = whole.group(1).lower()
            table = single_hashtable(value) if (value is not None and is_plain) else None
            entries = hashtable_keys(table) if table is not None else None
            if name in tables or entries is None:
                tables[name] = None
            else:
                tables[name] = entries
        elif member and is_plain:
            name = member.group(1).lower()
            key = member.group(2)[1:-1] if member.group(2) else member.group(3)
            vtext = value.text.decode("utf-8", "replace") if value is not None else None
            extra.setdefault(name, []).append((key, vtext, left))
        else:
            m = re.match(r"\$([A-Za-z_]\w*)", ltext)
            if m:
                tables[m.group(1).lower()] = None  # changed in a way we do not follow
    text = source.decode("utf-8", "replace")
    for name in list(tables):
        if tables[name] is None:
            continue
        if re.search(r"\$" + re.escape(name) + r"\s*(\.\s*(Add|Remove|Clear|Set_Item)\s*\(|\[[^\]]*\$)", text, re.I):
            tables[name] = None
            continue
        tables[name] = tables[name] + extra.get(name, [])
    return tables


def command_name_text(command) -> str | None:
    name_node = command.child_by_field_name("command_name")
    if name_node is None:
        return None
    if name_node.type == "command_name":
        return name_node.text.decode("utf-8", "replace")
    if name_node.type == "command_name_expr":
        inner = [c for c in name_node.children if c.is_named]
        if len(inner) == 1 and inner[0].type == "path_command_name":
            return inner[0].text.decode("utf-8", "replace")
    return None


def check_source(parser, reference: Reference, source: bytes, shared: set[str]) -> tuple[list, int]:
    """(problems as (line, column, message), number of checked invocations)."""
    tree = parser.parse(source)
    defined = function_names(tree.root_node) | shared
    tables = splat_tables(tree.root_node, source)
    found = []
    checked = 0

    def report(node, message):
        row, col = node.start_point
        found.append((row + 1, col + 1, message))

    for command in walk(tree.root_node):
        if command.type != "command":
            continue
        full = command_name_text(command)
        if full is None:
            continue
        module = None
        name = full
        if "\\" in full:
            module, _, name = full.rpartition("\\")
            if not MODULE_NAME.match(module):
                continue  # a path, not a module qualifier
        if not VERB_NOUN.match(name):
            continue
        name_node = command.child_by_field_name("command_name")
        cmdlet = reference.cmdlets.get(name.lower())
        if cmdlet is None:
            if module is None and name.lower() in defined:
                continue
            if name in ALLOWED_EXTRA or name.lower() in {k.lower() for k in ALLOWED_EXTRA}:
                continue
            checked += 1
            report(name_node, f"unknown cmdlet {full}")
            continue
        checked += 1
        if module is not None and module.lower() != cmdlet.module.lower():
            if module.lower() in reference.modules:
                report(name_node, f"{cmdlet.name} is in module {cmdlet.module}, not {module}")
            else:
                report(name_node, f"unknown module qualifier {module} ({cmdlet.name} is in module {cmdlet.module})")
        if module is None and name.lower() in defined:
            continue  # a same-named function shadows the cmdlet

        used: list[tuple[str, object]] = []  # (canonical, node)
        elements = command.child_by_field_name("command_elements")
        children = list(elements.children) if elements is not None else []

        def check_value(canon, text, node):
            allowed = cmdlet.accepted.get(canon)
            if not allowed or text is None:
                return
            values = literal_values(text)
            if values is None:
                return
            lower = {a.lower() for a in allowed}
            for v in values:
                if v.lower() not in lower:
                    report(node, f"{cmdlet.name} -{canon}: {v!r} is not one of {', '.join(allowed)}")

        i = 0
        while i < len(children):
            child = children[i]
            if child.type == "command_parameter":
                written = child.text.decode("utf-8", "replace")[1:].rstrip(":")
                colon = child.text.decode("utf-8", "replace").endswith(":")
                j = i + 1
                if j < len(children) and children[j].type == "command_argument_sep" and ":" in children[j].text.decode():
                    colon = True
                canon, problem = cmdlet.resolve(written)
                if problem:
                    report(child, problem)
                else:
                    used.append((canon, child))
                takes_value = colon or (canon is not None and canon not in cmdlet.switch)
                if takes_value:
                    # The value: the following argument nodes up to the next real separator.
                    while j < len(children) and children[j].type == "command_argument_sep":
                        j += 1
                    parts = []
                    while j < len(children) and children[j].type not in ("command_parameter", "redirection", "stop_parsing"):
                        if children[j].type == "command_argument_sep":
                            if children[j].text.strip() or children[j].end_byte > children[j].start_byte:
                                break
                        else:
                            parts.append(children[j])
                        j += 1
                    if parts and canon is not None:
                        text = source[parts[0].start_byte : parts[-1].end_byte].decode("utf-8", "replace")
                        check_value(canon, text, parts[0])
                    i = j
                    continue
                i += 1
                continue
            if child.type == "array_literal_expression" or child.type == "variable":
                var = child.text.decode("utf-8", "replace").strip()
                if var.startswith("@") and re.fullmatch(r"@[A-Za-z_]\w*", var):
                    entries = tables.get(var[1:].lower())
                    if entries:
                        for key, vtext, knode in entries:
                            canon, problem = cmdlet.resolve(key)
                            if problem:
                                report(child, f"{problem} (key {key!r} of splatted @{var[1:]}, line {knode.start_point[0] + 1})")
                            else:
                                used.append((canon, child))
                                check_value(canon, vtext, child)
            i += 1

        # Parameter sets: the named parameters must all be in one set.
        if cmdlet.set_names:
            possible = set(cmdlet.set_names)
            seen = []
            for canon, node in used:
                member = cmdlet.membership.get(canon)
                if member is None or canon in seen:
                    continue
                seen.append(canon)
                possible &= member
            if not possible:
                where = command.child_by_field_name("command_name")
                report(
                    where,
                    f"{cmdlet.name}: no parameter set takes {', '.join('-' + s for s in seen)} together",
                )
    found.sort()
    return found, checked


# Self-test: each snippet must be reported with a message containing the marker.
MISTAKES = [
    ("unknown cmdlet", b"Get-VMThatDoesNotExist -Name x\n", "unknown cmdlet"),
    ("wrong module qualifier", b"Hyper-V\\Get-ChildItem -Path C:\\\n", "is in module"),
    ("unknown parameter", b"Hyper-V\\Get-VM -Nonsense x\n", "unknown parameter -Nonsense"),
    ("ambiguous prefix", b"Hyper-V\\New-VM -Name x -C\n", "ambiguous parameter -C"),
    ("parameters from two sets", b"Hyper-V\\New-VM -Name x -NoVHD -NewVHDPath C:\\a.vhdx -NewVHDSizeBytes 1GB\n", "no parameter set"),
    ("literal outside accepted values", b"Hyper-V\\Set-VMFirmware -VMName x -EnableSecureBoot 'Maybe'\n", "is not one of"),
    ("common parameter value", b"Get-Item -Path x -ErrorAction Silently\n", "is not one of"),
    ("bad splatted key", b"$p = @{ Name = 'x'; Bogus = 1 }\nHyper-V\\New-VM @p\n", "key 'Bogus'"),
    ("bad key added to a splatted table", b"$p = @{ Name = 'x' }\n$p['Bogus'] = 1\nHyper-V\\New-VM @p\n", "key 'Bogus'"),
]
VALID_SNIPPET = (
    b"function Get-Thing { param($x) $x }\n"
    b"Get-Thing -x 1\n"
    b"$p = @{ Name = 'x'; Generation = 2; MemoryStartupBytes = 1GB }\n"
    b"$p['SwitchName'] = 'External'\n"
    b"$vm = Hyper-V\\New-VM @p -Force:$true -ErrorAction Stop\n"
    b"Hyper-V\\Set-VMFirmware -VM $vm -SecureBootTemplate MicrosoftUEFICertificateAuthority -EnableSecureBoot On\n"
    b"Get-ChildItem -LiteralPath 'C:\\' -File -Recurse -ea SilentlyContinue | Out-Null\n"
    b"Hyper-V\\Stop-VM -VM $vm -TurnOff -Force -WhatIf\n"
    b"Microsoft.PowerShell.Management\\Test-Path -Path $env:TEMP -PathType Container\n"
    b"$q = @{ Path = 'x' }; $q.Add($k, 1); Hyper-V\\New-VM @q\n"
)


def self_test(parser, reference: Reference) -> bool:
    ok = True
    for what, snippet, marker in MISTAKES:
        found, _ = check_source(parser, reference, snippet, set())
        if not any(marker in message for _, _, message in found):
            print(f"self-test failed: {what} was not detected (got {found})", file=sys.stderr)
            ok = False
    found, _ = check_source(parser, reference, VALID_SNIPPET, set())
    if found:
        print(f"self-test failed: a correct snippet was rejected: {found}", file=sys.stderr)
        ok = False
    return ok


def main() -> int:
    default_root = Path(__file__).resolve().parent.parent
    parser_args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser_args.add_argument("--self-test", action="store_true", help="run only the self-test")
    parser_args.add_argument("--root", type=Path, default=default_root, help="repository root")
    parser_args.add_argument("files", nargs="*", type=Path, help="check these files instead")
    args = parser_args.parse_args()

    parser = make_parser()
    try:
        reference = Reference(default_root / REFERENCE)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot load the reference {REFERENCE}: {e}", file=sys.stderr)
        print("0 passed, 1 failed")
        return 2
    if not self_test(parser, reference):
        print("0 passed, 1 failed")
        return 2
    if args.self_test:
        print("self-test passed")
        print("1 passed, 0 failed")
        return 0

    shared: set[str] = set()
    common = args.root / COMMON_SCRIPT
    if common.is_file():
        shared = function_names(parser.parse(common.read_bytes()).root_node)

    scripts = args.files or find_scripts(args.root)
    passed = failed = invocations = 0
    for path in scripts:
        try:
            source = path.read_bytes()
        except OSError as e:
            print(f"{path}: cannot read: {e}")
            failed += 1
            continue
        shown = path.relative_to(args.root) if path.is_relative_to(args.root) else path
        found, checked = check_source(parser, reference, source, shared)
        invocations += checked
        if found:
            failed += 1
            for line, column, what in found:
                print(f"{shown}:{line}:{column}: {what}")
        else:
            passed += 1
    print(f"{invocations} cmdlet invocations checked in {passed + failed} scripts")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Dockerfiles read as the builder reads them: instructions, stages, COPY sources and the ignore file."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "infra").glob("*.Dockerfile"))


@dataclass
class Instruction:
    """One instruction: keyword, its arguments (continuation lines joined), the line it starts on."""

    keyword: str
    args: str
    line: int


@dataclass
class Copy:
    """A COPY or ADD: its sources (relative to the build context) and destination."""

    sources: list[str]
    dest: str
    from_stage: str | None
    line: int


@dataclass
class Stage:
    """One FROM ... stage."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def last(self, keyword: str) -> Instruction | None:
        """The stage's last instruction of that kind."""
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None

    @property
    def copies(self) -> list[Copy]:
        """COPY and ADD instructions of the stage."""
        return [parse_copy(i) for i in self.instructions if i.keyword in ("COPY", "ADD")]

    @property
    def env(self) -> dict[str, str]:
        """ENV settings of the stage (later ones win)."""
        out: dict[str, str] = {}
        for i in self.instructions:
            if i.keyword == "ENV":
                out.update(parse_env(i.args))
        return out


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions, comments dropped and `\\` continuations joined."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction is dropped by the builder too
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    return out


def stages(path: Path) -> list[Stage]:
    """The build stages, ARG defaults before the first FROM substituted into the base image."""
    args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instructions(path):
        if ins.keyword == "ARG" and not result:
            name, _, default = ins.args.partition("=")
            args[name.strip()] = default.strip()
        elif ins.keyword == "FROM":
            parts = ins.args.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], ""), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append(Stage(base, name))
        elif result:
            result[-1].instructions.append(ins)
    return result


def parse_copy(ins: Instruction) -> Copy:
    """Sources and destination of a COPY/ADD in shell or JSON form."""
    rest, from_stage = ins.args, None
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        if flag.startswith("--from="):
            from_stage = flag.split("=", 1)[1]
        rest = rest.strip()
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    return Copy(words[:-1], words[-1], from_stage, ins.line)


def parse_env(args: str) -> dict[str, str]:
    """`ENV A=1 B="x y"` (or the legacy `ENV A 1`) as a dict."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def exec_form(ins: Instruction | None) -> list[str] | None:
    """The JSON array of an exec-form CMD/ENTRYPOINT, or None for shell form."""
    if ins is None or not ins.args.startswith("["):
        return None
    value = json.loads(ins.args)
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def image_files(path: Path) -> dict[str, Path]:
    """Path inside the final image -> file in the repository, for every file COPY'd from the context."""
    files: dict[str, Path] = {}
    for copy in stages(path)[-1].copies:
        if copy.from_stage:
            continue
        for src in copy.sources:
            host = ROOT / src
            if copy.dest.endswith("/") or len(copy.sources) > 1:
                files[copy.dest.rstrip("/") + "/" + Path(src).name] = host
            else:
                files[copy.dest] = host
    return files


def ignore_file(path: Path) -> Path:
    """The Dockerfile's own ignore file (BuildKit reads `<Dockerfile>.dockerignore` next to it)."""
    return path.with_name(path.name + ".dockerignore")


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `rel` out (last matching pattern wins; `!` re-includes)."""
    parts = Path(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            result = not negate
    return result


def ignore_patterns(path: Path) -> list[str]:
    """The patterns of an ignore file, comments and blank lines dropped."""
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]

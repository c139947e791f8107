"""``ciclovita validate``: every problem in campaigns, segments, lifecycle and templates.

Checks, each reported with file, line and field:

* every YAML file: syntax, fields, types, accepted values, references between files;
* every template a campaign names, in every locale it offers and for every A/B variant: the
  files exist (HTML and text), parse, use only variables the campaign's context provides
  (``context_variables``), and render with a sample context (this catches a wrong attribute,
  a bad filter argument, an error in a shared layout or partial);
* subjects and preheaders: parse, use only known variables, render.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, TemplateError, TemplateNotFound, TemplateSyntaxError, meta, nodes

from ciclovita.authoring.samples import sample_details, sample_recipient
from ciclovita.campaigns.catalog import RESERVED, LoadedCampaign, collect_catalog
from ciclovita.campaigns.spec import localized
from ciclovita.errors import Problem, RenderError
from ciclovita.links import LinkBuilder
from ciclovita.rendering.context import Brand, build_context, context_variables
from ciclovita.rendering.environment import make_environment, text_environment
from ciclovita.rendering.render import Renderer, template_files
from ciclovita.vocabulary import ConsentTopic

JINJA_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop"})
SAMPLE_AS_OF = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def _defined_here(ast: nodes.Template) -> set[str]:
    """Names a template defines for itself: imports, macros, top-level assignments.

    Jinja's static analysis treats blocks as separate scopes and reports names imported at
    the top of a child template as undeclared inside its blocks, although they render.
    """
    names: set[str] = set()
    for node in ast.find_all((nodes.FromImport, nodes.Import, nodes.Macro, nodes.Assign)):
        if isinstance(node, nodes.FromImport):
            names.update(n[1] if isinstance(n, tuple) else n for n in node.names)
        elif isinstance(node, nodes.Import):
            names.add(node.target)
        elif isinstance(node, nodes.Macro):
            names.add(node.name)
        elif isinstance(node, nodes.Assign):
            names.update(n.name for n in node.target.find_all(nodes.Name))
    return names


def _first_use(ast: nodes.Template, name: str) -> int | None:
    for node in ast.find_all(nodes.Name):
        if node.name == name and node.ctx == "load":
            return int(node.lineno)
    return None


class TemplateChecker:
    """Checks templates of one templates directory, each file parsed once."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env: Environment = make_environment(templates_dir)
        self.text_env: Environment = text_environment()
        self._parsed: dict[str, nodes.Template | Problem] = {}

    def path(self, name: str) -> str:
        return str(self.templates_dir / name)

    def parse(self, name: str) -> nodes.Template | Problem:
        if name not in self._parsed:
            try:
                source = (self.templates_dir / name).read_text(encoding="utf-8")
                self._parsed[name] = self.env.parse(source, name, self.path(name))
            except TemplateSyntaxError as exc:
                self._parsed[name] = Problem(
                    self.path(name), f"template syntax: {exc.message}", line=exc.lineno
                )
            except (OSError, UnicodeDecodeError) as exc:
                self._parsed[name] = Problem(self.path(name), f"cannot read template: {exc}")
        return self._parsed[name]

    def family(self, name: str) -> list[str]:
        """The template and every template it extends, includes or imports (recursively)."""
        seen: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.append(current)
            ast = self.parse(current)
            if isinstance(ast, nodes.Template):
                pending.extend(ref for ref in meta.find_referenced_templates(ast) if ref)
        return seen

    def check_file(self, name: str, allowed: frozenset[str], campaign: str) -> list[Problem]:
        problems: list[Problem] = []
        for member in self.family(name):
            if not (self.templates_dir / member).is_file():
                problems.append(Problem(self.path(member), f"template not found (used by {name})"))
                continue
            ast = self.parse(member)
            if isinstance(ast, Problem):
                problems.append(ast)
                continue
            used = self.undeclared(ast, self.path(member))
            if isinstance(used, Problem):
                problems.append(used)
                continue
            unknown = used - allowed - JINJA_GLOBALS
            for variable in sorted(unknown - _defined_here(ast)):
                problems.append(
                    Problem(
                        self.path(member),
                        f"uses {variable!r}, which campaign {campaign!r} does not provide "
                        f"(available: {', '.join(sorted(allowed))})",
                        line=_first_use(ast, variable),
                        column=variable,
                    )
                )
        return problems

    def undeclared(
        self, ast: nodes.Template, source: str, line: int | None = None, field: str | None = None
    ) -> set[str] | Problem:
        """Variables a template reads from its context; an unknown filter or test is a Problem
        (Jinja finds those when it compiles)."""
        try:
            return set(meta.find_undeclared_variables(ast))
        except TemplateSyntaxError as exc:
            known = ", ".join(sorted(self.env.filters))
            hint = f" (filters: {known})" if "filter" in (exc.message or "") else ""
            return Problem(
                source, f"template: {exc.message}{hint}", line=line or exc.lineno, column=field
            )

    def check_inline(
        self, text: str, allowed: frozenset[str], source: str, line: int | None, field: str
    ) -> list[Problem]:
        try:
            ast = self.text_env.parse(text)
        except TemplateSyntaxError as exc:
            return [Problem(source, f"template syntax: {exc.message}", line=line, column=field)]
        used = self.undeclared(ast, source, line, field)
        if isinstance(used, Problem):
            return [used]
        return [
            Problem(
                source,
                f"uses {variable!r}, which this campaign does not provide "
                f"(available: {', '.join(sorted(allowed))})",
                line=line,
                column=field,
            )
            for variable in sorted(used - allowed - JINJA_GLOBALS)
        ]


def _render_location(exc: BaseException, templates_dir: Path) -> tuple[str | None, int | None]:
    """The innermost template frame of a rendering error (Jinja rewrites tracebacks)."""
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(str(templates_dir)):
            found = (frame.filename, frame.lineno)
    return found


def check_campaign(
    campaign: LoadedCampaign, checker: TemplateChecker, renderer: Renderer
) -> list[Problem]:
    spec = campaign.spec
    source = str(campaign.source)
    allowed = context_variables(spec)
    problems: list[Problem] = []
    templates: list[tuple[str, str | int, str]] = [("content", "template", spec.content.template)]
    templates += [
        ("variants", index, variant.template)
        for index, variant in enumerate(spec.variants)
        if variant.template
    ]
    structural = False
    for where, key, template in templates:
        field = f"variants.{key}.template" if where == "variants" else "content.template"
        line = (
            campaign.line_of(where, key, "template")
            if where == "variants"
            else campaign.line_of("content", "template")
        )
        for locale in spec.content.locales:
            for name in template_files(template, locale):
                if not (checker.templates_dir / name).is_file():
                    problems.append(
                        Problem(
                            source,
                            f"missing template {checker.path(name)} for locale {str(locale)!r}",
                            line=line,
                            column=field,
                            value=template,
                        )
                    )
                    structural = True
                    continue
                found = checker.check_file(name, allowed, campaign.name)
                structural = structural or bool(found)
                problems.extend(found)
    texts: list[tuple[tuple[str | int, ...], object]] = [
        (("content", "subject"), spec.content.subject),
        (("content", "preheader"), spec.content.preheader),
    ]
    texts += [(("variants", i, "subject"), v.subject) for i, v in enumerate(spec.variants)]
    for path, text in texts:
        if not isinstance(text, str | dict):
            continue
        label = ".".join(str(part) for part in path)
        for locale in spec.content.locales:
            line = (
                campaign.line_of(*path, locale)
                if isinstance(text, dict)
                else campaign.line_of(*path)
            )
            found = checker.check_inline(
                localized(text, locale, spec.content.fallback_locale), allowed, source, line, label
            )
            structural = structural or bool(found)
            problems.extend(found)
    if structural:
        return _unique(problems)
    # a real render with a sample context: catches wrong attributes, filters, layout errors
    links = LinkBuilder("https://example.com", "validate")
    brand = Brand("Ciclovita", "ciao@example.com", website="https://example.com")
    for locale in spec.content.locales:
        for variant in spec.variant_names:
            context = build_context(
                recipient=sample_recipient(locale),
                campaign_name=campaign.name,
                campaign=spec,
                message_uid="validate",
                variant=variant,
                locale=locale,
                details=sample_details(campaign, locale, SAMPLE_AS_OF),
                links=links,
                brand=brand,
                unsubscribe_topic=spec.required_consent or ConsentTopic.MARKETING,
            )
            try:
                renderer.render(campaign.name, spec, variant, locale, context)
            except RenderError as exc:
                cause = exc.__cause__ or exc
                file, line = _render_location(cause, checker.templates_dir)
                field = exc.template
                if exc.template.endswith((".subject", ".preheader")):  # written in the YAML
                    key = exc.template.rsplit(".", 1)[1]
                    field = f"content.{key}"
                    file, line = None, campaign.line_of("content", key, locale)
                detail = (
                    str(cause)
                    if not isinstance(cause, TemplateNotFound)
                    else f"template not found: {cause}"
                )
                problems.append(
                    Problem(
                        file or source,
                        f"does not render for locale {str(locale)!r}, "
                        f"variant {variant!r}: {detail}",
                        line=line,
                        column=field,
                    )
                )
            except TemplateError as exc:  # pragma: no cover - Renderer wraps these
                problems.append(Problem(source, f"does not render: {exc}"))
    return _unique(problems)


def _unique(problems: Iterable[Problem]) -> list[Problem]:
    seen: set[Problem] = set()
    out = []
    for problem in problems:
        if problem not in seen:
            seen.add(problem)
            out.append(problem)
    return out


def _wanted(source: str, files: set[Path] | None, shared: set[Path]) -> bool:
    """A problem is reported when its file was asked for, or is shared by every campaign."""
    path = Path(source).resolve()
    return files is None or path in files or path in shared


def validate(paths: Sequence[Path], *, campaigns_dir: Path, templates_dir: Path) -> list[Problem]:
    """Every problem in the given files or directories (default: the campaigns directory)."""
    targets = list(paths) or [campaigns_dir]
    by_directory: dict[Path, set[Path] | None] = {}
    problems: list[Problem] = []
    for target in targets:
        if target.is_dir():
            by_directory[target.resolve()] = None
        elif target.is_file():
            directory = target.resolve().parent
            wanted = by_directory.setdefault(directory, set())
            if wanted is not None:
                wanted.add(target.resolve())
        else:
            problems.append(Problem(str(target), "no such file or directory"))
    checker = TemplateChecker(templates_dir)
    renderer = Renderer(templates_dir)
    for directory, files in by_directory.items():
        catalog, found = collect_catalog(directory)
        shared = {directory / name for name in RESERVED}
        problems.extend(p for p in found if _wanted(p.source, files, shared))
        for campaign in catalog.campaigns:
            if files is None or campaign.source.resolve() in files:
                problems.extend(check_campaign(campaign, checker, renderer))
    return _unique(problems)

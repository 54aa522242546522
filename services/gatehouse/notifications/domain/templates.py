"""Templates: named, versioned, per channel and locale, rendered in a Jinja2 sandbox.

Bodies are Jinja2 (`{{ first_name }}`) rendered by an `ImmutableSandboxedEnvironment` with
`StrictUndefined`: a template cannot reach Python internals (`{{ ''.__class__ }}`), cannot
change the values it is given, and a variable without a value is an error rather than an
empty string. HTML bodies are autoescaped; subjects and text bodies are not (they are not
HTML). Everything that can be checked is checked when the template is saved: syntax, only
declared variables used, no attribute or item starting with `_`, no include/import/extends
(there is nothing to include), and a trial render in the sandbox with every variable set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gatehouse.notifications.domain.addresses import SUBJECT_CHANNELS, TEXT_ONLY_CHANNELS, Channel
from gatehouse.runtime.errors import FieldViolation, InvalidArgument

TEMPLATE_SYNTAX_ERROR = "TEMPLATE_SYNTAX_ERROR"
TEMPLATE_VARIABLE_UNDECLARED = "TEMPLATE_VARIABLE_UNDECLARED"
TEMPLATE_UNSAFE = "TEMPLATE_UNSAFE"
TEMPLATE_RENDER_ERROR = "TEMPLATE_RENDER_ERROR"
TEMPLATE_VARIABLE_MISSING = "TEMPLATE_VARIABLE_MISSING"
TEMPLATE_TOO_LARGE = "TEMPLATE_TOO_LARGE"
INVALID_VARIABLE_NAME = "INVALID_VARIABLE_NAME"
INVALID_TEMPLATE_ID = "INVALID_TEMPLATE_ID"
DUPLICATE_LOCALE = "DUPLICATE_LOCALE"
DEFAULT_LOCALE_MISSING = "DEFAULT_LOCALE_MISSING"
INVALID_LOCALE = "INVALID_LOCALE"
CONTENT_CHANNEL_MISMATCH = "CONTENT_CHANNEL_MISMATCH"
CONTENT_REQUIRED = "CONTENT_REQUIRED"

MAX_BODY_BYTES = 64 * 1024
MAX_SUBJECT_CHARS = 998
MAX_SHORT_TEXT_CHARS = 1600  # SMS and WhatsApp
MAX_VARIABLES = 100
REDACTED = "[redacted]"
TEMPLATE_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
VARIABLE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
LOCALE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
# Names a template may not use as variables: they would shadow the sandbox's globals.
_RESERVED = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop"})


@dataclass(frozen=True, slots=True)
class Actor:
    user: str = ""
    service: str = ""
    client_address: str = ""


@dataclass(frozen=True, slots=True)
class TemplateVariable:
    name: str
    description: str = ""
    required: bool = False
    default_value: str = ""
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class Localization:
    locale: str
    subject: str = ""
    text_body: str = ""
    html_body: str = ""


@dataclass(frozen=True, slots=True)
class TemplateContent:
    """What an author writes; compared to tell whether an update changes anything."""

    display_name: str
    description: str
    channel: Channel
    default_locale: str
    localizations: tuple[Localization, ...]
    variables: tuple[TemplateVariable, ...]


@dataclass(frozen=True, slots=True)
class Template:
    template_id: str
    content: TemplateContent
    version: int
    create_time: datetime
    update_time: datetime
    version_author: Actor = field(default_factory=Actor)

    @property
    def name(self) -> str:
        return f"templates/{self.template_id}"

    @property
    def etag(self) -> str:
        return f'"{self.template_id}/{self.version}"'

    @property
    def channel(self) -> Channel:
        return self.content.channel

    def variable(self, name: str) -> TemplateVariable | None:
        for variable in self.content.variables:
            if variable.name == name:
                return variable
        return None

    def localization(self, wanted: Sequence[str]) -> Localization:
        """The first of `wanted` locales present (exact, then its language), else the
        default locale's."""
        by_locale = {loc.locale.lower(): loc for loc in self.content.localizations}
        for locale in wanted:
            if not locale:
                continue
            exact = by_locale.get(locale.lower())
            if exact is not None:
                return exact
            language = by_locale.get(locale.split("-")[0].lower())
            if language is not None:
                return language
        return by_locale[self.content.default_locale.lower()]


# --- the sandbox -----------------------------------------------------------------------------


def _environment(*, html: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=html,
        # Templates are messages, not pages: keep newlines as written.
        keep_trailing_newline=True,
    )


_TEXT_ENV = _environment(html=False)
_HTML_ENV = _environment(html=True)


def environment(*, html: bool) -> ImmutableSandboxedEnvironment:
    return _HTML_ENV if html else _TEXT_ENV


class TemplateProblem(Exception):
    """One part of a template that does not pass; `field` is relative to the localization."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def _unsafe_nodes(tree: nodes.Template) -> Iterable[str]:
    for node in tree.find_all(
        (nodes.Getattr, nodes.Getitem, nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
    ):
        if isinstance(node, nodes.Getattr):
            if node.attr.startswith("_"):
                yield f"attribute {node.attr!r} is not allowed"
        elif isinstance(node, nodes.Getitem):
            arg = node.arg
            if (
                isinstance(arg, nodes.Const)
                and isinstance(arg.value, str)
                and arg.value.startswith("_")
            ):
                yield f"item {arg.value!r} is not allowed"
        else:
            yield "include, import and extends are not allowed"
    for call in tree.find_all(nodes.Filter):
        if call.name in ("attr", "map") and any(
            isinstance(arg, nodes.Const) and isinstance(arg.value, str) and "_" in arg.value[:1]
            for arg in [*call.args, *(kw.value for kw in call.kwargs)]
        ):
            yield f"filter {call.name!r} with a private name is not allowed"


def check_source(source: str, declared: frozenset[str], *, html: bool) -> None:
    """Raise `TemplateProblem` unless `source` compiles, uses only `declared` variables and
    renders in the sandbox with every variable set."""
    if len(source.encode()) > MAX_BODY_BYTES:
        raise TemplateProblem(TEMPLATE_TOO_LARGE, f"must be at most {MAX_BODY_BYTES} bytes")
    env = environment(html=html)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as error:
        raise TemplateProblem(
            TEMPLATE_SYNTAX_ERROR, f"syntax error at line {error.lineno}: {error.message}"
        ) from None
    for problem in _unsafe_nodes(tree):
        raise TemplateProblem(TEMPLATE_UNSAFE, f"the sandbox refuses this template: {problem}")
    used = meta.find_undeclared_variables(tree)
    undeclared = sorted(used - declared)
    if undeclared:
        raise TemplateProblem(
            TEMPLATE_VARIABLE_UNDECLARED,
            f"uses undeclared variables: {', '.join(undeclared)}",
        )
    try:
        compiled = env.from_string(tree)
        compiled.render({name: "sample" for name in declared})
    except SecurityError as error:
        raise TemplateProblem(
            TEMPLATE_UNSAFE, f"the sandbox refuses this template: {error}"
        ) from None
    except UndefinedError as error:
        raise TemplateProblem(TEMPLATE_RENDER_ERROR, f"does not render: {error}") from None
    except Exception as error:
        raise TemplateProblem(
            TEMPLATE_RENDER_ERROR, f"does not render: {type(error).__name__}"
        ) from None


def check_locale(locale: str) -> bool:
    return LOCALE.fullmatch(locale) is not None


def validate_template_id(template_id: str) -> None:
    if TEMPLATE_ID.fullmatch(template_id) is None:
        raise InvalidArgument(
            [
                FieldViolation(
                    "template_id",
                    "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter",
                )
            ],
            reason=INVALID_TEMPLATE_ID,
        )


def validate_content(content: TemplateContent, prefix: str = "template") -> None:
    """Every check CreateTemplate and UpdateTemplate make; the first problem's reason names
    the error, every problem is a field violation."""
    problems: list[tuple[str, FieldViolation]] = []

    def add(reason: str, path: str, description: str) -> None:
        problems.append((reason, FieldViolation(f"{prefix}.{path}", description)))

    declared = _check_variables(content, add)
    if not check_locale(content.default_locale):
        add(INVALID_LOCALE, "default_locale", "must be a BCP 47 locale such as en or es-AR")
    if not content.localizations:
        add(CONTENT_REQUIRED, "localizations", "at least one localization is required")
    seen: set[str] = set()
    for index, loc in enumerate(content.localizations):
        path = f"localizations[{index}]"
        if not check_locale(loc.locale):
            add(INVALID_LOCALE, f"{path}.locale", "must be a BCP 47 locale such as en or es-AR")
        elif loc.locale.lower() in seen:
            add(DUPLICATE_LOCALE, f"{path}.locale", f"{loc.locale} appears twice")
        seen.add(loc.locale.lower())
        for reason, part, description in _channel_problems(content.channel, loc):
            add(reason, f"{path}.{part}", description)
        _check_bodies(loc, declared, path, add)
    if check_locale(content.default_locale) and content.default_locale.lower() not in seen:
        add(
            DEFAULT_LOCALE_MISSING,
            "default_locale",
            f"no localization for the default locale {content.default_locale}",
        )
    if len(content.display_name) > 200:
        add("INVALID_FIELD", "display_name", "must be at most 200 characters")
    if len(content.description) > 2000:
        add("INVALID_FIELD", "description", "must be at most 2000 characters")
    if problems:
        raise InvalidArgument([v for _, v in problems], reason=problems[0][0])


Add = Callable[[str, str, str], None]


def _check_bodies(loc: Localization, declared: frozenset[str], path: str, add: Add) -> None:
    for part, source, html in (
        ("subject", loc.subject, False),
        ("text_body", loc.text_body, False),
        ("html_body", loc.html_body, True),
    ):
        if not source:
            continue
        try:
            check_source(source, declared, html=html)
        except TemplateProblem as problem:
            add(problem.reason, f"{path}.{part}", problem.description)


def _check_variables(content: TemplateContent, add: Add) -> frozenset[str]:
    names: set[str] = set()
    if len(content.variables) > MAX_VARIABLES:
        add("INVALID_FIELD", "variables", f"at most {MAX_VARIABLES} variables")
    for index, variable in enumerate(content.variables):
        if VARIABLE_NAME.fullmatch(variable.name) is None or variable.name in _RESERVED:
            add(
                INVALID_VARIABLE_NAME,
                f"variables[{index}].name",
                "must match [a-z_][a-z0-9_]* and not be a sandbox global",
            )
        elif variable.name in names:
            add(INVALID_VARIABLE_NAME, f"variables[{index}].name", "is declared twice")
        names.add(variable.name)
    return frozenset(names)


def _channel_problems(channel: Channel, loc: Localization) -> Iterable[tuple[str, str, str]]:
    if not loc.text_body.strip():
        yield CONTENT_REQUIRED, "text_body", "is required"
    if loc.html_body and channel is not Channel.EMAIL:
        yield CONTENT_CHANNEL_MISMATCH, "html_body", "only EMAIL templates have an HTML body"
    if channel is Channel.EMAIL and not loc.subject.strip():
        yield CONTENT_CHANNEL_MISMATCH, "subject", "an EMAIL template needs a subject"
    if channel in TEXT_ONLY_CHANNELS and loc.subject:
        yield CONTENT_CHANNEL_MISMATCH, "subject", f"{channel.value} messages have no subject"
    if channel in SUBJECT_CHANNELS and "\n" in loc.subject.strip():
        yield "INVALID_FIELD", "subject", "must be one line"


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A rendered message: what is delivered, and the copy kept (sensitive values redacted)."""

    subject: str
    text_body: str
    html_body: str
    stored_subject: str
    stored_text_body: str


class RenderError(Exception):
    def __init__(self, reason: str, description: str, field_path: str = "template") -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description
        self.field_path = field_path

    def to_invalid_argument(self) -> InvalidArgument:
        return InvalidArgument(
            [FieldViolation(self.field_path, self.description)], reason=self.reason
        )


def resolve_values(template: Template, supplied: Mapping[str, str]) -> dict[str, str]:
    """Declared variables only (undeclared keys are ignored), defaults filled in; raises
    `RenderError` TEMPLATE_VARIABLE_MISSING naming each missing required variable."""
    values: dict[str, str] = {}
    missing: list[str] = []
    for variable in template.content.variables:
        if variable.name in supplied:
            values[variable.name] = supplied[variable.name]
        elif variable.required:
            missing.append(variable.name)
        else:
            values[variable.name] = variable.default_value
    if missing:
        raise RenderError(
            TEMPLATE_VARIABLE_MISSING,
            f"required variables without a value: {', '.join(missing)}",
            f"template.variables[{missing[0]}]",
        )
    return values


def _render(source: str, values: Mapping[str, Any], *, html: bool, part: str) -> str:
    if not source:
        return ""
    try:
        return environment(html=html).from_string(source).render(values)
    except SecurityError as error:
        raise RenderError(TEMPLATE_UNSAFE, f"the sandbox refused {part}: {error}") from None
    except UndefinedError as error:
        raise RenderError(TEMPLATE_RENDER_ERROR, f"{part} does not render: {error}") from None
    except TemplateSyntaxError as error:
        raise RenderError(
            TEMPLATE_RENDER_ERROR, f"{part} does not compile: {error.message}"
        ) from None
    except Exception as error:
        raise RenderError(
            TEMPLATE_RENDER_ERROR, f"{part} does not render: {type(error).__name__}"
        ) from None


def render(
    template: Template, localization: Localization, values: Mapping[str, str]
) -> RenderedMessage:
    """Render a localization with resolved `values`; raises `RenderError`."""
    subject = _render(localization.subject, values, html=False, part="subject").strip()
    text = _render(localization.text_body, values, html=False, part="text_body")
    html = _render(localization.html_body, values, html=True, part="html_body")
    sensitive = {v.name for v in template.content.variables if v.sensitive}
    if sensitive & set(values):
        redacted = {k: (REDACTED if k in sensitive else v) for k, v in values.items()}
        stored_subject = _render(localization.subject, redacted, html=False, part="subject")
        stored_text = _render(localization.text_body, redacted, html=False, part="text_body")
    else:
        stored_subject, stored_text = subject, text
    return RenderedMessage(subject, text, html, stored_subject.strip(), stored_text)


def redact_values(template: Template, values: Mapping[str, str]) -> dict[str, str]:
    sensitive = {v.name for v in template.content.variables if v.sensitive}
    return {k: (REDACTED if k in sensitive else v) for k, v in values.items()}


def check_inline(channel: Channel, subject: str, text_body: str, html_body: str) -> None:
    """InlineContent rules (notifications.proto)."""
    problems: list[tuple[str, FieldViolation]] = []
    if not text_body.strip():
        problems.append(
            (CONTENT_REQUIRED, FieldViolation("inline_content.text_body", "is required"))
        )
    if html_body and channel is not Channel.EMAIL:
        problems.append(
            (
                CONTENT_CHANNEL_MISMATCH,
                FieldViolation("inline_content.html_body", "only EMAIL messages have HTML"),
            )
        )
    if subject and channel in TEXT_ONLY_CHANNELS:
        problems.append(
            (
                CONTENT_CHANNEL_MISMATCH,
                FieldViolation("inline_content.subject", f"{channel.value} has no subject"),
            )
        )
    if len(subject) > MAX_SUBJECT_CHARS or "\n" in subject:
        problems.append(
            (
                "INVALID_FIELD",
                FieldViolation(
                    "inline_content.subject", f"one line of at most {MAX_SUBJECT_CHARS} chars"
                ),
            )
        )
    limit = MAX_SHORT_TEXT_CHARS if channel in TEXT_ONLY_CHANNELS else None
    if limit is not None and len(text_body) > limit:
        problems.append(
            (
                "INVALID_FIELD",
                FieldViolation("inline_content.text_body", f"at most {limit} characters"),
            )
        )
    for part, value in (("text_body", text_body), ("html_body", html_body)):
        if len(value.encode()) > MAX_BODY_BYTES:
            problems.append(
                (
                    "INVALID_FIELD",
                    FieldViolation(f"inline_content.{part}", f"at most {MAX_BODY_BYTES} bytes"),
                )
            )
    if problems:
        raise InvalidArgument([v for _, v in problems], reason=problems[0][0])

"""The watcher's configuration file: sections, validation and where each mistake is.

The contract promises that a bad configuration names the file, the line and the field,
and that nothing starts. So the YAML is read with line numbers (``policy/cip.py``), every
section is a pydantic model that forbids unknown fields, and every pydantic error is mapped
back to the line it came from. Everything that can be checked at load time is: durations,
URLs, globs, regular expressions, keys, that each ``*_env`` variable is set and each
``*_file`` readable. Secrets are accepted only through ``*_env``/``*_file``; their values
are held in :class:`Secret` objects that never print, and no message quotes them.
"""

from __future__ import annotations

import glob as globlib
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watcher.durations import HINT, format_duration, parse_duration
from watcher.policy.cip import (
    ConfigError,
    ConfigIssue,
    InlinePolicySpec,
    StrictModel,
    YamlDocument,
    context_base_dir,
    issues_from_validation,
    load_policy_documents,
    read_yaml_documents,
    resolve_path,
    validate_name,
)
from watcher.policy.glob import GlobError, repository_glob_matches, validate_repository_glob
from watcher.policy.model import Policy
from watcher.refs import DOCKER_HUB, ImageReference, normalize_registry
from watcher.registry.credentials import Credentials, docker_config_credentials

__all__ = [
    "AlertConfig",
    "AlertmanagerSink",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "RegistryConfig",
    "Secret",
    "ServerConfig",
    "StoreConfig",
    "TrustConfig",
    "WebhookConfig",
    "WebhookSink",
    "default_state_dir",
    "load_config",
]

WebhookKind = Literal[
    "distribution", "harbor", "github", "dockerhub", "quay", "acr", "ecr", "gar", "generic"
]
WEBHOOK_KINDS: tuple[str, ...] = typing.get_args(WebhookKind)
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_TIMEOUT = timedelta(seconds=30)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --- secrets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    """A secret value and where it came from (``env:NAME`` or ``file:PATH``).

    The value is read at load time, so a missing variable or unreadable file stops the
    daemon from starting rather than failing later; it never appears in repr or str.
    """

    source: str
    value: str = field(repr=False, compare=False)

    def get(self) -> str:
        """The secret itself; only for the code that sends it."""
        return self.value

    def __str__(self) -> str:
        return f"<secret from {self.source}>"

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r}, value=<redacted>)"


def _context(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def _env_secret(value: Any, info: ValidationInfo) -> Secret | None:
    """``*_env``: the name of an environment variable that must be set (and non-empty)."""
    if value is None or isinstance(value, Secret):
        return value
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ValueError("must be the name of an environment variable (letters, digits, _)")
    environ = _context(info).get("environ", os.environ)
    secret = environ.get(value)
    if secret is None:
        raise ValueError(f"environment variable {value} is not set")
    if not secret:
        raise ValueError(f"environment variable {value} is empty")
    return Secret(f"env:{value}", secret)


def _file_secret(value: Any, info: ValidationInfo) -> Secret | None:
    """``*_file``: a file (relative to the config's directory) holding the secret."""
    if value is None or isinstance(value, Secret):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be a file name")
    path = resolve_path(value, context_base_dir(info))
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8 text") from None
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return Secret(f"file:{path}", secret)


def _dump_secret(value: Secret | None) -> str | None:
    """How a secret serialises (model_dump, JSON): where it came from, never its value."""
    return None if value is None else str(value)


_SECRET_SERIALIZER = PlainSerializer(_dump_secret)
EnvSecret = Annotated[Secret | None, PlainValidator(_env_secret), _SECRET_SERIALIZER]
FileSecret = Annotated[Secret | None, PlainValidator(_file_secret), _SECRET_SERIALIZER]


def _one_secret(env: Secret | None, file: Secret | None, what: str) -> Secret | None:
    if env is not None and file is not None:
        raise ValueError(f"give {what}_env or {what}_file, not both")
    return env if env is not None else file


# --- field types --------------------------------------------------------------------------------


def _positive_duration(value: Any) -> timedelta:
    duration = value if isinstance(value, timedelta) else parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError(f"must be a positive duration ({HINT})")
    return duration


PositiveDuration = Annotated[
    timedelta,
    PlainValidator(_positive_duration),
    PlainSerializer(format_duration, when_used="json"),
]
Name = Annotated[str, PlainValidator(lambda v: validate_name(_string(v)))]


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _existing_file(value: Any, info: ValidationInfo) -> Path | None:
    """A path relative to the config's directory (``~`` expanded) that must be a file."""
    if value is None:
        return None
    if isinstance(value, Path):
        return value
    path = resolve_path(_string(value), context_base_dir(info))
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    return path


ExistingFile = Annotated[Path | None, PlainValidator(_existing_file)]


def _http_url(value: str, what: str = "url") -> str:
    """An http(s) URL without credentials, query or fragment; normalised without a slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "inline secrets are not allowed: credentials in a URL "
            "(use the auth section or a *_env/*_file setting)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not have a query or fragment")
    return value.rstrip("/")


# --- sections -------------------------------------------------------------------------------------


class ServerConfig(StrictModel):
    """``server``: where the HTTP endpoints listen and the optional API bearer token."""

    inline_secrets: ClassVar[Mapping[str, str]] = {"api_token": "api_token_env or api_token_file"}

    listen: str = "127.0.0.1:8080"
    api_token_env: EnvSecret = None
    api_token_file: FileSecret = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})", value)
        if match is None or int(match.group(2)) > 65535:
            raise ValueError(f"listen must be host:port (like 127.0.0.1:8080), not {value!r}")
        return value

    @model_validator(mode="after")
    def _one_token(self) -> ServerConfig:
        _one_secret(self.api_token_env, self.api_token_file, "api_token")
        return self

    @property
    def listen_host(self) -> str:
        """The host part of ``listen`` (brackets of an IPv6 address removed)."""
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def listen_port(self) -> int:
        """The port part of ``listen``."""
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def api_token(self) -> Secret | None:
        """The bearer token /api/v1 requires, if one is configured."""
        return self.api_token_env or self.api_token_file


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the watcher keeps state when the config does not say.

    systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``) first, then the XDG state
    directory, so that an unprivileged user needs no setup.
    """
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "registry-watcher"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".local" / "state" / "registry-watcher"
    return Path.cwd() / ".registry-watcher"


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    """SQLite in the default state directory."""
    return f"sqlite://{(default_state_dir(environ) / 'watcher.db').absolute()}"


class StoreConfig(StrictModel):
    """``store``: ``sqlite:///abs/path.db``, ``sqlite:relative.db`` or ``postgresql://...``.

    The path of a SQLite URL is read as a URL path, so ``sqlite:///var/lib/x.db`` is
    ``/var/lib/x.db`` (as in the contract's example); ``sqlite:x.db`` is relative to the
    config's directory and is stored resolved. A PostgreSQL password is a secret and so may
    not be in the URL: libpq's ``PGPASSWORD`` or ``PGPASSFILE`` provide it.
    """

    url: str = Field(default_factory=default_store_url)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        parts = urlsplit(value)
        if parts.scheme == "sqlite":
            if parts.netloc:
                raise ValueError("a sqlite URL has no host: sqlite:///absolute/path.db")
            if not parts.path:
                raise ValueError("a sqlite URL needs a path: sqlite:///absolute/path.db")
            if parts.path == ":memory:":
                return value
            path = resolve_path(parts.path, context_base_dir(info))
            return f"sqlite://{path.absolute()}"
        if parts.scheme in ("postgresql", "postgres"):
            if parts.password is not None:
                raise ValueError(
                    "inline secrets are not allowed: remove the password from the URL and "
                    "set PGPASSWORD or PGPASSFILE"
                )
            if not parts.hostname and "host=" not in parts.query:
                raise ValueError("a postgresql URL needs a host: postgresql://user@host/db")
            return value
        raise ValueError("store url must be sqlite:///path.db or postgresql://user@host/db")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite store (None for PostgreSQL or in-memory)."""
        parts = urlsplit(self.url)
        if parts.scheme != "sqlite" or parts.path == ":memory:":
            return None
        return Path(parts.path)


class TrustConfig(StrictModel):
    """``trust``: a Sigstore ``trusted_root.json``, or None for the public-good instance."""

    trusted_root: ExistingFile = None


class AuthConfig(StrictModel):
    """``auth`` of a registry: a username and password, or a Docker ``config.json``.

    Explicit credentials win; ``docker_config`` is consulted only when there are none.
    """

    inline_secrets: ClassVar[Mapping[str, str]] = {
        "password": "password_env or password_file",
        "token": "password_env or password_file",
    }

    username: str | None = None
    username_env: EnvSecret = None
    password_env: EnvSecret = None
    password_file: FileSecret = None
    docker_config: ExistingFile = None

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.username and self.username_env is not None:
            raise ValueError("give username or username_env, not both")
        password = _one_secret(self.password_env, self.password_file, "password")
        has_user = bool(self.username) or self.username_env is not None
        if has_user and password is None:
            raise ValueError("a username needs password_env or password_file")
        if password is not None and not has_user:
            raise ValueError("a password needs username or username_env")
        if not has_user and self.docker_config is None:
            raise ValueError("auth needs username and password_env/password_file, or docker_config")
        return self

    @property
    def password(self) -> Secret | None:
        """The configured password (from ``password_env`` or ``password_file``)."""
        return self.password_env or self.password_file

    def resolve(self, host: str) -> Credentials | None:
        """Credentials for ``host``: the configured ones, else Docker config's entry, else None.

        Raises ValueError if the Docker config file is malformed (naming the file only).
        """
        password = self.password
        username = self.username or (self.username_env.get() if self.username_env else None)
        if username and password is not None:
            return Credentials(username=username, password=password.get())
        if self.docker_config is not None:
            return docker_config_credentials(self.docker_config, host)
        return None


class WebhookConfig(StrictModel):
    """``webhook`` of a registry: which format it sends and how requests are authenticated.

    The secret is a bearer token (an HMAC key for ``github``). ``insecure: true`` accepts
    unauthenticated webhooks (for registries that cannot send a secret, like Docker Hub);
    it must be said explicitly, and then no secret may be given.
    """

    inline_secrets: ClassVar[Mapping[str, str]] = {
        "secret": "secret_env or secret_file",
        "token": "secret_env or secret_file",
    }

    kind: WebhookKind
    secret_env: EnvSecret = None
    secret_file: FileSecret = None
    insecure: bool = False

    @model_validator(mode="after")
    def _auth(self) -> WebhookConfig:
        secret = _one_secret(self.secret_env, self.secret_file, "secret")
        if secret is None and not self.insecure:
            raise ValueError(
                "a webhook needs secret_env or secret_file (or insecure: true to accept "
                "unauthenticated requests)"
            )
        if secret is not None and self.insecure:
            raise ValueError("insecure: true contradicts a configured secret; remove one")
        return self

    @property
    def secret(self) -> Secret | None:
        """The bearer token or HMAC key, None for an insecure webhook."""
        return self.secret_env or self.secret_file


class RegistryConfig(StrictModel):
    """``registries[]``: one registry, what of it is watched and how."""

    name: Name
    url: str
    auth: AuthConfig | None = None
    repositories: tuple[str, ...] = ("**",)
    poll_interval: PositiveDuration | None = None
    webhook: WebhookConfig | None = None
    max_concurrency: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1, le=1024)
    timeout: PositiveDuration = DEFAULT_TIMEOUT

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = _http_url(value)
        if urlsplit(url).path not in ("", "/"):
            raise ValueError("a registry url is scheme://host[:port], without a path")
        return url

    @field_validator("repositories")
    @classmethod
    def _globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one repository glob is required (** for all)")
        for pattern in value:
            try:
                validate_repository_glob(pattern)
            except GlobError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _docker_config_readable(self) -> RegistryConfig:
        if self.auth is not None and self.auth.docker_config is not None:
            try:
                self.auth.resolve(self.host)
            except ValueError as exc:
                raise ValueError(f"auth.docker_config: {exc}") from None
        return self

    @property
    def host(self) -> str:
        """``host[:port]`` as image references name it (Docker Hub as ``docker.io``)."""
        parts = urlsplit(self.url)
        host = (parts.hostname or "").lower()
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
            host = f"{host}:{parts.port}"
        return normalize_registry(host)

    @property
    def timeout_seconds(self) -> float:
        """``timeout`` in seconds, for HTTP clients that take a float."""
        return self.timeout.total_seconds()

    def watches(self, repository: str) -> bool:
        """True if one of the repository globs selects ``repository`` (``acme/app``)."""
        hub = self.host == DOCKER_HUB
        return any(
            repository_glob_matches(g, repository, docker_hub=hub) for g in self.repositories
        )


class AlertmanagerSink(StrictModel):
    """``alertmanager``: an Alertmanager's base URL (API v2 is used)."""

    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class WebhookSink(StrictModel):
    """``webhook`` alert sink: a chat or JSON webhook whose URL is itself a secret."""

    inline_secrets: ClassVar[Mapping[str, str]] = {"url": "url_env or url_file"}

    url_env: EnvSecret = None
    url_file: FileSecret = None
    format: Literal["slack", "json"] = "json"

    @model_validator(mode="after")
    def _url(self) -> WebhookSink:
        url = _one_secret(self.url_env, self.url_file, "url")
        if url is None:
            raise ValueError("a webhook sink needs url_env or url_file")
        try:
            _http_url(url.get())
        except ValueError:
            # Never echo the value: a webhook URL is a bearer credential.
            raise ValueError(f"{url.source} does not hold an http(s) URL") from None
        return self

    @property
    def url(self) -> Secret:
        """The webhook URL (a secret: it authorises posting)."""
        url = self.url_env or self.url_file
        assert url is not None
        return url


class AlertConfig(StrictModel):
    """``alerts[]``: a named sink, exactly one of ``alertmanager`` or ``webhook``."""

    name: Name
    alertmanager: AlertmanagerSink | None = None
    webhook: WebhookSink | None = None

    @model_validator(mode="after")
    def _one(self) -> AlertConfig:
        if (self.alertmanager is None) == (self.webhook is None):
            raise ValueError("an alert sink needs exactly one of alertmanager or webhook")
        return self


def _first_duplicate(names: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


class _Sections(StrictModel):
    """The sections the file and the loaded Config share."""

    server: ServerConfig = ServerConfig()
    store: StoreConfig = Field(default_factory=StoreConfig)
    trust: TrustConfig = TrustConfig()
    registries: tuple[RegistryConfig, ...] = ()
    policy_files: tuple[str, ...] = ()
    alerts: tuple[AlertConfig, ...] = ()


class _ConfigFile(_Sections):
    """The file as written: inline policies are still specs."""

    policies: tuple[InlinePolicySpec, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_store(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        # A section written with nothing under it (only comments) means its defaults.
        data = {k: v for k, v in data.items() if not (v is None and k in cls.model_fields)}
        # The default store lives in the state directory, which depends on the environment
        # the config is loaded in (tests pass their own).
        store = data.get("store", {})
        if isinstance(store, dict) and "url" not in store:
            data["store"] = {**store, "url": default_store_url(_context(info).get("environ"))}
        return data


class Config(_Sections):
    """The loaded configuration: every section validated, every policy loaded.

    ``policies`` holds the inline policies followed by those of ``policy_files`` (in file
    name order); their names are unique. ``path`` is the file it came from and
    ``state_dir`` where state such as Sigstore's trust cache is kept: the directory of a
    SQLite store, else the default state directory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    policies: tuple[Policy, ...] = ()
    path: Path | None = None
    state_dir: Path = Field(default_factory=default_state_dir)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        # load_config reports these with their lines first; this guards hand-built configs.
        for names, what in (
            ([r.name for r in self.registries], "registry"),
            ([a.name for a in self.alerts], "alert"),
            ([p.name for p in self.policies], "policy"),
        ):
            duplicate = _first_duplicate(names)
            if duplicate is not None:
                raise ValueError(f"duplicate {what} name {duplicate!r}")
        return self

    def registry_for(self, ref: ImageReference) -> RegistryConfig | None:
        """The configured registry an image lives in (by host; Docker Hub normalised).

        When several entries share a host, the first whose repositories include the image's
        wins, else the first for that host.
        """
        host = normalize_registry(ref.registry)
        candidates = [r for r in self.registries if r.host == host]
        for registry in candidates:
            if registry.watches(ref.repository):
                return registry
        return candidates[0] if candidates else None

    def registry_named(self, name: str) -> RegistryConfig | None:
        """The registry with this ``name`` (as in ``/webhooks/<name>``)."""
        return next((r for r in self.registries if r.name == name), None)

    def policies_for(self, ref: ImageReference, tags: Iterable[str] = ()) -> list[Policy]:
        """Every policy whose images select ``ref`` (or the digest under one of ``tags``)."""
        tags = tuple(tags)
        return [p for p in self.policies if p.matches(ref, tags)]


# --- loading ------------------------------------------------------------------------------------


def _policy_files(
    doc: YamlDocument, patterns: tuple[str, ...], base_dir: Path
) -> tuple[list[tuple[Path, str]], list[ConfigIssue]]:
    """Expand ``policy_files`` globs (relative to the config's directory, sorted, deduped)."""
    files: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    issues: list[ConfigIssue] = []
    for index, pattern in enumerate(patterns):
        expanded = os.path.expanduser(pattern)
        full = expanded if os.path.isabs(expanded) else os.path.join(str(base_dir), expanded)
        matches = sorted(m for m in globlib.glob(full, recursive=True) if os.path.isfile(m))
        if not matches:
            issues.append(doc.issue(("policy_files", index), f"{pattern!r} matches no files"))
        for match in matches:
            resolved = Path(match).resolve()
            if resolved not in seen:
                seen.add(resolved)
                files.append((Path(match), match))
    return files, issues


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate a configuration file and every policy file it names.

    ``environ`` (default ``os.environ``) resolves ``*_env`` settings and the default state
    directory. Raises ConfigError listing every problem found, each with file, line and
    field; nothing is partially loaded.
    """
    path = Path(path)
    file = str(path)
    env = os.environ if environ is None else environ
    docs = read_yaml_documents(path, file)
    if len(docs) > 1:
        raise ConfigError.single(file, docs[1].start_line, None, "expected one YAML document")
    doc = docs[0] if docs else YamlDocument(file, {}, {}, 1)
    if not isinstance(doc.data, dict):
        raise ConfigError.single(file, doc.start_line, None, "expected a mapping of sections")
    base_dir = path.parent
    try:
        parsed = _ConfigFile.model_validate(
            doc.data, context={"base_dir": base_dir.absolute(), "environ": env}
        )
    except ValidationError as exc:
        raise ConfigError(issues_from_validation(exc, doc, _ConfigFile)) from None

    issues: list[ConfigIssue] = []
    sections = {
        "registries": [r.name for r in parsed.registries],
        "alerts": [a.name for a in parsed.alerts],
    }
    for section, names in sections.items():
        first: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in first:
                where = f"{file}:{doc.line_of((section, first[name]))}"
                issues.append(
                    doc.issue(
                        (section, index, "name"),
                        f"duplicate name {name!r} (first defined at {where})",
                    )
                )
            first.setdefault(name, index)

    policies: list[Policy] = []
    defined: dict[str, str] = {}

    def add(policy: Policy, where: ConfigIssue) -> None:
        if policy.name in defined:
            issues.append(
                ConfigIssue(
                    where.file,
                    where.line,
                    where.field,
                    f"duplicate policy name {policy.name!r} (first defined at "
                    f"{defined[policy.name]})",
                )
            )
            return
        defined[policy.name] = policy.source
        policies.append(policy)

    for index, spec in enumerate(parsed.policies):
        loc = ("policies", index)
        source = f"{file}:{doc.line_of(loc)}"
        policy = spec.to_policy(spec.name, spec.grace_period, source)
        add(policy, doc.issue((*loc, "name"), ""))

    files, file_issues = _policy_files(doc, parsed.policy_files, base_dir)
    issues.extend(file_issues)
    for policy_path, display in files:
        try:
            loaded = load_policy_documents(policy_path, file=display)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        for policy in loaded:
            line = int(policy.source.rsplit(":", 1)[1])
            add(policy, ConfigIssue(display, line, "metadata.name", ""))
    if issues:
        raise ConfigError(issues)

    store_path = parsed.store.sqlite_path
    return Config(
        server=parsed.server,
        store=parsed.store,
        trust=parsed.trust,
        registries=parsed.registries,
        policy_files=parsed.policy_files,
        alerts=parsed.alerts,
        policies=tuple(policies),
        path=path,
        state_dir=store_path.parent if store_path is not None else default_state_dir(env),
    )

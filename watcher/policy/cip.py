"""ClusterImagePolicy documents: YAML with line numbers, the spec, and loading into Policy.

registry-watcher reads policies written for sigstore policy-controller, either in their own
files (``kind: ClusterImagePolicy``, ``policy.sigstore.dev/v1beta1`` or ``v1alpha1``; the two
versions have the same spec) or inline in the watcher's config (the same spec plus ``name``
and ``grace_period``). A field policy-controller has and we do not implement is an error
that says so: ignoring ``source``, ``kms`` or a CUE/Rego ``policy`` would leave a policy
quietly weaker than its author believes.

This module is also where YAML sources are read for the whole configuration, because
``config.py`` builds on it: :class:`ConfigError` lives here (``watcher.config`` re-exports
it) and names the file, the line and the field of every mistake.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yaml.constructor import SafeConstructor

from watcher.durations import HINT, format_duration, parse_duration
from watcher.policy.glob import validate_glob
from watcher.policy.model import (
    AttestationRequirement,
    Authority,
    Identity,
    KeyAuthority,
    KeylessAuthority,
    Policy,
    PolicyError,
    compile_go_regexp,
    load_public_key,
)
from watcher.verdicts import Mode

Loc = tuple[str | int, ...]

API_VERSIONS = ("policy.sigstore.dev/v1beta1", "policy.sigstore.dev/v1alpha1")
KIND = "ClusterImagePolicy"
_LIST_KINDS = ("List", "ClusterImagePolicyList")
GRACE_PERIOD_ANNOTATION = "registry-watcher.dev/grace-period"

# cosign's short predicate types, which policy-controller still accepts (deprecated) and
# compares after expanding them the way cosign's options.PredicateTypeMap does.
PREDICATE_TYPE_ALIASES = {
    "custom": "https://cosign.sigstore.dev/attestation/v1",
    "slsaprovenance": "https://slsa.dev/provenance/v0.2",
    "spdx": "https://spdx.dev/Document",
    "spdxjson": "https://spdx.dev/Document",
    "cyclonedx": "https://cyclonedx.org/bom",
    "link": "https://in-toto.io/Link/v1",
    "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
}


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One mistake: where it is (file, 1-based line, field path) and what is wrong."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {what}"


class ConfigError(Exception):
    """An invalid configuration or policy file; every issue names file, line and field.

    Messages never include secret values: environment variables are named, not expanded,
    and pydantic's echo of the offending input is never used.
    """

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(sorted(issues, key=lambda i: (i.file, i.line or 0)))
        super().__init__("\n".join(str(i) for i in self.issues))

    @classmethod
    def single(cls, file: str, line: int | None, field: str | None, message: str) -> ConfigError:
        """An error with one issue."""
        return cls([ConfigIssue(file, line, field, message)])


def field_path(loc: Sequence[str | int]) -> str:
    """``("registries", 0, "url")`` -> ``registries[0].url``; odd keys are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


# --- YAML with line numbers -----------------------------------------------------------------


@dataclass(frozen=True)
class YamlDocument:
    """One YAML document as plain data, plus the 1-based line of every key and list item."""

    file: str
    data: Any
    lines: Mapping[Loc, int] = field(repr=False)
    start_line: int

    def line_of(self, loc: Sequence[str | int]) -> int:
        """The line of ``loc``, or of its nearest ancestor that is written in the file."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.start_line

    def issue(self, loc: Sequence[str | int], message: str) -> ConfigIssue:
        """An issue at ``loc`` in this document."""
        return ConfigIssue(self.file, self.line_of(loc), field_path(loc) or None, message)


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Builder:
    """Turns composed YAML nodes into data, recording lines and refusing duplicate keys.

    PyYAML's own constructor keeps the last of duplicate keys silently; in a security
    policy the first one may be the one the reader saw, so a duplicate is an error.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Loc, int] = {}
        self._constructor = SafeConstructor()
        self._active: set[int] = set()

    def _fail(self, node: yaml.Node, loc: Loc, message: str) -> ConfigError:
        return ConfigError.single(
            self.file, node.start_mark.line + 1, field_path(loc) or None, message
        )

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        if id(node) in self._active:
            raise self._fail(node, loc, "recursive YAML alias")
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = item.start_mark.line + 1
                    items.append(self.build(item, (*loc, index)))
                return items
            try:
                return self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                raise self._fail(node, loc, f"invalid YAML value: {exc}") from None
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        explicit: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    value = self.build(source, loc)
                    if not isinstance(value, dict):
                        raise self._fail(source, loc, "a YAML merge (<<) needs a mapping")
                    for k, v in value.items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._fail(key_node, loc, "mapping keys must be plain strings")
            key = self._constructor.construct_object(key_node)
            if not isinstance(key, str):
                raise self._fail(key_node, loc, f"mapping key {key!r} is not a string")
            if key in explicit:
                raise self._fail(key_node, (*loc, key), "duplicate key")
            self.lines[(*loc, key)] = key_node.start_mark.line + 1
            explicit[key] = self.build(value_node, (*loc, key))
        return {**merged, **explicit}


def parse_yaml_documents(text: str, file: str) -> list[YamlDocument]:
    """Every document of a YAML stream; empty documents (a stray ``---``) are skipped."""
    docs: list[YamlDocument] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None:
                continue
            builder = _Builder(file)
            data = builder.build(node, ())
            if data is None:
                continue
            docs.append(YamlDocument(file, data, builder.lines, node.start_mark.line + 1))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError.single(file, line, None, f"invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError.single(file, None, None, f"invalid YAML: {exc}") from None
    return docs


def read_yaml_documents(path: Path, file: str | None = None) -> list[YamlDocument]:
    """Read and parse a YAML file; ``file`` is how messages name it (default: ``path``)."""
    name = file if file is not None else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.single(name, None, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError.single(name, None, None, "not UTF-8 text") from None
    return parse_yaml_documents(text, name)


# --- pydantic errors to issues ---------------------------------------------------------------


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X | None``, ``tuple[X, ...]``, ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, tuple, list, dict):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _model_at(root: type[BaseModel] | None, loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (for field-name suggestions)."""
    model = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        found = None
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                found = _model_in(info.annotation)
                break
        model = found
    return model


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _clean_loc(data: Any, loc: Sequence[str | int]) -> Loc:
    """pydantic's loc reduced to keys and indexes that exist in the data.

    Union members and validator names (``function-after[...]``) appear in pydantic locs but
    not in the file; the last element is kept when it is a plain name, because that is how
    a missing field is named.
    """
    out: list[str | int] = []
    current = data
    for position, part in enumerate(loc):
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            out.append(part)
            current = current[part]
        elif (
            position == len(loc) - 1
            and isinstance(part, str)
            and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part)
            and isinstance(current, dict)
        ):
            out.append(part)
            current = None
    return tuple(out)


def _message(error: Mapping[str, Any], root: type[BaseModel] | None, loc: Loc) -> str:
    kind = error["type"]
    if kind in ("value_error", "assertion_error"):
        cause = error.get("ctx", {}).get("error")
        return str(cause) if cause is not None else str(error["msg"])
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        name = str(loc[-1]) if loc else ""
        if parent is not None:
            secrets: Mapping[str, str] = getattr(parent, "inline_secrets", {})
            if name in secrets:
                return f"inline secrets are not allowed: use {secrets[name]}"
            close = difflib.get_close_matches(name, _field_names(parent), n=1)
            if close:
                return f"unknown field (did you mean {close[0]!r}?)"
            return "unknown field (known: " + ", ".join(_field_names(parent)) + ")"
        return "unknown field"
    return str(error["msg"])


def issues_from_validation(
    exc: ValidationError, doc: YamlDocument, root: type[BaseModel], prefix: Loc = ()
) -> list[ConfigIssue]:
    """Turn a pydantic ValidationError on ``doc.data`` (at ``prefix``) into located issues."""
    issues = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = _clean_loc(doc.data, (*prefix, *error["loc"]))
        message = _message(error, root, loc[len(prefix) :])
        cause = error.get("ctx", {}).get("error")
        extra = getattr(cause, "field", None)
        if isinstance(extra, str):
            refined = _clean_loc(doc.data, (*loc, extra))
            if len(refined) > len(loc) and refined in doc.lines:
                loc = refined
        issues.append(doc.issue(loc, message))
    return issues


# --- shared field types ----------------------------------------------------------------------


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


# Durations read and write Go-style (model_dump_json gives "1m30s", not ISO 8601).
_DURATION_JSON = PlainSerializer(format_duration, when_used="json")


def context_base_dir(info: ValidationInfo) -> Path:
    """The directory relative paths are resolved against (the file being read)."""
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get("base_dir")
    return base if isinstance(base, Path) else Path.cwd()


def resolve_path(raw: str, base_dir: Path) -> Path:
    """``~`` expanded, then relative to ``base_dir``."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base_dir / path


class StrictModel(BaseModel):
    """Frozen, and unknown fields are errors: a misspelt key must not be ignored.

    ``inline_secrets`` maps field names that would hold a secret inline to what to use
    instead, so that an inline ``password:`` gets a message saying so.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    inline_secrets: ClassVar[Mapping[str, str]] = {}


def _reject(message: str) -> Any:
    """A validator for a field policy-controller has and we do not implement.

    The field is declared (rather than left unknown) so that the error can say what it is
    and what to do instead; an empty value is as good as absent, as in policy-controller.
    """

    def reject(value: Any) -> None:
        if value is None or value == "" or value == []:
            return None
        raise ValueError(f"unsupported: {message}")

    return PlainValidator(reject)


_TRUST_ROOT_REF = _reject(
    "trustRootRef (TrustRoot resources); registry-watcher trusts the Sigstore instance "
    "configured in trust.trusted_root"
)


# --- the ClusterImagePolicy spec ---------------------------------------------------------------


class IdentitySpec(StrictModel):
    """``keyless.identities[]``: issuer/issuerRegExp and subject/subjectRegExp."""

    issuer: str | None = None
    subject: str | None = None
    issuer_regexp: str | None = Field(default=None, alias="issuerRegExp")
    subject_regexp: str | None = Field(default=None, alias="subjectRegExp")

    @field_validator("issuer_regexp", "subject_regexp")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value:
            compile_go_regexp(value)
        return value

    @model_validator(mode="after")
    def _pairs(self) -> IdentitySpec:
        self.to_identity()
        return self

    def to_identity(self) -> Identity:
        return Identity(
            issuer=self.issuer or None,
            subject=self.subject or None,
            issuer_regexp=self.issuer_regexp or None,
            subject_regexp=self.subject_regexp or None,
        )


class KeylessSpec(StrictModel):
    """``keyless``: identities; ``url`` is accepted and ignored (trust comes from the root)."""

    url: str | None = None
    identities: tuple[IdentitySpec, ...]
    ca_cert: Annotated[
        None, _reject("keyless.ca-cert; a private Fulcio CA is configured in trust.trusted_root")
    ] = Field(default=None, alias="ca-cert")
    trust_root_ref: Annotated[None, _TRUST_ROOT_REF] = Field(default=None, alias="trustRootRef")
    insecure_ignore_sct: bool = Field(default=False, alias="insecureIgnoreSCT")

    @field_validator("identities")
    @classmethod
    def _some(cls, value: tuple[IdentitySpec, ...]) -> tuple[IdentitySpec, ...]:
        if not value:
            raise ValueError("at least one identity is required")
        return value


@dataclass(frozen=True)
class KeyFile:
    """A public key read from ``key.path``: where it was and what it holds."""

    path: Path
    pem: bytes = field(repr=False)


def _key_file(value: Any, info: ValidationInfo) -> KeyFile | None:
    if value is None or isinstance(value, KeyFile):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("key.path must be a file name")
    path = resolve_path(value, context_base_dir(info))
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    try:
        load_public_key(pem)
    except PolicyError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return KeyFile(path, pem)


class KeySpec(StrictModel):
    """``key``: inline PEM (``data``) or a file (``path``, our addition)."""

    data: str | None = None
    path: Annotated[
        KeyFile | None,
        PlainValidator(_key_file),
        PlainSerializer(lambda f: None if f is None else str(f.path)),
    ] = None
    secret_ref: Annotated[
        None,
        _reject("key.secretRef (Kubernetes secrets); put the public key in key.data or key.path"),
    ] = Field(default=None, alias="secretRef")
    kms: Annotated[
        None, _reject("key.kms; export the public key and put it in key.data or key.path")
    ] = None
    hash_algorithm: str | None = Field(default=None, alias="hashAlgorithm")

    @field_validator("data")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value:
            load_public_key(value.encode())
        return value

    @field_validator("hash_algorithm")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value not in (None, "", "sha256"):
            raise ValueError(f"unsupported: hashAlgorithm {value!r} (only sha256)")
        return value

    @model_validator(mode="after")
    def _one(self) -> KeySpec:
        if self.data and self.path is not None:
            raise ValueError("give key.data or key.path, not both")
        if not self.data and self.path is None:
            raise ValueError("key needs data (inline PEM) or path (a PEM file)")
        return self

    def pem(self) -> bytes:
        if self.path is not None:
            return self.path.pem
        assert self.data is not None
        return self.data.encode()


class CTLogSpec(StrictModel):
    """``ctlog``: its presence makes a transparency-log entry required for key signatures.

    The log's keys come from the trust root; ``url`` is accepted for compatibility.
    """

    url: str | None = None
    trust_root_ref: Annotated[None, _TRUST_ROOT_REF] = Field(default=None, alias="trustRootRef")


class AttestationSpec(StrictModel):
    """``attestations[]``: a required in-toto predicate type, signed by the authority."""

    name: str
    predicate_type: str = Field(alias="predicateType")
    policy: Annotated[None, _reject("attestation policy evaluation (cue/rego)")] = None

    @field_validator("name", "predicate_type")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    def to_requirement(self) -> AttestationRequirement:
        predicate = PREDICATE_TYPE_ALIASES.get(self.predicate_type, self.predicate_type)
        return AttestationRequirement(self.name, predicate)


class AuthoritySpec(StrictModel):
    """``authorities[]``: exactly one of key or keyless, optional ctlog and attestations."""

    name: str | None = None
    key: KeySpec | None = None
    keyless: KeylessSpec | None = None
    static: Annotated[
        None, _reject("static authorities (pass/fail without checking signatures)")
    ] = None
    source: Annotated[
        None,
        _reject(
            "source (signatures kept in another repository); registry-watcher looks for "
            "signatures next to the image"
        ),
    ] = None
    ctlog: CTLogSpec | None = None
    attestations: tuple[AttestationSpec, ...] = ()
    rfc3161timestamp: Annotated[
        None, _reject("rfc3161timestamp (timestamp-authority verification configured per policy)")
    ] = None
    signature_format: Literal["legacy", "bundle"] | None = Field(
        default=None, alias="signatureFormat"
    )

    @model_validator(mode="after")
    def _one(self) -> AuthoritySpec:
        if self.key is not None and self.keyless is not None:
            raise ValueError("an authority has key or keyless, not both")
        if self.key is None and self.keyless is None:
            raise ValueError("an authority needs key or keyless")
        return self

    def to_authority(self, index: int) -> Authority:
        """The authority, named ``authority-<index>`` when unnamed, as policy-controller does."""
        return Authority(
            name=self.name or f"authority-{index}",
            keyless=(
                KeylessAuthority(
                    tuple(i.to_identity() for i in self.keyless.identities),
                    insecure_ignore_sct=self.keyless.insecure_ignore_sct,
                )
                if self.keyless is not None
                else None
            ),
            key=(
                KeyAuthority.from_pem(self.key.pem(), require_tlog=self.ctlog is not None)
                if self.key is not None
                else None
            ),
            attestations=tuple(a.to_requirement() for a in self.attestations),
            signature_format=self.signature_format,
        )


class ImageSpec(StrictModel):
    """``images[]``: a glob (policy-controller semantics, see ``glob.py``)."""

    glob: str

    @field_validator("glob")
    @classmethod
    def _valid(cls, value: str) -> str:
        validate_glob(value)
        return value


class PolicySpec(StrictModel):
    """A ClusterImagePolicy ``spec``."""

    images: tuple[ImageSpec, ...]
    authorities: tuple[AuthoritySpec, ...]
    mode: Literal["enforce", "warn"] = "enforce"
    policy: Annotated[None, _reject("policy evaluation (cue/rego)")] = None
    match: Annotated[
        None,
        _reject(
            "match (it selects Kubernetes resources; registry-watcher sees images, not "
            "resources: remove it and the policy applies to every matching image)"
        ),
    ] = None

    @field_validator("images")
    @classmethod
    def _some_images(cls, value: tuple[ImageSpec, ...]) -> tuple[ImageSpec, ...]:
        if not value:
            raise ValueError("at least one image glob is required")
        return value

    @field_validator("authorities")
    @classmethod
    def _some_authorities(cls, value: tuple[AuthoritySpec, ...]) -> tuple[AuthoritySpec, ...]:
        if not value:
            raise ValueError(
                "at least one authority is required (a policy without authorities would "
                "approve every image)"
            )
        names = [a.name or f"authority-{i}" for i, a in enumerate(value)]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"duplicate authority name {name!r}")
        return value

    def to_policy(self, name: str, grace_period: timedelta, source: str) -> Policy:
        """The loaded Policy."""
        return Policy(
            name=name,
            images=tuple(i.glob for i in self.images),
            mode=Mode(self.mode),
            grace_period=grace_period,
            authorities=tuple(a.to_authority(i) for i, a in enumerate(self.authorities)),
            source=source,
        )


_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


def validate_name(value: str) -> str:
    """Names appear in URLs, metric labels and alerts: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.match(value):
        raise ValueError(
            f"invalid name {value!r}: use letters, digits, '.', '_' and '-', starting and "
            "ending with a letter or digit"
        )
    return value


def _grace(value: Any) -> timedelta:
    grace = _duration(value)
    if grace < timedelta(0):
        raise ValueError(f"grace period must not be negative ({HINT})")
    return grace


GracePeriod = Annotated[timedelta, PlainValidator(_grace), _DURATION_JSON]


class InlinePolicySpec(PolicySpec):
    """An entry of the config's ``policies``: a ClusterImagePolicy spec plus name and grace."""

    name: str
    grace_period: GracePeriod = timedelta(0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name(value)


class Metadata(BaseModel):
    """``metadata``: only the name and our grace-period annotation matter; the rest (labels,
    uid, managedFields of an exported object) is ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    annotations: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name(value)

    @field_validator("annotations")
    @classmethod
    def _grace(cls, value: dict[str, str]) -> dict[str, str]:
        if GRACE_PERIOD_ANNOTATION in value:
            try:
                _grace(value[GRACE_PERIOD_ANNOTATION])
            except ValueError as exc:
                raise ValueError(f"annotation {GRACE_PERIOD_ANNOTATION}: {exc}") from None
        return value

    def grace_period(self) -> timedelta:
        raw = self.annotations.get(GRACE_PERIOD_ANNOTATION)
        return timedelta(0) if raw is None else _grace(raw)


class ClusterImagePolicyDocument(StrictModel):
    """A whole ``kind: ClusterImagePolicy`` document (``status`` is ignored)."""

    api_version: Literal["policy.sigstore.dev/v1beta1", "policy.sigstore.dev/v1alpha1"] = Field(
        alias="apiVersion"
    )
    kind: Literal["ClusterImagePolicy"]
    metadata: Metadata
    spec: PolicySpec
    status: Any = Field(default=None, exclude=True, repr=False)


# --- loading ----------------------------------------------------------------------------------


def _documents(doc: YamlDocument) -> Iterator[tuple[Loc, Any]]:
    """The policy objects of a document: itself, or the items of a ``kind: List``."""
    data = doc.data
    if isinstance(data, dict) and data.get("kind") in _LIST_KINDS:
        unknown = sorted(set(data) - {"apiVersion", "kind", "metadata", "items"})
        if unknown:
            raise ConfigError([doc.issue((unknown[0],), "unknown field")])
        items = data.get("items")
        if not isinstance(items, list):
            raise ConfigError([doc.issue(("items",), "a List needs a list of items")])
        for index, item in enumerate(items):
            yield ("items", index), item
    else:
        yield (), data


def policies_from_document(doc: YamlDocument, base_dir: Path) -> list[Policy]:
    """Every ClusterImagePolicy in one YAML document, or ConfigError naming each mistake."""
    policies: list[Policy] = []
    issues: list[ConfigIssue] = []
    for prefix, data in _documents(doc):
        if not isinstance(data, dict) or data.get("kind") != KIND:
            kind = data.get("kind") if isinstance(data, dict) else None
            what = f"kind {kind!r}" if kind else "a document without kind"
            issues.append(
                doc.issue(
                    (*prefix, "kind") if kind else prefix, f"expected kind {KIND}, got {what}"
                )
            )
            continue
        try:
            parsed = ClusterImagePolicyDocument.model_validate(data, context={"base_dir": base_dir})
        except ValidationError as exc:
            issues.extend(issues_from_validation(exc, doc, ClusterImagePolicyDocument, prefix))
            continue
        source = f"{doc.file}:{doc.line_of((*prefix, 'metadata', 'name'))}"
        try:
            policies.append(
                parsed.spec.to_policy(parsed.metadata.name, parsed.metadata.grace_period(), source)
            )
        except PolicyError as exc:
            issues.append(doc.issue((*prefix, "spec"), str(exc)))
    if issues:
        raise ConfigError(issues)
    return policies


def load_policy_documents(path: Path, *, file: str | None = None) -> list[Policy]:
    """Load every ClusterImagePolicy in a (multi-document) YAML file.

    ``key.path`` is resolved against the file's own directory. Policy names must be unique
    within the file; ConfigError names the file, line and field of every mistake.
    """
    docs = read_yaml_documents(path, file)
    policies: list[Policy] = []
    issues: list[ConfigIssue] = []
    seen: dict[str, str] = {}
    for doc in docs:
        try:
            found = policies_from_document(doc, path.parent.absolute())
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        for policy in found:
            if policy.name in seen:
                line = int(policy.source.rsplit(":", 1)[1])
                issues.append(
                    ConfigIssue(
                        doc.file,
                        line,
                        "metadata.name",
                        f"duplicate policy name {policy.name!r} (first defined at "
                        f"{seen[policy.name]})",
                    )
                )
                continue
            seen[policy.name] = policy.source
            policies.append(policy)
    if issues:
        raise ConfigError(issues)
    return policies

"""Policies as frozen values: which images, who may sign them, and what else they need.

These are the policy-controller ``ClusterImagePolicy`` concepts after loading: every regular
expression compiled, every key parsed, every default applied. Loading (``cip.py``,
``config.py``) reports mistakes with file and line; the constructors here re-check the
invariants so that a Policy built by hand in a test or a tool cannot be subtly invalid either.
Everything is immutable and compared by value, so a policy can key a cache and its
``spec_hash`` can be stored next to every verdict it produced.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import rfc8785
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from watcher.policy.glob import GlobError, glob_matches, validate_glob
from watcher.refs import ImageReference
from watcher.verdicts import Mode, Signer
from watcher.verify.certs import key_id

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

# cosign's key types; anything else could not have produced a cosign signature we verify.
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_MIN_RSA_BITS = 2048  # sigstore's cryptoutils refuses smaller RSA keys, and so do we


class PolicyError(ValueError):
    """An invalid policy. ``field`` names the offending field in policy-controller spelling
    (``subjectRegExp``), when there is one, so loaders can point at the right line."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- Go regular expressions ------------------------------------------------------------------

# Go's ASCII character classes ([[:alpha:]]), which Python's re does not know and would
# silently read as a set of the letters ':', 'a', 'l', ...
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_REPEAT_TAIL = re.compile(r"\{\d+(?:,\d*)?\}$")  # a {n,m} just closed: a quantifier
_FLAG_GROUP = re.compile(r"\(\?([imsU]*(?:-[imsU]*)?)([:)])")


def _go_to_python(pattern: str) -> str:
    """Translate Go (RE2) syntax to an equivalent Python pattern, or raise PolicyError.

    Go's syntax is mostly a subset of Python's, but not quite: constructs only Python has
    (lookaround, backreferences, possessive quantifiers, conditionals) must be rejected as
    policy-controller rejects them, and a few spellings mean different things (``\\z``,
    ``$``, ``[[:alpha:]]``, ``(?<name>``). Everything else is copied as is.
    """
    multiline = any("m" in m.group(1).split("-")[0] for m in _FLAG_GROUP.finditer(pattern))
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = class_start = after_quantifier = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise PolicyError("trailing backslash")
            nxt = pattern[i + 1]
            if nxt.isdigit() and nxt != "0":
                raise PolicyError(f"\\{nxt}: backreferences are not Go regexp syntax")
            if nxt in "ZQEC":
                raise PolicyError(f"\\{nxt} is not supported in Go regexp syntax")
            out.append("\\Z" if nxt == "z" and not in_class else pattern[i : i + 2])
            i += 2
            class_start = after_quantifier = False
            continue
        if in_class:
            if pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2 : end] if end != -1 else ""
                if name not in _POSIX_CLASSES:
                    raise PolicyError(f"unsupported character class [:{name}:]")
                out.append(_POSIX_CLASSES[name])
                i = end + 2
            elif c == "[":
                out.append("\\[")  # literal in Go; Python warns it may become a nested set
                i += 1
            else:
                if c == "]" and not class_start:
                    in_class = False
                out.append(c)
                i += 1
            class_start = False
            continue
        if c == "[":
            in_class = class_start = True
            out.append(c)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            after_quantifier = False
            continue
        if c == "(" and pattern.startswith("(?", i):
            if pattern.startswith("(?P<", i):
                out.append("(?P<")
                i += 4
            elif pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
                out.append("(?P<")  # Go 1.22 named-group spelling; Python 3.11 wants (?P<
                i += 3
            else:
                flags = _FLAG_GROUP.match(pattern, i)
                if flags is None:
                    raise PolicyError(
                        f"unsupported group {pattern[i : i + 4]!r}: Go regexp has no lookaround, "
                        "atomic groups, conditionals or comments"
                    )
                if "U" in flags.group(1):
                    raise PolicyError("the U (ungreedy) flag is not supported")
                out.append(flags.group(0))
                i = flags.end()
            after_quantifier = False
            continue
        if c == "+" and after_quantifier:
            raise PolicyError("possessive quantifiers are not Go regexp syntax")
        if c == "$" and not multiline:
            out.append("\\Z")  # Go's $ is end of text; Python's also matches before a final \n
        else:
            out.append(c)
        after_quantifier = c in "*+?" or (
            c == "}" and _REPEAT_TAIL.search("".join(out[-12:])) is not None
        )
        i += 1
    if in_class:
        raise PolicyError("missing closing ]")
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def compile_go_regexp(pattern: str) -> re.Pattern[str]:
    """Compile a regular expression written for Go's ``regexp`` package, as cosign uses them.

    Matching is unanchored (use ``search``), as Go's ``MatchString`` is: ``acme`` matches any
    subject containing it, so anchor with ``^...$`` to pin one. ``\\d``, ``\\w``, ``\\s`` and
    ``\\b`` are ASCII-only, as in Go. Raises PolicyError for syntax Go would not accept.
    """
    if not isinstance(pattern, str) or not pattern:
        raise PolicyError("empty regular expression")
    translated = _go_to_python(pattern)
    try:
        return re.compile(translated, re.ASCII)
    except re.error as exc:
        raise PolicyError(f"invalid regular expression {pattern!r}: {exc}") from None


# --- keys ---------------------------------------------------------------------------------------


def load_public_key(pem: bytes) -> PublicKey:
    """Parse a PEM public key of a type cosign signs with, or raise PolicyError saying why.

    Supported: ECDSA P-256/P-384/P-521, RSA (2048 bits or more) and Ed25519. The message
    never includes the PEM itself.
    """
    if b"PRIVATE KEY" in pem:
        raise PolicyError("this is a private key; give the public key (e.g. cosign.pub)")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PolicyError(
            "not a PEM public key (want -----BEGIN PUBLIC KEY-----, as in cosign.pub)"
        ) from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise PolicyError(
                f"unsupported elliptic curve {key.curve.name} (want P-256, P-384 or P-521)"
            )
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise PolicyError(f"RSA key of {key.key_size} bits is too small (want >= 2048)")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise PolicyError(
        f"unsupported key type {type(key).__name__} (want ECDSA P-256/384/521, RSA or Ed25519)"
    )


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A keyless signer allowed by an authority: an OIDC issuer and a certificate subject.

    Each side is either exact (``issuer``/``subject``) or a Go regular expression
    (``issuer_regexp``/``subject_regexp``); exactly one of each pair is required, as
    policy-controller validates. A regular expression is matched unanchored, like cosign's
    ``regexp.MatchString``, so write ``^...$`` to pin the whole value.
    """

    issuer: str | None = None
    subject: str | None = None
    issuer_regexp: str | None = None
    subject_regexp: str | None = None

    def __post_init__(self) -> None:
        for exact, regexp, name in (
            (self.issuer, self.issuer_regexp, "issuer"),
            (self.subject, self.subject_regexp, "subject"),
        ):
            if exact and regexp:
                raise PolicyError(f"give {name} or {name}RegExp, not both", f"{name}RegExp")
            if not exact and not regexp:
                raise PolicyError(f"{name} or {name}RegExp is required", name)
        for regexp, name in (
            (self.issuer_regexp, "issuerRegExp"),
            (self.subject_regexp, "subjectRegExp"),
        ):
            if regexp:
                try:
                    compile_go_regexp(regexp)
                except PolicyError as exc:
                    raise PolicyError(str(exc), name) from None

    @staticmethod
    def _side(value: str | None, exact: str | None, regexp: str | None) -> bool:
        if value is None:
            return False
        if exact:
            return value == exact
        assert regexp is not None
        return compile_go_regexp(regexp).search(value) is not None

    def matches(self, signer: Signer) -> bool:
        """True if a keyless signer's issuer and subject both satisfy this identity."""
        return self._side(signer.issuer, self.issuer, self.issuer_regexp) and self._side(
            signer.subject, self.subject, self.subject_regexp
        )

    def describe(self) -> str:
        """``issuer X, subject ~^re$`` (``~`` marks a regular expression)."""
        issuer = self.issuer if self.issuer else f"~{self.issuer_regexp}"
        subject = self.subject if self.subject else f"~{self.subject_regexp}"
        return f"issuer {issuer}, subject {subject}"

    def canonical(self) -> dict[str, Any]:
        """The identity as policy-controller spells it, for hashing."""
        out = {
            "issuer": self.issuer,
            "issuerRegExp": self.issuer_regexp,
            "subject": self.subject,
            "subjectRegExp": self.subject_regexp,
        }
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class KeylessAuthority:
    """Fulcio-certified signers; any one of ``identities`` is enough.

    Which Fulcio and which logs are trusted comes from the configured Sigstore trust root,
    not from the policy (policy-controller's ``keyless.url`` is accepted and ignored).
    """

    identities: tuple[Identity, ...]
    insecure_ignore_sct: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "identities", tuple(self.identities))
        if not self.identities:
            raise PolicyError("at least one identity is required", "identities")

    def accepts(self, signer: Signer) -> bool:
        """True for a keyless signer matching one of the identities."""
        return signer.subject is not None and any(i.matches(signer) for i in self.identities)

    def canonical(self) -> dict[str, Any]:
        """For hashing; identities are OR-ed, so their order does not change the meaning."""
        identities = sorted(
            {rfc8785.dumps(i.canonical()): i.canonical() for i in self.identities}.items()
        )
        return {
            "identities": [value for _, value in identities],
            "insecureIgnoreSCT": self.insecure_ignore_sct,
        }


@dataclass(frozen=True)
class KeyAuthority:
    """Signatures by one public key (``cosign sign --key``), named by its key id.

    ``require_tlog`` is policy-controller's ``ctlog: {...}`` on the authority: a key signature
    then counts only with a verified transparency-log entry (one present is always verified).
    """

    pem: bytes = field(repr=False)
    key_id: str = ""
    require_tlog: bool = False

    def __post_init__(self) -> None:
        actual = key_id(load_public_key(self.pem))
        if not self.key_id:
            object.__setattr__(self, "key_id", actual)
        elif self.key_id != actual:
            raise PolicyError(f"key_id {self.key_id} does not match the key ({actual})")

    @classmethod
    def from_pem(cls, pem: bytes | str, *, require_tlog: bool = False) -> KeyAuthority:
        """Build from PEM text; the key id is computed."""
        raw = pem.encode() if isinstance(pem, str) else pem
        return cls(pem=raw, require_tlog=require_tlog)

    def public_key(self) -> PublicKey:
        """The parsed public key."""
        return load_public_key(self.pem)

    def accepts(self, signer: Signer) -> bool:
        """True for a signer whose key is this key."""
        return signer.key_id is not None and signer.key_id == self.key_id

    def canonical(self) -> dict[str, Any]:
        """For hashing: the key's identity, not its PEM spelling or the file it came from."""
        return {"keyId": self.key_id, "requireTlog": self.require_tlog}


@dataclass(frozen=True)
class AttestationRequirement:
    """An in-toto attestation of ``predicate_type`` the authority's signer must have made."""

    name: str
    predicate_type: str

    def __post_init__(self) -> None:
        if not self.name:
            raise PolicyError("attestation name is required", "name")
        if not self.predicate_type:
            raise PolicyError("predicateType is required", "predicateType")


SIGNATURE_FORMATS = ("legacy", "bundle")


@dataclass(frozen=True)
class Authority:
    """One way to satisfy a policy: a keyless or key signer, and optionally attestations.

    As in policy-controller, an authority without attestations is satisfied by a signature
    from its signer; one with attestations by every listed attestation signed by its signer.
    ``signature_format`` is policy-controller's ``signatureFormat`` (``legacy`` or ``bundle``),
    None when the policy did not say.
    """

    name: str
    keyless: KeylessAuthority | None = None
    key: KeyAuthority | None = None
    attestations: tuple[AttestationRequirement, ...] = ()
    signature_format: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attestations", tuple(self.attestations))
        if not self.name:
            raise PolicyError("authority name is required", "name")
        if (self.keyless is None) == (self.key is None):
            raise PolicyError("an authority needs exactly one of keyless or key", "key")
        if self.signature_format is not None and self.signature_format not in SIGNATURE_FORMATS:
            raise PolicyError(
                f"signatureFormat must be legacy or bundle, not {self.signature_format!r}",
                "signatureFormat",
            )

    def accepts(self, signer: Signer) -> bool:
        """True if ``signer`` is one this authority trusts (keyless identity or key id)."""
        if self.keyless is not None:
            return self.keyless.accepts(signer)
        assert self.key is not None
        return self.key.accepts(signer)

    def describe(self) -> str:
        """A short human-readable account of whom this authority trusts, for reasons."""
        if self.keyless is not None:
            who = "; ".join(i.describe() for i in self.keyless.identities)
            return f"{self.name} (keyless: {who})"
        assert self.key is not None
        return f"{self.name} (key sha256:{self.key.key_id})"

    def canonical(self) -> dict[str, Any]:
        """For hashing; attestations are AND-ed, so their order does not matter."""
        out: dict[str, Any] = {"name": self.name}
        if self.keyless is not None:
            out["keyless"] = self.keyless.canonical()
        if self.key is not None:
            out["key"] = self.key.canonical()
        if self.attestations:
            out["attestations"] = sorted(
                ({"name": a.name, "predicateType": a.predicate_type} for a in self.attestations),
                key=lambda a: (a["name"], a["predicateType"]),
            )
        if self.signature_format is not None:
            out["signatureFormat"] = self.signature_format
        return out


@dataclass(frozen=True)
class Policy:
    """A named policy: images it covers, its authorities (OR-ed), mode and grace period.

    ``source`` says where it was defined (``file:line``) for messages. ``spec_hash`` is the
    hex sha256 of a canonical JSON (RFC 8785) of the normalised spec, computed when not
    given: equivalent spellings hash the same (glob and identity order, key file versus
    inline PEM, v1alpha1 versus v1beta1), and any change of meaning changes it. The name and
    source are not part of it; they identify the policy rather than define it.
    """

    name: str
    images: tuple[str, ...]
    mode: Mode = Mode.ENFORCE
    grace_period: timedelta = timedelta(0)
    authorities: tuple[Authority, ...] = ()
    source: str = ""
    spec_hash: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "authorities", tuple(self.authorities))
        object.__setattr__(self, "mode", Mode(self.mode))
        if not self.name:
            raise PolicyError("policy name is required", "name")
        if not self.images:
            raise PolicyError("at least one image glob is required", "images")
        for glob in self.images:
            try:
                validate_glob(glob)
            except GlobError as exc:
                raise PolicyError(str(exc), "images") from None
        if self.grace_period < timedelta(0):
            raise PolicyError("grace_period must not be negative", "grace_period")
        names = [a.name for a in self.authorities]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PolicyError(f"duplicate authority name {duplicates[0]!r}", "authorities")
        if not self.spec_hash:
            object.__setattr__(self, "spec_hash", self.compute_spec_hash())

    def canonical(self) -> dict[str, Any]:
        """The normalised spec that ``spec_hash`` is computed over."""
        grace_us = self.grace_period // timedelta(microseconds=1)
        return {
            "images": sorted(set(self.images)),
            "mode": str(self.mode),
            "gracePeriodMicroseconds": grace_us,
            "authorities": [a.canonical() for a in self.authorities],
        }

    def compute_spec_hash(self) -> str:
        """Hex sha256 of the RFC 8785 canonical JSON of :meth:`canonical`."""
        return hashlib.sha256(rfc8785.dumps(self.canonical())).hexdigest()

    def matches(self, ref: ImageReference, tags: Iterable[str] = ()) -> bool:
        """True if one of the image globs selects ``ref``.

        ``tags`` are further tags the same digest is known under, so that a tag glob applies
        to a digest however it was reached; the reference's own tag is always tried.
        """
        refs = [ref, *(replace(ref, tag=t) for t in tags)]
        return any(glob_matches(glob, r) for glob in self.images for r in refs)

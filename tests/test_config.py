"""The configuration file: the contract's example, each section, and errors with file:line:field."""

from __future__ import annotations

import base64
import json
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from watcher.config import (
    Config,
    ConfigError,
    RegistryConfig,
    Secret,
    default_state_dir,
    load_config,
)
from watcher.durations import format_duration, parse_duration
from watcher.refs import ImageReference
from watcher.registry.credentials import Credentials
from watcher.verdicts import Mode

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "example.yaml"
EXAMPLE_ENV = {
    "WATCHER_API_TOKEN": "api-token-value-1",
    "WEBHOOK_SECRET": "webhook-secret-value-2",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/slack-secret-3",
    "HOME": "/home/watcher",
}
DIGEST = "sha256:" + "cd" * 32
GH_ISSUER = "https://token.actions.githubusercontent.com"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ={"HOME": "/home/w", **(env or {})})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return info.value


def public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# --- the contract's example ---------------------------------------------------------------------


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, environ=EXAMPLE_ENV)
    assert config.path == EXAMPLE
    assert config.server.listen == "127.0.0.1:8080" and config.server.listen_port == 8080
    assert config.server.api_token is not None
    assert config.server.api_token.get() == EXAMPLE_ENV["WATCHER_API_TOKEN"]
    assert config.store.url == "sqlite:///home/watcher/.local/state/registry-watcher/watcher.db"
    assert config.state_dir == Path("/home/watcher/.local/state/registry-watcher")
    assert config.trust.trusted_root is None

    (local,) = config.registries
    assert (local.name, local.url, local.host) == (
        "local",
        "http://127.0.0.1:5000",
        "127.0.0.1:5000",
    )
    assert local.poll_interval == timedelta(seconds=60)
    assert local.max_concurrency == 8 and local.timeout == timedelta(seconds=30)
    assert local.auth is None
    assert local.webhook is not None and local.webhook.kind == "distribution"
    assert local.webhook.secret is not None
    assert local.webhook.secret.get() == EXAMPLE_ENV["WEBHOOK_SECRET"]
    assert local.watches("acme/app") and not local.watches("acme/team/app")

    names = [p.name for p in config.policies]
    assert names == ["acme-release", "acme-provenance", "acme-base-images"]
    release, provenance, base = config.policies
    assert release.mode is Mode.ENFORCE and release.grace_period == timedelta(minutes=2)
    assert [a.name for a in release.authorities] == ["github-actions", "release-key"]
    key = release.authorities[1].key
    assert key is not None and not key.require_tlog
    assert key.pem == (REPO / "config" / "keys" / "cosign.pub").read_bytes()
    assert release.source == f"{EXAMPLE}:27"
    assert provenance.grace_period == timedelta(0)
    assert provenance.authorities[0].attestations[0].predicate_type == (
        "https://slsa.dev/provenance/v1"
    )
    assert base.mode is Mode.WARN and base.grace_period == timedelta(minutes=5)
    assert base.source.endswith("policies/acme-base-images.yaml:9")

    am, chat = config.alerts
    assert am.alertmanager is not None and am.alertmanager.url == "http://127.0.0.1:9093"
    assert chat.webhook is not None and chat.webhook.format == "slack"
    assert chat.webhook.url.get() == EXAMPLE_ENV["SLACK_WEBHOOK_URL"]

    prod = ImageReference.parse(f"127.0.0.1:5000/acme/prod-api@{DIGEST}")
    assert config.registry_for(prod) is local
    assert [p.name for p in config.policies_for(prod)] == ["acme-release", "acme-provenance"]
    base_image = ImageReference.parse(f"127.0.0.1:5000/acme/base-debian@{DIGEST}")
    assert [p.name for p in config.policies_for(base_image)] == ["acme-release", "acme-base-images"]
    elsewhere = ImageReference.parse(f"ghcr.io/acme/prod-api@{DIGEST}")
    assert config.registry_for(elsewhere) is None and config.policies_for(elsewhere) == []


def test_example_needs_its_environment_variables() -> None:
    env = {k: v for k, v in EXAMPLE_ENV.items() if k != "WEBHOOK_SECRET"}
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, environ=env)
    assert str(info.value) == (
        f"{EXAMPLE}:25: registries[0].webhook.secret_env: "
        "environment variable WEBHOOK_SECRET is not set"
    )


def test_secrets_never_appear_in_repr_or_errors() -> None:
    config = load_config(EXAMPLE, environ=EXAMPLE_ENV)
    shown = [
        repr(config),
        str(config),
        repr(config.model_dump()),
        config.model_dump_json(),
        str(config.server.api_token),
    ]
    for text in shown:
        for name, secret in EXAMPLE_ENV.items():
            if name != "HOME":
                assert secret not in text
    assert "env:WEBHOOK_SECRET" in repr(config)


# --- errors name file, line and field -------------------------------------------------------------

REGISTRY = """\
registries:
  - name: local
    url: http://127.0.0.1:5000
"""


def test_bad_duration(tmp_path: Path) -> None:
    err = error(tmp_path, REGISTRY + "    poll_interval: 5 minutes\n")
    assert str(err) == (
        f"{tmp_path / 'config.yaml'}:4: registries[0].poll_interval: invalid duration "
        "'5 minutes' (want Go-style like 90s, 2m, 1h)"
    )


@pytest.mark.parametrize(
    ("text", "line", "field", "instead"),
    [
        (
            REGISTRY + "    auth: {username: u, password: hunter2-inline}\n",
            4,
            "registries[0].auth.password",
            "password_env or password_file",
        ),
        (
            REGISTRY + "    webhook:\n      kind: harbor\n      secret: hunter2-inline\n",
            6,
            "registries[0].webhook.secret",
            "secret_env or secret_file",
        ),
        ("server:\n  api_token: hunter2-inline\n", 2, "server.api_token", "api_token_env"),
        (
            "alerts:\n  - name: chat\n    webhook:\n      url: https://hooks.example/hunter2-inline\n",
            4,
            "alerts[0].webhook.url",
            "url_env or url_file",
        ),
        (
            "registries:\n  - name: r\n    url: https://u:hunter2-inline@registry.example\n",
            3,
            "registries[0].url",
            "credentials in a URL",
        ),
        (
            "store:\n  url: postgresql://u:hunter2-inline@db/watcher\n",
            2,
            "store.url",
            "PGPASSWORD",
        ),
    ],
)
def test_inline_secrets_are_errors(
    tmp_path: Path, text: str, line: int, field: str, instead: str
) -> None:
    (issue,) = error(tmp_path, text).issues
    assert (issue.line, issue.field) == (line, field)
    assert "inline secret" in issue.message and instead in issue.message
    assert "hunter2" not in str(issue)


def test_unknown_fields(tmp_path: Path) -> None:
    err = error(
        tmp_path,
        REGISTRY + "    poll_intervall: 60s\nserver: {listen: '127.0.0.1:1'}\nmetrics: {}\n",
    )
    assert [str(i) for i in err.issues] == [
        f"{tmp_path / 'config.yaml'}:4: registries[0].poll_intervall: unknown field "
        "(did you mean 'poll_interval'?)",
        f"{tmp_path / 'config.yaml'}:6: metrics: unknown field (known: server, store, trust, "
        "registries, policy_files, alerts, policies)",
    ]


INLINE_POLICY = f"""\
policies:
  - name: acme-release
    images: [{{glob: "127.0.0.1:5000/acme/**"}}]
    authorities:
      - name: github-actions
        keyless:
          identities:
            - issuer: {GH_ISSUER}
              subjectRegExp: ^https://github\\.com/acme/.*$
"""


def test_duplicate_policy_names_across_config_and_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        f"""\
        apiVersion: policy.sigstore.dev/v1beta1
        kind: ClusterImagePolicy
        metadata:
          name: acme-release
        spec:
          images: [{{glob: "**"}}]
          authorities: [{{keyless: {{identities: [{{issuer: {GH_ISSUER}, subject: s}}]}}}}]
        """,
        "policies/dup.yaml",
    )
    err = error(tmp_path, INLINE_POLICY + "policy_files: [policies/*.yaml]\n")
    (issue,) = err.issues
    assert str(issue) == (
        f"{tmp_path / 'policies/dup.yaml'}:4: metadata.name: duplicate policy name "
        f"'acme-release' (first defined at {tmp_path / 'config.yaml'}:2)"
    )


def test_duplicate_inline_policy_names(tmp_path: Path) -> None:
    second = INLINE_POLICY.split("\n", 1)[1]
    (issue,) = error(tmp_path, INLINE_POLICY + second).issues
    assert (issue.line, issue.field) == (10, "policies[1].name")
    assert "duplicate policy name 'acme-release'" in issue.message


def test_bad_regexp(tmp_path: Path) -> None:
    text = INLINE_POLICY.replace(r"^https://github\.com/acme/.*$", "'^https://github.com/(?!evil)'")
    (issue,) = error(tmp_path, text).issues
    assert (issue.line, issue.field) == (
        9,
        "policies[0].authorities[0].keyless.identities[0].subjectRegExp",
    )
    assert "lookaround" in issue.message


def test_bad_pem_in_key_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "cosign.pub").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n")
    text = (
        "policies:\n  - name: p\n    images: [{glob: '**'}]\n    authorities:\n"
        "      - name: release-key\n        key: {path: keys/cosign.pub}\n"
    )
    (issue,) = error(tmp_path, text).issues
    assert (issue.line, issue.field) == (6, "policies[0].authorities[0].key.path")
    assert str(tmp_path / "keys" / "cosign.pub") in issue.message
    assert "not a PEM public key" in issue.message


def test_missing_key_file(tmp_path: Path) -> None:
    text = (
        "policies:\n  - name: p\n    images: [{glob: '**'}]\n    authorities:\n"
        "      - key: {path: nowhere.pub}\n"
    )
    (issue,) = error(tmp_path, text).issues
    assert issue.field == "policies[0].authorities[0].key.path" and issue.line == 5
    assert "cannot read key file" in issue.message


def test_missing_environment_variable(tmp_path: Path) -> None:
    text = REGISTRY + "    auth:\n      username: watcher\n      password_env: REGISTRY_PASSWORD\n"
    (issue,) = error(tmp_path, text, {"OTHER": "hunter2"}).issues
    assert str(issue) == (
        f"{tmp_path / 'config.yaml'}:6: registries[0].auth.password_env: "
        "environment variable REGISTRY_PASSWORD is not set"
    )


def test_webhook_sink_url_is_checked_without_echoing_it(tmp_path: Path) -> None:
    text = "alerts:\n  - name: chat\n    webhook: {url_env: HOOK}\n"
    (issue,) = error(tmp_path, text, {"HOOK": "not-a-url-hunter2"}).issues
    assert (issue.line, issue.field) == (3, "alerts[0].webhook")
    assert "env:HOOK does not hold an http(s) URL" in issue.message
    assert "hunter2" not in str(issue)


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (
            REGISTRY + "    webhook: {kind: gitlab}\n",
            4,
            "registries[0].webhook.kind",
            "'distribution'",
        ),
        (REGISTRY + "    webhook: {kind: harbor}\n", 4, "registries[0].webhook", "secret_env"),
        (REGISTRY + "    max_concurrency: 0\n", 4, "registries[0].max_concurrency", "greater"),
        (REGISTRY + "    timeout: 0s\n", 4, "registries[0].timeout", "positive"),
        (REGISTRY + "    repositories: ['Acme/*']\n", 4, "registries[0].repositories", "lowercase"),
        (REGISTRY + "    auth: {username: u}\n", 4, "registries[0].auth", "password_env"),
        (REGISTRY + "  - name: local\n    url: https://b\n", 4, "registries[1].name", "duplicate"),
        ("registries:\n  - name: r\n    url: ftp://x\n", 3, "registries[0].url", "http://"),
        ("registries:\n  - name: r\n    url: https://x/v2/\n", 3, "registries[0].url", "path"),
        (
            "registries:\n  - name: 'a b'\n    url: https://x\n",
            2,
            "registries[0].name",
            "invalid name",
        ),
        ("registries:\n  - url: https://x\n", 2, "registries[0].name", "required"),
        ("server: {listen: localhost}\n", 1, "server.listen", "host:port"),
        ("store: {url: 'mysql://db/x'}\n", 1, "store.url", "sqlite"),
        ("trust: {trusted_root: missing.json}\n", 1, "trust.trusted_root", "no such file"),
        ("policy_files: [policies/*.yaml]\n", 1, "policy_files[0]", "matches no files"),
        ("alerts:\n  - name: a\n", 2, "alerts[0]", "exactly one of alertmanager or webhook"),
        (INLINE_POLICY + "    grace_period: -1m\n", 10, "policies[0].grace_period", "negative"),
        (INLINE_POLICY + "    mode: audit\n", 10, "policies[0].mode", "'enforce' or 'warn'"),
        (INLINE_POLICY + "    policy: {type: cue}\n", 10, "policies[0].policy", "cue/rego"),
        ("registries: {name: x}\n", 1, "registries", "valid tuple"),
    ],
)
def test_more_errors(tmp_path: Path, text: str, line: int, field: str, words: str) -> None:
    issues = error(tmp_path, text).issues
    assert any((i.line, i.field) == (line, field) and words in i.message for i in issues), [
        str(i) for i in issues
    ]


def test_yaml_problems(tmp_path: Path) -> None:
    assert str(error(tmp_path, "server:\n  listen: [\n")).startswith(
        f"{tmp_path / 'config.yaml'}:3: invalid YAML"
    )
    assert str(error(tmp_path, "server: {}\nserver: {}\n")) == (
        f"{tmp_path / 'config.yaml'}:2: server: duplicate key"
    )
    assert "expected a mapping" in str(error(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = REGISTRY + "    poll_interval: soon\n    timeout: never\nserver: {listen: x}\n"
    lines = [i.line for i in error(tmp_path, text).issues]
    assert lines == [4, 5, 6]


# --- sections ------------------------------------------------------------------------------


def test_an_empty_config_is_all_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "# nothing yet\n", {"XDG_STATE_HOME": "/var/state"})
    assert config.registries == () and config.policies == () and config.alerts == ()
    assert config.store.url == "sqlite:///var/state/registry-watcher/watcher.db"
    assert config.state_dir == Path("/var/state/registry-watcher")
    assert config.server.api_token is None


def test_state_directory_precedence() -> None:
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/rw:/x", "HOME": "/h"}) == Path(
        "/var/lib/rw"
    )
    assert default_state_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path("/s/registry-watcher")
    assert default_state_dir({"HOME": "/h"}) == Path("/h/.local/state/registry-watcher")


@pytest.mark.parametrize(
    ("url", "want", "sqlite"),
    [
        (
            "sqlite:///var/lib/rw/watcher.db",
            "sqlite:///var/lib/rw/watcher.db",
            "/var/lib/rw/watcher.db",
        ),
        ("sqlite:state/watcher.db", "sqlite://{base}/state/watcher.db", "{base}/state/watcher.db"),
        ("sqlite::memory:", "sqlite::memory:", None),
        (
            "postgresql://watcher@db.internal/watcher",
            "postgresql://watcher@db.internal/watcher",
            None,
        ),
    ],
)
def test_store_urls(tmp_path: Path, url: str, want: str, sqlite: str | None) -> None:
    config = load(tmp_path, f"store: {{url: '{url}'}}\n")
    assert config.store.url == want.format(base=tmp_path)
    expected = None if sqlite is None else Path(sqlite.format(base=tmp_path))
    assert config.store.sqlite_path == expected
    if expected is not None:
        assert config.state_dir == expected.parent


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "root.json").write_text("{}")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hook").write_text("hook-secret\n")
    config = load(
        tmp_path,
        REGISTRY
        + "    webhook: {kind: github, secret_file: secrets/hook}\n"
        + "trust: {trusted_root: trust/root.json}\n",
    )
    assert config.trust.trusted_root == tmp_path / "trust" / "root.json"
    webhook = config.registries[0].webhook
    assert webhook is not None and webhook.secret is not None
    assert webhook.secret.get() == "hook-secret"  # the trailing newline is not part of it
    assert webhook.secret.source == f"file:{tmp_path / 'secrets' / 'hook'}"


def test_insecure_webhook_has_no_secret(tmp_path: Path) -> None:
    config = load(tmp_path, REGISTRY + "    webhook: {kind: dockerhub, insecure: true}\n")
    webhook = config.registries[0].webhook
    assert webhook is not None and webhook.insecure and webhook.secret is None
    text = REGISTRY + "    webhook: {kind: github, insecure: true, secret_env: S}\n"
    assert "contradicts" in str(error(tmp_path, text, {"S": "x"}))


def test_registry_hosts_and_lookup(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        registries:
          - {name: hub, url: "https://registry-1.docker.io", repositories: [nginx, acme/*]}
          - {name: ghcr-acme, url: "https://ghcr.io:443/", repositories: ["acme/**"]}
          - {name: ghcr-other, url: "https://ghcr.io", repositories: ["other/*"]}
          - {name: local, url: "http://localhost:5000"}
        """,
    )
    hub, ghcr_acme, ghcr_other, local = config.registries
    assert [r.host for r in config.registries] == [
        "docker.io",
        "ghcr.io",
        "ghcr.io",
        "localhost:5000",
    ]
    assert ghcr_acme.url == "https://ghcr.io:443"
    assert hub.watches("library/nginx") and hub.watches("acme/app") and not hub.watches("x/y")
    assert local.repositories == ("**",) and local.watches("any/thing/at/all")

    def registry(image: str) -> RegistryConfig | None:
        return config.registry_for(ImageReference.parse(image))

    assert registry("nginx:latest") is hub
    assert registry("index.docker.io/acme/app") is hub
    assert registry("ghcr.io/other/x") is ghcr_other
    assert registry("ghcr.io/acme/team/x") is ghcr_acme
    assert registry("ghcr.io/unwatched/x") is ghcr_acme  # first for the host
    assert registry("localhost:5000/a/b") is local
    assert registry("quay.io/a/b") is None
    assert config.registry_named("local") is local and config.registry_named("x") is None


def test_auth_resolution(tmp_path: Path) -> None:
    docker = tmp_path / "docker.json"
    docker.write_text(
        json.dumps({"auths": {"ghcr.io": {"auth": base64.b64encode(b"bot:from-docker").decode()}}})
    )
    (tmp_path / "pw").write_text("from-file\n")
    config = load(
        tmp_path,
        f"""\
        registries:
          - name: explicit
            url: https://registry.example
            auth: {{username_env: REG_USER, password_file: pw, docker_config: {docker}}}
          - name: docker
            url: https://ghcr.io
            auth: {{docker_config: docker.json}}
        """,
        {"REG_USER": "robot"},
    )
    explicit, from_docker = config.registries
    assert explicit.auth is not None and from_docker.auth is not None
    assert explicit.auth.resolve(explicit.host) == Credentials("robot", "from-file")
    assert from_docker.auth.resolve("ghcr.io") == Credentials("bot", "from-docker")
    assert from_docker.auth.resolve("quay.io") is None
    assert "from-file" not in repr(config) and "from-docker" not in repr(config)


def test_malformed_docker_config_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "docker.json").write_text("{not json")
    text = REGISTRY + "    auth: {docker_config: docker.json}\n"
    (issue,) = error(tmp_path, text).issues
    assert (issue.line, issue.field) == (2, "registries[0]")
    assert "auth.docker_config" in issue.message and "not valid JSON" in issue.message


def test_inline_policy_with_key_data_and_grace(tmp_path: Path) -> None:
    pem = public_pem()
    config = load(
        tmp_path,
        "policies:\n  - name: p\n    grace_period: 1h30m\n    mode: warn\n"
        "    images: [{glob: 'ghcr.io/acme/**'}]\n    authorities:\n"
        "      - key:\n          data: |\n"
        + textwrap.indent(pem, " " * 12)
        + "        ctlog: {}\n",
    )
    (policy,) = config.policies
    assert policy.grace_period == timedelta(hours=1, minutes=30) and policy.mode is Mode.WARN
    (authority,) = policy.authorities
    assert authority.name == "authority-0"
    assert authority.key is not None and authority.key.require_tlog
    assert authority.key.pem.decode() == pem


def test_secret_objects_redact() -> None:
    secret = Secret("env:X", "hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert secret.get() == "hunter2"


# --- durations -----------------------------------------------------------------------------

DURATIONS = [
    ("90s", timedelta(seconds=90), "1m30s"),
    ("2m", timedelta(minutes=2), "2m0s"),
    ("1h", timedelta(hours=1), "1h0m0s"),
    ("1h30m", timedelta(hours=1, minutes=30), "1h30m0s"),
    ("500ms", timedelta(milliseconds=500), "500ms"),
    ("1.5h", timedelta(minutes=90), "1h30m0s"),
    ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5), "2h45m30.5s"),
    ("250us", timedelta(microseconds=250), "250\u00b5s"),
    ("1\u00b5s", timedelta(microseconds=1), "1\u00b5s"),
    ("0", timedelta(0), "0s"),
    ("0s", timedelta(0), "0s"),
    ("-1m", timedelta(minutes=-1), "-1m0s"),
    ("+3s", timedelta(seconds=3), "3s"),
    (".5s", timedelta(milliseconds=500), "500ms"),
]


@pytest.mark.parametrize(("text", "want", "shown"), DURATIONS)
def test_durations(text: str, want: timedelta, shown: str) -> None:
    assert parse_duration(text) == want
    assert format_duration(want) == shown
    assert parse_duration(format_duration(want)) == want


@pytest.mark.parametrize(
    "text", ["5 minutes", "60", "1d", "1H", "", "s", "1m 30s", "1.s.", "-", 60, True]
)
def test_invalid_durations(text: object) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .* \(want Go-style like 90s, 2m, 1h\)"):
        parse_duration(text)


def test_relative_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("config/example.yaml", environ=EXAMPLE_ENV)
    assert config.policies[2].source == "config/policies/acme-base-images.yaml:9"
    key = config.policies[0].authorities[1].key
    assert key is not None and key.pem == (REPO / "config/keys/cosign.pub").read_bytes()

"""Image and repository globs: policy-controller's semantics, case by case.

The first table is policy-controller's own ``pkg/apis/glob`` test table (image strings parsed
with our ImageReference, which normalises Docker Hub to ``docker.io``); the second covers
where a registry watcher has to decide something policy-controller never sees.
"""

from __future__ import annotations

import pytest

from watcher.policy.glob import (
    GlobError,
    candidate_names,
    glob_matches,
    repository_glob_matches,
    validate_glob,
    validate_repository_glob,
)
from watcher.refs import ImageReference, ReferenceError

DIGEST = "sha256:5504f2a95018e3d8a52d80d9e1a128c6ea337581808ff9fe96f5628ce2336350"
OTHER = "sha256:" + "0" * 64

# (image, glob, want) from sigstore/policy-controller pkg/apis/glob/glob_test.go.
POLICY_CONTROLLER_CASES = [
    ("foo", "index.docker.io/library/foo:latest", True),
    ("foo", "index.docker.io/library/foo:*", True),
    ("foo", "index.docker.io/library/*", True),
    ("foo", "index.docker.io/library/*:latest", True),
    ("foo", "index.docker.io/*/*", True),
    ("foo", "index.docker.io/**", True),
    ("foo", "index.docker.**", True),
    ("foo", "inde**", True),
    ("foo", "**", True),
    ("foo", "foo", True),
    ("foo", "foo*", True),
    ("foo", "foo**", True),
    ("myuser/myapp", "index.docker.io/myuser/myapp:latest", True),
    ("myuser/myapp", "index.docker.io/myuser/myapp:*", True),
    ("myuser/myapp", "index.docker.io/myuser/*", True),
    ("myuser/myapp", "index.docker.io/myuser/*:latest", True),
    ("myuser/myapp", "index.docker.io/*/*", True),
    ("myuser/myapp", "index.docker.io/**", True),
    ("myuser/myapp", "index.docker.**", True),
    ("myuser/myapp", "inde**", True),
    ("myuser/myapp", "**", True),
    ("myuser/myapp", "myuser/myapp", True),
    ("myuser/myapp", "myuser/myapp*", True),
    ("myuser/myapp", "myuser/myapp**", True),
    ("ghcr.io/foo/bar", "ghcr.io/*/*", True),
    ("ghcr.io/foo/bar", "ghcr.io/**", True),
    ("ghcr.io/foo", "ghcr.io/*/*", False),
    ("ghcr.io/foo", "ghcr.io/**", True),
    ("ghcr.io/foo", "ghc**", True),
    ("ghcr.io/foo", "**", True),
    ("ghcr.io/foo", "*/**", True),
    ("ghcr.io/foo", "ghcr.io/foo*", True),
    ("ghcr.io/foo", "ghcr.io/foo**", True),
    ("prefix-ghcr.io/foo", "ghcr.io/foo", False),
    ("ghcr.io/foo-suffix", "ghcr.io/foo", False),
    ("ghcrxio/foo", "ghcr.io/**", False),
    ("foo", "*", True),
    ("myuser/myapp", "*/*", True),
    (f"ghcr.io/foo@{DIGEST}", f"ghcr.io/foo@{DIGEST}", True),
]


@pytest.mark.parametrize(("image", "glob", "want"), POLICY_CONTROLLER_CASES)
def test_policy_controller_table(image: str, glob: str, want: bool) -> None:
    assert glob_matches(glob, ImageReference.parse(image)) is want


@pytest.mark.parametrize("glob", [".+", "[a-z]*", "", "ghcr.io/foo bar", "ghcr.io/{a,b}", "x?"])
def test_invalid_globs_are_rejected(glob: str) -> None:
    with pytest.raises(GlobError):
        validate_glob(glob)
    with pytest.raises(GlobError):
        glob_matches(glob, ImageReference.parse("ghcr.io/foo"))


def test_invalid_reference_is_not_matched() -> None:
    # policy-controller: {image: "invalid&name", glob: "**", wantErr: true}
    with pytest.raises(ReferenceError):
        ImageReference.parse("invalid&name")


# (image, glob, want): what a watcher, which evaluates digests, needs on top.
WATCHER_CASES = [
    # The contract's example globs, against the digests the watcher evaluates.
    (f"127.0.0.1:5000/acme/app@{DIGEST}", "127.0.0.1:5000/acme/**", True),
    (f"127.0.0.1:5000/acme/team/app@{DIGEST}", "127.0.0.1:5000/acme/**", True),
    (f"127.0.0.1:5000/acme/prod-app@{DIGEST}", "127.0.0.1:5000/acme/prod-*", True),
    (f"127.0.0.1:5000/acme/dev-app@{DIGEST}", "127.0.0.1:5000/acme/prod-*", False),
    (f"127.0.0.1:5000/acme/prod/app@{DIGEST}", "127.0.0.1:5000/acme/prod-*", False),
    (f"127.0.0.1:5000/other/app@{DIGEST}", "127.0.0.1:5000/acme/**", False),
    (f"127.0.0.1:5001/acme/app@{DIGEST}", "127.0.0.1:5000/acme/**", False),
    # A glob naming the repository exactly covers its digests (see glob.py).
    (f"ghcr.io/acme/app@{DIGEST}", "ghcr.io/acme/app", True),
    (f"ghcr.io/acme/app2@{DIGEST}", "ghcr.io/acme/app", False),
    # Digest globs select one digest.
    (f"ghcr.io/acme/app@{OTHER}", f"ghcr.io/acme/app@{DIGEST}", False),
    (f"ghcr.io/acme/app@{DIGEST}", "ghcr.io/acme/app@sha256:*", True),
    # Tag globs match the reference's tag; a bare digest has none.
    (f"ghcr.io/acme/app@{DIGEST}", "ghcr.io/acme/app:v1*", False),
    (f"ghcr.io/acme/app:v1.2@{DIGEST}", "ghcr.io/acme/app:v1*", True),
    ("ghcr.io/acme/app:v2", "ghcr.io/acme/app:v1*", False),
    # Docker Hub: every spelling of the registry selects it; no registry means Docker Hub.
    (f"nginx@{DIGEST}", "docker.io/library/nginx", True),
    (f"docker.io/library/nginx@{DIGEST}", "index.docker.io/library/*", True),
    (f"index.docker.io/library/nginx@{DIGEST}", "registry-1.docker.io/library/**", True),
    (f"nginx@{DIGEST}", "nginx", True),
    (f"nginx@{DIGEST}", "library/nginx", True),
    (f"nginx@{DIGEST}", "*", True),
    (f"acme/app@{DIGEST}", "acme/*", True),
    (f"acme/app@{DIGEST}", "docker.io/acme/*", True),
    (f"ghcr.io/acme/app@{DIGEST}", "acme/*", False),
    (f"ghcr.io/acme/app@{DIGEST}", "*/*", False),
    (f"ghcr.io/acme/app@{DIGEST}", "docker.io/**", False),
    # * stays within a segment; ** crosses them.
    (f"ghcr.io/acme/team/app@{DIGEST}", "ghcr.io/acme/*", False),
    (f"ghcr.io/acme/team/app@{DIGEST}", "ghcr.io/acme/**", True),
    (f"ghcr.io/acme/team/app@{DIGEST}", "ghcr.io/**/app", True),
    (f"ghcr.io/acme/team/app@{DIGEST}", "**/team/*", True),
    (f"localhost/acme/app@{DIGEST}", "localhost/**", True),
]


@pytest.mark.parametrize(("image", "glob", "want"), WATCHER_CASES)
def test_watcher_cases(image: str, glob: str, want: bool) -> None:
    assert glob_matches(glob, ImageReference.parse(image)) is want


def test_candidates_of_a_docker_hub_digest() -> None:
    ref = ImageReference.parse(f"nginx@{DIGEST}")
    assert candidate_names(ref) == (
        "index.docker.io/library/nginx",
        f"index.docker.io/library/nginx@{DIGEST}",
        "library/nginx",
        f"library/nginx@{DIGEST}",
        "nginx",
        f"nginx@{DIGEST}",
    )


def test_candidates_of_an_untagged_name_default_to_latest() -> None:
    assert candidate_names(ImageReference.parse("ghcr.io/a/b")) == (
        "ghcr.io/a/b",
        "ghcr.io/a/b:latest",
    )


# (glob, repository, docker_hub, want) for a registry's `repositories`.
REPOSITORY_CASES = [
    ("acme/*", "acme/app", False, True),
    ("acme/*", "acme/team/app", False, False),
    ("acme/**", "acme/team/app", False, True),
    ("acme/**", "acmes/app", False, False),
    ("**", "anything/at/all", False, True),
    ("*", "app", False, True),
    ("*", "acme/app", False, False),
    ("acme/prod-*", "acme/prod-api", False, True),
    ("acme/prod-*", "acme/dev-api", False, False),
    ("acme/app", "acme/app", False, True),
    ("acme.io/app", "acmexio/app", False, False),
    # Docker Hub: a single segment is an official image.
    ("nginx", "library/nginx", True, True),
    ("*", "library/nginx", True, True),
    ("*", "acme/app", True, False),
    ("**", "acme/app", True, True),
]


@pytest.mark.parametrize(("glob", "repository", "hub", "want"), REPOSITORY_CASES)
def test_repository_globs(glob: str, repository: str, hub: bool, want: bool) -> None:
    assert repository_glob_matches(glob, repository, docker_hub=hub) is want


@pytest.mark.parametrize("glob", ["", "Acme/*", "acme/[a-z]", "/acme", "acme/", "acme//x", "a b"])
def test_invalid_repository_globs(glob: str) -> None:
    with pytest.raises(GlobError):
        validate_repository_glob(glob)

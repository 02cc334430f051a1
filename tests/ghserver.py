"""A GitHub-compatible REST server for tests: in-memory state, real HTTP on 127.0.0.1.

It answers the endpoints mlops-ci uses with GitHub's JSON shapes and status codes (pulls, files,
reviews, PR commits, contents at a ref, team memberships, statuses, issues and issue comments,
check runs), paginates with `Link` headers, puts `url` fields that point back at itself, records
every request and can inject faults (5xx, rate limits). Reuse it from tests:

    server = GitHubServer().start()
    repo = server.add_repo("acme/models")
    pr = repo.add_pull(7, author="carol", base_files={...}, head_files={...})
    pr.add_review("dave", "APPROVED")
    env = server.env(repo="acme/models")   # GITHUB_API_URL, GITHUB_TOKEN, GITHUB_REPOSITORY
    repo.add_comment(7, "mallory", "text")  # a comment someone else wrote

Tokens act like an app installation token (the Actions GITHUB_TOKEN): `GET /user` is 403 and
comments they write are github-actions[bot]'s; `server.token_logins[token] = login` makes a token
a user's (a PAT), whose comments are theirs.

or standalone, for an `act` run: `python -m tests.ghserver --port 8765 --state state.json`
(state format: `GitHubServer.load_state`); `GET /_mock/requests` and `GET /_mock/state` return
what was recorded, `POST /_mock/state` replaces the state, `POST /_mock/reviews` adds a review
to a pull request and `POST /_mock/faults` adds a fault (the arguments of `GitHubServer.fail`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

MAX_STATUS_DESCRIPTION = 140
MAX_STATUS_CONTEXT = 255  # a status context (compared case-insensitively, as GitHub does)


MAX_LISTED_FILES = 3000  # GitHub's pull-request files list stops here
MAX_LISTED_COMMITS = 250  # and its commits list here (the pull request's `commits` counts all)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_sha(seed: str) -> str:
    """A 40-hex commit id derived from `seed` (stable across runs)."""
    return hashlib.sha1(seed.encode()).hexdigest()


def blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    status: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "body": self.body,
            "status": self.status,
        }


@dataclass
class Fault:
    """Answer `status` (with headers/body) to matching requests, `times` times (None: forever)."""

    path: str  # a regular expression matched against the whole path (no query)
    status: int = 500
    times: int | None = 1
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    #: carry the request out, then answer `status` (a gateway that gave up on a GitHub that
    #: went on to act: the client cannot tell whether it happened)
    after: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        return re.fullmatch(self.path, path) is not None


@dataclass
class User:
    login: str
    type: str = "User"  # "Bot" for apps
    id: int = 0


class Pull:
    """One pull request of a `Repo`: files, reviews and commits as the test sets them up."""

    def __init__(
        self,
        repo: Repo,
        number: int,
        author: str,
        head_sha: str,
        base_sha: str,
        *,
        title: str = "",
        head_ref: str = "feature",
        base_ref: str = "main",
    ) -> None:
        self.repo = repo
        self.number = number
        self.author = author
        self.head_sha = head_sha
        self.base_sha = base_sha
        self.title = title or f"Pull request {number}"
        self.head_ref = head_ref
        self.base_ref = base_ref
        self.state = "open"
        self.merged_at: str | None = None
        self.merge_commit_sha: str | None = None
        self.merged_by: str | None = None
        self.files: list[dict[str, Any]] = []
        self.reviews: list[dict[str, Any]] = []
        self.commits: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []  # the issue timeline's events (dismissals)

    # -- set-up helpers ------------------------------------------------------------------------

    def add_file(
        self,
        filename: str,
        status: str = "modified",
        *,
        previous_filename: str | None = None,
        additions: int = 1,
        deletions: int = 0,
    ) -> dict[str, Any]:
        """One entry of the PR's files list (status: added, removed, modified, renamed, ...)."""
        base = self.repo.server.url
        entry: dict[str, Any] = {
            "sha": fake_sha(f"{self.head_sha}:{filename}"),
            "filename": filename,
            "status": status,
            "additions": additions,
            "deletions": deletions,
            "changes": additions + deletions,
            "blob_url": f"{base}/{self.repo.full_name}/blob/{self.head_sha}/{filename}",
            "raw_url": f"{base}/{self.repo.full_name}/raw/{self.head_sha}/{filename}",
            "contents_url": f"{self.repo.api}/contents/{quote(filename)}?ref={self.head_sha}",
            "patch": "@@ -1 +1 @@",
        }
        if previous_filename is not None:
            entry["previous_filename"] = previous_filename
        self.files.append(entry)
        return entry

    def add_review(
        self,
        login: str,
        state: str,
        *,
        commit_id: str | None = None,
        user_type: str = "User",
        association: str = "MEMBER",
        body: str = "",
    ) -> dict[str, Any]:
        """A submitted review (APPROVED, CHANGES_REQUESTED, COMMENTED or DISMISSED), in order."""
        server = self.repo.server
        trusted = association in ("OWNER", "MEMBER", "COLLABORATOR")
        self.repo.permissions.setdefault(login.lower(), "write" if trusted else "read")
        review_id = next(server.ids)
        review = {
            "id": review_id,
            "node_id": f"PRR_{review_id}",
            "user": server.user_json(login, user_type),
            "body": body,
            "state": state,
            "html_url": f"{server.url}/{self.repo.full_name}/pull/{self.number}"
            f"#pullrequestreview-{review_id}",
            "pull_request_url": f"{self.repo.api}/pulls/{self.number}",
            "author_association": association,
            "_links": {
                "html": {"href": f"{server.url}/{self.repo.full_name}/pull/{self.number}"},
                "pull_request": {"href": f"{self.repo.api}/pulls/{self.number}"},
            },
            "submitted_at": _now(),
            "commit_id": commit_id or self.head_sha,
        }
        self.reviews.append(review)
        return review

    def dismiss(
        self, review: Mapping[str, Any], *, at: str | None = None, by: str = "maintainer"
    ) -> None:
        """What GitHub does on dismissal: that review's state becomes DISMISSED (its
        `submitted_at` stays), and the issue timeline gains a `review_dismissed` event."""
        server = self.repo.server
        for r in self.reviews:
            if r["id"] == review["id"]:
                event_id = next(server.ids)
                self.timeline.append(
                    {
                        "id": event_id,
                        "node_id": f"RDE_{event_id}",
                        "url": f"{self.repo.api}/issues/events/{event_id}",
                        "actor": server.user_json(by),
                        "event": "review_dismissed",
                        "commit_id": None,
                        "commit_url": None,
                        "created_at": at or _now(),
                        "dismissed_review": {
                            "state": str(r["state"]).lower(),
                            "review_id": r["id"],
                            "dismissal_message": "dismissed",
                            "dismissal_commit_id": None,
                        },
                    }
                )
                r["state"] = "DISMISSED"

    def add_commit(self, author: str | None, committer: str | None = None, sha: str = "") -> str:
        """A commit on the PR; `author`/`committer` are GitHub logins (None: not linked)."""
        server = self.repo.server
        sha = sha or fake_sha(f"{self.number}:{len(self.commits)}:{author}")
        who = {"name": author or "someone", "email": "x@example.com", "date": _now()}
        self.commits.append(
            {
                "sha": sha,
                "node_id": f"C_{sha[:8]}",
                "url": f"{self.repo.api}/commits/{sha}",
                "html_url": f"{server.url}/{self.repo.full_name}/commit/{sha}",
                "commit": {"author": who, "committer": who, "message": "change"},
                "author": server.user_json(author) if author else None,
                "committer": server.user_json(committer or author)
                if (committer or author)
                else None,
                "parents": [],
            }
        )
        return sha

    def push(self, head_sha: str | None = None) -> str:
        """A new push: the head moves, so approvals on the old head become stale."""
        old = self.head_sha
        self.head_sha = head_sha or fake_sha(f"{self.number}:push:{len(self.commits)}:{old}")
        if old in self.repo.trees and self.head_sha not in self.repo.trees:
            self.repo.trees[self.head_sha] = dict(self.repo.trees[old])  # same files
        self.add_commit(self.author, sha=self.head_sha)
        return self.head_sha

    def merge(
        self,
        sha: str | None = None,
        *,
        by: str = "maintainer",
        files: Mapping[str, str | bytes] | None = None,
        rebased: Iterable[str] = (),
    ) -> str:
        """Merge (merge, squash or rebase: GitHub reports each the same way): the PR closes and
        `merge_commit_sha` is the commit on the base branch, whose tree is `files` (default: the
        head's). `GET /commits/{sha}/pulls` then answers this pull request, as it does for each
        of `rebased`: a rebase merge's other commits, which GitHub associates with it too."""
        sha = sha or fake_sha(f"{self.repo.full_name}#{self.number}:merge")
        self.state, self.merged_at, self.merged_by = "closed", _now(), by
        self.merge_commit_sha = sha
        if files is not None:
            self.repo.set_files(sha, files)
        elif self.head_sha in self.repo.trees:
            self.repo.trees[sha] = dict(self.repo.trees[self.head_sha])
        for commit in (*rebased, sha):
            self.repo.commit_pulls.setdefault(commit, []).append(self.number)
        return sha

    def to_json(self) -> dict[str, Any]:
        server = self.repo.server
        repo_json = self.repo.to_json()
        return {
            "url": f"{self.repo.api}/pulls/{self.number}",
            "id": 1000 + self.number,
            "node_id": f"PR_{self.number}",
            "html_url": f"{server.url}/{self.repo.full_name}/pull/{self.number}",
            "diff_url": f"{server.url}/{self.repo.full_name}/pull/{self.number}.diff",
            "issue_url": f"{self.repo.api}/issues/{self.number}",
            "commits_url": f"{self.repo.api}/pulls/{self.number}/commits",
            "review_comments_url": f"{self.repo.api}/pulls/{self.number}/comments",
            "comments_url": f"{self.repo.api}/issues/{self.number}/comments",
            "statuses_url": f"{self.repo.api}/statuses/{self.head_sha}",
            "number": self.number,
            "state": self.state,
            "locked": False,
            "title": self.title,
            "user": server.user_json(self.author),
            "body": "",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": _now(),
            "draft": False,
            "merged": self.merged_at is not None,
            "merged_at": self.merged_at,
            "closed_at": self.merged_at,
            "merge_commit_sha": self.merge_commit_sha,
            "merged_by": server.user_json(self.merged_by) if self.merged_by else None,
            "mergeable": None,
            "author_association": "MEMBER",
            "head": {
                "label": f"{self.repo.owner}:{self.head_ref}",
                "ref": self.head_ref,
                "sha": self.head_sha,
                "user": server.user_json(self.repo.owner),
                "repo": repo_json,
            },
            "base": {
                "label": f"{self.repo.owner}:{self.base_ref}",
                "ref": self.base_ref,
                "sha": self.base_sha,
                "user": server.user_json(self.repo.owner),
                "repo": repo_json,
            },
            "commits": len(self.commits),
            "changed_files": len(self.files),
        }


class Repo:
    """A repository: files per commit, pulls, statuses, issue comments, check runs."""

    def __init__(self, server: GitHubServer, full_name: str) -> None:
        self.server = server
        self.full_name = full_name
        self.owner, self.name = full_name.split("/", 1)
        self.default_branch = "main"
        self.trees: dict[str, dict[str, bytes]] = {}  # ref (sha or branch) -> path -> bytes
        self.pulls: dict[int, Pull] = {}
        self.statuses: list[dict[str, Any]] = []
        self.comments: list[dict[str, Any]] = []  # issue comments, all issues, in order
        self.check_runs: list[dict[str, Any]] = []
        self.issues: dict[int, dict[str, Any]] = {}  # number -> issue (not pull requests)
        # GitHub silently drops the labels of an issue created by a token that cannot label
        self.drop_labels = False
        self.commit_pulls: dict[str, list[int]] = {}  # commit sha -> pulls associated with it
        self.deployments: list[dict[str, Any]] = []  # each with its "statuses", newest last
        # login (lowercased) -> repository role (admin, maintain, write, triage, read); a review
        # added with a MEMBER/OWNER/COLLABORATOR association gives its author write by default
        self.permissions: dict[str, str] = {}
        # (base, head) -> their merge base, for the compare API; default: base itself
        self.merge_bases: dict[tuple[str, str], str] = {}
        # branch -> the commit it points at now (GET /git/ref/heads/{branch}); a branch left
        # out points at the base_sha of the newest pull request into it
        self.branches: dict[str, str] = {}

    @property
    def api(self) -> str:
        return f"{self.server.url}/repos/{self.full_name}"

    def set_files(self, ref: str, files: Mapping[str, str | bytes]) -> None:
        """The repository's files at commit (or branch) `ref`, replacing what was there."""
        self.trees[ref] = {p: (v.encode() if isinstance(v, str) else v) for p, v in files.items()}

    def add_pull(
        self,
        number: int,
        *,
        author: str = "author",
        base_files: Mapping[str, str | bytes] | None = None,
        head_files: Mapping[str, str | bytes] | None = None,
        head_sha: str | None = None,
        base_sha: str | None = None,
        files: Iterable[tuple[str, str] | tuple[str, str, str]] | None = None,
    ) -> Pull:
        """A pull request; with base/head file trees its files list is derived from their diff.

        `files` overrides the derived list: (filename, status) or (filename, status, previous).
        """
        head_sha = head_sha or fake_sha(f"{self.full_name}#{number}:head")
        base_sha = base_sha or fake_sha(f"{self.full_name}#{number}:base")
        pull = Pull(self, number, author, head_sha, base_sha)
        if base_files is not None:
            self.set_files(base_sha, base_files)
        if head_files is not None:
            self.set_files(head_sha, head_files)
        if files is not None:
            for f in files:
                pull.add_file(f[0], f[1], previous_filename=f[2] if len(f) > 2 else None)  # type: ignore[misc]
        elif base_files is not None and head_files is not None:
            base, head = self.trees[base_sha], self.trees[head_sha]
            for path in sorted(set(base) | set(head)):
                if path not in base:
                    pull.add_file(path, "added")
                elif path not in head:
                    pull.add_file(path, "removed")
                elif base[path] != head[path]:
                    pull.add_file(path, "modified")
        pull.add_commit(author, sha=head_sha)
        self.pulls[number] = pull
        return pull

    def add_comment(
        self, issue: int, login: str, body: str, user_type: str = "User"
    ) -> dict[str, Any]:
        """An issue comment someone already wrote (GitHub's shape), e.g. a reviewer's."""
        server = self.server
        cid = next(server.ids)
        comment = {
            "_issue": issue,
            "id": cid,
            "node_id": f"IC_{cid}",
            "url": f"{self.api}/issues/comments/{cid}",
            "html_url": f"{server.url}/{self.full_name}/pull/{issue}#issuecomment-{cid}",
            "issue_url": f"{self.api}/issues/{issue}",
            "body": body,
            "user": server.user_json(login, user_type),
            "created_at": _now(),
            "updated_at": _now(),
            "author_association": "MEMBER" if user_type == "User" else "NONE",
        }
        self.comments.append(comment)
        return comment

    def to_json(self) -> dict[str, Any]:
        return {
            "id": 1,
            "node_id": "R_1",
            "name": self.name,
            "full_name": self.full_name,
            "private": False,
            "owner": self.server.user_json(self.owner, "Organization"),
            "html_url": f"{self.server.url}/{self.full_name}",
            "url": self.api,
            "default_branch": self.default_branch,
            "fork": False,
        }


class GitHubServer:
    """The server and its in-memory state; `start()` binds 127.0.0.1 on a free port."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, token: str | None = "test-token"
    ) -> None:
        self.host = host
        self.port = port
        self.token = token  # None: accept any (or no) credentials
        self.teams_token: str | None = None  # set: team memberships need this token, else 403
        self.repos: dict[str, Repo] = {}
        self.teams: dict[tuple[str, str], dict[str, str]] = {}  # (org, slug) -> login -> state
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.ids = itertools.count(5001)
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.public_url: str | None = None  # what `url` fields say, if not the bound address
        # token -> login for user tokens (a PAT): `GET /user` answers it and comments are theirs.
        # Any other token is an app installation token, like the Actions GITHUB_TOKEN: `GET
        # /user` is 403 and what it writes appears as github-actions[bot].
        self.token_logins: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> GitHubServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> GitHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def env(self, repo: str | None = None, event_path: str | None = None) -> dict[str, str]:
        """The runner variables that point mlops-ci at this server."""
        env = {"GITHUB_API_URL": self.url, "GITHUB_TOKEN": self.token or "anything"}
        if repo:
            env["GITHUB_REPOSITORY"] = repo
        if event_path:
            env["GITHUB_EVENT_PATH"] = event_path
        return env

    # -- state set-up --------------------------------------------------------------------------

    def add_repo(self, full_name: str) -> Repo:
        repo = Repo(self, full_name)
        self.repos[full_name] = repo
        return repo

    def add_team_member(self, team: str, login: str, state: str = "active") -> None:
        """`team` as "@org/slug" or "org/slug"; state "active" or "pending"."""
        org, slug = team.lstrip("@").split("/", 1)
        self.teams.setdefault((org.lower(), slug.lower()), {})[login.lower()] = state

    def fail(
        self,
        path: str,
        status: int = 500,
        *,
        times: int | None = 1,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        after: bool = False,
    ) -> Fault:
        """Answer the next `times` requests whose path fully matches regex `path` with `status`
        (`after`: once each has been carried out)."""
        fault = Fault(path, status, times, method, dict(headers or {}), body, after)
        with self.lock:
            self.faults.append(fault)
        return fault

    def rate_limit(
        self,
        path: str,
        *,
        times: int | None = 1,
        reset_in: float = 1.0,
        retry_after: float | None = None,
        status: int = 403,
    ) -> Fault:
        """GitHub's primary rate-limit answer: 403, X-RateLimit-Remaining 0, a reset time."""
        headers = {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Used": "5000",
            "X-RateLimit-Reset": str(int(time.time() + reset_in)),
            "X-RateLimit-Resource": "core",
        }
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        body = {
            "message": "API rate limit exceeded for installation ID 1.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        }
        return self.fail(path, status, times=times, headers=headers, body=body)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, filtered by method and by a regex on the path."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (path is None or re.fullmatch(path, r.path))
            ]

    def user_json(self, login: str, user_type: str = "User") -> dict[str, Any]:
        uid = int(hashlib.md5(login.encode()).hexdigest()[:6], 16)
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_{uid}",
            "avatar_url": f"{self.url}/avatars/{login}",
            "url": f"{self.url}/users/{quote(login)}",
            "html_url": f"{self.url}/{quote(login)}",
            "type": user_type,
            "site_admin": False,
        }

    # -- state as JSON (standalone mode) -------------------------------------------------------

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Set up from JSON:

        {"token": "t", "teams_token": null,
         "teams": {"@acme/ml-governance": ["dave"]},
         "repos": {"acme/models": {
            "files": {"<sha>": {"path": "text"}},
            "pulls": [{"number": 7, "author": "carol", "base_sha": "...", "head_sha": "...",
                       "base_files": {...}, "head_files": {...},
                       "files": [["path", "modified", "previous"]],
                       "commits": [{"author": "carol", "committer": "carol"}],
                       "reviews": [{"login": "dave", "state": "APPROVED", "commit_id": null,
                                    "user_type": "User", "association": "MEMBER"}],
                       "merge": {"sha": "...", "by": "maintainer", "files": {...}}}]}}}
        """
        with self.lock:
            if "token" in state:
                self.token = state["token"]
            self.teams_token = state.get("teams_token")
            self.repos.clear()
            self.teams.clear()
            for team, members in state.get("teams", {}).items():
                for login in members:
                    self.add_team_member(team, login)
            for name, spec in state.get("repos", {}).items():
                repo = self.add_repo(name)
                for ref, files in spec.get("files", {}).items():
                    repo.set_files(ref, files)
                for p in spec.get("pulls", []):
                    pull = repo.add_pull(
                        int(p["number"]),
                        author=p.get("author", "author"),
                        base_files=p.get("base_files"),
                        head_files=p.get("head_files"),
                        head_sha=p.get("head_sha"),
                        base_sha=p.get("base_sha"),
                        files=[tuple(f) for f in p["files"]] if "files" in p else None,
                    )
                    for c in p.get("commits", []):
                        pull.add_commit(c.get("author"), c.get("committer"))
                    if "merge" in p:  # {"sha": "...", "by": "login", "files": {...}}
                        merge = p["merge"] or {}
                        pull.merge(merge.get("sha"), by=merge.get("by", "maintainer"),
                                   files=merge.get("files"))  # fmt: skip
                    for r in p.get("reviews", []):
                        pull.add_review(
                            r["login"],
                            r["state"],
                            commit_id=r.get("commit_id"),
                            user_type=r.get("user_type", "User"),
                            association=r.get("association", "MEMBER"),
                        )

    def dump_state(self) -> dict[str, Any]:
        """What was written: statuses, comments and check runs per repository."""
        with self.lock:
            return {
                "repos": {
                    name: {
                        "statuses": repo.statuses,
                        "comments": repo.comments,
                        "check_runs": repo.check_runs,
                        "issues": list(repo.issues.values()),
                        "deployments": repo.deployments,
                    }
                    for name, repo in self.repos.items()
                }
            }


def _git_trees(repo: Repo) -> dict[str, Any]:
    """Git tree objects of every commit in `repo.trees`: "commit:<ref>" -> root tree sha,
    "tree:<ref>:<folder>" -> tree sha, and tree sha -> {"ref", "folder"}. A tree's sha hashes
    its contents, so equal folders at two commits have equal shas, as in git."""
    out: dict[str, Any] = {}
    for ref, files in repo.trees.items():
        folders: dict[str, list[str]] = {"": []}
        for path in files:
            parts = path.split("/")
            for i in range(len(parts)):
                folders.setdefault("/".join(parts[:i]), [])
        for folder in sorted(folders, key=lambda f: -f.count("/") if f else 1):
            prefix = f"{folder}/" if folder else ""
            inside = sorted(
                f"{p[len(prefix) :]}={blob_sha(d)}"
                for p, d in files.items()
                if p.startswith(prefix)
            )
            sha = fake_sha("tree:" + "\n".join(inside))
            out[f"tree:{ref}:{folder}"] = sha
            out.setdefault(sha, {"ref": ref, "folder": folder})
        out[f"commit:{ref}"] = out[f"tree:{ref}:"]
    return out


def _tree_entry(
    repo: Repo, path: str, kind: str, sha: str, size: int | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": path,
        "mode": "040000" if kind == "tree" else "100644",
        "type": kind,
        "sha": sha,
        "url": f"{repo.api}/git/{kind}s/{sha}",
    }
    if size is not None:
        entry["size"] = size
    return entry


def _paginate(
    handler: _Handler, items: list[Any], query: Mapping[str, list[str]], default_per_page: int = 30
) -> None:
    """Send one page of `items` with GitHub's Link header (per_page capped at 100)."""
    try:
        per_page = max(1, min(100, int(query.get("per_page", [default_per_page])[0])))
        page = max(1, int(query.get("page", ["1"])[0]))
    except ValueError:
        handler.send_json(422, {"message": "Invalid pagination parameters"})
        return
    last = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    base = handler.server_state.url + handler.parsed_path
    others = {k: v for k, v in query.items() if k not in ("page", "per_page")}
    extra = "".join(f"&{k}={quote(v[0])}" for k, v in others.items())

    def link(n: int, rel: str) -> str:
        return f'<{base}?per_page={per_page}&page={n}{extra}>; rel="{rel}"'

    links = []
    if page > 1:
        links += [link(page - 1, "prev"), link(1, "first")]
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    headers = {"Link": ", ".join(links)} if links else {}
    handler.send_json(200, chunk, headers)


class _Handler(BaseHTTPRequestHandler):
    server_state: GitHubServer
    disable_nagle_algorithm = True  # else every request waits for the delayed ACK (~40 ms)
    protocol_version = "HTTP/1.1"
    parsed_path = ""
    _swallow = False

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ------------------------------------------------------------------------------

    def send_json(self, status: int, data: Any, headers: Mapping[str, str] | None = None) -> None:
        if self._swallow:
            return
        body = b"" if status in (204, 304) else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        merged = {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4999",
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            "X-GitHub-Media-Type": "github.v3; format=json",
            **(headers or {}),
        }
        for k, v in merged.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)
        self._recorded.status = status

    def _comment_body_ok(self, body: Any) -> bool:
        """GitHub's 422s for a comment body that is missing or too long; True when it is fine."""
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            self.error(422, "Invalid request: body is required")
            return False
        if len(body["body"]) > 65536:
            self.error(422, "Validation Failed: body is too long (maximum is 65536 characters)")
            return False
        return True

    def error(self, status: int, message: str) -> None:
        self.send_json(
            status, {"message": message, "documentation_url": "https://docs.github.com/rest"}
        )

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        self.parsed_path = split.path
        query = parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        state = self.server_state
        self._recorded = Recorded(method, split.path, query, body, dict(self.headers.items()))
        if not split.path.startswith("/_mock/"):
            with state.lock:
                state.requests.append(self._recorded)
                fault = next((f for f in state.faults if f.matches(method, split.path)), None)
                if fault is not None and fault.times is not None:
                    fault.times -= 1
            if fault is not None and not fault.after:
                self._send_fault(fault)
                return
            if state.token is not None and not self._authorised(
                state.token, state.teams_token or "", *state.token_logins
            ):
                self.error(401, "Bad credentials")
                return
        else:
            fault = None
        try:
            with state.lock:
                self._swallow = fault is not None  # its own answer is replaced by the fault's
                self._route(method, unquote(split.path), query, body)
        except Exception as exc:  # a bug in the fake must show up in the test, as a 500
            self.error(500, f"ghserver: {type(exc).__name__}: {exc}")
        finally:
            self._swallow = False
        if fault is not None:
            self._send_fault(fault)

    def _send_fault(self, fault: Fault) -> None:
        self.send_json(
            fault.status,
            fault.body if fault.body is not None else {"message": "Server Error"},
            fault.headers,
        )

    def _caller(self) -> str | None:
        """The login of a user token's owner; None for an installation token."""
        auth = self.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else ""
        return self.server_state.token_logins.get(token)

    def _authorised(self, *tokens: str) -> bool:
        auth = self.headers.get("Authorization", "")
        return any(auth in (f"token {t}", f"Bearer {t}") for t in tokens if t)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- routes --------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> None:
        state = self.server_state
        if path.startswith("/_mock/"):
            self._mock(method, path, body)
            return
        m = re.fullmatch(r"/orgs/([^/]+)/teams/([^/]+)/memberships/([^/]+)", path)
        if m and method == "GET":
            if state.teams_token is not None and not self._authorised(state.teams_token):
                self.error(403, "Resource not accessible by integration")
                return
            org, slug, login = (g.lower() for g in m.groups())
            members = state.teams.get((org, slug))
            if members is None or login not in members:
                self.error(404, "Not Found")
                return
            self.send_json(
                200,
                {
                    "url": f"{state.url}/orgs/{org}/teams/{slug}/memberships/{login}",
                    "role": "member",
                    "state": members[login],
                },
            )
            return
        m = re.fullmatch(r"/orgs/([^/]+)/teams/([^/]+)/members", path)
        if m and method == "GET":
            if state.teams_token is not None and not self._authorised(state.teams_token):
                self.error(403, "Resource not accessible by integration")
                return
            found = state.teams.get((m.group(1).lower(), m.group(2).lower()))
            if found is None:
                self.error(404, "Not Found")
                return
            active = sorted(login for login, st in found.items() if st == "active")
            _paginate(self, [state.user_json(login) for login in active], query)
            return
        if path == "/user" and method == "GET":
            caller = self._caller()
            if caller is None:
                self.error(403, "Resource not accessible by integration")
                return
            self.send_json(200, state.user_json(caller))
            return
        m = re.fullmatch(r"/users/([^/]+)", path)
        if m and method == "GET":
            self.send_json(200, state.user_json(m.group(1)))
            return
        if path == "/rate_limit":
            core = {"limit": 5000, "remaining": 4999, "reset": int(time.time()) + 3600, "used": 1}
            self.send_json(200, {"resources": {"core": core}, "rate": core})
            return
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        repo = state.repos.get(m.group(1)) if m else None
        if m is None or repo is None:
            self.error(404, "Not Found")
            return
        rest = m.group(2) or ""
        self._repo_route(repo, method, rest, query, body)

    def _repo_route(
        self, repo: Repo, method: str, rest: str, query: dict[str, list[str]], body: Any
    ) -> None:
        state = self.server_state
        if rest == "" and method == "GET":
            self.send_json(200, repo.to_json())
            return
        m = re.fullmatch(r"/pulls/(\d+)(/files|/reviews|/commits)?", rest)
        if m and method == "GET":
            pull = repo.pulls.get(int(m.group(1)))
            if pull is None:
                self.error(404, "Not Found")
                return
            sub = m.group(2)
            if sub is None:
                self.send_json(200, pull.to_json())
            elif sub == "/files":
                _paginate(self, pull.files[:MAX_LISTED_FILES], query)  # GitHub lists 3000 at most
            elif sub == "/reviews":
                _paginate(self, pull.reviews, query)
            else:
                _paginate(self, pull.commits[:MAX_LISTED_COMMITS], query)  # GitHub: 250 at most
            return
        m = re.fullmatch(r"/contents(?:/(.*))?", rest)
        if m and method == "GET":
            self._contents(repo, (m.group(1) or "").strip("/"), query)
            return
        m = re.fullmatch(r"/collaborators/([^/]+)/permission", rest)
        if m and method == "GET":
            self._permission(repo, m.group(1))
            return
        m = re.fullmatch(r"/compare/([0-9a-zA-Z_-]+)\.\.\.([0-9a-zA-Z_-]+)", rest)
        if m and method == "GET":
            self._compare(repo, m.group(1), m.group(2))
            return
        m = re.fullmatch(r"/git/ref/heads/(.+)", rest)
        if m and method == "GET":
            into = [p.base_sha for _, p in sorted(repo.pulls.items()) if p.base_ref == m.group(1)]
            sha = repo.branches.get(m.group(1)) or (into[-1] if into else None)
            if sha is None:
                self.error(404, "Not Found")
                return
            ref = f"refs/heads/{m.group(1)}"
            obj = {"sha": sha, "type": "commit", "url": f"{repo.api}/git/commits/{sha}"}
            self.send_json(200, {"ref": ref, "url": f"{repo.api}/git/{ref}", "object": obj})
            return
        m = re.fullmatch(r"/git/trees/([^/]+)", rest)
        if m and method == "GET":
            self._git_tree(repo, m.group(1), query)
            return
        m = re.fullmatch(r"/statuses/([0-9a-fA-F]{4,40})", rest)
        if m and method == "POST":
            self._create_status(repo, m.group(1), body)
            return
        m = re.fullmatch(r"/commits/([^/]+)/(statuses|status|check-runs)", rest)
        if m and method == "GET":
            sha = m.group(1)
            if m.group(2) == "statuses":
                found = [s for s in reversed(repo.statuses) if s["sha"] == sha]
                _paginate(self, found, query)
            elif m.group(2) == "status":
                latest: dict[str, dict[str, Any]] = {}
                for s in repo.statuses:
                    if s["sha"] == sha:  # GitHub's contexts are case-insensitive
                        latest.pop(s["context"].lower(), None)
                        latest[s["context"].lower()] = s
                states = [s["state"] for s in latest.values()]
                overall = (
                    "failure"
                    if {"failure", "error"} & set(states)
                    else "pending"
                    if not states or "pending" in states
                    else "success"
                )
                self.send_json(
                    200,
                    {
                        "state": overall,
                        "sha": sha,
                        "statuses": list(latest.values()),
                        "total_count": len(latest),
                        "repository": repo.to_json(),
                    },
                )
            else:
                runs = [r for r in repo.check_runs if r["head_sha"] == sha]
                self.send_json(200, {"total_count": len(runs), "check_runs": runs})
            return
        m = re.fullmatch(r"/commits/([^/]+)/pulls", rest)
        if m and method == "GET":
            # GitHub lists the merged pull request of a merge, squash or rebase commit, and open
            # pull requests whose head is the commit.
            sha = m.group(1)
            numbers = list(repo.commit_pulls.get(sha, []))
            numbers += [n for n, p in repo.pulls.items() if p.head_sha == sha and n not in numbers]
            _paginate(self, [repo.pulls[n].to_json() for n in numbers], query)
            return
        if rest.startswith("/deployments"):
            self._deployments(repo, method, rest, query, body)
            return
        m = re.fullmatch(r"/commits/([^/]+)", rest)
        if m and method == "GET":
            sha = m.group(1)
            self.send_json(
                200,
                {
                    "sha": sha,
                    "url": f"{repo.api}/commits/{sha}",
                    "commit": {"message": ""},
                    "author": None,
                    "committer": None,
                    "parents": [],
                    "files": [],
                },
            )
            return
        if rest == "/issues" or re.fullmatch(r"/issues/\d+", rest):
            self._issues(repo, method, rest, query, body)
            return
        m = re.fullmatch(r"/issues/(\d+)/timeline", rest)
        if m and method == "GET":
            pull = repo.pulls.get(int(m.group(1)))
            _paginate(self, pull.timeline if pull else [], query)
            return
        m = re.fullmatch(r"/issues/(\d+)/comments", rest)
        if m:
            number = int(m.group(1))
            if method == "GET":
                found = [c for c in repo.comments if c["_issue"] == number]
                _paginate(self, [_public(c) for c in found], query)
                return
            if method == "POST":
                if not self._comment_body_ok(body):
                    return
                cid = next(state.ids)
                comment = {
                    "_issue": number,
                    "id": cid,
                    "node_id": f"IC_{cid}",
                    "url": f"{repo.api}/issues/comments/{cid}",
                    "html_url": f"{state.url}/{repo.full_name}/pull/{number}#issuecomment-{cid}",
                    "issue_url": f"{repo.api}/issues/{number}",
                    "body": body["body"],
                    "user": state.user_json(caller)
                    if (caller := self._caller())
                    else state.user_json("github-actions[bot]", "Bot"),
                    "created_at": _now(),
                    "updated_at": _now(),
                    "author_association": "NONE",
                }
                repo.comments.append(comment)
                self.send_json(201, _public(comment))
                return
        m = re.fullmatch(r"/issues/comments/(\d+)", rest)
        if m:
            cid = int(m.group(1))
            comment = next((c for c in repo.comments if c["id"] == cid), None)
            if comment is None:
                self.error(404, "Not Found")
                return
            if method == "GET":
                self.send_json(200, _public(comment))
                return
            if method == "PATCH":
                if not self._comment_body_ok(body):
                    return
                comment["body"] = body["body"]
                comment["updated_at"] = _now()
                self.send_json(200, _public(comment))
                return
            if method == "DELETE":
                repo.comments.remove(comment)
                self.send_json(204, None)
                return
        if rest == "/check-runs" and method == "POST":
            if not isinstance(body, dict) or "name" not in body or "head_sha" not in body:
                self.error(422, "Invalid request: name and head_sha are required")
                return
            rid = next(state.ids)
            run = {
                "id": rid,
                "url": f"{repo.api}/check-runs/{rid}",
                "html_url": f"{state.url}/{repo.full_name}/runs/{rid}",
                "status": "queued",
                "conclusion": None,
                "started_at": _now(),
                "completed_at": None,
                "output": {"title": None, "summary": None, "text": None},
                **body,
            }
            repo.check_runs.append(run)
            self.send_json(201, run)
            return
        m = re.fullmatch(r"/check-runs/(\d+)", rest)
        if m and method in ("GET", "PATCH"):
            run = next((r for r in repo.check_runs if r["id"] == int(m.group(1))), None)
            if run is None:
                self.error(404, "Not Found")
                return
            if method == "PATCH" and isinstance(body, dict):
                run.update(body)
            self.send_json(200, run)
            return
        self.error(404, "Not Found")

    def _issues(
        self, repo: Repo, method: str, rest: str, query: dict[str, list[str]], body: Any
    ) -> None:
        """List (state, labels filters), create, read and edit issues, with GitHub's 422s."""
        state = self.server_state
        if rest == "/issues" and method == "GET":
            want = query.get("state", ["open"])[0]
            labels = [x for x in query.get("labels", [""])[0].split(",") if x]
            found = [
                _issue_json(repo, i)
                for i in sorted(repo.issues.values(), key=lambda i: -i["number"])
                if (want == "all" or i["state"] == want) and all(x in i["labels"] for x in labels)
            ]
            _paginate(self, found, query)
            return
        if rest == "/issues" and method == "POST":
            if not isinstance(body, dict) or not str(body.get("title") or "").strip():
                self.error(422, "Validation Failed: title is required")
                return
            if len(str(body.get("body") or "")) > 65536:
                self.error(422, "Validation Failed: body is too long (maximum is 65536 characters)")
                return
            number = max([0, *repo.pulls, *repo.issues]) + 1
            issue = {
                "url": f"{repo.api}/issues/{number}",
                "repository_url": repo.api,
                "labels_url": f"{repo.api}/issues/{number}/labels{{/name}}",
                "comments_url": f"{repo.api}/issues/{number}/comments",
                "events_url": f"{repo.api}/issues/{number}/events",
                "html_url": f"{state.url}/{repo.full_name}/issues/{number}",
                "id": 9000 + number,
                "node_id": f"I_{number}",
                "number": number,
                "title": body["title"],
                "user": state.user_json("github-actions[bot]", "Bot"),
                "labels": [] if repo.drop_labels else [str(x) for x in body.get("labels") or []],
                "state": "open",
                "state_reason": None,
                "locked": False,
                "assignee": None,
                "assignees": [],
                "milestone": None,
                "created_at": _now(),
                "updated_at": _now(),
                "closed_at": None,
                "author_association": "NONE",
                "body": body.get("body"),
            }
            repo.issues[number] = issue
            self.send_json(201, _issue_json(repo, issue))
            return
        found = repo.issues.get(int(rest.rsplit("/", 1)[1])) if rest != "/issues" else None
        if found is None:
            self.error(404, "Not Found")
            return
        if method == "GET":
            self.send_json(200, _issue_json(repo, found))
            return
        if method == "PATCH" and isinstance(body, dict):
            if len(str(body.get("body") or "")) > 65536:
                self.error(422, "Validation Failed: body is too long (maximum is 65536 characters)")
                return
            if body.get("state") not in (None, "open", "closed"):
                self.error(422, "Validation Failed: state is not included in the list")
                return
            for key in ("title", "body", "state", "state_reason"):
                if key in body:
                    found[key] = body[key]
            if "labels" in body:
                found["labels"] = [str(x) for x in body["labels"] or []]
            found["closed_at"] = _now() if found["state"] == "closed" else None
            found["updated_at"] = _now()
            self.send_json(200, _issue_json(repo, found))
            return
        self.error(404, "Not Found")

    def _deployments(
        self, repo: Repo, method: str, rest: str, query: dict[str, list[str]], body: Any
    ) -> None:
        """Deployments and their statuses, with GitHub's shapes and 422s."""
        state = self.server_state
        creator = state.user_json(self._caller() or "github-actions[bot]",
                                  "User" if self._caller() else "Bot")  # fmt: skip
        if rest == "/deployments" and method == "POST":
            if not isinstance(body, dict) or not body.get("ref"):
                self.error(422, "Invalid request: ref is required")
                return
            did = next(state.ids)
            environment = str(body.get("environment") or "production")
            payload = body.get("payload") or {}
            deployment = {
                "url": f"{repo.api}/deployments/{did}",
                "id": did,
                "node_id": f"DE_{did}",
                "sha": body["ref"],
                "ref": body["ref"],
                "task": body.get("task") or "deploy",
                "payload": payload,
                "original_environment": environment,
                "environment": environment,
                "description": body.get("description"),
                "creator": creator,
                "created_at": _now(),
                "updated_at": _now(),
                "statuses_url": f"{repo.api}/deployments/{did}/statuses",
                "repository_url": repo.api,
                "transient_environment": bool(body.get("transient_environment", False)),
                "production_environment": bool(body.get("production_environment", False)),
            }
            repo.deployments.append({**deployment, "statuses": []})
            self.send_json(201, deployment)
            return
        if rest == "/deployments" and method == "GET":
            found = [
                {k: v for k, v in d.items() if k != "statuses"}
                for d in reversed(repo.deployments)
                if all(query.get(k, [d[k]])[0] == d[k] for k in ("sha", "environment", "ref"))
            ]
            _paginate(self, found, query)
            return
        m = re.fullmatch(r"/deployments/(\d+)(/statuses)?", rest)
        deployment = (
            next((d for d in repo.deployments if d["id"] == int(m.group(1))), None) if m else None
        )
        if m is None or deployment is None:
            self.error(404, "Not Found")
            return
        if m.group(2) is None and method == "GET":
            self.send_json(200, {k: v for k, v in deployment.items() if k != "statuses"})
            return
        if m.group(2) and method == "GET":
            _paginate(self, list(reversed(deployment["statuses"])), query)
            return
        if m.group(2) and method == "POST":
            states = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
            if not isinstance(body, dict) or body.get("state") not in states:
                self.error(422, "Validation Failed: state is not included in the list")
                return
            sid = next(state.ids)
            status = {
                "url": f"{deployment['url']}/statuses/{sid}",
                "id": sid,
                "node_id": f"DES_{sid}",
                "state": body["state"],
                "creator": creator,
                "description": body.get("description") or "",
                "environment": body.get("environment") or deployment["environment"],
                "target_url": body.get("log_url") or body.get("target_url") or "",
                "log_url": body.get("log_url") or body.get("target_url") or "",
                "environment_url": body.get("environment_url") or "",
                "created_at": _now(),
                "updated_at": _now(),
                "deployment_url": deployment["url"],
                "repository_url": repo.api,
            }
            deployment["statuses"].append(status)
            self.send_json(201, status)
            return
        self.error(404, "Not Found")

    def _contents(self, repo: Repo, path: str, query: dict[str, list[str]]) -> None:
        state = self.server_state
        ref = query.get("ref", [repo.default_branch])[0]
        tree = repo.trees.get(ref)
        if tree is None:
            self.error(404, f"No commit found for the ref {ref}")
            return

        def entry(p: str, kind: str) -> dict[str, Any]:
            data = tree.get(p, b"")
            url = f"{repo.api}/contents/{quote(p)}?ref={ref}"
            sha = blob_sha(data) if kind == "file" else fake_sha(f"tree:{ref}:{p}")
            return {
                "type": kind,
                "size": len(data) if kind == "file" else 0,
                "name": p.rsplit("/", 1)[-1],
                "path": p,
                "sha": sha,
                "url": url,
                "git_url": f"{repo.api}/git/{'blobs' if kind == 'file' else 'trees'}/{sha}",
                "html_url": f"{state.url}/{repo.full_name}/blob/{ref}/{p}",
                "download_url": f"{state.url}/raw/{repo.full_name}/{ref}/{p}"
                if kind == "file"
                else None,
                "_links": {"self": url, "git": "", "html": ""},
            }

        if path in tree:
            data = tree[path]
            item = entry(path, "file")
            encoded = base64.b64encode(data).decode()
            # GitHub wraps base64 at 60 characters per line.
            item["content"] = (
                "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n"
            )
            item["encoding"] = "base64"
            self.send_json(200, item)
            return
        prefix = f"{path}/" if path else ""
        children: dict[str, str] = {}
        for p in tree:
            if p.startswith(prefix):
                head, _, tail = p[len(prefix) :].partition("/")
                children[prefix + head] = "dir" if tail else "file"
        if not children:
            self.error(404, "Not Found")
            return
        self.send_json(200, [entry(p, kind) for p, kind in sorted(children.items())])

    def _permission(self, repo: Repo, login: str) -> None:
        """GET /repos/{o}/{r}/collaborators/{user}/permission: `permission` is the legacy base
        role (maintain reads as write, triage as read), `role_name` the full one."""
        role = repo.permissions.get(login.lower(), "none")
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        user = self.server_state.user_json(login)
        flags = ("admin", "maintain", "push", "triage", "pull")
        rank = {"admin": 5, "maintain": 4, "write": 3, "triage": 2, "read": 1}.get(role, 0)
        user["permissions"] = {f: rank >= 5 - i for i, f in enumerate(flags)}
        user["role_name"] = role
        self.send_json(200, {"permission": legacy, "role_name": role, "user": user})

    def _compare(self, repo: Repo, base: str, head: str) -> None:
        """GET /compare/{base}...{head}: the merge base (what the gate needs), few files."""
        if base not in repo.trees or head not in repo.trees:
            self.error(404, "Not Found")
            return
        merge_base = repo.merge_bases.get((base, head), base)
        commit = {"sha": merge_base, "url": f"{repo.api}/commits/{merge_base}"}
        self.send_json(
            200,
            {
                "url": f"{repo.api}/compare/{base}...{head}",
                "status": "ahead",
                "base_commit": {"sha": base, "url": f"{repo.api}/commits/{base}"},
                "merge_base_commit": commit,
                "files": [],  # GitHub lists at most 300 here; the gate never relies on it
            },
        )

    def _git_tree(self, repo: Repo, sha: str, query: dict[str, list[str]]) -> None:
        """GET /git/trees/{sha}: `sha` names a commit (a key of repo.trees) or a tree."""
        trees = _git_trees(repo)
        if sha in repo.trees:
            sha = trees["commit:" + sha]
        listing = trees.get(sha)
        if not isinstance(listing, dict):
            self.error(404, "Not Found")
            return
        ref, folder = listing["ref"], listing["folder"]
        files = repo.trees[ref]
        recursive = query.get("recursive", ["0"])[0] not in ("0", "false", "")
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict[str, Any]] = {}
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):
                sub = "/".join(parts[:i])
                entries[sub] = _tree_entry(repo, sub, "tree", trees[f"tree:{ref}:{prefix + sub}"])
            if len(parts) <= depth:
                name = "/".join(parts)
                data = files[path]
                entries[name] = _tree_entry(repo, name, "blob", blob_sha(data), len(data))
        self.send_json(
            200,
            {
                "sha": sha,
                "url": f"{repo.api}/git/trees/{sha}",
                "tree": [entries[k] for k in sorted(entries)],
                "truncated": False,
            },
        )

    def _create_status(self, repo: Repo, sha: str, body: Any) -> None:
        state = self.server_state
        if not isinstance(body, dict) or body.get("state") not in (
            "error",
            "failure",
            "pending",
            "success",
        ):
            self.send_json(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": "Status",
                            "code": "custom",
                            "field": "state",
                            "message": "state is not included in the list",
                        }
                    ],
                },
            )
            return
        description = body.get("description") or ""
        if len(description) > MAX_STATUS_DESCRIPTION:
            self.send_json(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": "Status",
                            "code": "custom",
                            "field": "description",
                            "message": "description is too long (maximum is 140 characters)",
                        }
                    ],
                },
            )
            return
        if len(str(body.get("context") or "")) > MAX_STATUS_CONTEXT:
            error = {"resource": "Status", "code": "custom", "field": "context"}
            error["message"] = "context is too long (maximum is 255 characters)"
            self.send_json(422, {"message": "Validation Failed", "errors": [error]})
            return
        sid = next(state.ids)
        status = {
            "url": f"{repo.api}/statuses/{sha}",
            "id": sid,
            "node_id": f"SC_{sid}",
            "state": body["state"],
            "description": description or None,
            "target_url": body.get("target_url"),
            "context": body.get("context") or "default",
            "created_at": _now(),
            "updated_at": _now(),
            "creator": state.user_json("github-actions[bot]", "Bot"),
            "sha": sha,
        }
        repo.statuses.append(status)
        self.send_json(201, {k: v for k, v in status.items() if k != "sha"})

    def _mock(self, method: str, path: str, body: Any) -> None:
        state = self.server_state
        if path == "/_mock/requests" and method == "GET":
            self.send_json(200, [r.to_json() for r in state.requests])
        elif path == "/_mock/state" and method == "GET":
            self.send_json(200, state.dump_state())
        elif path == "/_mock/state" and method == "POST":
            state.load_state(body or {})
            self.send_json(204, None)
        elif path == "/_mock/reviews" and method == "POST":
            # {"repo": "acme/models", "number": 7, "login": "dave", "state": "APPROVED",
            #  "commit_id": null, "user_type": "User", "association": "MEMBER"}
            spec = dict(body or {})
            pull = state.repos[spec.pop("repo")].pulls[int(spec.pop("number"))]
            review = pull.add_review(
                spec["login"],
                spec["state"],
                commit_id=spec.get("commit_id"),
                user_type=spec.get("user_type", "User"),
                association=spec.get("association", "MEMBER"),
            )
            self.send_json(201, review)
        elif path == "/_mock/faults" and method == "POST":
            state.fail(**(body or {}))
            self.send_json(204, None)
        else:
            self.error(404, "Not Found")


def _issue_json(repo: Repo, issue: Mapping[str, Any]) -> dict[str, Any]:
    """An issue as GitHub's REST API shows it (comments counted from the repository's)."""
    n = issue["number"]
    return {
        **issue,
        "comments": sum(1 for c in repo.comments if c["_issue"] == n),
        "labels": [
            {
                "id": int(hashlib.md5(name.encode()).hexdigest()[:6], 16),
                "node_id": f"LA_{name}",
                "url": f"{repo.api}/labels/{quote(name, safe='')}",
                "name": name,
                "color": "ededed",
                "default": False,
                "description": None,
            }
            for name in issue["labels"]
        ],
    }


def _public(comment: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in comment.items() if not k.startswith("_")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the GitHub-compatible test server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, help="JSON state file (see GitHubServer.load_state)")
    parser.add_argument(
        "--public-url", help="base URL written into url fields (e.g. for a container)"
    )
    args = parser.parse_args(argv)
    server = GitHubServer(args.host, args.port)
    if args.state:
        server.load_state(json.loads(args.state.read_text()))
    server.public_url = args.public_url
    server.start()
    print(f"ghserver listening on {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

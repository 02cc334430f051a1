"""The only module that talks to GitHub: the REST API through PyGithub, and the runner's event.

Built from the runner's variables (GITHUB_API_URL, GITHUB_TOKEN, GITHUB_REPOSITORY,
GITHUB_EVENT_PATH; GITHUB_SERVER_URL/GITHUB_RUN_ID only for links), plus mlops-ci's own:

- MLOPS_CI_TEAMS_TOKEN: a token that can read org team membership (the Actions GITHUB_TOKEN
  cannot); used only for team membership look-ups, default GITHUB_TOKEN.
- MLOPS_CI_GITHUB_MAX_WAIT: the longest single wait, in seconds, before retrying a rate-limited or
  failing request (default 60). Tests set it low.
- MLOPS_CI_GITHUB_RETRIES: how many times one request is retried (default 5).
- MLOPS_CI_COMMENT_AUTHOR: the login the token comments as, when `GET /user` cannot tell: a
  GitHub App's installation token other than the Actions one comments as `<app-slug>[bot]`.

The identity that writes comments is `GET /user`'s login, or `github-actions[bot]` for the
Actions GITHUB_TOKEN (GitHub answers it 403 there): comments are only ever found among its own.

Every API failure, after retries, becomes one `MlopsCiError` line (exit 2), never a traceback.
Data crosses into the rest of the package as frozen dataclasses, never as PyGithub objects.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from mlops_ci.errors import MlopsCiError
from mlops_ci.policy import Review  # the decision owns the type; this module builds it

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_MAX_WAIT = 60.0
DEFAULT_RETRIES = 5
TIMEOUT_SECONDS = 20
MAX_LISTED_FILES = 3000  # GitHub's pull-request files list stops here
ACTIONS_BOT = "github-actions[bot]"  # the author of everything the Actions GITHUB_TOKEN writes
_BOTS_WITHOUT_TYPE = frozenset({"web-flow"})  # GitHub's committer for web-UI commits


# --- what crosses the module boundary -----------------------------------------------------------


@dataclass(frozen=True)
class ChangedFile:
    """One entry of a pull request's files list, as GitHub reports it."""

    filename: str
    status: str  # added | removed | modified | renamed | copied | changed | unchanged
    previous_filename: str | None = None


@dataclass(frozen=True)
class Issue:
    """An issue as `monitor` tracks it."""

    number: int
    title: str
    body: str
    state: str
    html_url: str
    labels: tuple[str, ...] = ()
    state_reason: str | None = None  # completed | not_planned | reopened, once closed


def _issue(raw: Any) -> Issue:
    if not isinstance(raw, dict) or not isinstance(raw.get("number"), int):
        raise MlopsCiError("GitHub API: an issue came back without a number")
    return Issue(
        number=int(raw["number"]),
        title=str(raw.get("title") or ""),
        body=str(raw.get("body") or ""),
        state=str(raw.get("state") or ""),
        html_url=str(raw.get("html_url") or ""),
        labels=tuple(
            str(label.get("name") if isinstance(label, dict) else label)
            for label in raw.get("labels") or ()
        ),
        state_reason=raw.get("state_reason") if isinstance(raw.get("state_reason"), str) else None,
    )


#: GitHub lists at most this many commits of a pull request.
MAX_LISTED_COMMITS = 250


@dataclass(frozen=True)
class PullRequest:
    """The facts of a pull request that the gate needs."""

    number: int
    author: str
    head_sha: str
    base_sha: str
    head_repo: str | None  # full name; None when the fork was deleted
    base_repo: str
    changed_files: int = 0  # GitHub's count, which its files list may fall short of
    commits: int = 0  # GitHub's count, which its commits list may fall short of (250 at most)
    base_ref: str = ""  # the branch it merges into ("" when the reply left it out)
    default_branch: str = ""  # the base repository's default branch ("" likewise)

    @property
    def from_fork(self) -> bool:
        return self.head_repo != self.base_repo


# --- retries ------------------------------------------------------------------------------------


def _rate_limited(headers: Mapping[str, str]) -> bool:
    """GitHub marks a rate-limit 403/429 with Retry-After or X-RateLimit-Remaining: 0."""
    return bool(headers.get("Retry-After")) or headers.get("X-RateLimit-Remaining") == "0"


#: POSTs that leave the same state when made twice: a commit's or a deployment's status (the
#: newest counts). Any other POST creates something (an issue, a comment, a deployment).
_REPEATABLE_POST = re.compile(r"/repos/[^/]+/[^/]+/(?:statuses/[^/]+|deployments/\d+/statuses)\Z")


def _repeatable(method: str | None, url: str | None) -> bool:
    if (method or "").upper() != "POST":
        return True
    return _REPEATABLE_POST.search(urlsplit(url or "").path) is not None


class GitHubRetry(Retry):
    """urllib3 retries for GitHub: 5xx and rate limits, with every single wait capped.

    A 403 is retried only when it is a rate limit (other 403s are permission answers), and
    exhausted retries return the last response (raise_on_status=False) so PyGithub raises its
    own GithubException with GitHub's message instead of requests' bare RetryError.

    A POST that creates something is not repeated after a 5xx or a connection lost once the
    request was sent: GitHub may have made it before the answer failed (a 502 from its proxy),
    and a second try would open a second issue or deployment. A rate limit, which GitHub
    answers before acting, is waited out as for any call.
    """

    def __init__(self, *, max_wait: float = DEFAULT_MAX_WAIT, **kwargs: Any) -> None:
        self.max_wait = max_wait
        kwargs.setdefault("status_forcelist", (403, 429, 500, 502, 503, 504))
        kwargs.setdefault(
            "allowed_methods", frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"})
        )
        kwargs.setdefault("raise_on_status", False)
        kwargs.setdefault("backoff_factor", 0.5)
        super().__init__(**kwargs)

    def new(self, **kw: Any) -> GitHubRetry:
        kw.setdefault("max_wait", self.max_wait)
        return super().new(**kw)

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        forbidden = response is not None and response.status in (403, 429)
        if forbidden and not _rate_limited(response.headers):
            # Not retryable: hand the response back untouched (see raise_on_status).
            raise MaxRetryError(_pool, url or "", ResponseError("not a rate limit"))
        if not _repeatable(method, url):
            if response is not None and response.status >= 500:
                raise MaxRetryError(_pool, url or "", ResponseError("a create is not repeated"))
            if error is not None and not isinstance(error, ConnectTimeoutError):
                raise error  # sent, then lost: it may have been made (a refused connect was not)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def wait_seconds(self, response: Any = None, now: float | None = None) -> float:
        """How long to wait before the next try: Retry-After, else the rate-limit reset, else
        exponential backoff; never more than max_wait."""
        wait = self.get_backoff_time()
        if response is not None:
            headers = response.headers
            retry_after = headers.get("Retry-After")
            reset = headers.get("X-RateLimit-Reset")
            if retry_after:
                wait = max(wait, _parse_retry_after(retry_after, now))
            elif headers.get("X-RateLimit-Remaining") == "0" and reset and reset.isdigit():
                # +1: the reset second itself may still be limited.
                wait = max(wait, int(reset) - (time.time() if now is None else now) + 1)
        return max(0.0, min(wait, self.max_wait))

    def sleep(self, response: Any = None) -> None:
        wait = self.wait_seconds(response)
        if wait > 0:
            time.sleep(wait)


def _parse_retry_after(value: str, now: float | None = None) -> float:
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    if parsed is None:
        return 0.0
    return parsed.timestamp() - (time.time() if now is None else now)


# --- errors -------------------------------------------------------------------------------------


_TEAMS_HINT = (
    "the workflow's GITHUB_TOKEN cannot read organisation teams: set MLOPS_CI_TEAMS_TOKEN "
    "to a token with members read access"
)


def _explain(
    status: int | None, message: str, what: str, hint403: str | None = None, creates: bool = False
) -> str:
    hint = {
        401: "the token is missing, expired or wrong (GITHUB_TOKEN)",
        403: "the token lacks a permission this needs (see the workflow's `permissions:`)",
        404: "not found, or the token cannot see it",
        422: "GitHub rejected the request",
    }.get(status or 0, "")
    if status is not None and status >= 500:
        hint = (
            "not repeated: GitHub may have made it before its answer failed"
            if creates
            else "GitHub kept failing after retries"
        )
    if status in (401, 403) and hint403:
        hint = hint403
    text = f"GitHub API: {what} failed"
    if status:
        text += f" with {status}"
    if message:
        text += f": {message}"
    if hint:
        text += f" ({hint})"
    return text


def _github_message(exc: Any) -> str:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = [str(e.get("message") if isinstance(e, dict) else e) for e in errors]
            message += " (" + "; ".join(d for d in details if d and d != "None") + ")"
        return message.strip()
    return str(data or "").strip()[:200]


@contextlib.contextmanager
def _api(what: str, hint403: str | None = None, *, creates: bool = False) -> Iterator[None]:
    """Turn every way a GitHub call can fail into one MlopsCiError line. `creates`: a POST that
    makes something, which `GitHubRetry` does not repeat after a server error."""
    import requests
    from github import GithubException

    try:
        yield
    except GithubException as exc:
        message = _github_message(exc)
        raise MlopsCiError(_explain(exc.status, message, what, hint403, creates)) from exc
    except requests.exceptions.RetryError as exc:
        raise MlopsCiError(_explain(None, "gave up after retries", what)) from exc
    except requests.exceptions.RequestException as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise MlopsCiError(_explain(None, f"cannot reach the API ({reason})", what)) from exc


# --- the client ---------------------------------------------------------------------------------


class GitHub:
    """One repository's API, as the gate, the report and deploy use it."""

    def __init__(
        self,
        repository: str,
        *,
        token: str | None,
        api_url: str = DEFAULT_API_URL,
        teams_token: str | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
        retries: int = DEFAULT_RETRIES,
        comment_author: str | None = None,
    ) -> None:
        if "/" not in repository.strip("/"):
            raise MlopsCiError(f"repository must be owner/name, got {repository!r}")
        self.repository = repository.strip("/")
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # PyGithub would fail on it with an AttributeError deep inside its constructor
            raise MlopsCiError(
                f"GITHUB_API_URL must be an http(s) URL such as {DEFAULT_API_URL}, got {api_url!r}"
            )
        self.api_url = api_url.rstrip("/")
        self.max_wait = max_wait
        self.retries = retries
        self._client = self._connect(token)
        self._login: str | None = comment_author
        self._permissions: dict[str, str] = {}  # login (lowercased) -> permission, per run
        self._teams_client = self._connect(teams_token) if teams_token else self._client
        self._repo = self._client.get_repo(self.repository)

    def _connect(self, token: str | None) -> Any:
        from github import Auth, Github

        retry = GitHubRetry(total=self.retries, max_wait=self.max_wait)
        return Github(
            base_url=self.api_url,
            auth=Auth.Token(token) if token else None,
            timeout=TIMEOUT_SECONDS,
            per_page=100,  # fewest calls: GitHub's maximum page size
            retry=retry,
            seconds_between_requests=0,  # the gate is a handful of calls, not a crawler
            seconds_between_writes=0,
            lazy=True,  # no GET for objects we only use as a URL prefix
        )

    @classmethod
    def from_env(
        cls, repository: str | None = None, environ: Mapping[str, str] | None = None
    ) -> GitHub:
        env = os.environ if environ is None else environ
        repository = repository or env.get("GITHUB_REPOSITORY", "")
        if not repository:
            raise MlopsCiError("no repository: set GITHUB_REPOSITORY to owner/name")
        token = env.get("GITHUB_TOKEN") or None
        if token is None:
            raise MlopsCiError("GITHUB_TOKEN is not set: the GitHub API needs a token")
        return cls(
            repository,
            token=token,
            api_url=env.get("GITHUB_API_URL") or DEFAULT_API_URL,
            teams_token=env.get("MLOPS_CI_TEAMS_TOKEN") or None,
            max_wait=_float_env(env, "MLOPS_CI_GITHUB_MAX_WAIT", DEFAULT_MAX_WAIT),
            retries=int(_float_env(env, "MLOPS_CI_GITHUB_RETRIES", DEFAULT_RETRIES)),
            comment_author=env.get("MLOPS_CI_COMMENT_AUTHOR") or None,
        )

    # -- pull requests -------------------------------------------------------------------------

    def pull_request(self, number: int) -> PullRequest:
        with _api(f"reading pull request #{number} of {self.repository}"):
            pr = self._repo.get_pull(number)
            raw = pr.raw_data  # one GET; the fields below come from it
        head, base = raw.get("head") or {}, raw.get("base") or {}
        return PullRequest(
            number=int(raw["number"]),
            author=str((raw.get("user") or {}).get("login") or ""),
            head_sha=str(head.get("sha") or ""),
            base_sha=str(base.get("sha") or ""),
            head_repo=(head.get("repo") or {}).get("full_name"),
            base_repo=str((base.get("repo") or {}).get("full_name") or self.repository),
            changed_files=int(raw.get("changed_files") or 0),
            commits=int(raw.get("commits") or 0),
            base_ref=str(base.get("ref") or ""),
            default_branch=str((base.get("repo") or {}).get("default_branch") or ""),
        )

    def pull_files(self, number: int) -> list[ChangedFile]:
        """Every changed file (GitHub lists at most 3000), page by page."""
        with _api(f"listing the files of pull request #{number}"):
            files = self._repo.get_pull(number).get_files()
            return [
                ChangedFile(
                    filename=f.filename,
                    status=f.status,
                    previous_filename=f.raw_data.get("previous_filename"),
                )
                for f in files
            ]

    def changed_files(self, pull: PullRequest) -> list[ChangedFile]:
        """Every path the pull request changes, even beyond the files list's cap.

        GitHub's files list stops at MAX_LISTED_FILES. When it is short of the pull request's
        `changed_files`, or reaches the cap, the paths come from the git trees of the merge base
        and the head instead (`tree_changes`: a file moved with its bytes unchanged is a rename
        there too). A tree GitHub truncates fails closed.
        """
        files = self.pull_files(pull.number)
        if len(files) < MAX_LISTED_FILES and len(files) >= pull.changed_files:
            return files
        base = self.merge_base(pull.base_sha, pull.head_sha)
        return self.tree_changes(base, pull.head_sha)

    def branch_sha(self, branch: str) -> str:
        """The commit `branch` points at now (`GET /git/ref/heads/{branch}`, an exact match).
        A pull request's `base.sha` is where its base stood when it was opened or last pushed
        to, not where it stands when it merges."""
        from urllib.parse import quote

        url = f"/repos/{self.repository}/git/ref/heads/{quote(branch, safe='/')}"
        with _api(f"reading where the branch {branch} points"):
            _, data = self._client.requester.requestJsonAndCheck("GET", url)
        found = (data.get("object") or {}) if isinstance(data, dict) else {}
        sha = found.get("sha") if isinstance(found, dict) else None
        if not isinstance(sha, str) or not sha:
            raise MlopsCiError(f"GitHub API: the branch {branch} came back without a commit")
        return sha

    def merge_base(self, base: str, head: str) -> str:
        """The commit the pull request's changes are counted from (the compare API's)."""
        url = f"/repos/{self.repository}/compare/{base}...{head}"
        with _api(f"comparing {base[:12]}...{head[:12]}"):
            _, data = self._client.requester.requestJsonAndCheck("GET", url)
        sha = (data.get("merge_base_commit") or {}).get("sha") if isinstance(data, dict) else None
        if not isinstance(sha, str) or not sha:
            raise MlopsCiError(
                f"GitHub API: comparing {base[:12]}...{head[:12]} gave no merge base"
            )
        return sha

    def _tree(self, sha: str, recursive: bool = False) -> dict[str, tuple[str, str]]:
        """path -> (type, sha) of one git tree (`sha` may name a commit); truncation fails."""
        url = f"/repos/{self.repository}/git/trees/{sha}"
        with _api(f"reading the git tree {sha[:12]}"):
            _, data = self._client.requester.requestJsonAndCheck(
                "GET", url, parameters={"recursive": "1"} if recursive else None
            )
        if not isinstance(data, dict) or data.get("truncated"):
            raise MlopsCiError(
                f"GitHub truncated the git tree {sha[:12]}, so the changed files cannot be seen "
                "whole; the gate fails closed (split the pull request)"
            )
        return {
            str(e["path"]): (str(e["type"]), str(e["sha"]))
            for e in data.get("tree") or ()
            if isinstance(e, dict) and "path" in e
        }

    def tree_changes(self, base: str, head: str) -> list[ChangedFile]:
        """The files that differ between two commits, walking only the subtrees that differ.

        A file added with the very bytes (blob SHA) of a removed one is `renamed` from it, as
        git's exact rename detection and GitHub's files list have it: read as a removal and an
        addition, a moved file would show bytes its pull request never changed (deploy counts
        the bytes a diff adds as reviewed, `reverify.RangeJudge._introduced`). Another addition
        of bytes the base held (a removed file's, or one in a folder the walk read) is
        `copied` from there. Renames that also change the bytes stay a removal and an
        addition: their bytes are new either way.
        """
        changes: list[ChangedFile] = []
        removed: dict[str, list[str]] = {}  # blob sha -> paths removed with those bytes
        held: dict[str, str] = {}  # blob sha -> a path with those bytes at base (walked folders)
        added: list[tuple[str, str]] = []  # (path, blob sha)

        def files(entry: tuple[str, str], path: str) -> list[tuple[str, str]]:
            kind, sha = entry
            if kind != "tree":
                return [(path, sha)]
            listing = self._tree(sha, recursive=True).items()
            return [(f"{path}/{p}", s) for p, (t, s) in listing if t != "tree"]

        def walk(old: str | None, new: str | None, prefix: str) -> None:
            before = self._tree(old) if old else {}
            after = self._tree(new) if new else {}
            for name, (kind, sha) in before.items():
                if kind == "blob":
                    held.setdefault(sha, prefix + name)
            for name in sorted(before.keys() | after.keys()):
                was, now = before.get(name), after.get(name)
                path = prefix + name
                if was == now:
                    continue
                if was and now and was[0] == now[0] == "tree":
                    walk(was[1], now[1], path + "/")
                elif was and now and "tree" not in (was[0], now[0]):
                    changes.append(ChangedFile(path, "modified"))
                else:  # added, removed, or a file that became a folder (or back)
                    for p, sha in files(was, path) if was else ():
                        removed.setdefault(sha, []).append(p)
                    added.extend(files(now, path) if now else ())

        walk(base, head, "")
        sources = {sha: list(paths) for sha, paths in removed.items()}
        for path, sha in added:
            left = sources.get(sha)
            if left:  # the first addition of a removed file's bytes is its rename
                changes.append(ChangedFile(path, "renamed", left.pop(0)))
            elif sha in removed or sha in held:
                source = removed[sha][0] if sha in removed else held[sha]
                changes.append(ChangedFile(path, "copied", source))
            else:
                changes.append(ChangedFile(path, "added"))
        # what no addition was renamed from is removed
        changes.extend(ChangedFile(p, "removed") for paths in sources.values() for p in paths)
        return sorted(changes, key=lambda c: c.filename)

    def permission(self, login: str) -> str:
        """`login`'s permission on the repository (admin, write, read or none), asked once per
        run: the exact answer where author_association can hide a private org membership.
        404 (not a collaborator, or no such user) is "none"; other failures raise."""
        from github import UnknownObjectException

        key = login.lower()
        if key not in self._permissions:
            url = f"/repos/{self.repository}/collaborators/{login}/permission"
            with _api(f"reading the repository permission of @{login}"):
                try:
                    _, data = self._client.requester.requestJsonAndCheck("GET", url)
                except UnknownObjectException:
                    data = {}
            level = data.get("permission") if isinstance(data, dict) else None
            self._permissions[key] = str(level or "none")
        return self._permissions[key]

    def reviews(self, number: int) -> list[Review]:
        """Every submitted review, oldest first, page by page."""
        with _api(f"listing the reviews of pull request #{number}"):
            out = []
            for r in self._repo.get_pull(number).get_reviews():
                raw = r.raw_data
                user = raw.get("user") or {}
                out.append(
                    Review(
                        id=int(raw["id"]),
                        login=str(user.get("login") or ""),
                        user_type=str(user.get("type") or "User"),
                        state=str(raw.get("state") or ""),
                        commit_id=raw.get("commit_id"),
                        author_association=str(raw.get("author_association") or "NONE"),
                        submitted_at=raw.get("submitted_at"),
                    )
                )
            return out

    def dismissals(self, number: int) -> dict[int, tuple[str, str]]:
        """The reviews dismissed on the pull request, by review id: the state each had before
        (upper-case, as a review's `state`) and when it was dismissed. A dismissed review
        keeps its `submitted_at`; only the issue timeline says when it stopped counting."""
        out: dict[int, tuple[str, str]] = {}
        with _api(f"reading the timeline of pull request #{number}"):
            for event in self._repo.get_issue(number).get_timeline():
                raw = event.raw_data
                if raw.get("event") != "review_dismissed":
                    continue
                dismissed = raw.get("dismissed_review") or {}
                review_id, state = dismissed.get("review_id"), dismissed.get("state")
                when = raw.get("created_at")
                if isinstance(review_id, int) and isinstance(state, str) and isinstance(when, str):
                    out[review_id] = (state.upper(), when)
        return out

    def commit_logins(self, number: int, expected: int = 0) -> frozenset[str]:
        """Logins of everyone who authored or committed a commit of the pull request.

        GitHub lists at most 250 commits of a pull request: when the list falls short of
        `expected` (the pull request's `commits`), someone who pushed a later commit would go
        unseen, so that fails closed."""
        listed = 0
        with _api(f"listing the commits of pull request #{number}"):
            logins: set[str] = set()
            for c in self._repo.get_pull(number).get_commits():
                listed += 1
                # Attributes, not raw_data: raw_data would GET every commit to "complete" it.
                for user in (c.author, c.committer):
                    login = user.login if user is not None else None
                    if login and login not in _BOTS_WITHOUT_TYPE:
                        logins.add(str(login))
        if listed < expected:
            why = (
                "(250 at most), so who pushed the others cannot be seen; the gate fails closed "
                "(squash its commits, or split it)"
                if listed >= MAX_LISTED_COMMITS
                else "while it was read: it changed meanwhile, and the run for its new head decides"
            )
            raise MlopsCiError(
                f"pull request #{number} has {expected} commits but GitHub lists {listed} {why}"
            )
        return frozenset(logins)

    # -- contents ------------------------------------------------------------------------------

    def file_text(self, path: str, ref: str) -> str | None:
        """The text of `path` at commit `ref`, or None when it does not exist there."""
        from github import UnknownObjectException

        with _api(f"reading {path} at {ref[:12]}"):
            try:
                content = self._repo.get_contents(path, ref=ref)
            except UnknownObjectException:
                return None
            if isinstance(content, list):  # a folder, not a file
                return None
            if content.encoding != "base64":
                raise MlopsCiError(
                    f"{path} at {ref[:12]} is too large for the contents API (over 1 MB)"
                )
            try:
                return str(content.decoded_content.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise MlopsCiError(f"{path} at {ref[:12]} is not UTF-8 text") from exc

    # -- teams ---------------------------------------------------------------------------------

    def is_team_member(self, team: str, login: str) -> bool:
        """Whether `login` is an active member of `team` ("@org/slug").

        404 means "not a member" (or no such team); any other failure raises, never "no".
        """
        from github import UnknownObjectException

        org, _, slug = team.lstrip("@").partition("/")
        if not org or not slug:
            raise MlopsCiError(f"{team!r} is not a team: write @org/team-slug")
        url = f"/orgs/{org}/teams/{slug}/memberships/{login}"
        with _api(f"checking whether @{login} is in {team}", _TEAMS_HINT):
            try:
                _, data = self._teams_client.requester.requestJsonAndCheck("GET", url)
            except UnknownObjectException:
                return False
        return isinstance(data, dict) and data.get("state") == "active"

    def team_members(self, team: str) -> frozenset[str]:
        """The logins of the active members of `team` (lowercased), page by page: one call per
        100 members, cheaper than one membership check per reviewer. 404: no members."""
        from github import UnknownObjectException

        org, _, slug = team.lstrip("@").partition("/")
        if not org or not slug:
            raise MlopsCiError(f"{team!r} is not a team: write @org/team-slug")
        url = f"/orgs/{org}/teams/{slug}/members"
        members: set[str] = set()
        with _api(f"listing the members of {team}", _TEAMS_HINT):
            for page in range(1, 1000):
                try:
                    _, data = self._teams_client.requester.requestJsonAndCheck(
                        "GET", url, parameters={"per_page": 100, "page": page}
                    )
                except UnknownObjectException:
                    return frozenset()
                batch = data if isinstance(data, list) else []
                members.update(
                    str(u.get("login", "")).lower() for u in batch if isinstance(u, dict)
                )
                if len(batch) < 100:
                    break
        return frozenset(members)

    # -- writing -------------------------------------------------------------------------------

    def set_status(
        self,
        sha: str,
        state: str,
        description: str,
        context: str,
        target_url: str | None = None,
    ) -> None:
        """A commit status on `sha`; the description is cut to GitHub's 140 characters."""
        from mlops_ci.report.escape import status

        description = status(description)
        body: dict[str, Any] = {"state": state, "description": description, "context": context}
        if target_url:
            body["target_url"] = target_url
        with _api(f"setting status {context} on {sha[:12]}"):
            self._client.requester.requestJsonAndCheck(
                "POST", f"/repos/{self.repository}/statuses/{sha}", input=body
            )

    def login(self) -> str:
        """Whose name comments made with this token appear under: MLOPS_CI_COMMENT_AUTHOR when
        set, else `GET /user`; the Actions GITHUB_TOKEN (an app installation token, which
        GitHub answers 403 there) is `github-actions[bot]`. Cached."""
        if self._login is None:
            from github import GithubException

            with _api("reading the token's user (GET /user)"):
                try:
                    _, data = self._client.requester.requestJsonAndCheck("GET", "/user")
                except GithubException as exc:
                    if exc.status != 403:
                        raise
                    data = {"login": ACTIONS_BOT}
            login = data.get("login") if isinstance(data, dict) else None
            if not isinstance(login, str) or not login:
                raise MlopsCiError("GitHub API: GET /user answered without a login")
            self._login = login
        return self._login

    def own_comment(self, pr_number: int, marker: str) -> int | None:
        """The id of the comment starting with `marker` that this token's user wrote, or None.

        Only our own comments count: anyone can type the marker into a comment of theirs, and
        editing that one would publish our report under their name (or let them steer it).
        """
        me = self.login().lower()
        with _api(f"listing the comments of pull request #{pr_number}"):
            for comment in self._repo.get_issue(pr_number).get_comments():
                # attributes, not raw_data: raw_data would GET every comment to "complete" it
                author = str(comment.user.login if comment.user else "").lower()
                # Starts with it: another workflow posting as the same bot may quote a pull
                # request that typed the marker, and that comment is not ours to overwrite.
                if author == me and (comment.body or "").startswith(marker):
                    return int(comment.id)
        return None

    def create_comment(self, pr_number: int, body: str) -> int:
        with _api(f"commenting on pull request #{pr_number}", creates=True):
            created = self._repo.get_issue(pr_number).create_comment(body)
            return int(created.id)

    def edit_comment(self, comment_id: int, body: str) -> None:
        with _api(f"editing comment {comment_id}"):
            self._client.requester.requestJsonAndCheck(
                "PATCH",
                f"/repos/{self.repository}/issues/comments/{comment_id}",
                input={"body": body},
            )

    def upsert_comment(self, pr_number: int, marker: str, body: str) -> tuple[int, bool]:
        """Our one comment holding `marker` (a hidden `<!-- ... -->`): edited in place if we
        wrote it before, else created. Returns (comment id, created)."""
        if not body.startswith(marker):
            body = f"{marker}\n{body}"
        found = self.own_comment(pr_number, marker)
        if found is not None:
            self.edit_comment(found, body)
            return found, False
        return self.create_comment(pr_number, body), True

    # -- issues (monitor) ------------------------------------------------------------------------

    def open_issues(self, label: str) -> list[Issue]:
        """Every open issue labelled `label`, newest first, in one paginated listing.

        Callers match their own markers against the bodies: only people with triage access can
        label an issue, so an issue someone else opened with a marker pasted in is never among
        these. Pull requests (which the issues API also lists) are skipped.
        """
        path = f"/repos/{self.repository}/issues"
        found: list[Issue] = []
        with _api(f"listing the open issues labelled {label}"):
            for page in range(1, 1000):
                _, data = self._client.requester.requestJsonAndCheck(
                    "GET",
                    path,
                    parameters={"state": "open", "labels": label, "per_page": 100, "page": page},
                )
                batch = data if isinstance(data, list) else []
                found.extend(
                    _issue(raw)
                    for raw in batch
                    if isinstance(raw, dict) and not raw.get("pull_request")
                )
                if len(batch) < 100:
                    break
        return found

    def create_issue(self, title: str, body: str, labels: list[str]) -> Issue:
        with _api(f"opening the issue {title!r}", creates=True):
            _, data = self._client.requester.requestJsonAndCheck(
                "POST",
                f"/repos/{self.repository}/issues",
                input={"title": title, "body": body, "labels": labels},
            )
        return _issue(data)

    def issue(self, number: int) -> Issue | None:
        """One issue (None: there is no such issue, or it is a pull request)."""
        from github import GithubException

        with _api(f"reading issue #{number}"):
            try:
                _, data = self._client.requester.requestJsonAndCheck(
                    "GET", f"/repos/{self.repository}/issues/{number}"
                )
            except GithubException as exc:
                if exc.status in (404, 410):  # deleted, transferred away, or never was
                    return None
                raise
        if not isinstance(data, dict) or data.get("pull_request"):
            return None
        return _issue(data)

    def edit_issue(self, number: int, *, title: str, body: str) -> None:
        with _api(f"editing issue #{number}"):
            self._client.requester.requestJsonAndCheck(
                "PATCH",
                f"/repos/{self.repository}/issues/{number}",
                input={"title": title, "body": body},
            )

    def close_issue(self, number: int, comment: str, reason: str = "completed") -> None:
        """Say why, then close as `reason` (a failed close leaves it open for the next run)."""
        with _api(f"closing issue #{number}", creates=True):
            self._client.requester.requestJsonAndCheck(
                "POST",
                f"/repos/{self.repository}/issues/{number}/comments",
                input={"body": comment},
            )
            self._client.requester.requestJsonAndCheck(
                "PATCH",
                f"/repos/{self.repository}/issues/{number}",
                input={"state": "closed", "state_reason": reason},
            )

    # -- deploy --------------------------------------------------------------------------------

    def commit_pulls(self, sha: str) -> list[dict[str, Any]]:
        """The pull requests associated with a commit (`GET /commits/{sha}/pulls`): for a merge,
        squash or rebase commit, the one whose merge produced it, with GitHub's own fields
        (number, merged_at, merge_commit_sha, head.sha, html_url)."""
        url = f"/repos/{self.repository}/commits/{sha}/pulls"
        with _api(f"finding the pull request of commit {sha[:12]}"):
            _, data = self._client.requester.requestJsonAndCheck(
                "GET", url, parameters={"per_page": 100}
            )
        return [p for p in data or () if isinstance(p, dict)]

    def blob_sha(self, path: str, ref: str) -> str | None:
        """The git blob SHA of `path` at `ref` (None when absent): equal SHAs mean equal bytes."""
        from urllib.parse import quote

        from github import UnknownObjectException

        url = f"/repos/{self.repository}/contents/{quote(path)}"
        with _api(f"reading {path} at {ref[:12]}"):
            try:
                _, data = self._client.requester.requestJsonAndCheck(
                    "GET", url, parameters={"ref": ref}
                )
            except UnknownObjectException:
                return None
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        return str(data.get("sha") or "") or None

    def create_deployment(
        self, sha: str, environment: str, payload: Mapping[str, Any], description: str
    ) -> int:
        """A GitHub Deployment of commit `sha`; its id. No auto-merge and no required contexts:
        mlops-ci re-verified the approvals itself and deploys exactly this commit."""
        from mlops_ci.report.escape import status

        url = f"/repos/{self.repository}/deployments"
        body = {
            "ref": sha,
            "task": "deploy",
            "environment": environment,
            "payload": dict(payload),
            "description": status(description),
            "auto_merge": False,
            "required_contexts": [],
            "production_environment": environment == "production",
        }
        with _api(f"creating a deployment of {sha[:12]} to {environment}", creates=True):
            _, data = self._client.requester.requestJsonAndCheck("POST", url, input=body)
        return int(data["id"])

    def deployment_status(
        self, deployment_id: int, state: str, *, description: str, log_url: str | None = None
    ) -> None:
        """Add a status (in_progress, success, failure, error, inactive) to a Deployment."""
        from mlops_ci.report.escape import status

        url = f"/repos/{self.repository}/deployments/{deployment_id}/statuses"
        body: dict[str, Any] = {"state": state, "description": status(description)}
        if log_url:
            body["log_url"] = log_url
        with _api(f"setting deployment {deployment_id} to {state}"):
            self._client.requester.requestJsonAndCheck("POST", url, input=body)

    def run_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The link to this workflow run, when running on a runner."""
        env = os.environ if environ is None else environ
        server, run_id = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_RUN_ID")
        if not server or not run_id:
            return None
        return f"{server.rstrip('/')}/{self.repository}/actions/runs/{run_id}"


# --- the runner's event -------------------------------------------------------------------------


def event_payload(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The webhook payload of the event that started the run (empty outside a runner)."""
    env = os.environ if environ is None else environ
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MlopsCiError(f"cannot read the event payload: {exc}", path=path) from exc
    return data if isinstance(data, dict) else {}


def runs_url(environ: Mapping[str, str] | None = None) -> str | None:
    """Where this repository's workflow runs live (`{server}/{owner}/{repo}/actions/runs/`, the
    start of each of its run URLs), on a runner; no token needed. Tells this repository's audit
    records from those of others that share a registry."""
    env = os.environ if environ is None else environ
    server, repository = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY")
    if not server or not repository:
        return None
    return f"{server.rstrip('/')}/{repository.strip('/')}/actions/runs/"


def event_pull_number(environ: Mapping[str, str] | None = None) -> int | None:
    """The pull request's number from a pull_request / pull_request_review event.

    The head SHA is deliberately not taken from GITHUB_SHA: on pull_request events that is the
    test-merge commit, which no reviewer ever approved.
    """
    pr = event_payload(environ).get("pull_request")
    number = pr.get("number") if isinstance(pr, dict) else None
    return int(number) if isinstance(number, int) else None


def _float_env(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise MlopsCiError(f"{name} must be a number, got {raw!r}") from exc

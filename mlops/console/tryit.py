"""The Try-it page: a user's top-10 through the real stream, with titles and genres, beside the movies
the user rated. Every way it can go wrong (not a number, an unknown user, no feature set, a service
down, no answer in time) ends as a sentence for the page, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlops import catalog, kafka_auth, stream_client
from mlops.catalog import Movie, Rating
from mlops.console import words
from mlops.schemas import MAX_ID
from mlops.settings import Settings

K = 10
SUGGESTIONS = 8


class BadUserId(ValueError):
    """What the user typed is not a user id; the message says why, in words."""


def parse_user_id(text: str) -> int:
    """The id typed into the form; `BadUserId` with a sentence the page shows as it is."""
    cleaned = text.strip()
    if not cleaned:
        raise BadUserId("Type a user id (a whole number, e.g. 1).")
    if not (cleaned.isascii() and cleaned.isdigit()):  # "²".isdigit() is True, and int("²") fails
        raise BadUserId(f"“{cleaned[:40]}” is not a user id: user ids are whole numbers such as 1 or 42.")
    value = int(cleaned)
    if value > MAX_ID:
        raise BadUserId(f"{cleaned[:40]} is too large for a user id (ids fit in 64 bits).")
    return value


@dataclass
class TryIt:
    """Everything the Try-it page shows for one request, including why there is no answer."""

    user_input: str = ""
    user_id: int | None = None
    problems: list[str] = field(default_factory=list)  # why there is no answer
    bad_input: bool = False  # what was typed is not a user id (the page answers 400)
    notes: list[str] = field(default_factory=list)  # what the reader should know about the answer
    feature_set: str | None = None
    feature_set_kind: str = ""  # which set serves (`layout.set_kind`): the serving set of every rating
    known_user: bool | None = None
    recommendations: list[tuple[Movie, float]] = field(default_factory=list)
    answer: stream_client.Answer | None = None
    rated: list[Rating] = field(default_factory=list)
    rated_problem: str | None = None
    suggestions: list[int] = field(default_factory=list)


def _reason(exc: BaseException) -> str:
    return words.describe(exc)


def suggestions(settings: Settings) -> tuple[str | None, list[int]]:
    """The current feature set and a few of its users to try (empty when there is none yet)."""
    from mlops.feature_store import RedisFeatureStore

    store = RedisFeatureStore.from_settings(settings)
    version = store.current_version()
    if version is None:
        return None, []
    return version, sorted(store.ids(version, "user"))[:SUGGESTIONS]


def _kind(settings: Settings, version: str) -> str:
    from mlops.feature_store import RedisFeatureStore
    from mlops.layout import set_kind

    return set_kind(RedisFeatureStore.from_settings(settings).metadata(version).get("history"))


def known(settings: Settings, version: str, user_id: int) -> bool:
    """Whether `version` or the stream's ratings know the user (an unknown one gets the cold-start answer and a
    note)."""
    from mlops.feature_store import RedisFeatureStore
    from mlops.live_ratings import LiveRatings

    store = RedisFeatureStore.from_settings(settings)
    return user_id in set(store.ids(version, "user")) or bool(LiveRatings(store.r).ratings([user_id]))


def since_the_set(settings: Settings, version: str, user_id: int, titles: dict[int, Movie]) -> list[Rating]:
    """The user's ratings the stream applied after feature set `version` was built (`mlops.live_ratings`)."""
    from mlops.feature_store import RedisFeatureStore
    from mlops.live_ratings import LiveRatings, since

    store = RedisFeatureStore.from_settings(settings)
    cutoff = float(store.metadata(version).get("snapshot_cutoff") or 0)
    ratings = since(LiveRatings(store.r).ratings([user_id]).get(user_id, []), cutoff)
    return [Rating(catalog.movie(titles, m), r, int(ts)) for m, r, ts in ratings]


def page(settings: Settings) -> TryIt:
    """The empty form, with users to try."""
    view = TryIt()
    try:
        view.feature_set, view.suggestions = suggestions(settings)
        if view.feature_set is not None:
            view.feature_set_kind = _kind(settings, view.feature_set)
    except Exception as exc:  # Redis down or the index expired: the form still shows, with the reason
        view.problems.append(f"The feature store (Redis at {settings.redis_host}:{settings.redis_port}) could not "
                             f"be read, so there are no users to suggest: {_reason(exc)}")  # fmt: skip
        return view
    if view.feature_set is None:
        view.problems.append("No feature set is loaded yet, so the stream cannot answer: run ./run.sh pipeline.")
    return view


def run(settings: Settings, user_input: str) -> TryIt:
    """Validate the user id, ask the stream for the top-10, join titles and the user's ratings."""
    view = page(settings)
    view.user_input = user_input
    try:
        view.user_id = parse_user_id(user_input)
    except BadUserId as exc:
        view.problems.append(str(exc))
        view.bad_input = True
        return view
    if view.feature_set is None:
        return view
    user = view.user_id
    try:
        view.known_user = known(settings, view.feature_set, user)
    except Exception as exc:
        view.problems.append(f"Could not check user {user} in the feature store: {_reason(exc)}")
        return view
    if not view.known_user:
        view.notes.append(
            f"User {user} is unknown to feature set {view.feature_set}: no rating history was trained on. The "
            "stream still answers, with its cold-start fallback (the most popular movies)."
        )
    try:
        view.answer = stream_client.ask(settings, stream_client.topk_request(user, K), role=kafka_auth.CONSOLE)
    except stream_client.NoAnswer as exc:
        view.problems.append(str(exc))
        return view
    except Exception as exc:  # the broker or Redis refused: say which
        view.problems.append(f"The request could not go through the stream: {_reason(exc)}")
        return view
    result = view.answer.result
    if result.get("fallback") and view.known_user:
        view.notes.append("The stream answered with its cold-start fallback (popular movies) for this user.")
    run_id = str(result.get("feature_set") or view.feature_set)
    try:
        titles = catalog.movies(settings, run_id)
    except Exception as exc:
        titles = {}
        view.notes.append(f"Titles are not available (the movies of run {run_id} could not be read: "
                          f"{_reason(exc)}); movie ids are shown instead.")  # fmt: skip
    view.recommendations = [(catalog.movie(titles, m), s) for m, s in view.answer.recommendations]
    try:
        streamed = since_the_set(settings, run_id, user, titles)
        view.rated = sorted(streamed + catalog.rated(settings, run_id, user), key=lambda x: (-x.rating, -x.timestamp))
        if streamed:
            view.notes.append(f"{len(streamed)} of these ratings came through the stream after the feature set was "
                              "built; the answer already knows them.")  # fmt: skip
        if not view.rated:
            view.rated_problem = f"User {user} has no rated movies in the dataset of run {run_id}: no history."
    except Exception as exc:
        view.rated_problem = f"The ratings of run {run_id} could not be read: {_reason(exc)}"
    return view

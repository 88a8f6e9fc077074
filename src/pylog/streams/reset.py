"""Resetting a streams application so that it reprocesses its input from scratch: Kafka's
application reset tool (``kafka-streams-application-reset.sh``, StreamsResetter) as
``pylog streams reset``, and the local state clean-up (``KafkaStreams#cleanUp``) as
:func:`clean_up_state` / :meth:`StreamsApp.clean_up`.

What a reset does, in Kafka's order, through pylog's client API only (so it works on an
embedded data directory, ``pylog serve``, a pylog cluster and Apache Kafka alike):

1. The application's consumer group (named after ``application.id``) must have no
   members: a running instance would commit over the reset.  With ``force`` every member
   is removed (LeaveGroup v3+ naming each one, as Kafka's admin
   ``removeMembersFromConsumerGroup`` does: a static member by its
   ``group.instance.id``), for instances that stopped without leaving and whose session
   has not yet expired.  Otherwise the reset fails (NonEmptyGroupError) before anything
   is changed.
2. The committed offsets of the input topics are moved: to the log start offset by
   default, or to the latest offset, a given offset, a time (the first offset at or
   after it; the end where there is none), a duration before now, the current committed
   offset shifted by N, or a CSV plan (``TOPIC,PARTITION,OFFSET`` lines).  Targets out
   of ``[log start, log end]`` are clamped to it, as Kafka does.  Intermediate topics
   (topics the application both writes and reads) are moved to their end, so records
   written before the reset are not read again.  Input or intermediate topics that do
   not exist are reported, skipped, and make the exit status 1 (Kafka's rule).
3. The internal topics are deleted: every topic named ``<application.id>-...`` ending in
   ``-changelog``, ``-repartition``, ``-subscription-registration-topic`` or
   ``-subscription-response-topic`` (or Kafka's numbered foreign-key join names), but
   never one given as an input or intermediate topic.  ``internal_topics`` narrows the
   deletion to a subset of those.  Deleting a topic drops its committed offsets in the
   group (the broker does it for an empty group), so the recreated repartition topics
   are read from their start.
4. With ``state_dir``: the local state of the application under it is deleted
   (:func:`clean_up_state`).  Kafka's tool leaves that to ``KafkaStreams#cleanUp`` on
   each instance; without it a persistent store would keep the old state.

Everything is checked (group, topics, offsets) before the first change, so an error in
the arguments changes nothing.  A dry run prints the same plan and changes nothing, not
even the group's members (Kafka's tool removes them under ``--force --dry-run``; pylog
does not).  Crash behaviour: the steps are not atomic: a reset stopped half-way is
completed by running it again (each step is idempotent).  Not thread-safe: one reset
at a time per application, with no instance running.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from pylog.errors import InvalidConfigError, NonEmptyGroupError, error_for_code

from .state.persistent import store_directory

__all__ = ["ResetResult", "reset_application", "clean_up_state", "is_internal_topic", "parse_duration_ms",
           "parse_reset_plan", "application_state_directory"]

#: Suffixes of the topics Kafka Streams creates for an application (StreamsResetter's rule).
INTERNAL_SUFFIXES = ("-changelog", "-repartition", "-subscription-registration-topic",
                     "-subscription-response-topic")
_FK_TOPIC = re.compile(r".+-KTABLE-FK-JOIN-SUBSCRIPTION-(?:REGISTRATION|RESPONSE)-\d+-topic")
#: Kafka Streams' task directory names: ``<subtopology>_<partition>``, optionally behind a
#: named topology's ``__<name>__`` prefix.
_TASK_DIR = re.compile(r"(?:__.+__)?\d+_\d+")
GLOBAL_DIR = "global"
_DURATION = re.compile(r"([-+]?)P(?:([-+]?\d+)D)?"
                       r"(T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?", re.IGNORECASE)


def is_internal_topic(application_id: str, topic: str) -> bool:
    """Whether ``topic`` is named as an internal topic of ``application_id``: prefixed
    ``<application.id>-`` and ending as a changelog, repartition or foreign-key join
    subscription topic."""
    if not topic.startswith(application_id + "-"):
        return False
    return topic.endswith(INTERNAL_SUFFIXES) or _FK_TOPIC.fullmatch(topic) is not None


def parse_duration_ms(text: str) -> int:
    """An ISO 8601 duration as Java's ``Duration.parse`` reads it (``PnDTnHnMn.nS``,
    e.g. ``PT15M``, ``P1DT2H``, ``-PT10S``) in milliseconds.  Raises ValueError."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or (m.group(2) is None and not m.group(3)) or (m.group(3) or "").upper() == "T":
        raise ValueError(f"{text!r} is not an ISO 8601 duration: expected PnDTnHnMn.nS, e.g. PT15M or P1DT2H")
    sign, days, _t, hours, minutes, seconds, fraction = m.groups()
    ms = (int(days or 0) * 86_400_000 + int(hours or 0) * 3_600_000 + int(minutes or 0) * 60_000
          + int(seconds or 0) * 1000)
    if fraction:
        part = int(fraction.ljust(9, "0")[:3])
        ms += -part if (seconds or "").startswith("-") else part
    return -ms if sign == "-" else ms


def parse_reset_plan(text: str) -> Dict[Tuple[str, int], int]:
    """A reset plan, ``TOPIC,PARTITION,OFFSET`` per line (kafka-consumer-groups'
    ``--export`` format, which Kafka's reset tool reads with ``--from-file``).  Raises
    ValueError naming the line that is wrong."""
    plan: Dict[Tuple[str, int], int] = {}
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if not lines:
        raise ValueError("the reset plan is empty: expected lines TOPIC,PARTITION,OFFSET")
    for n, line in enumerate(lines, 1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0]:
            raise ValueError(f"reset plan line {n} ({line!r}) is not TOPIC,PARTITION,OFFSET")
        try:
            partition, offset = int(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"reset plan line {n} ({line!r}): partition and offset must be integers") from None
        if partition < 0:
            raise ValueError(f"reset plan line {n} ({line!r}): the partition must be at least 0")
        plan[(parts[0], partition)] = offset
    return plan


def application_state_directory(state_dir: str, application_id: str) -> str:
    """``<state_dir>/<application_id>``, the directory of the application's local state
    (an empty ``state_dir`` is Kafka's default, ``<temp dir>/kafka-streams``)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(store_directory(state_dir, application_id, "-", "-"))))


def clean_up_state(state_dir: str, application_id: str, *, dry_run: bool = False) -> List[str]:
    """Delete the application's local state under ``state_dir`` as
    ``KafkaStreams#cleanUp`` does: every task directory (``<subtopology>_<partition>``,
    with its stores and ``.checkpoint``) and the global stores' directory.  The
    instance's process id file stays (exactly-once keeps fencing the instance's
    earlier producer with it).  Returns the directories deleted (``dry_run``: that
    would be).  Raises OSError if one cannot be deleted."""
    app_dir = application_state_directory(state_dir, application_id)
    try:
        names = sorted(os.listdir(app_dir))
    except FileNotFoundError:
        return []
    doomed = [os.path.join(app_dir, n) for n in names
              if (n == GLOBAL_DIR or _TASK_DIR.fullmatch(n)) and os.path.isdir(os.path.join(app_dir, n))]
    if not dry_run:
        for path in doomed:
            shutil.rmtree(path)
    return doomed


@dataclass
class ResetResult:
    """What a reset did (or, dry run, would do)."""

    #: members removed from the group (``force``): member id or group instance id
    removed_members: List[str] = field(default_factory=list)
    #: (topic, partition) -> the offset committed for it
    input_offsets: Dict[Tuple[str, int], int] = field(default_factory=dict)
    intermediate_offsets: Dict[Tuple[str, int], int] = field(default_factory=dict)
    deleted_topics: List[str] = field(default_factory=list)
    #: input or intermediate topics that do not exist (skipped; exit status 1)
    missing_topics: List[str] = field(default_factory=list)
    deleted_state: List[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        """The tool's exit status: 1 when a given topic was not found, else 0."""
        return 1 if self.missing_topics else 0


def _members(client: Any, group: str) -> List[Any]:
    desc = client.describe_groups([group])[0]
    if desc.error_code and desc.error_code != 69:      # GROUP_ID_NOT_FOUND: nothing to stop
        raise error_for_code(desc.error_code, f"describe group {group}: {error_for_code(desc.error_code).kafka_name}")
    return list(desc.members) if desc.state != "Dead" else []


def _remove_members(client: Any, group: str, members: Sequence[Any]) -> List[str]:
    """LeaveGroup for each member, as an admin: a static member by its instance id."""
    from pylog.client.transport import MemberIdentity

    idents = [MemberIdentity("", m.group_instance_id, "removed by pylog streams reset") if m.group_instance_id
              else MemberIdentity(m.member_id, None, "removed by pylog streams reset") for m in members]
    res = client.transport.leave_group(group, idents)
    codes = [res.error_code] + [m.error_code for m in res.members]
    # UNKNOWN_MEMBER_ID: the member left by itself meanwhile, which is what was wanted
    bad = [c for c in codes if c not in (0, 25)]
    if bad:
        raise error_for_code(bad[0], f"removing the members of group {group}: {error_for_code(bad[0]).kafka_name}")
    return [m.group_instance_id or m.member_id for m in members]


def _clamp(topic: str, partition: int, target: int, start: int, end: int, say: Callable[[str], None]) -> int:
    if target > end:
        say(f"New offset ({target}) of {topic}-{partition} is past the log end offset: set to {end}")
        return end
    if target < start:
        say(f"New offset ({target}) of {topic}-{partition} is before the log start offset: set to {start}")
        return start
    return target


def reset_application(client: Any, application_id: str, *, input_topics: Iterable[str] = (),
                      intermediate_topics: Iterable[str] = (), internal_topics: Optional[Iterable[str]] = None,
                      to_latest: bool = False, to_offset: Optional[int] = None, shift_by: Optional[int] = None,
                      to_datetime_ms: Optional[int] = None, by_duration_ms: Optional[int] = None,
                      plan: Optional[Mapping[Tuple[str, int], int]] = None, force: bool = False,
                      dry_run: bool = False, state_dir: Optional[str] = None,
                      say: Callable[[str], None] = print, now_ms: Optional[int] = None) -> ResetResult:
    """Reset ``application_id`` on ``client`` (``pylog.open`` or ``pylog.connect``); see
    the module docstring.  At most one of ``to_latest``, ``to_offset``, ``shift_by``,
    ``to_datetime_ms``, ``by_duration_ms`` and ``plan`` (none: the earliest offsets).

    Returns
    -------
    ResetResult
        What was done; ``status`` is the tool's exit status.

    Raises
    ------
    NonEmptyGroupError
        The group has members and ``force`` is not set.
    InvalidConfigError
        ``internal_topics`` names a topic that is not an internal topic of the
        application, or ``plan`` misses a partition of an input topic.
    """
    group = application_id
    inputs = list(dict.fromkeys(input_topics))
    intermediates = list(dict.fromkeys(intermediate_topics))
    hows = [to_latest, to_offset is not None, shift_by is not None, to_datetime_ms is not None,
            by_duration_ms is not None, plan is not None]
    if sum(hows) > 1:
        raise InvalidConfigError("give at most one of to_latest, to_offset, shift_by, to_datetime_ms, "
                                 "by_duration_ms and plan")
    result = ResetResult()

    # -- check everything before changing anything
    members = _members(client, group)
    if members and not force:
        shown = ", ".join(f"{m.member_id} ({m.client_id}@{m.client_host})" for m in members)
        raise NonEmptyGroupError(
            f"Consumer group {group!r} is still active and has {len(members)} member(s): {shown}. Stop every "
            "instance of the application before resetting it, or use --force to remove the members from the group")
    all_topics = set(client.list_topics())
    inferred = sorted(t for t in all_topics if is_internal_topic(application_id, t)
                      and t not in inputs and t not in intermediates)
    if internal_topics is not None:
        wanted = list(dict.fromkeys(internal_topics))
        stray = [t for t in wanted if t not in inferred]
        if stray:
            raise InvalidConfigError(
                f"--internal-topics {', '.join(stray)}: not internal topics of application {application_id!r} "
                f"(those are: {', '.join(inferred) or 'none'}); do a dry run without --internal-topics to see them")
        to_delete = wanted
    else:
        to_delete = inferred
    result.missing_topics = [t for t in inputs + intermediates if t not in all_topics]
    partitions: Dict[str, int] = {t: client.num_partitions(t) for t in inputs + intermediates if t in all_topics}
    in_parts = [(t, p) for t in inputs if t in partitions for p in range(partitions[t])]
    if plan is not None:
        missing = [f"{t}-{p}" for t, p in in_parts if (t, p) not in plan]
        if missing:
            raise InvalidConfigError(f"the reset plan has no offset for {', '.join(missing)}")
    committed: Dict[Tuple[str, int], int] = {}
    if shift_by is not None and in_parts:
        res = client.fetch_offsets(group, {t: range(partitions[t]) for t in inputs if t in partitions})
        res.raise_for_error()
        committed = {(t, p): f.offset for t, ps in res.topics.items() for p, f in ps.items()}
    if by_duration_ms is not None:
        now = now_ms if now_ms is not None else int(datetime.datetime.now().timestamp() * 1000)
        to_datetime_ms = max(0, now - by_duration_ms)
    for t, p in in_parts:
        start, end = client.log_offsets(t, p)
        if to_latest:
            target = end
        elif to_offset is not None:
            target = to_offset
        elif shift_by is not None:
            cur = committed.get((t, p), -1)
            target = (cur if cur >= 0 else end) + shift_by
        elif to_datetime_ms is not None:
            found = client.list_offsets(t, p, to_datetime_ms)
            found.raise_for_error()
            if found.offset < 0:
                say(f"Partition {p} of topic {t} has no record at or after that time: set to its end offset {end}")
            target = end if found.offset < 0 else found.offset
        elif plan is not None:
            target = plan[(t, p)]
        else:
            target = start
        result.input_offsets[(t, p)] = _clamp(t, p, target, start, end, say)
    for t in intermediates:
        for p in range(partitions.get(t, 0)):
            result.intermediate_offsets[(t, p)] = client.log_offsets(t, p)[1]
    result.deleted_topics = to_delete
    if state_dir is not None:
        result.deleted_state = clean_up_state(state_dir, application_id, dry_run=True)

    # -- report, then act
    if dry_run:
        say("---- Dry run: the reset would do the following; nothing is changed ----")
    if members:
        say(f"Force deleting all active members in the group: {group}")
        for m in members:
            say(f"Member: {m.group_instance_id or m.member_id} ({m.client_id}@{m.client_host})")
        if not dry_run:
            result.removed_members = _remove_members(client, group, members)
    if not inputs and not intermediates:
        say("No input or intermediate topics specified. Skipping seek.")
    else:
        for kind, topics in (("input", inputs), ("intermediate", intermediates)):
            missing = [t for t in topics if t not in all_topics]
            if missing:
                say(f"Following {kind} topics are not found, skipping them")
                for t in missing:
                    say(f"Topic: {t}")
        if result.input_offsets:
            say(f"Following input topics offsets will be reset to (for consumer group {group})")
            for (t, p), off in sorted(result.input_offsets.items()):
                say(f"Topic: {t} Partition: {p} Offset: {off}")
        if result.intermediate_offsets:
            say(f"Following intermediate topics offsets will be reset to end (for consumer group {group})")
            for (t, p), off in sorted(result.intermediate_offsets.items()):
                say(f"Topic: {t} Partition: {p} Offset: {off}")
        offsets: Dict[str, Dict[int, int]] = {}
        for (t, p), off in list(result.input_offsets.items()) + list(result.intermediate_offsets.items()):
            offsets.setdefault(t, {})[p] = off
        if offsets and not dry_run:
            for t, codes in client.commit_offsets(group, offsets).items():
                for p, code in sorted(codes.items()):
                    if code:
                        raise error_for_code(code, f"committing the offset of {t}-{p} for group {group}: "
                                             f"{error_for_code(code).kafka_name}")
        say("Done.")
    which = "specified" if internal_topics is not None else "inferred"
    say(f"Deleting {which} internal topics [{', '.join(to_delete)}]")
    if to_delete and not dry_run:
        _delete_topics(client, to_delete, say)
    if state_dir is not None:
        say(f"Deleting the local state of {application_id} under "
            f"{application_state_directory(state_dir, application_id)}: {len(result.deleted_state)} director"
            f"{'y' if len(result.deleted_state) == 1 else 'ies'}")
        for path in result.deleted_state:
            say(f"State: {path}")
        if not dry_run:
            clean_up_state(state_dir, application_id)
    say("Done.")
    return result


def _delete_topics(client: Any, names: List[str], say: Callable[[str], None]) -> None:
    failed = []
    for name, res in client.delete_topics(names).items():
        code = getattr(res, "error_code", 0)
        if code and code != 3:        # UNKNOWN_TOPIC_OR_PARTITION: already gone
            failed.append(f"{name} ({res.error_message or error_for_code(code).kafka_name})")
    if failed:
        raise error_for_code(-1, f"could not delete internal topic(s) {', '.join(failed)}")

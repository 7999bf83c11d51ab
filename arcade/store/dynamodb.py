"""The DynamoDB store: one table, conditional writes and transactions make the guarantees.

The layout (item types, keys, access patterns) is described in ``docs/dynamodb.md``. Nothing
heavy is imported here: boto3 and botocore are loaded on first use, so a Lambda cold start
that never touches the store does not pay for them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from decimal import Decimal
from typing import Any, Literal

from arcade.clock import parse_iso
from arcade.errors import StoreError
from arcade.logs import log_event
from arcade.store.base import (
    CHANGE,
    PLAN_VERSION,
    STATE,
    GameOverKey,
    IntentRecord,
    Machine,
    Payment,
    PaymentLink,
    RevenueEntry,
    Store,
    as_stored,
    instant_fields,
    stored_form,
)
from arcade.store.primitives import (
    ABSENT,
    EXISTS,
    AbsentOrBelow,
    Condition,
    Delete,
    Kind,
    Operation,
    Put,
    Refused,
    Version,
    held_under_another_key,
)

logger = logging.getLogger(__name__)

Item = dict[str, dict[str, Any]]

# Sort keys of the item types; partition keys are "<TYPE>#<id>".
MACHINE_SK = "MACHINE"
STATE_SK = "STATE"
LINK_SK = "LINK"
PAYMENT_SK = "PAYMENT"
INTENT_SK = "INTENT"
GAME_OVER_SK = "GAMEOVER"
VALUE_SK = "VALUE"
# A plan's versions share the partition PLAN#<owner>, sort key VERSION#<number, 10 digits>;
# an operator's changes share CHANGES#<subject>, sort key <at>#<change id>.
PLAN_PK, PLAN_SK = "PLAN#", "VERSION#"
CHANGES_PK = "CHANGES#"

# The index that lists a machine's payments, newest first.
BY_MACHINE_INDEX = "by_machine"
BY_MACHINE_PK = "by_machine_pk"
BY_MACHINE_SK = "by_machine_sk"
# Machine items sit in the by_machine index under this partition, so listing them is a Query.
ALL_MACHINES = "MACHINES"
# The outbox: a sparse index holding only the payments whose ``due_at`` is set, so the
# delivery relay finds them with a Query, never a Scan.
OUTBOX_INDEX = "outbox"
OUTBOX_PK = "outbox_pk"
OUTBOX = "OUTBOX"
# Every payment newest first (partition PAYMENTS) and the revenue journal in time order
# (partition REVENUE), by ``time_sk`` = "<instant>#<id>".
BY_TIME_INDEX = "by_time"
TIME_PK = "time_pk"
TIME_SK = "time_sk"
ALL_PAYMENTS = "PAYMENTS"
REVENUE = "REVENUE"
REVENUE_SK = "REVENUE"
# The payments of one status newest first: partition STATUS#<status>, sort key ``time_sk``.
BY_STATUS_INDEX = "by_status"
STATUS_PK = "status_pk"
# PaymentIntents whose Checkout Session is not on record sit in by_status under this partition.
UNMATCHED_INTENTS = "INTENT#UNMATCHED"
# A machine's links sit in the by_machine index under LINKS#<machine_id>.
LINKS_OF = "LINKS#"
# DynamoDB's Time to Live deletes game-over keys some time after this epoch-seconds attribute.
EXPIRES_EPOCH = "expires_at_epoch"

REVENUE_PREFIX = "revenue_"
ATTEMPTS = 5  # a transaction that loses a race is tried this often in all
# Reasons a transaction is cancelled that mean "try again", not "no".
RETRYABLE = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})


ATTRIBUTES = [
    {"AttributeName": name, "AttributeType": "S"}
    for name in (
        "pk",
        "sk",
        BY_MACHINE_PK,
        BY_MACHINE_SK,
        OUTBOX_PK,
        "due_at",
        TIME_PK,
        TIME_SK,
        STATUS_PK,
    )
]
INDEXES = {
    BY_MACHINE_INDEX: {
        "IndexName": BY_MACHINE_INDEX,
        "KeySchema": [
            {"AttributeName": BY_MACHINE_PK, "KeyType": "HASH"},
            {"AttributeName": BY_MACHINE_SK, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    },
    OUTBOX_INDEX: {
        "IndexName": OUTBOX_INDEX,
        "KeySchema": [
            {"AttributeName": OUTBOX_PK, "KeyType": "HASH"},
            {"AttributeName": "due_at", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    },
    BY_TIME_INDEX: {
        "IndexName": BY_TIME_INDEX,
        "KeySchema": [
            {"AttributeName": TIME_PK, "KeyType": "HASH"},
            {"AttributeName": TIME_SK, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    },
    BY_STATUS_INDEX: {
        "IndexName": BY_STATUS_INDEX,
        "KeySchema": [
            {"AttributeName": STATUS_PK, "KeyType": "HASH"},
            {"AttributeName": TIME_SK, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    },
}


class DynamoStore(Store):
    """Persistence in one DynamoDB table (see docs/dynamodb.md for its layout)."""

    def __init__(self, table_name: str, *, client: Any = None) -> None:
        self.table_name = table_name
        self._client = client
        self._client_lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """Return the DynamoDB client, creating the default one on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = _default_client()
        return self._client

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Call one DynamoDB operation on this table, translating SDK errors into our own."""
        from botocore.exceptions import BotoCoreError, ClientError

        if operation != "transact_write_items":
            params["TableName"] = self.table_name
        try:
            return getattr(self.client, operation)(**params)
        except ClientError as exc:
            code = _error_code(exc)
            if code == "ConditionalCheckFailedException":
                # The caller decides what losing means; with ALL_OLD asked for, the item that
                # won comes with the refusal and needs no second read.
                raise _ConditionFailed(exc.response.get("Item")) from exc
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons", [])
                codes = [reason.get("Code", "None") for reason in reasons]
                items = [reason.get("Item") for reason in reasons]
                raise _TransactionCancelled(codes, items) from exc
            if code == "ResourceInUseException" and operation == "create_table":
                raise _TableExists from exc
            _log_failure(operation, code)
            if code == "ResourceNotFoundException":
                raise StoreError(
                    f"the DynamoDB table {self.table_name!r} does not exist "
                    "(create it with `flask --app app store init`)"
                ) from exc
            raise StoreError("the store refused the operation") from exc
        except BotoCoreError as exc:
            _log_failure(operation, type(exc).__name__)
            raise StoreError("the store could not be reached") from exc

    def _get_item(self, key: Item) -> Item | None:
        """Read one item with a strongly consistent read."""
        answer = self._call("get_item", Key=key, ConsistentRead=True)
        return answer.get("Item")

    def _transact(self, *actions: dict[str, Any]) -> None:
        """Write several items all or nothing."""
        items = [
            {kind: body | {"TableName": self.table_name} for kind, body in action.items()}
            for action in actions
        ]
        self._call("transact_write_items", TransactItems=items)

    def _transact_or_refusal(
        self, actions: list[dict[str, Any]], what: str
    ) -> _TransactionCancelled | None:
        """Write ``actions`` all or nothing; return None once written, or the cancellation
        when one of their conditions failed (its reasons and ``ALL_OLD`` items, by action)."""
        for _ in range(ATTEMPTS):
            try:
                self._transact(*actions)
                return None
            except _TransactionCancelled as exc:
                if "ConditionalCheckFailed" in exc.reasons:
                    return exc
                _pause_or_raise(exc)
        raise StoreError(f"the store kept refusing {what}; try again")

    def create_table(self) -> None:
        """Create the table and its indexes on demand unless they exist; wait until ACTIVE."""
        try:
            self._call(
                "create_table",
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=ATTRIBUTES,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                GlobalSecondaryIndexes=list(INDEXES.values()),
            )
        except _TableExists:
            log_event(logger, "store_table_exists", table=self.table_name)
            self._add_missing_indexes()
        self._wait_until_active()
        self._enable_expiry()

    def _add_missing_indexes(self) -> None:
        """Give a table made by an older release the indexes it lacks, one at a time."""
        for name, index in INDEXES.items():
            table = self._call("describe_table")["Table"]
            present = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
            if name in present:
                continue
            self._wait_until_active()
            # Only the attributes keys use (the table's, its indexes', the new index's):
            # DynamoDB refuses definitions that no key uses.
            used = {"pk", "sk"} | {
                key["AttributeName"]
                for existing in [*table.get("GlobalSecondaryIndexes", []), index]
                for key in existing["KeySchema"]
            }
            self._call(
                "update_table",
                AttributeDefinitions=[a for a in ATTRIBUTES if a["AttributeName"] in used],
                GlobalSecondaryIndexUpdates=[{"Create": index}],
            )
            log_event(logger, "store_index_added", index=name)

    def _enable_expiry(self) -> None:
        """Let DynamoDB delete expired game-over keys (Time to Live on their epoch seconds)."""
        answer = self._call("describe_time_to_live")
        if answer.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") in (
            "ENABLED",
            "ENABLING",
        ):
            return
        self._call(
            "update_time_to_live",
            TimeToLiveSpecification={"AttributeName": EXPIRES_EPOCH, "Enabled": True},
        )

    def _wait_until_active(self) -> None:
        """Wait until the table and its index are ACTIVE."""
        for _ in range(120):
            table = self._call("describe_table")["Table"]
            indexes = table.get("GlobalSecondaryIndexes", [])
            if table["TableStatus"] == "ACTIVE" and all(
                index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes
            ):
                return
            time.sleep(1)
        raise StoreError(f"the DynamoDB table {self.table_name!r} did not become active")

    # --- the primitives -------------------------------------------------------------------
    def _get(self, kind: Kind, key: tuple[Any, ...]) -> Any | None:
        ids = dict(zip(kind.key, key, strict=True))
        item = self._get_item(LAYOUTS[kind.name].key(ids))
        return None if item is None else _record_of(kind, item, ids)

    def _query(
        self,
        kind: Kind,
        index: str,
        equals: Mapping[str, Any],
        *,
        at_least: Mapping[str, Any] | None = None,
        below: Mapping[str, Any] | None = None,
        at_most: Mapping[str, Any] | None = None,
        after: tuple[Any, ...] | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> tuple[list[Any], bool]:
        """One Query on the table or the GSI the kind's index is laid out on (never a Scan):
        the partition from ``equals``, bounds on the first sort field and the cursor as the
        key condition, everything else as a filter. A unique field is read by its own key."""
        where = LAYOUTS[kind.name].indexes[index]
        if where.by_key is not None:
            item = self._get_item(where.by_key(equals))
            return ([] if item is None else [_record_of(kind, item, {})]), False
        fields_of = kind.indexes[index]
        placeholder = _Placeholders()
        names, values = placeholder.names, placeholder.values
        values[":partition"] = {"S": where.partition(equals)}
        filters: list[str] = []

        for name, value in equals.items():
            if name in fields_of.partition:
                continue
            if value is None:
                attribute, _ = placeholder(name)
                filters.append(f"attribute_not_exists({attribute})")
            else:
                filters.append("{} = {}".format(*placeholder(name, value)))
        # Bounds on the first sort field are compared with the sort key, which begins with
        # that field's stored text; the rest, and an exclusive bound, are filters as well.
        lower = upper = None
        lead = fields_of.sort[0] if fields_of.sort else None
        for operator, bounds in ((">=", at_least), ("<", below), ("<=", at_most)):
            for name, value in (bounds or {}).items():
                if name != lead or where.sort is None:
                    attribute, value_mark = placeholder(name, value)
                    filters.append(f"{attribute} {operator} {value_mark}")
                    continue
                text = where.sort((value,))
                if operator == ">=":
                    lower = text if lower is None else max(lower, text)
                else:
                    upper = text if upper is None else min(upper, text)
                    if operator == "<":
                        values[":below"] = {"S": text}
                        filters.append(f"{where.sk} < :below")
        if after is not None and where.sort is not None:
            text = where.sort(after)
            values[":after"] = {"S": text}
            if newest_first:
                upper = text if upper is None else min(upper, text)
                filters.append(f"{where.sk} < :after")
            else:
                lower = text if lower is None else max(lower, text)
                filters.append(f"{where.sk} > :after")
        if lower is not None and upper is not None and lower > upper:
            return [], False  # DynamoDB refuses a BETWEEN whose bounds are the wrong way round
        condition = f"{where.pk} = :partition"
        if lower is not None and upper is not None:
            condition += f" AND {where.sk} BETWEEN :lower AND :upper"
            values[":lower"], values[":upper"] = {"S": lower}, {"S": upper}
        elif lower is not None:
            condition += f" AND {where.sk} >= :lower"
            values[":lower"] = {"S": lower}
        elif upper is not None:
            condition += f" AND {where.sk} <= :upper"
            values[":upper"] = {"S": upper}
        params: dict[str, Any] = {
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not newest_first,
        }
        if where.index is None:
            params["ConsistentRead"] = True  # the table reads consistently; an index cannot
        else:
            params["IndexName"] = where.index
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        if names:
            params["ExpressionAttributeNames"] = names
        wanted = None if limit is None else limit + 1  # one more says whether more follow
        if wanted is not None:
            # A filter applies after Limit: pages are followed until enough are found.
            params["Limit"] = max(wanted, 10) if filters else wanted
        items = self._query_pages(params, enough=wanted)
        records = [_record_of(kind, item, {}) for item in items[:wanted]]
        if limit is None:
            return records, False
        return records[:limit], len(records) > limit

    def _write(self, *operations: Operation) -> Literal[True] | Refused:
        """One PutItem, UpdateItem or DeleteItem for one item; a transaction otherwise (a
        kind kept under several keys, or several operations). A refused condition returns the
        stored record that won (``ALL_OLD`` on every guard but ``EXISTS``, see _condition)."""
        actions: list[dict[str, Any]] = []
        owner: list[tuple[int, bool]] = []  # by action: its operation, and whether it is a copy
        for position, operation in enumerate(operations):
            for copy, action in enumerate(_actions(operation)):
                actions.append(action)
                owner.append((position, copy > 0))
        if len(actions) == 1:
            ((verb, body),) = actions[0].items()
            try:
                if verb == "Put":
                    self._call("put_item", **body)
                elif verb == "Update":
                    self._call("update_item", **body)
                else:
                    self._call("delete_item", **body)
            except _ConditionFailed as refused:
                return _refused(operations, {0: refused.item})
            return True
        refusal = self._transact_or_refusal(actions, "the write")
        if refusal is None:
            return True
        stored: dict[int, Item | None] = {}
        for index, (position, copy) in enumerate(owner):
            if refusal.reason(index) != "ConditionalCheckFailed":
                continue
            if copy and isinstance(operations[position], Put):
                raise held_under_another_key(operations[position].kind)
            if not copy or position not in stored:
                stored[position] = refusal.item(index)
        return _refused(operations, stored)

    def _query_pages(self, params: dict[str, Any], *, enough: int | None = None) -> list[Item]:
        """Run a Query, following its pages until the last, or until ``enough`` items came."""
        params = dict(params)
        items: list[Item] = []
        while enough is None or len(items) < enough:
            page = self._call("query", **params)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items


# --- the layout of each kind ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # one per index, compared by identity
class _Where:
    """Where an index of a kind is read: the table (``index`` None) or a GSI, its partition
    attribute and the partition's value from the fields given, its sort attribute and the sort
    key's text from sort field values (the first few of them, for a bound). ``by_key``: the
    index is a unique field, read by the key of the item kept under it."""

    index: str | None = None
    pk: str = "pk"
    partition: Callable[[Mapping[str, Any]], str] = str
    sk: str = "sk"
    sort: Callable[[tuple[Any, ...]], str] | None = None
    by_key: Callable[[Mapping[str, Any]], Item] | None = None


@dataclass(frozen=True, eq=False)  # one per kind, compared by identity
class _Layout:
    """A kind's items: the key of its main item from the key fields (``Kind.ids_of``), the
    main item of a record, the copies kept under its unique fields (written and changed with
    it, in one transaction) and their keys, and where each of its indexes is read."""

    key: Callable[[Mapping[str, Any]], Item]
    item: Callable[[Any], Item]
    copies: Callable[[Any], list[Item]] = lambda record: []
    copy_keys: Callable[[Mapping[str, Any]], list[Item]] = lambda ids: []
    indexes: Mapping[str, _Where] = dataclasses.field(default_factory=dict)
    # Map fields kept flat, one number attribute per entry: field -> attribute name prefix.
    flat: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _value_key(ids: Mapping[str, Any]) -> Item:
    return _key(f"VALUE#{ids['name']}", VALUE_SK)


def _plan_key(ids: Mapping[str, Any]) -> Item:
    return _key(PLAN_PK + ids["owner"], f"{PLAN_SK}{ids['version']:010d}")


def _change_key(ids: Mapping[str, Any]) -> Item:
    return _key(CHANGES_PK + ids["subject"], _sort_text((ids["at"], ids["change_id"])))


def _link_key(ids: Mapping[str, Any]) -> Item:
    return _key(f"LINK#{ids['key']}", LINK_SK)


def _link_id_key(ids: Mapping[str, Any]) -> Item:
    return _key(f"LINKID#{ids['link_id']}", LINK_SK)


def _machine_item(machine: Machine) -> Item:
    """Return a machine's item, in the by_machine index under ALL_MACHINES ordered by id."""
    return (
        _machine_key(machine.machine_id)
        | {"entity": {"S": "machine"}}
        | _encode(machine)
        | {BY_MACHINE_PK: {"S": ALL_MACHINES}, BY_MACHINE_SK: {"S": machine.machine_id}}
    )


def _link_item(link: PaymentLink) -> Item:
    """Return a link's item under its key, in the by_machine index under LINKS#<machine>."""
    return (
        _link_key({"key": link.key})
        | {"entity": {"S": "link"}}
        | _encode(link)
        | {BY_MACHINE_PK: {"S": LINKS_OF + link.machine_id}, BY_MACHINE_SK: {"S": link.key}}
    )


def _never_put(kind: Kind) -> Item:
    raise TypeError(f"a {kind.name} is only ever updated, never put whole")


def _sort_text(values: tuple[Any, ...]) -> str:
    """Return a sort key made of field values: their stored text joined by '#' (the key an
    item is written under, and the bounds and cursors that query it)."""
    return "#".join(str(as_stored(value)) for value in values)


LAYOUTS: dict[str, _Layout] = {
    "value": _Layout(
        key=_value_key,
        item=lambda kept: (
            _value_key({"name": kept.name}) | {"entity": {"S": "value"}, "value": {"S": kept.value}}
        ),
    ),
    "plan_version": _Layout(
        key=_plan_key,
        item=lambda plan: (
            _plan_key(PLAN_VERSION.ids_of(plan)) | {"entity": {"S": "plan_version"}} | _encode(plan)
        ),
        indexes={
            "by_owner": _Where(
                partition=lambda equals: PLAN_PK + equals["owner"],
                sort=lambda values: f"{PLAN_SK}{values[0]:010d}",
            )
        },
    ),
    "change": _Layout(
        key=_change_key,
        item=lambda change: (
            _change_key(CHANGE.ids_of(change)) | {"entity": {"S": "change"}} | _encode(change)
        ),
        indexes={
            "by_subject": _Where(
                partition=lambda equals: CHANGES_PK + equals["subject"], sort=_sort_text
            )
        },
    ),
    "game_over_key": _Layout(
        key=lambda ids: _game_over_key(ids["machine_id"], ids["key"]),
        item=lambda record: _game_over_item(record),
    ),
    "machine": _Layout(
        key=lambda ids: _machine_key(ids["machine_id"]),
        item=lambda machine: _machine_item(machine),
        indexes={
            "all": _Where(
                index=BY_MACHINE_INDEX,
                pk=BY_MACHINE_PK,
                partition=lambda equals: ALL_MACHINES,
                sk=BY_MACHINE_SK,
                sort=_sort_text,
            )
        },
    ),
    # A link is kept under its key and under its Stripe id, written and changed together.
    "link": _Layout(
        key=_link_key,
        item=lambda link: _link_item(link),
        copies=lambda link: [
            _link_id_key({"link_id": link.link_id}) | {"entity": {"S": "link"}} | _encode(link)
        ],
        copy_keys=lambda ids: [_link_id_key(ids)],
        indexes={
            "by_id": _Where(by_key=_link_id_key),
            "by_machine": _Where(
                index=BY_MACHINE_INDEX,
                pk=BY_MACHINE_PK,
                partition=lambda equals: LINKS_OF + equals["machine_id"],
                sk=BY_MACHINE_SK,
            ),
        },
    ),
    "payment": _Layout(
        key=lambda ids: _payment_key(ids["payment_id"]),
        item=lambda payment: _payment_item(payment),
        indexes={
            "by_machine": _Where(
                index=BY_MACHINE_INDEX,
                pk=BY_MACHINE_PK,
                partition=lambda equals: f"MACHINE#{equals['machine_id']}",
                sk=BY_MACHINE_SK,
                sort=_sort_text,
            ),
            "by_status": _Where(
                index=BY_STATUS_INDEX,
                pk=STATUS_PK,
                partition=lambda equals: f"STATUS#{equals['status']}",
                sk=TIME_SK,
                sort=_sort_text,
            ),
            "by_time": _Where(
                index=BY_TIME_INDEX,
                pk=TIME_PK,
                partition=lambda equals: ALL_PAYMENTS,
                sk=TIME_SK,
                sort=_sort_text,
            ),
            # The sparse outbox index holds only the payments whose due_at is set.
            "due": _Where(
                index=OUTBOX_INDEX,
                pk=OUTBOX_PK,
                partition=lambda equals: OUTBOX,
                sk="due_at",
                sort=_sort_text,
            ),
        },
    ),
    "intent": _Layout(
        key=lambda ids: _intent_key(ids["payment_intent"]),
        item=lambda intent: _intent_item(intent),
        indexes={
            # Only the intents whose payment_id is not set sit in this partition.
            "unmatched": _Where(
                index=BY_STATUS_INDEX,
                pk=STATUS_PK,
                partition=lambda equals: UNMATCHED_INTENTS,
                sk=TIME_SK,
                sort=_sort_text,
            )
        },
    ),
    # A machine's state shares its machine's partition; revenue is one revenue_<currency>
    # number per currency. It is only ever updated (ADD, SET), never put whole.
    "machine_state": _Layout(
        key=lambda ids: _state_key(ids["machine_id"]),
        item=lambda state: _never_put(STATE),
        flat={"revenue": REVENUE_PREFIX},
    ),
    "revenue": _Layout(
        key=lambda ids: _key(f"REVENUE#{ids['entry_id']}", REVENUE_SK),
        item=lambda entry: _revenue_item(entry),
        indexes={
            "by_time": _Where(
                index=BY_TIME_INDEX,
                pk=TIME_PK,
                partition=lambda equals: REVENUE,
                sk=TIME_SK,
                sort=_sort_text,
            )
        },
    ),
}


class _Placeholders:
    """Numbered placeholders for the attribute names and values of one expression; called
    with an attribute (and a value), it returns the two placeholders. Every name goes
    through one: some field names (timezone) are DynamoDB reserved words."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: Item = {}

    def __call__(self, attribute: str, value: Any = None) -> tuple[str, str]:
        number = len(self.names)
        name, mark = f"#n{number}", f":v{number}"
        self.names[name] = attribute
        if value is not None:
            self.values[mark] = _attribute(value)
        return name, mark


def _attribute(value: Any) -> dict[str, Any]:
    """Return a record value as a DynamoDB attribute: an instant as its text, the rest through
    boto3's TypeSerializer."""
    serializer, _ = _serializers()
    return serializer.serialize(as_stored(value))


def _record_of(kind: Kind, item: Item, ids: Mapping[str, Any]) -> Any:
    """Return the record an item holds; key fields it lacks (older items) come from ``ids``."""
    values = _decode(item, kind.record)
    for name, prefix in LAYOUTS[kind.name].flat.items():
        values[name] = {
            attribute.removeprefix(prefix): int(value["N"])
            for attribute, value in item.items()
            if attribute.startswith(prefix)
        }
    for name in kind.key:
        if name in ids and name in kind.record.__dataclass_fields__ and values.get(name) is None:
            values[name] = ids[name]
    return kind.record(**values)


def _condition(condition: Condition) -> dict[str, Any]:
    """Return the ConditionExpression of a storage guard (none for no condition), with its
    names and values; an ABSENT or a version refusal carries the item stored (ALL_OLD)."""
    if condition is None:
        return {}
    if condition is ABSENT:
        return {
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    if isinstance(condition, Version):
        expression = "#version = :read"
        if condition.read == 0:  # nothing stored, or an item stored before versions existed
            expression = "attribute_not_exists(#version) OR " + expression
        return {
            "ConditionExpression": expression,
            "ExpressionAttributeNames": {"#version": "version"},
            "ExpressionAttributeValues": {":read": _number(condition.read)},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    if isinstance(condition, AbsentOrBelow):
        return {
            "ConditionExpression": "attribute_not_exists(pk) OR #below < :below",
            "ExpressionAttributeNames": {"#below": condition.field},
            "ExpressionAttributeValues": {":below": _attribute(condition.value)},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    return {"ConditionExpression": "attribute_exists(pk)"}


def _guarded(body: dict[str, Any], guard: dict[str, Any]) -> dict[str, Any]:
    """Return an action's body with a guard added, their names and values merged."""
    merged = body | guard
    for part in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
        if part in body and part in guard:
            merged[part] = body[part] | guard[part]
    return merged


def _actions(operation: Operation) -> list[dict[str, Any]]:
    """Return the actions of one operation: on its main item, then on its copies."""
    layout = LAYOUTS[operation.kind.name]
    guard = _condition(operation.condition)
    if isinstance(operation, Put):
        items = [layout.item(operation.record), *layout.copies(operation.record)]
        # Only the main item's refusal carries what won; a copy's means a unique field clash.
        return [
            {"Put": {"Item": item, **(guard if i == 0 else _without_old(guard))}}
            for i, item in enumerate(items)
        ]
    keys = [layout.key(operation.ids), *layout.copy_keys(operation.ids)]
    if isinstance(operation, Delete):
        return [{"Delete": {"Key": key, **guard}} for key in keys]
    sets, removals, adds = [], [], []
    placeholder = _Placeholders()
    names, values = placeholder.names, placeholder.values
    changes = dict(operation.set)
    if operation.condition is not EXISTS:  # an item made by this update holds its key fields
        fields_of = operation.kind.record.__dataclass_fields__
        changes = {n: operation.ids[n] for n in operation.kind.key if n in fields_of} | changes
    for name, value in changes.items():
        if value is None:  # an item keeps no attribute for a field that is None (_encode)
            removals.append(placeholder(name)[0])
        else:
            sets.append("{} = {}".format(*placeholder(name, value)))
    for name, value in operation.fill.items():
        attribute, value_mark = placeholder(name, value)
        sets.append(f"{attribute} = if_not_exists({attribute}, {value_mark})")
    for name, amount in operation.add.items():
        if isinstance(amount, Mapping):  # a map field is kept flat, one attribute per entry
            for entry, number in amount.items():
                adds.append("{} {}".format(*placeholder(layout.flat[name] + entry, number)))
        else:
            adds.append("{} {}".format(*placeholder(name, amount)))
    clauses = (("SET", sets), ("REMOVE", removals), ("ADD", adds))
    update: dict[str, Any] = {
        "UpdateExpression": " ".join(f"{verb} {', '.join(x)}" for verb, x in clauses if x),
        "ExpressionAttributeNames": names,
    }
    if values:  # DynamoDB refuses an empty map of values (a change that only clears)
        update["ExpressionAttributeValues"] = values
    return [{"Update": {"Key": key, **_guarded(update, guard)}} for key in keys]


def _without_old(guard: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in guard.items() if k != "ReturnValuesOnConditionCheckFailure"}


def _refused(operations: Sequence[Operation], stored: Mapping[int, Item | None]) -> Refused:
    """Return the Refused of a write from the items that won, by operation."""
    records: list[Any] = [None] * len(operations)
    for position, item in stored.items():
        operation = operations[position]
        if item is not None:
            ids = (
                operation.kind.ids_of(operation.record)
                if isinstance(operation, Put)
                else operation.ids
            )
            records[position] = _record_of(operation.kind, item, ids)
    return Refused(tuple(records))


# --- helpers --------------------------------------------------------------------------------
def _default_client() -> Any:
    """Create a DynamoDB client from the usual AWS settings (region, endpoint, credentials).

    The region is AWS_REGION when set (what Lambda sets, and what the README and
    template.yaml name), else boto3's own chain: AWS_DEFAULT_REGION, then ~/.aws/config.
    boto3 alone reads only the latter two. Raises StoreError naming the AWS setting that
    stops the client from being made.
    """
    import boto3
    from botocore.exceptions import (
        BotoCoreError,
        InvalidRegionError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    no_region = "could not set up the DynamoDB client: check AWS_REGION (or AWS_DEFAULT_REGION)"
    region = os.environ.get("AWS_REGION", "").strip() or None
    # botocore takes a blank AWS_DEFAULT_REGION as the region "" and fails on the endpoint
    # it makes from it.
    if region is None and os.environ.get("AWS_DEFAULT_REGION", "x").strip() == "":
        raise StoreError(no_region)
    # Each is a start-up problem of `python app.py` and every flask command: one sentence
    # naming the setting (SPEC "Serving locally"), never botocore's own text or a traceback.
    try:
        return boto3.client("dynamodb", region_name=region)
    except (NoRegionError, InvalidRegionError) as exc:
        raise StoreError(no_region) from exc
    except ProfileNotFound as exc:
        raise StoreError(
            "could not set up the DynamoDB client: AWS_PROFILE names no profile of the AWS"
            " config files"
        ) from exc
    except PartialCredentialsError as exc:
        raise StoreError(
            "could not set up the DynamoDB client: set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY together (or neither)"
        ) from exc
    except (BotoCoreError, ValueError) as exc:
        # ValueError: botocore's word for an endpoint that is no URL (AWS_ENDPOINT_URL,
        # AWS_ENDPOINT_URL_DYNAMODB) or a number setting that is no number (AWS_MAX_ATTEMPTS).
        raise StoreError(
            "could not set up the DynamoDB client: check the AWS settings (AWS_ENDPOINT_URL"
            " and AWS_ENDPOINT_URL_DYNAMODB must be http:// or https:// addresses;"
            " AWS_MAX_ATTEMPTS, AWS_RETRY_MODE, AWS_DEFAULTS_MODE, AWS_CONFIG_FILE)"
        ) from exc


def _key(pk: str, sk: str) -> Item:
    """Return the primary key of an item."""
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _machine_key(machine_id: str) -> Item:
    """Return the key of a machine item."""
    return _key(f"MACHINE#{machine_id}", MACHINE_SK)


def _state_key(machine_id: str) -> Item:
    """Return the key of a machine-state item (same partition as its machine)."""
    return _key(f"MACHINE#{machine_id}", STATE_SK)


def _payment_key(payment_id: str) -> Item:
    """Return the key of a payment item."""
    return _key(f"PAYMENT#{payment_id}", PAYMENT_SK)


def _number(value: int) -> dict[str, str]:
    """Return a DynamoDB number."""
    return {"N": str(value)}


@functools.cache
def _serializers() -> tuple[Any, Any]:
    """Return boto3's TypeSerializer and TypeDeserializer (imported on first use)."""
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


def _encode(record: Any) -> Item:
    """Return a dataclass's fields as DynamoDB attributes (boto3's TypeSerializer), leaving out
    those that are None. An instant field (``instant_fields``) is stored as the text
    ``arcade.clock.iso`` writes, so it sorts in time order in keys and conditions. Records hold
    only text, whole numbers and instants; anything else is a bug (TypeError)."""
    serializer, _ = _serializers()
    instants = instant_fields(type(record))
    item: Item = {}
    for field in fields(record):
        value = getattr(record, field.name)
        if value is None:
            continue
        item[field.name] = serializer.serialize(
            stored_form(field.name, value, field.name in instants)
        )
    return item


def _decode(item: Item, record_type: type) -> dict[str, Any]:
    """Return the attributes of an item that are fields of ``record_type``, as Python values
    (boto3's TypeDeserializer; its Decimals become the whole numbers they were stored as, and
    an instant field's text the aware UTC datetime ``arcade.clock.parse_iso`` reads). Raises
    ValueError for an instant that ``arcade.clock.iso`` did not write."""
    _, deserializer = _serializers()
    instants = instant_fields(record_type)
    values: dict[str, Any] = {}
    for field in fields(record_type):
        value = item.get(field.name)
        if value is not None:
            if field.name in instants:
                values[field.name] = parse_iso(value["S"])
                continue
            plain = deserializer.deserialize(value)
            values[field.name] = int(plain) if isinstance(plain, Decimal) else plain
        elif field.default is MISSING and field.default_factory is MISSING:
            values[field.name] = None  # a required field that was None when stored
    return values


def _payment_item(payment: Payment) -> Item:
    """Return a payment's item, indexed under its machine newest first when it has one."""
    item = _payment_key(payment.payment_id) | {"entity": {"S": "payment"}} | _encode(payment)
    # The sort keys begin with created_at as stored (iso text), so they sort in time order.
    by_time = _sort_text((payment.created_at, payment.payment_id))
    if payment.machine_id is not None:
        item[BY_MACHINE_PK] = {"S": f"MACHINE#{payment.machine_id}"}
        item[BY_MACHINE_SK] = {"S": by_time}
    if payment.due_at is not None:
        item[OUTBOX_PK] = {"S": OUTBOX}
    item[TIME_PK] = {"S": ALL_PAYMENTS}
    item[TIME_SK] = {"S": by_time}
    item[STATUS_PK] = {"S": f"STATUS#{payment.status}"}
    return item


def _revenue_item(entry: RevenueEntry) -> Item:
    """Return a revenue entry's item, in the by_time index under REVENUE in time order."""
    return (
        _key(f"REVENUE#{entry.entry_id}", REVENUE_SK)
        | {"entity": {"S": "revenue"}}
        | _encode(entry)
        | {TIME_PK: {"S": REVENUE}, TIME_SK: {"S": _sort_text((entry.at, entry.entry_id))}}
    )


def _intent_key(payment_intent: str) -> Item:
    """Return the key of a PaymentIntent item."""
    return _key(f"INTENT#{payment_intent}", INTENT_SK)


def _intent_item(intent: IntentRecord) -> Item:
    """Return a PaymentIntent's item; while its Checkout Session is not on record it sits in
    the by_status index under UNMATCHED_INTENTS, most recently changed last."""
    item = _intent_key(intent.payment_intent) | {"entity": {"S": "intent"}} | _encode(intent)
    if intent.payment_id is None:
        item[STATUS_PK] = {"S": UNMATCHED_INTENTS}
        item[TIME_SK] = {"S": _sort_text((intent.updated_at or "", intent.payment_intent))}
    return item


def _game_over_key(machine_id: str, key: str) -> Item:
    """Return the key of a game-over key item (machine ids hold no '#', so it is unambiguous)."""
    return _key(f"GAMEOVER#{machine_id}#{key}", GAME_OVER_SK)


def _game_over_item(record: GameOverKey) -> Item:
    """Return a game-over key's item, with the epoch seconds DynamoDB's TTL reads."""
    expires = int(record.expires_at.timestamp())
    return (
        _game_over_key(record.machine_id, record.key)
        | {"entity": {"S": "game_over_key"}, EXPIRES_EPOCH: _number(expires)}
        | _encode(record)
    )


def _pause_or_raise(exc: _TransactionCancelled) -> None:
    """Sleep a little before trying again a transaction that lost a race; raise for the rest."""
    if not RETRYABLE.intersection(exc.reasons):
        _log_failure("transact_write_items", ",".join(exc.reasons))
        raise StoreError("the store refused the write") from exc
    time.sleep(random.uniform(0.005, 0.05))  # noqa: S311 - jitter, not a secret


def _log_failure(operation: str, code: str) -> None:
    """Log one JSON line naming the operation and error code that failed (never the text)."""
    log_event(logger, "store_error", level=logging.WARNING, operation=operation, code=code)


def _error_code(exc: Exception) -> str:
    """Return the error code of a botocore ClientError."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


class _ConditionFailed(Exception):
    """A ConditionExpression was false: another writer got there first, or nothing was there.

    ``item`` is the stored item when the write asked for ``ALL_OLD`` and one was there.
    """

    def __init__(self, item: Item | None = None) -> None:
        super().__init__("the condition was false")
        self.item = item


class _TableExists(Exception):
    """CreateTable found the table already there."""


class _TransactionCancelled(Exception):
    """A TransactWriteItems was cancelled; ``reasons`` holds one code per item, in order."""

    def __init__(self, reasons: list[str], items: list[Item | None] | None = None) -> None:
        super().__init__("the transaction was cancelled")
        self.reasons = reasons
        self.items = items or []

    def item(self, index: int) -> Item | None:
        """Return the stored item that failed the condition of the action at ``index``, when
        that action asked for ``ALL_OLD``."""
        return self.items[index] if index < len(self.items) else None

    def reason(self, index: int) -> str:
        """Return the code of the action at ``index`` ("None" when it was not the cause)."""
        return self.reasons[index] if index < len(self.reasons) else "None"

"""API types of the MarketFeed resource (quantcore.io/v1alpha1): the spec users write and
the status the operator reports. crds/marketfeed.yaml is generated from these models (crd.py).

Field names are snake_case in Python and camelCase on the wire. Each `x-kubernetes-validations`
entry is a CEL rule the API server enforces; its message says what to fix.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from quantcore import events

GROUP = "quantcore.io"
VERSION = "v1alpha1"
KIND = "MarketFeed"
PLURAL = "marketfeeds"
SINGULAR = "marketfeed"
SHORT_NAMES = ("mf",)


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """JSON-schema extra carrying CEL rules (rule, message) into the CRD."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


Symbol = Annotated[
    str,
    Field(
        pattern=r"^[A-Z0-9]{2,20}$",
        max_length=20,
        description="exchange symbol in upper case, e.g. BTCUSDT",
    ),
]
Quantity = Annotated[
    str,
    Field(
        pattern=r"^[1-9][0-9]{0,5}(Mi|Gi)$",
        max_length=8,
        description="memory as a Kubernetes quantity in Mi or Gi, e.g. 512Mi",
    ),
]
Image = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([a-z0-9._/:@-]*[a-zA-Z0-9_.-]+)?$",
        min_length=1,
        max_length=255,
        description="container image reference, e.g. ghcr.io/acme/quantcore:0.1.0",
    ),
]
TopicName = Annotated[
    str,
    Field(
        pattern=r"^[a-zA-Z0-9._-]+$",
        min_length=1,
        max_length=249,
        description="Kafka topic name: letters, digits, '.', '_' and '-'",
    ),
]


class Universe(_Model):
    """Top N symbols by 24 h quote volume, refreshed on a timer, with hysteresis."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!(self.quoteAsset in self.exclude)",
                "universe.exclude must not contain the quote asset itself",
            )
        )
    )

    quote_asset: str = Field(
        pattern=r"^[A-Z0-9]{2,10}$", max_length=10, description="quote asset, e.g. USDT"
    )
    top: int = Field(ge=1, le=500, description="how many symbols to follow")
    hysteresis: int = Field(
        default=2,
        ge=0,
        le=100,
        description="a followed symbol is dropped only once it ranks below top + hysteresis",
    )
    refresh_seconds: int = Field(default=300, ge=30, le=86400)
    exclude: list[Symbol] = Field(default=[], max_length=200)
    ticker_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=512,
        description="24 h ticker endpoint; defaults to the exchange REST URL + /api/v3/ticker/24hr",
    )


class Depth(_Model):
    levels: Literal[5, 10, 20] = Field(default=20, description="partial book depth levels")
    interval_ms: Literal[100, 1000] = Field(default=100, description="depth update interval")


class Streams(_Model):
    depth: Depth = Field(default=Depth())
    trades: bool = True
    book_ticker: bool = False


class Sharding(_Model):
    symbols_per_shard: int = Field(
        default=20, ge=1, le=200, description="symbols per feed shard (one websocket each)"
    )


class Topics(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.raw != self.book && self.raw != self.trades && self.raw != self.quarantine"
                " && self.book != self.trades && self.book != self.quarantine"
                " && self.trades != self.quarantine",
                "kafka.topics: raw, book, trades and quarantine need four different names",
            )
        )
    )

    raw: TopicName = events.RAW_TOPIC
    book: TopicName = events.BOOK_TOPIC
    trades: TopicName = events.TRADES_TOPIC
    quarantine: TopicName = events.QUARANTINE_TOPIC

    def names(self) -> events.Topics:
        """The names as the rest of the project takes them (with the derived signals topic)."""
        return events.Topics(self.raw, self.book, self.trades, self.quarantine)


class Kafka(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.partitions >= oldSelf.partitions",
                "kafka.partitions can only grow: Kafka cannot remove partitions",
            ),
            (
                "self.replication == oldSelf.replication",
                "kafka.replication cannot change after creation: create a new MarketFeed",
            ),
            (
                "self.topics == oldSelf.topics",
                "kafka.topics cannot be renamed after creation: create a new MarketFeed",
            ),
        )
    )

    bootstrap: str = Field(
        pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}(,[A-Za-z0-9.-]+:[0-9]{1,5})*$",
        max_length=1024,
        description="bootstrap servers, host:port[,host:port...]",
    )
    topics: Topics = Field(default=Topics())
    partitions: int = Field(
        default=6,
        ge=1,
        le=1000,
        description="partitions per topic, sized for the stream job (one task slot each);"
        " only grows",
    )
    replication: int = Field(default=1, ge=1, le=7)
    retention_hours: int = Field(default=24, ge=1, le=8760)
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain", description="what happens to the topics when the MarketFeed is deleted"
    )


class PodSize(_Model):
    cores: int = Field(default=1, ge=1, le=64)
    memory: Quantity = "1Gi"


class Executor(PodSize):
    instances: int | None = Field(
        default=None,
        ge=1,
        le=500,
        description="executors; when omitted, enough for one task slot per input partition",
    )


class Spark(_Model):
    image: Image = Field(description="Spark image with quantcore and the Kafka connector jars")
    spark_version: str = Field(default="4.2.0", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$", max_length=16)
    main_application_file: str = Field(
        default="local:///opt/quantcore/stream_main.py",
        pattern=r"^(local|s3a|https?|file)://[^\s]+$",
        max_length=512,
    )
    service_account: str = Field(
        default="spark", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63
    )
    driver: PodSize = Field(default=PodSize())
    executor: Executor = Field(default=Executor())
    trigger: Literal["realtime", "continuous", "microbatch"] = "realtime"
    checkpoint: str = Field(
        default="file:///tmp/quantcore/checkpoints",
        pattern=r"^[a-z0-9]+://[^\s]+$",
        max_length=512,
        description="checkpoint location (durable storage in production, e.g. s3a://)",
    )


class Redis(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.mode == 'external' ? has(self.url) : !has(self.url)",
                "redis.url is required when redis.mode is external and must be unset when managed",
            )
        )
    )

    mode: Literal["managed", "external"] = "managed"
    url: str | None = Field(default=None, pattern=r"^rediss?://[^\s]+$", max_length=512)
    image: Image = "redis:7.4-alpine"


class Autoscaling(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.minReplicas <= self.maxReplicas",
                "serving.autoscaling.minReplicas must not exceed maxReplicas",
            )
        )
    )

    min_replicas: int = Field(default=2, ge=1, le=100)
    max_replicas: int = Field(default=10, ge=1, le=100)
    target_cpu_percent: int = Field(default=70, ge=10, le=100)


class Serving(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!(has(self.replicas) && has(self.autoscaling))",
                "set serving.replicas or serving.autoscaling, not both",
            )
        )
    )

    replicas: int | None = Field(default=None, ge=1, le=100)
    autoscaling: Autoscaling | None = None
    port: int = Field(default=50051, ge=1024, le=65535)


class Endpoints(_Model):
    ws_url: str = Field(
        default="wss://stream.binance.com:9443", pattern=r"^wss?://[^\s]+$", max_length=512
    )
    rest_url: str = Field(
        default="https://api.binance.com", pattern=r"^https?://[^\s]+$", max_length=512
    )


class Monitoring(_Model):
    service_monitor: bool = Field(
        default=False, description="create a Prometheus ServiceMonitor (needs its CRD)"
    )


class MarketFeedSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "has(self.symbols) != has(self.universe)",
                "set exactly one of spec.symbols (an explicit list) or spec.universe (a selector)",
            ),
            ("self.exchange == oldSelf.exchange", "spec.exchange cannot change after creation"),
            (
                "!has(self.spark.executor.instances) || self.spark.trigger == 'microbatch' ||"
                " self.spark.executor.instances * self.spark.executor.cores >="
                " self.kafka.partitions * (self.streams.trades ? 2 : 1)",
                "real-time and continuous modes need a task slot per input partition: raise"
                " spark.executor.instances or cores, or omit instances to size it automatically",
            ),
        )
    )

    exchange: Literal["binance"] = "binance"
    image: Image = Field(description="the quantcore image for feed shards and serving")
    symbols: list[Symbol] | None = Field(default=None, min_length=1, max_length=1000)
    universe: Universe | None = None
    streams: Streams = Field(default=Streams())
    sharding: Sharding = Field(default=Sharding())
    kafka: Kafka
    spark: Spark
    redis: Redis = Field(default=Redis())
    serving: Serving = Field(default=Serving())
    endpoints: Endpoints = Field(default=Endpoints())
    monitoring: Monitoring = Field(default=Monitoring())


# ---- status ---------------------------------------------------------------------------


class Condition(_Model):
    """The Kubernetes condition convention."""

    type: Literal["Ready", "Progressing", "Degraded"]
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)
    message: str = Field(default="", max_length=2048)
    observed_generation: int = 0
    last_transition_time: str = Field(default="", max_length=64)


class RoutingSummary(_Model):
    version: int = 0
    shard_loads: list[int] = Field(default_factory=list, description="symbols per shard")


class TopicStatus(_Model):
    name: str
    partitions: int


class SparkStatus(_Model):
    name: str = ""
    state: str = Field(default="", description="the SparkApplication's applicationState.state")


class UniverseStatus(_Model):
    refreshed_at: str = ""
    selected: int = 0


class PendingMove(_Model):
    """A symbol moving between feed shards: the old one holds it until the new one is live."""

    symbol: str
    from_shard: int
    to_shard: int
    since: str = Field(default="", max_length=64, description="when the move was first seen")


class HandoverStatus(_Model):
    pending: list[PendingMove] = Field(
        default_factory=list, description="symbols waiting for their new shard to report live"
    )


class MarketFeedStatus(_Model):
    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    symbols: int = 0
    shards: int = 0
    partitions: int = 0
    routing: RoutingSummary = Field(default=RoutingSummary())
    topics: list[TopicStatus] = Field(default_factory=list)
    spark: SparkStatus = Field(default=SparkStatus())
    universe: UniverseStatus | None = None
    handover: HandoverStatus | None = None


class MarketFeed(_Model):
    """The parts of a MarketFeed object the operator reads."""

    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str
    uid: str
    generation: int
    spec: MarketFeedSpec

    @classmethod
    def from_object(cls, body: dict[str, Any]) -> MarketFeed:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            spec=MarketFeedSpec.model_validate(body.get("spec") or {}),
        )

"""API types of the MarketFeed resource (quantcore.io/v1alpha1): the spec users write and
the status the operator reports. crds/marketfeed.yaml is generated from these models (crd.py).

Field names are snake_case in Python and camelCase on the wire. Each `x-kubernetes-validations`
entry is a CEL rule the API server enforces; its message says what to fix.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
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
                " && self.raw != self.flow && self.book != self.trades"
                " && self.book != self.quarantine && self.book != self.flow"
                " && self.trades != self.quarantine && self.trades != self.flow"
                " && self.quarantine != self.flow",
                "kafka.topics: raw, book, trades, quarantine and flow need five different names",
            )
        )
    )

    raw: TopicName = events.RAW_TOPIC
    book: TopicName = events.BOOK_TOPIC
    trades: TopicName = events.TRADES_TOPIC
    quarantine: TopicName = events.QUARANTINE_TOPIC
    # The shards' trade-flow windows (quantcore.feed.tradeflow), read by the stream job.
    flow: TopicName = events.FLOW_TOPIC

    def names(self) -> events.Topics:
        """The names as the rest of the project takes them (with the derived signals topic)."""
        return events.Topics(self.raw, self.book, self.trades, self.quarantine, self.flow)


KafkaSecretName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="name of a Secret in the MarketFeed's namespace",
    ),
]


class KafkaCredentials(_Model):
    """The SCRAM users a feed's pods log in as (quantcore.kafkaacl), one Secret per role in
    the `kubernetes.io/basic-auth` layout (keys `username` and `password`): each pod gets its
    own role's Secret alone."""

    feed_secret_name: KafkaSecretName = Field(
        description="the feed shards' user (WRITE on the feed's raw, book, trades, quarantine"
        " and flow topics)"
    )
    stream_secret_name: KafkaSecretName = Field(
        description="the stream job's user, for the Spark driver and executors (READ book,"
        " trades, flow and the signals topic, WRITE the signals topic, its consumer groups)"
    )


class Kafka(_Model):
    """Where the feed's records go. Secure unless `insecure`: SASL_SSL with a SCRAM user per
    role, the brokers' certificates checked against `caSecretName` (or the image's CAs)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.partitions >= oldSelf.partitions",
                "kafka.partitions can only grow: Kafka cannot remove partitions",
            ),
            (
                "has(self.credentials) || self.insecure",
                "kafka is secure by default: set spec.kafka.credentials (feedSecretName and"
                " streamSecretName: Secrets with username and password of SCRAM users) and"
                " spec.kafka.caSecretName (a Secret whose ca.crt signed the brokers'"
                " certificates; omit it for a public CA) or, on a trusted network only,"
                " spec.kafka.insecure: true",
            ),
            (
                "!(self.insecure && (has(self.credentials) || has(self.caSecretName)))",
                "kafka.insecure turns TLS and SASL off: leave kafka.credentials and"
                " kafka.caSecretName unset",
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
    insecure: bool = Field(
        default=False,
        description="the explicit opt-out: PLAINTEXT without users (anyone who reaches Kafka"
        " may write forged book records)",
    )
    credentials: KafkaCredentials | None = None
    ca_secret_name: KafkaSecretName | None = Field(
        default=None,
        description="a Secret whose ca.crt (cert-manager's layout) signed the brokers'"
        " certificates (default: the images' system CAs, as for MSK)",
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"

    @model_validator(mode="after")
    def _security(self) -> Kafka:
        # The CEL rules above, for specs that never pass an API server (local mode, tests).
        if self.insecure and (self.credentials is not None or self.ca_secret_name):
            raise ValueError("kafka.insecure: leave credentials and caSecretName unset")
        return self

    @property
    def secured(self) -> bool:
        """Credentials configured, or PLAINTEXT asked for explicitly: the feed may run."""
        return self.credentials is not None or self.insecure


CpuQuantity = Annotated[
    str,
    Field(
        pattern=r"^([1-9][0-9]{0,5}m|[1-9][0-9]?(\.[0-9]{1,3})?|0\.[0-9]{0,2}[1-9])$",
        max_length=8,
        description="CPU as a Kubernetes quantity, e.g. 250m or 0.5 or 2",
    ),
]
# Kubernetes label keys (optional DNS prefix, then a name) and values.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN, max_length=317)]
LabelValue = Annotated[
    str, Field(pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", max_length=63)
]


class PodSize(_Model):
    cores: int = Field(
        default=1, ge=1, le=64, description="Spark cores (task slots); the CPU limit hint"
    )
    memory: Quantity = "1Gi"
    # The pod's CPU request (spark.kubernetes.<role>.request.cores): what the scheduler
    # reserves. Below `cores` so that a small cluster can place the job; raise it on a
    # dedicated node pool.
    request_cores: CpuQuantity = Field(
        default="250m",
        description="CPU the pod requests from the scheduler (default 250m); `cores` stays"
        " Spark's task slots",
    )


class Executor(PodSize):
    request_cores: CpuQuantity = Field(
        default="500m",
        description="CPU each executor requests from the scheduler (default 500m); `cores`"
        " stays Spark's task slots",
    )
    instances: int | None = Field(
        default=None,
        ge=1,
        le=500,
        description="executors; when omitted, enough for one task slot per input partition",
    )


# Spark properties the operator derives from other fields (or the spark-operator sets from
# them): accepting them in spark.sparkConf would let a user break what those fields promise.
RESERVED_SPARK_CONF = (
    "spark.sql.shuffle.partitions",
    "spark.local.dir",
    "spark.driver.cores",
    "spark.driver.memory",
    "spark.executor.cores",
    "spark.executor.memory",
    "spark.executor.instances",
    "spark.kubernetes.driver.request.cores",
    "spark.kubernetes.executor.request.cores",
    "spark.kubernetes.driver.podTemplateFile",
    "spark.kubernetes.executor.podTemplateFile",
    "spark.kubernetes.driver.podTemplateContainerName",
    "spark.kubernetes.executor.podTemplateContainerName",
    "spark.kubernetes.container.image",
    "spark.kubernetes.driver.container.image",
    "spark.kubernetes.executor.container.image",
    "spark.kubernetes.namespace",
    "spark.kubernetes.driver.pod.name",
    "spark.kubernetes.authenticate.driver.serviceAccountName",
)
SparkConfKey = Annotated[str, Field(pattern=r"^spark\.[^\s]+$", max_length=256)]
SparkConfValue = Annotated[str, Field(max_length=4096)]


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


class Toleration(_Model):
    """A core/v1 Toleration (e.g. of a dedicated node pool's taint)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.operator == 'Exists' || has(self.key)",
                "spark.tolerations: a toleration without key needs operator Exists",
            ),
            (
                "self.operator != 'Exists' || !has(self.value)",
                "spark.tolerations: operator Exists takes no value",
            ),
            (
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "spark.tolerations: tolerationSeconds applies to effect NoExecute only",
            ),
        )
    )

    key: LabelKey | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0, le=86400 * 7)

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        # The CEL rules above, for specs that never pass an API server (local mode, tests).
        if self.operator != "Exists" and self.key is None:
            raise ValueError("spark.tolerations: a toleration without key needs operator Exists")
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("spark.tolerations: operator Exists takes no value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("spark.tolerations: tolerationSeconds applies to NoExecute only")
        return self

    def to_kubernetes(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class SecretKeyRef(_Model):
    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253, description="Secret name"
    )
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="key in it")


class EnvSource(_Model):
    secret_key_ref: SecretKeyRef


class EnvVar(_Model):
    """A variable with a value or read from a Secret (credentials, e.g. S3 keys)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "has(self.value) != has(self.valueFrom)",
                "spark.env: give each variable exactly one of value or valueFrom",
            ),
            (
                "!self.name.startsWith('SPARK_') && !self.name.startsWith('PYSPARK_')",
                "spark.env: SPARK_* and PYSPARK_* variables belong to Spark; use sparkConf",
            ),
            (
                "!self.name.startsWith('QUANTCORE_REDIS_')",
                "spark.env: QUANTCORE_REDIS_* carry the relay's Redis credentials, which the"
                " operator sets from spec.redis",
            ),
            (
                "!self.name.startsWith('QUANTCORE_KAFKA_')",
                "spark.env: QUANTCORE_KAFKA_* carry the stream job's Kafka credentials, which"
                " the operator sets from spec.kafka",
            ),
        )
    )

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    value: str | None = Field(default=None, max_length=4096)
    value_from: EnvSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"spark.env {self.name}: give exactly one of value or valueFrom")
        if self.name.startswith(("SPARK_", "PYSPARK_")):
            raise ValueError(f"spark.env {self.name}: SPARK_* and PYSPARK_* belong to Spark")
        if self.name.startswith("QUANTCORE_REDIS_"):
            raise ValueError(f"spark.env {self.name}: the operator sets it from spec.redis")
        if self.name.startswith("QUANTCORE_KAFKA_"):
            raise ValueError(f"spark.env {self.name}: the operator sets it from spec.kafka")
        return self

    def to_kubernetes(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


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
        description="checkpoint location (durable storage in production, e.g. s3a://bucket/path)",
    )
    node_selector: dict[LabelKey, LabelValue] = Field(
        default={},
        max_length=20,
        description="node labels the driver and executors must run on, e.g. a dedicated pool",
        json_schema_extra=_cel(
            (
                "self.all(k, size(k) <= 317 && k.matches(r'" + LABEL_KEY_PATTERN + "'))",
                "spark.nodeSelector: keys must be Kubernetes label keys",
            )
        ),
    )
    tolerations: list[Toleration] = Field(
        default=[],
        max_length=20,
        description="taints the driver and executors tolerate, e.g. a dedicated pool's",
    )
    spark_conf: dict[SparkConfKey, SparkConfValue] = Field(
        default={},
        max_length=64,
        description="extra Spark properties (keys start with spark.); the ones the operator"
        " derives from other fields are refused",
        json_schema_extra=_cel(
            (
                "self.all(k, size(k) <= 256 && k.startsWith('spark.'))",
                "spark.sparkConf: keys must start with 'spark.'",
            ),
            (
                "self.all(k, !(k in " + _cel_list(RESERVED_SPARK_CONF) + "))",
                "spark.sparkConf: the operator sets this key itself (from spark.driver,"
                " spark.executor, spark.image or spark.serviceAccount); use those fields",
            ),
        ),
    )
    env: list[EnvVar] = Field(
        default=[],
        max_length=64,
        description="environment of the driver and executors, e.g. S3 credentials from a"
        " Secret (valueFrom.secretKeyRef)",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )

    @field_validator("spark_conf")
    @classmethod
    def _no_reserved_conf(cls, conf: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(conf) & set(RESERVED_SPARK_CONF))
        if taken:
            raise ValueError(f"spark.sparkConf: the operator sets {taken} itself")
        return conf

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [e.name for e in env]
        if len(names) != len(set(names)):
            raise ValueError("spark.env: a variable is named twice")
        return env


SecretName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="name of a Secret in the MarketFeed's namespace",
    ),
]


class Redis(_Model):
    """The signal store. Secure unless `insecure`: TLS only, and an ACL user per workload
    (relay: the stream job's writes; serve: reads), each given only its own password."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.mode == 'external' ? has(self.url) : !has(self.url)",
                "redis.url is required when redis.mode is external and must be unset when managed",
            ),
            (
                "!(self.insecure && (has(self.tlsSecretName) || has(self.credentialsSecretName)))",
                "redis.insecure turns TLS and passwords off: leave redis.tlsSecretName and"
                " redis.credentialsSecretName unset",
            ),
            (
                "self.mode != 'external' || self.insecure || has(self.credentialsSecretName)",
                "an external Redis needs redis.credentialsSecretName (keys relay-password and"
                " serve-password) unless redis.insecure is true",
            ),
            (
                "!has(self.url) || self.insecure || self.url.startsWith('rediss://')",
                "redis.url must be rediss:// (TLS) unless redis.insecure is true",
            ),
        )
    )

    mode: Literal["managed", "external"] = "managed"
    url: str | None = Field(default=None, pattern=r"^rediss?://[^\s]+$", max_length=512)
    image: Image = "redis:7.4-alpine"
    insecure: bool = Field(
        default=False,
        description="the explicit opt-out: no TLS and no passwords (anyone who reaches Redis"
        " may write or flush it)",
    )
    tls_secret_name: SecretName | None = Field(
        default=None,
        description="managed: the Secret with Redis's certificate in cert-manager's layout"
        " (tls.crt, tls.key, ca.crt; default <name>-redis-tls, for the DNS name"
        " <name>-redis.<namespace>.svc); external: a Secret whose ca.crt clients trust"
        " (default: the image's system CAs)",
    )
    credentials_secret_name: SecretName | None = Field(
        default=None,
        description="the Secret with the ACL users' passwords (keys relay-password and"
        " serve-password); managed: default <name>-redis-credentials, which the operator"
        " creates with random passwords when absent and never overwrites; external: required",
    )

    @model_validator(mode="after")
    def _security(self) -> Redis:
        if self.insecure and (self.tls_secret_name or self.credentials_secret_name):
            raise ValueError("redis.insecure: leave tlsSecretName and credentialsSecretName unset")
        if self.mode == "external" and not self.insecure:
            if not self.credentials_secret_name:
                raise ValueError("an external Redis needs redis.credentialsSecretName")
            if self.url and not self.url.startswith("rediss://"):
                raise ValueError("redis.url must be rediss:// (TLS) unless redis.insecure")
        return self


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


class ServingTls(_Model):
    secret_name: SecretName = Field(
        description="Secret in cert-manager's layout (tls.crt, tls.key and, for client"
        " certificates, ca.crt), e.g. a Certificate's secretName; a renewal is picked up"
        " without a restart"
    )
    client_auth: Literal["none", "require"] = Field(
        default="none",
        description="require: clients must present a certificate signed by the Secret's ca.crt",
    )


class ServingAuth(_Model):
    tokens_secret: SecretName = Field(
        description="Secret whose `tokens` key holds the bearer tokens, one"
        " `identity token [symbols=A,B] [methods=Subscribe,...]` a line; re-read on change"
    )


class ServingLimits(_Model):
    streams_per_identity: int = Field(
        default=100, ge=0, le=100_000, description="open streams per token identity (0: no limit)"
    )
    symbols_per_stream: int = Field(
        default=0, ge=0, le=1000, description="symbols one stream of an identity may read (0: any)"
    )


class Serving(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!(has(self.replicas) && has(self.autoscaling))",
                "set serving.replicas or serving.autoscaling, not both",
            ),
            (
                "!(has(self.tls) && self.insecure)",
                "serving.insecure: true contradicts serving.tls; choose one",
            ),
            ("!has(self.auth) || has(self.tls)", "serving.auth: tokens need TLS (serving.tls)"),
        )
    )

    replicas: int | None = Field(default=None, ge=1, le=100)
    autoscaling: Autoscaling | None = None
    port: int = Field(default=50051, ge=1024, le=65535)
    health_port: int = Field(
        default=50052,
        ge=1024,
        le=65535,
        description="plaintext port serving gRPC health alone, for the kubelet's probes",
    )
    tls: ServingTls | None = None
    auth: ServingAuth | None = None
    limits: ServingLimits = Field(default=ServingLimits())
    reflection: bool = Field(default=False, description="serve gRPC reflection (to grpcurl)")
    insecure: bool = Field(
        default=False,
        description="serve plaintext without TLS: the explicit opt-out of serving.tls",
    )
    service_account: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="an existing ServiceAccount the serving pods run as, e.g. one annotated"
        " for IRSA so History reads spec.lake with its role (the operator never creates it;"
        " default: the namespace's default account); the pods get no API server token either"
        " way",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Serving:
        # The CEL rules above, for specs that never pass an API server (local mode, tests).
        if self.tls is not None and self.insecure:
            raise ValueError("serving.insecure: true contradicts serving.tls; choose one")
        if self.auth is not None and self.tls is None:
            raise ValueError("serving.auth: tokens need TLS (serving.tls)")
        if self.health_port == self.port:
            raise ValueError("serving.healthPort must differ from serving.port")
        return self

    @property
    def secured(self) -> bool:
        """TLS configured, or plaintext asked for explicitly: the feed may be served."""
        return self.tls is not None or self.insecure


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
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="log format of every pod the operator creates: json (one object per line,"
        " with the MarketFeed, namespace, pod and shard as fields) or text",
    )


class Lake(_Model):
    """History: the stream job also writes its published signals, the books, the trades and
    the raw frames as Parquet tables (quantcore.stream.lakesink), on the S3 API its checkpoints
    use; the serving pods read it (the History RPC) with spec.spark.env's AWS_* variables, or
    as spec.serving.serviceAccount (an IRSA role, on EKS)."""

    location: str = Field(
        pattern=r"^s3a://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$",
        max_length=512,
        description="s3a://bucket/prefix; the executors write it, so never a local path. The"
        " feed's tables go under <location>/<feed>-<checkpoint id> (a new checkpoint starts a"
        " new sink)",
    )
    retention_days: int = Field(
        default=7,
        ge=0,
        le=3650,
        description="days of history kept (0: all): the sinks' logs forget older files, and"
        " the bucket's lifecycle rule on the prefix deletes them (infra/ sets one)",
    )
    interval_seconds: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="how often the lake commits a batch (a file per table and symbol each"
        " time: longer means fewer, bigger files and older history at any moment)",
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
                "has(self.serving.tls) || self.serving.insecure",
                "serving is secure by default: set spec.serving.tls.secretName (a Secret with"
                " tls.crt and tls.key, e.g. from a cert-manager Certificate) or, on a trusted"
                " network only, spec.serving.insecure: true",
            ),
            ("self.serving.healthPort != self.serving.port", "serving.healthPort must differ"),
            (
                "!has(self.spark.executor.instances) || self.spark.trigger == 'microbatch' ||"
                " self.spark.executor.instances * self.spark.executor.cores >="
                " (self.streams.trades ? self.kafka.partitions * 2 + 1 : self.kafka.partitions)"
                " + (has(self.lake) ? 1 : 0)",
                "real-time and continuous modes need a task slot per input partition of each query"
                " (book and trade flow), one for the malformed-trade counter and one for the"
                " lake's writers: raise spark.executor.instances or cores, or omit instances to"
                " size it automatically",
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
    lake: Lake | None = None


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

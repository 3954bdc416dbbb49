"""``evalkit run --executor ray [--replicas K]``: model replicas as Ray actors, one run directory.

Why Ray and this shape: a model that fits one GPU is evaluated K times faster on K GPUs (or K
machines) by running K copies of it, and Ray already knows how to place processes on a cluster's
GPUs, restart nothing silently and report dead ones. Everything else stays where it was: the
runner's async workers, the response cache, the run store and the judges run in the driver
process, which writes the one run directory, so ``--resume`` and the cache behave exactly as in a
local run. Only ``ModelAdapter.generate`` crosses to the actors.

- Any adapter spec works (``hf:``, ``vllm:``, ``openai:...``, a card, ``cascade``): the adapter is
  built *inside* the actor from the spec and the model options, so weights load on the actor's GPU.
- Each actor asks for ``num_gpus=1`` when the cluster has GPUs (Ray then sets its
  ``CUDA_VISIBLE_DEVICES``), else ``num_cpus=1``. ``--replicas`` defaults to one per GPU, or 2.
- The driver holds one ``RayReplica`` proxy per actor, all in a ``ReplicaPool``: requests go to the
  least busy actor, and a request whose actor died is failed over to another (``replica_died``).
- Records cross as JSON (pydantic ``model_dump_json``), never pickled objects: the wire format is
  the run directory's own. Input audio given by path is inlined as bytes before it is sent (an
  actor on another machine cannot read the driver's files); audio an actor produces comes back as
  bytes and is written under the run's ``audio/`` by the driver (``RunStore.save_output_audio``).
- Ray is imported only here, only when the executor is used.

Single machine: nothing to set up. evalkit starts a private local Ray instance
(``include_dashboard=False``) and shuts it down at the end of the run.

Several machines: start a cluster and point the driver at it::

    # head node (also runs evalkit, the "driver")
    ray start --head --port 6379 --num-gpus 8
    # every other node
    ray start --address HEAD_IP:6379
    # on the head node
    RAY_ADDRESS=HEAD_IP:6379 evalkit run --executor ray --model hf:/models/qwen2-audio --tasks mmau-mini

With ``RAY_ADDRESS`` set, evalkit joins that cluster (``ray.init(address="auto")``) and leaves it
running afterwards. Every node needs the same evalkit installation (same virtual environment
path), the model weights at the same path (or a hub id with a warm cache), and, for ``openai:``
specs, the API key variable in the environment ``ray start`` ran in: evalkit never ships secrets
to the cluster. Input audio needs no shared file system (it travels inlined).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import asdict
from typing import Any

from evalkit.audio import AudioError
from evalkit.errors import EndpointUnreachable, EvalkitError, ModelError, SpecError
from evalkit.models.base import Capabilities, ModelAdapter, load_model
from evalkit.models.replica_pool import ReplicaPool
from evalkit.records import AudioPart, AudioRef, ChatRequest, ModelOutput

#: replicas on a cluster without GPUs when --replicas is not given
DEFAULT_CPU_REPLICAS = 2
#: seconds an actor may take to be placed and to build its adapter (weights load here)
ACTOR_START_TIMEOUT_S = 900.0


def import_ray() -> Any:
    """ray, or a one-line fix when the optional ``ray`` extra is missing."""
    try:
        import ray
    except ImportError:
        raise EvalkitError("--executor ray needs Ray: `pip install -e .[ray]`") from None
    return ray


class ModelReplica:
    """The body of one Ray actor (made an actor class by ``ray.remote`` at placement time, so that
    importing this module never imports Ray). Every method is async: Ray then runs them on one
    event loop in the actor, concurrently, which is what adapters expect (clients per loop,
    micro-batching of concurrent requests)."""

    def __init__(self, spec: str, options_json: str):
        self.spec = spec
        self.options: dict[str, Any] = json.loads(options_json)
        self.adapter: ModelAdapter | None = None

    async def start(self) -> dict[str, Any]:
        """Build the adapter; its identity and description, or ``{"error": ...}`` for a user
        mistake (a bad spec), which the driver shows as one line."""
        import ray

        try:
            self.adapter = load_model(self.spec, **self.options)
        except EvalkitError as exc:
            return {"error": str(exc)}
        context = ray.get_runtime_context()
        return {
            "spec": self.adapter.spec,
            "cache_identity": self.adapter.cache_identity,
            "pinned_revision": self.adapter.pinned_revision,
            "request_timeout": self.adapter.request_timeout,
            "capabilities": asdict(self.adapter.capabilities),
            "max_concurrency": self.adapter.max_concurrency,
            "describe": self.adapter.describe(),
            "node_id": context.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        }

    def _adapter(self) -> ModelAdapter:
        if self.adapter is None:
            raise RuntimeError("ModelReplica used before start()")
        return self.adapter

    async def check(self) -> str | None:
        """The adapter's pre-run check; the message of a user-facing failure, None when fine."""
        try:
            await self._adapter().check()
        except EvalkitError as exc:
            return str(exc)
        return None

    async def generate(self, request_json: str) -> dict[str, Any]:
        """One request as JSON -> ``{"output": ModelOutput JSON}`` or a classified failure
        (``model_error``, ``input_error``); anything else is a bug and travels as Ray's task error."""
        request = ChatRequest.model_validate_json(request_json)
        try:
            output = await self._adapter().generate(request)
        except ModelError as exc:
            return {
                "model_error": {
                    "kind": exc.kind,
                    "message": exc.message,
                    "transient": exc.transient,
                    "retry_after": exc.retry_after,
                }
            }
        except EvalkitError as exc:
            return {"input_error": {"audio": isinstance(exc, AudioError), "message": str(exc)}}
        if output.audio is not None and output.audio.path is not None:
            # a file in the actor's file system means nothing to the driver: send the bytes
            audio = output.audio
            inlined = AudioRef(data=audio.read_bytes(), sample_rate=audio.sample_rate, mime=audio.mime)
            output = output.model_copy(update={"audio": inlined})
        return {"output": output.model_dump_json()}

    async def aclose(self) -> None:
        if self.adapter is not None:
            await self.adapter.aclose()


def inline_audio(request: ChatRequest) -> ChatRequest:
    """The request with every audio part given by path turned into bytes (see module docstring)."""
    if not any(isinstance(p, AudioPart) and p.audio.path for m in request.messages for p in m.content):
        return request
    messages = []
    for message in request.messages:
        parts = []
        for part in message.content:
            if isinstance(part, AudioPart) and part.audio.path is not None:
                ref = part.audio
                data = AudioRef(data=ref.read_bytes(), sample_rate=ref.sample_rate, mime=ref.mime)
                part = part.model_copy(update={"audio": data})
            parts.append(part)
        messages.append(message.model_copy(update={"content": parts}))
    return request.model_copy(update={"messages": messages})


class RayReplica(ModelAdapter):
    """Driver-side proxy of one actor: looks like the adapter inside it (spec, cache identity,
    capabilities, description) and forwards ``generate`` as an awaited actor call."""

    def __init__(self, actor: Any, info: dict[str, Any], index: int):
        self.actor = actor
        self.info = info
        self.index = index
        self.spec = info["spec"]
        self.capabilities = Capabilities(**info["capabilities"])
        self.max_concurrency = info["max_concurrency"]

    @property
    def cache_identity(self) -> str:
        return self.info["cache_identity"]

    @property
    def pinned_revision(self) -> str | None:
        return self.info.get("pinned_revision")

    @property
    def request_timeout(self) -> float | None:  # type: ignore[override]
        return self.info.get("request_timeout")

    @property
    def name(self) -> str:
        gpus = ",".join(self.info["gpu_ids"]) or "cpu"
        return f"ray-actor-{self.index}@{self.info['node_ip']}/{gpus}"

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> ModelAdapter:
        """Not a registered kind: proxies are made by ``load_on_ray``."""
        raise SpecError("Ray replicas are made by --executor ray, not named by a spec")

    async def generate(self, request: ChatRequest) -> ModelOutput:
        from ray.exceptions import RayActorError

        payload = inline_audio(request).model_dump_json()
        try:
            result = await self.actor.generate.remote(payload)
        except RayActorError as exc:  # the actor (or its node) died: another replica can answer
            raise ModelError("replica_died", f"{self.name} died: {exc}", transient=True) from exc
        if "model_error" in result:
            raise ModelError(**result["model_error"])
        if "input_error" in result:
            error = result["input_error"]
            raise (AudioError if error["audio"] else EvalkitError)(error["message"])
        return ModelOutput.model_validate_json(result["output"])

    async def check(self) -> None:
        from ray.exceptions import RayActorError

        try:
            message = await self.actor.check.remote()
        except RayActorError as exc:
            raise EndpointUnreachable(f"{self.name} died before the run: {exc}") from None
        if message is not None:
            raise EndpointUnreachable(f"{self.name}: {message}")

    async def aclose(self) -> None:
        import ray
        from ray.exceptions import RayActorError

        with contextlib.suppress(RayActorError):  # already dead: nothing left to release
            await self.actor.aclose.remote()
        ray.kill(self.actor)

    def describe(self) -> dict[str, Any]:
        info = dict(self.info["describe"])
        info["ray"] = {
            "actor": self.index,
            "node_id": self.info["node_id"],
            "node_ip": self.info["node_ip"],
            "gpu_ids": self.info["gpu_ids"],
        }
        return info


class RayReplicaPool(ReplicaPool):
    """The pool of actor proxies; it also owns the Ray instance when evalkit started one."""

    def __init__(self, replicas: list[RayReplica], owns_ray: bool, resources: dict[str, Any]):
        super().__init__(replicas, names=[r.name for r in replicas])
        self.owns_ray = owns_ray
        self.resources = resources

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            if self.owns_ray:
                import_ray().shutdown()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["executor"] = {
            "kind": "ray",
            "replicas": len(self.replicas),
            "cluster": "private local instance" if self.owns_ray else "RAY_ADDRESS",
            "cluster_resources": self.resources,
        }
        return info


def _init_ray(ray: Any) -> bool:
    """Join the cluster named by ``RAY_ADDRESS``, or start a private local instance (no dashboard).
    Returns whether evalkit started it (and so must shut it down). An instance already initialised
    in this process (a test, a notebook) is used as it is."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    return True


def _placement(resources: dict[str, Any], replicas: int | None) -> tuple[int, dict[str, float]]:
    """How many actors and what each asks for: one GPU each on a GPU cluster, else one CPU."""
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 0))
    if gpus:
        count = replicas or gpus
        if count > gpus:
            raise EvalkitError(f"--replicas {count} needs {count} GPUs but the Ray cluster has {gpus}")
        return count, {"num_gpus": 1}
    count = replicas or DEFAULT_CPU_REPLICAS
    if count > cpus:
        raise EvalkitError(f"--replicas {count} needs {count} CPUs but the Ray cluster has {cpus}")
    return count, {"num_cpus": 1}


async def load_on_ray(spec: str, options: dict[str, Any], replicas: int | None) -> RayReplicaPool:
    """Place ``replicas`` actors serving ``spec`` and return the driver-side pool over them."""
    ray = import_ray()
    owns_ray = _init_ray(ray)
    actors: list[Any] = []
    try:
        resources = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}
        count, per_actor = _placement(resources, replicas)
        actor_class = ray.remote(ModelReplica)
        options_json = json.dumps(options)
        actors = [actor_class.options(**per_actor).remote(spec, options_json) for _ in range(count)]

        async def started(actor: Any) -> dict[str, Any]:
            return await actor.start.remote()

        try:
            infos = await asyncio.wait_for(
                asyncio.gather(*(started(a) for a in actors)), timeout=ACTOR_START_TIMEOUT_S
            )
        except TimeoutError:
            raise EvalkitError(
                f"{count} Ray actors asking for {per_actor} were not all placed and started within "
                f"{ACTOR_START_TIMEOUT_S:.0f} s; check `ray status` for free resources"
            ) from None
        for info in infos:
            if "error" in info:
                raise EvalkitError(info["error"])
        proxies = [
            RayReplica(actor, info, i) for i, (actor, info) in enumerate(zip(actors, infos, strict=True))
        ]
        if len({p.cache_identity for p in proxies}) != 1:
            raise EvalkitError(
                "the Ray replicas resolved the model differently: "
                + ", ".join(sorted({p.cache_identity for p in proxies}))
            )
        return RayReplicaPool(proxies, owns_ray, resources)
    except BaseException:
        for actor in actors:
            ray.kill(actor)
        if owns_ray:
            ray.shutdown()
        raise

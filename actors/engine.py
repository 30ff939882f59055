"""The vLLM engine wrapper: prompts in, `Sample`s with behaviour log-probs out.

This file and the rest of actors/ are the only places that import vLLM. Log-probs are requested as
the engine's processed log-probs of the sampled tokens (`logprobs_mode="processed_logprobs"`: after
temperature and top-p), i.e. log mu of the distribution each token was actually drawn from, because
RLOO's importance ratio divides by it. Raw log-probs are those of the untempered policy, which is not
the sampling distribution at temperature != 1 or top_p < 1. The learner matches the temperature
(log_softmax(logits / T), core/logprobs.py); the config refuses importance sampling with top_p < 1,
whose truncated distribution it does not reproduce. At temperature 1 and top_p 1 the two modes agree.
"""

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

# vLLM reads these at import time (actors.weight_receiver imports it): set before the imports below.
# A small KV cache keeps the CPU engine inside a laptop's memory.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.platforms import current_platform

from actors.sampling import PromptRequest, SamplingSettings
from actors.staging import remove_orphans, staged_blob
from actors.weight_receiver import EXTENSION_QUALNAME
from core.schemas import Sample
from core.tokenization import prompt_token_ids
from core.weight_sync.collective_receiver import CollectiveOffer
from core.weight_sync.manifest import PublishedWeights, WeightManifest, WeightSyncError

log = logging.getLogger(__name__)
DYNAMO_OFF = "TORCHDYNAMO_DISABLE"


class GenerationEngine:
    """One vLLM engine for one model directory, generating n samples per prompt with log-probs."""

    def __init__(
        self,
        model_path: Path,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int | None = 128,
        tensor_parallel_size: int = 1,
        in_process: bool = False,
    ):
        self.model_path = Path(model_path)
        for orphan in remove_orphans():
            log.warning("removed %s, staged weights of a process killed mid-load", orphan)
        if in_process and tensor_parallel_size > 1:
            raise ValueError("an in-process vLLM engine has one worker: tensor_parallel_size must be 1")
        options = {"distributed_executor_backend": "uni"} if in_process else {}
        # vLLM reads this when the engine is built, choosing a client in this process over an engine-core
        # process (actors.engine_in_process says when that pays).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        eager_sampler = current_platform.is_cpu()
        if eager_sampler and in_process:
            torch._dynamo.config.disable = True  # the worker is this process (see _eager_sampler)
        with _eager_sampler(eager_sampler):
            self.llm = LLM(
                model=str(self.model_path),
                dtype=dtype,
                seed=seed,
                max_model_len=max_model_len,
                tensor_parallel_size=tensor_parallel_size,
                enforce_eager=True,
                logprobs_mode="processed_logprobs",  # the sampling distribution's log-probs (see above)
                worker_extension_cls=EXTENSION_QUALNAME,
                **options,
            )
        self.policy_version: int | None = 0
        self.reload_warnings: list[str] = []  # what vLLM's reload warned about in the last load
        self.rotary_warnings_dropped = 0  # its harmless rotary warnings, dropped (actors/weight_receiver.py)
        self.load_seconds: dict[str, float] = {}  # a collective load's phases, slowest worker's (diagnostics)
        self.load_path: str | None = None  # how the last load was written: "direct" or "layerwise"

    def load_weights(self, published: PublishedWeights | CollectiveOffer) -> int:
        """Load a published version into the running engine, verified; returns the new policy version.

        A payload that fails verification raises `WeightSyncError` naming both versions and leaves the
        engine on its previous weights and version. If vLLM's reload itself fails midway, the engine's
        weights are unknown: its version becomes None and `generate` refuses until a good load. A
        `CollectiveOffer` is fetched by the workers themselves (actors/weight_stream.py).
        """
        if isinstance(published, CollectiveOffer):
            return self._receive_weights(published)
        manifest = published.manifest
        previous = self.policy_version
        with staged_blob(published.blob) as blob_path:
            reports = self._rpc("tandem_stage_weights", manifest, (manifest.to_json(), str(blob_path)))
        self._check_reports(reports, manifest, previous)
        try:
            reports = self._rpc("tandem_commit_weights", manifest, (manifest.version,))
            self._check_reports(reports, manifest, previous)
        except WeightSyncError:
            self.policy_version = None
            raise
        self._note_reload_warnings(reports, manifest.version)
        # Cached prefixes hold keys/values computed by the old weights.
        self.llm.reset_prefix_cache()
        self.policy_version = manifest.version
        return manifest.version

    def _receive_weights(self, offer: CollectiveOffer, attempts: int = 3) -> int:
        """Every worker streams the newest version from the learner. Each asks for the newest one on
        its own, so with tensor parallelism a publish between their requests can leave them on two
        versions: then they fetch again (the newest only moves forward, so they converge)."""
        previous = self.policy_version
        for _ in range(attempts):
            try:
                reports = self.llm.collective_rpc(
                    "tandem_receive_weights", args=(offer.rendezvous.to_json(), offer.timeout_s)
                )
            except Exception as error:  # the rpc itself failed: a worker may have been midway
                self.policy_version = None
                raise WeightSyncError(
                    f"receiving weights v{offer.version} failed (engine was at v{previous}): {error}"
                ) from error
            failed = [report for report in reports if not report["ok"]]
            if failed:
                if any(report["touched"] for report in failed):
                    self.policy_version = None  # streamed in part: the weights are unknown
                raise WeightSyncError(
                    f"receiving weights (v{offer.version} offered, engine was at v{previous}) failed: "
                    + "; ".join(report["error"] for report in failed)
                )
            loaded = {(report["version"], report["digest"]) for report in reports}
            if len(loaded) == 1:
                break
        else:
            self.policy_version = None
            raise WeightSyncError(f"workers kept loading different versions: {sorted(loaded)}")
        ((version, _digest),) = loaded
        self._note_reload_warnings(reports, version)
        self.load_seconds = {key: max(r["seconds"][key] for r in reports) for key in reports[0]["seconds"]}
        self.llm.reset_prefix_cache()  # cached prefixes hold keys/values computed by the old weights
        self.policy_version = version
        return version

    def _note_reload_warnings(self, reports: list[dict], version: int) -> None:
        """Warnings vLLM's reload logged in the workers (other processes): kept and logged here."""
        self.load_path = "/".join(sorted({report["load_path"] for report in reports}))
        self.reload_warnings = [message for report in reports for message in report["reload_warnings"]]
        self.rotary_warnings_dropped = sum(report["rotary_dropped"] for report in reports)
        for message in self.reload_warnings:
            log.warning("loading weights v%d: vLLM: %s", version, message)

    def _rpc(self, method: str, manifest: WeightManifest, args: tuple) -> list[dict]:
        try:
            return self.llm.collective_rpc(method, args=args)
        except Exception as error:
            raise WeightSyncError(
                f"{method} of weights v{manifest.version} failed (engine at v{self.policy_version}): {error}"
            ) from error

    def _check_reports(self, reports: list[dict], manifest: WeightManifest, previous: int | None) -> None:
        for report in reports:
            if report["version"] != manifest.version or report["digest"] != manifest.digest:
                raise WeightSyncError(
                    f"a worker reports v{report['version']} digest {report['digest']} for "
                    f"v{manifest.version} digest {manifest.digest} (engine was at v{previous})"
                )

    def close(self) -> None:
        """Stop the engine's core and worker processes now, not at interpreter exit (where vLLM's
        liveness monitor reports them as having died unexpectedly). The engine is unusable after."""
        with contextlib.suppress(Exception):  # best effort: the workers may already be gone
            self.llm.collective_rpc("tandem_release_receiver")
        self.llm.llm_engine.engine_core.shutdown()

    def parameter_digest(self) -> str:
        """Digest of the engine's parameters as they are now (for tests and diagnostics)."""
        return self.llm.collective_rpc("tandem_parameter_digest")[0]

    def generate(
        self, requests: Sequence[PromptRequest], n: int, sampling: SamplingSettings, actor_id: str = "local"
    ) -> list[list[Sample]]:
        """n samples per request, in request order, each with one behaviour log-prob per completion token."""
        if self.policy_version is None:
            raise WeightSyncError(
                "the engine's weights are unknown after a failed load: load a published version"
            )
        version = self.policy_version
        params = SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop),
            seed=sampling.seed,
            logprobs=0,  # 0 = only the sampled token's log-prob
        )
        # Token ids, not text: vLLM would tokenise the text the same way, but offline ingest must match
        # the actors exactly (core/tokenization.py), so both call one function.
        tokenizer = self.llm.get_tokenizer()
        prompts = [TokensPrompt(prompt_token_ids=prompt_token_ids(tokenizer, r.prompt)) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        now = time.time()
        groups = []
        for request, output in zip(requests, outputs, strict=True):
            prompt_ids = list(output.prompt_token_ids or [])
            groups.append(
                [
                    Sample(
                        prompt_id=request.prompt_id,
                        prompt_token_ids=prompt_ids,
                        completion_token_ids=list(completion.token_ids),
                        completion_text=completion.text,
                        behaviour_logprobs=_sampled_logprobs(completion.token_ids, completion.logprobs),
                        finish_reason=str(completion.finish_reason),
                        policy_version=version,
                        actor_id=actor_id,
                        created_at=now,
                    )
                    for completion in output.outputs
                ]
            )
        return groups


@contextlib.contextmanager
def _eager_sampler(enabled: bool) -> Iterator[None]:
    """`TORCHDYNAMO_DISABLE=1` for the engine processes started meanwhile (they inherit it), then this
    process's environment as it was. With enforce_eager vLLM compiles no model code, but its sampler
    torch.compiles one helper (the sampled token's rank among the log-probs) on the first generate:
    2.1 s of start-up on this CPU, spent again when a larger batch (an evaluation) first comes. Run
    eagerly, a generate call took the same time within noise. (An in-process worker is this process,
    which read the variable at import: the caller sets its config instead.)"""
    previous = os.environ.get(DYNAMO_OFF)
    if enabled:
        os.environ[DYNAMO_OFF] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DYNAMO_OFF, None)
        else:
            os.environ[DYNAMO_OFF] = previous


def _sampled_logprobs(token_ids: Sequence[int], logprobs: Sequence[dict] | None) -> list[float]:
    """Pick the sampled token's log-prob at each position (vLLM returns a dict per position)."""
    if logprobs is None or len(logprobs) != len(token_ids):
        raise RuntimeError(
            f"vLLM returned {0 if logprobs is None else len(logprobs)} log-prob entries for "
            f"{len(token_ids)} tokens; behaviour log-probs are required"
        )
    return [float(position[token].logprob) for token, position in zip(token_ids, logprobs, strict=True)]

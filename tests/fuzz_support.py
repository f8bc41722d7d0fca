"""Schema-driven fuzzing of a running API with schemathesis (issue 9), run by tests/test_fuzz.py.

It runs in a child process (``python -m tests.fuzz_support PLAN.json RESULT.json``): the API under
test is served by the pytest process's event loop, so a fuzzer blocking in that process would
freeze the server it talks to, and on two cores a second process lets example generation and the
server run side by side. The plan names the server and the keys and ids to use; the result is
every distinct check failure (by operation, check and status) with the shortest request that
showed it, and the counts.

The schema is the server's own ``/openapi.json`` and the requests are real HTTP. Each operation
of the document gets, in this order (DELETEs last, so the ids offered name existing things until
then):
- its own examples from the schema, once each;
- ``positive``: valid input, the ids of existing things in the path, the fuzzer's admin key (a
  device's key on the south paths), a few body fields steered (see ``Plan.steer``);
- ``negative``: input the schema forbids, same ids and key;
- ``free-ids``: valid input with generated ids in the path;
- ``no-key`` and ``bad-key``: valid input without an ``X-ApiKey`` or with an unknown one;
- ``coverage``: schemathesis's deterministic boundary cases (limits, missing and mistyped fields,
  unexpected methods), at most ``coverage_cases``.
Every generated run is bounded (``max_examples``) and deterministic (a fixed seed, derandomized,
no example database, no shrinking), so two runs against the same code send the same requests.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
KEY_HEADER = "X-ApiKey"
BAD_KEY = "fuzz-not-a-key"
REQUEST_TIMEOUT = 15.0  # seconds; a request slower than that is itself a finding
BODY_SHOWN = 600  # characters of a request or response body kept in a finding
# The runs of valid input with a valid key (the coverage run mixes valid and invalid cases).
STEERED_RUNS = ("positive", "free-ids")


@dataclass
class Plan:
    api_url: str
    admin_key: str  # the fuzzer's own admin key (not the one the test checks afterwards)
    # The device whose key signs the south calls (its id is the path's): never offered to the
    # north paths, so that the fuzzing of DELETE /provision/devices/{id} cannot revoke its key.
    device_id: str
    device_key: str
    # An existing thing per collection, by the path segment before ``{param}``: "jobs",
    # "devices", "operationTypes", "tasks", "apiKeys", "operations".
    known_ids: dict[str, str]
    # API keys the fuzzer must never revoke: without them what follows the fuzzing proves nothing.
    protected_key_ids: list[str]
    # Fields set in the generated bodies of the positive runs, by method and end of the path
    # ("POST /operation/jobs") and dotted field ("job.request.name"): the schema cannot say
    # that a job names an existing operation type or that a device answers its own operation,
    # and without them every valid-looking job and answer would stop at a 400.
    steer: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 20261123
    positive_examples: int = 40
    negative_examples: int = 40
    free_id_examples: int = 10
    auth_examples: int = 2
    # The coverage cases schemathesis derives from the schema (boundaries, missing and wrongly
    # typed fields, unexpected methods): at most this many per operation, spread over them all.
    coverage_cases: int = 100


@dataclass
class Finding:
    operation: str
    check: str
    status: int | None
    run: str
    message: str
    request: str
    response: str
    count: int = 1


@dataclass
class Result:
    operations: list[str] = field(default_factory=list)
    requests: int = 0
    runs: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Per operation and run, how many answers of each status: what the requests reached.
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    # Valid input (by the schema) that the API refused: not a check failure, but where the
    # schema says less than the API checks, so the fuzzer cannot reach further (first 3 each).
    refused: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Run:
    """One bounded generation run over one operation."""

    name: str
    mode: GenerationMode
    examples: int
    key: str | None  # the X-ApiKey sent; None: no header at all
    path_parameters: dict[str, str] | None = None


def _shorten(text: str, limit: int = BODY_SHOWN) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _negative_path(case: Case) -> bool:
    meta = case.meta
    return meta is not None and meta.is_negative_at(ParameterLocation.PATH)


def _steer(body: Any, fields: dict[str, Any]) -> None:
    """Set each dotted field of a generated JSON body whose parents are objects."""
    for dotted, value in fields.items():
        *parents, name = dotted.split(".")
        node = body
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[name] = value


def _known_path_parameters(path: str, names: list[str], known: dict[str, str]) -> dict[str, str]:
    """``{param}`` -> an existing id, chosen by the collection segment just before it."""
    segments = path.strip("/").split("/")
    found: dict[str, str] = {}
    for before, segment in itertools.pairwise(segments):
        name = segment.strip("{}")
        if segment.startswith("{") and name in names and before in known:
            found[name] = known[before]
    return found


class Fuzzer:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.result = Result()
        self.findings: dict[tuple[str, str, int | None], Finding] = {}
        self.session = requests.Session()
        self.secrets = {
            plan.admin_key: "<fuzz-admin-key>",
            plan.device_key: "<device-key>",
        }

    def runs_for(self, operation: Any) -> list[Run]:
        """The runs of one operation: with the ids of existing things in the path where the
        plan has them (and a few with generated ids), valid and invalid input, and no or a bad
        key."""
        plan = self.plan
        path: str = operation.path
        names = [p.name for p in operation.path_parameters]
        known = _known_path_parameters(path, names, plan.known_ids)
        south = path.startswith("/south/")
        if south:
            # A device key acts only for its own device: with any other id every answer is 403.
            known |= {n: plan.device_id for n in names if "device" in n.lower()}
        fixed = known if known and len(known) == len(names) else None
        key = plan.device_key if south else plan.admin_key
        runs = [
            Run("positive", GenerationMode.POSITIVE, plan.positive_examples, key, fixed),
            Run("negative", GenerationMode.NEGATIVE, plan.negative_examples, key, fixed),
        ]
        if fixed is not None:
            runs.append(Run("free-ids", GenerationMode.POSITIVE, plan.free_id_examples, key))
        runs += [
            Run("no-key", GenerationMode.POSITIVE, plan.auth_examples, None, fixed),
            Run("bad-key", GenerationMode.POSITIVE, plan.auth_examples, BAD_KEY, fixed),
        ]
        return runs

    def is_protected(self, case: Case) -> bool:
        """A DELETE that would revoke a key the run depends on (never generated without stateful
        links or explicit ids, but checked so a schema change cannot make the test meaningless)."""
        segments = case.operation.path.rstrip("/").split("/")
        if case.method.upper() != "DELETE" or segments[-2:-1] != ["apiKeys"]:
            return False
        values = {str(v) for v in (case.path_parameters or {}).values()}
        return bool(values & set(self.plan.protected_key_ids))

    def prepare(self, case: Case, run: Run) -> None:
        """The run's ids in the path, its steered fields in the body, and no generated key."""
        if run.path_parameters and not _negative_path(case):
            case.path_parameters = {**(case.path_parameters or {}), **run.path_parameters}
        if run.name in STEERED_RUNS:
            for operation, fields in self.plan.steer.items():
                method, _, end = operation.partition(" ")
                if case.method.upper() == method and case.operation.path.endswith(end):
                    _steer(case.body, fields)
        if case.headers:
            for name in [n for n in case.headers if n.lower() == KEY_HEADER.lower()]:
                del case.headers[name]

    def send(self, case: Case, run: Run) -> None:
        self.prepare(case, run)
        if self.is_protected(case):
            return
        headers = {KEY_HEADER: run.key} if run.key is not None else {}
        self.result.requests += 1
        try:
            response = case.call(
                base_url=self.plan.api_url,
                session=self.session,
                headers=headers,
                timeout=REQUEST_TIMEOUT,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:  # the server's doing
            self.record(case, run, headers, "no answer", None, str(exc), "(no response)")
            return
        except requests.RequestException as exc:  # a request the client cannot send
            label = case.operation.label
            self.result.notes.append(f"{label} [{run.name}]: not sent ({exc!r:.120})")
            return
        self.count(case, run, response)
        self.check(case, run, headers, response)

    def count(self, case: Case, run: Run, response: schemathesis.Response) -> None:
        seen = self.result.statuses.setdefault(f"{case.operation.label} [{run.name}]", {})
        seen[str(response.status_code)] = seen.get(str(response.status_code), 0) + 1
        if run.name in STEERED_RUNS and response.status_code == 400:
            refused = self.result.refused.setdefault(case.operation.label, [])
            text = _shorten(response.text, 300)
            if len(refused) < 3 and text not in refused:
                refused.append(text)

    def check(
        self, case: Case, run: Run, headers: dict[str, str], response: schemathesis.Response
    ) -> None:
        status, body = response.status_code, _shorten(response.text)
        try:
            case.validate_response(
                response, checks=CHECKS, headers=headers, transport_kwargs={"headers": headers}
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                self.record(case, run, headers, failure.title, status, failure.message, body)
        except Failure as failure:
            self.record(case, run, headers, failure.title, status, failure.message, body)
        except Exception as exc:  # e.g. a response schema the validator cannot use
            check = f"check error ({type(exc).__name__})"
            self.record(case, run, headers, check, status, str(exc), body)

    def record(
        self,
        case: Case,
        run: Run,
        headers: dict[str, str],
        check: str,
        status: int | None,
        message: str,
        body: str,
    ) -> None:
        try:
            request = case.as_curl_command(headers=headers)
        except Exception as exc:  # a request curl cannot spell is still worth reporting
            request = f"{case.method} {case.formatted_path} ({exc})"
        for secret, placeholder in self.secrets.items():
            request = request.replace(secret, placeholder)
        finding = Finding(
            operation=f"{case.method.upper()} {case.operation.path}",
            check=check,
            status=status,
            run=run.name,
            message=_shorten(message),
            request=_shorten(request),
            response=_shorten(body),
        )
        key = (finding.operation, check, status)
        known = self.findings.get(key)
        if known is None:
            self.findings[key] = finding
        else:
            finding.count = known.count + 1
            # Keep the smallest request that shows the failure.
            self.findings[key] = finding if len(request) < len(known.request) else known
            self.findings[key].count = finding.count

    def fuzz(self, label: str, run: Run, strategy: st.SearchStrategy[Case]) -> None:
        def on_case(case: Case) -> None:
            self.send(case, run)

        test: Callable[[], None] = seed(self.plan.seed)(
            settings(
                max_examples=run.examples,
                derandomize=True,
                database=None,
                deadline=None,
                # No shrinking: a failure is recorded, never raised, so each run sends exactly
                # the examples its seed gives, and distinct failures do not hide each other.
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                print_blob=False,
            )(given(strategy)(on_case))
        )
        self.result.runs += 1
        try:
            test()
        except HypothesisException as exc:  # e.g. nothing negative to generate for this operation
            self.result.notes.append(f"{label} [{run.name}]: nothing to generate ({exc!r:.80})")

    def cover(self, operation: Any, run: Run) -> None:
        """Coverage cases: deterministic, no seed needed; at most ``coverage_cases`` of them,
        spread evenly over all the operation's cases (which come grouped by parameter)."""
        schema = operation.schema
        cases = list(
            schema.iter_coverage_cases(
                operation,
                generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                generation_config=schema.config.generation_for(operation=operation),
            )
        )
        if len(cases) > run.examples:
            cases = [cases[i * len(cases) // run.examples] for i in range(run.examples)]
        self.result.runs += 1
        for case in cases:
            self.send(case, run)

    def operation_runs(self, operation: Any) -> None:
        label = f"{operation.method.upper()} {operation.path}"
        self.result.operations.append(label)
        before = self.result.requests
        runs = self.runs_for(operation)
        first = runs[0]
        for n, strategy in enumerate(operation.get_strategies_from_examples()):
            self.fuzz(label, replace(first, name=f"example-{n + 1}", examples=1), strategy)
        for run in runs:
            try:
                strategy = operation.as_strategy(
                    generation_mode=run.mode, path_parameters=run.path_parameters
                )
            except Exception as exc:  # the schema gives nothing to generate from
                self.result.notes.append(f"{label} [{run.name}]: {type(exc).__name__}: {exc}")
                continue
            self.fuzz(label, run, strategy)
        self.cover(operation, replace(first, name="coverage", examples=self.plan.coverage_cases))
        print(
            f"fuzz: {label}: {self.result.requests - before} requests",
            file=sys.stderr,
            flush=True,
        )

    def run(self) -> Result:
        started = time.monotonic()
        # An explicit configuration, so a schemathesis.toml found on the way up is not read.
        # Security parameters are not generated: the key is each run's (the no-key and bad-key
        # runs test authentication), so the negative runs spend their examples on the inputs.
        # No NUL in generated text: the API refuses it everywhere (docs/api.md) though a JSON
        # schema cannot say so, and valid input would stop at that 400 instead of going deeper;
        # tests/test_hostile_input.py sends NULs on purpose.
        generation = {"with-security-parameters": False, "allow-x00": False}
        config = schemathesis.Config.from_dict({"seed": self.plan.seed, "generation": generation})
        schema = schemathesis.openapi.from_url(
            f"{self.plan.api_url}/openapi.json", config=config, timeout=30
        )
        operations = []
        for loaded in schema.get_all_operations():
            if isinstance(loaded, Ok):
                operations.append(loaded.ok())
            else:
                error = loaded.err()
                self.result.findings.append(
                    Finding("(schema)", "invalid schema", None, "load", str(error), "", "")
                )
        # DELETEs last: until then the ids the plan offers name existing things.
        operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
        for operation in operations:
            self.operation_runs(operation)
        self.result.findings += sorted(
            self.findings.values(), key=lambda f: (f.operation, f.check, f.status or 0)
        )
        self.result.seconds = round(time.monotonic() - started, 1)
        return self.result


def main(argv: list[str]) -> int:
    plan = Plan(**json.loads(Path(argv[1]).read_text()))
    result = Fuzzer(plan).run()
    Path(argv[2]).write_text(json.dumps(asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

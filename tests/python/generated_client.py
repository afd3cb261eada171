"""Drives a real Weft through a Python client generated from openapi.yaml, using its typed
functions only. Every response must carry a documented status and parse into its model, and
no model may hold fields the spec does not declare. Run by tests/python_client.rs.

usage: generated_client.py SPEC BASE_URL WORKDIR AGENT_ID
"""

import importlib
import subprocess
import sys
import time
from pathlib import Path

SPEC, BASE_URL, WORKDIR, AGENT_ID = sys.argv[1:5]

package = Path(WORKDIR) / "weft_client"
config = Path(WORKDIR) / "generator.yaml"
# No formatting hooks: the generated code is imported, not read.
config.write_text("post_hooks: []\n")
subprocess.run(
    [
        sys.executable, "-m", "openapi_python_client", "generate", "--path", SPEC,
        "--output-path", str(package), "--meta", "none", "--config", str(config),
        "--fail-on-warning",
    ],
    check=True,
)
sys.path.insert(0, WORKDIR)

client_module = importlib.import_module("weft_client")
models = importlib.import_module("weft_client.models")
types = importlib.import_module("weft_client.types")


def api(group, operation):
    return importlib.import_module(f"weft_client.api.{group}.{operation}")


client = client_module.Client(base_url=BASE_URL, raise_on_unexpected_status=True, timeout=30)
checked = 0


def undeclared(value, path="response"):
    """Fields the server sent that the spec does not declare, anywhere in a parsed model."""
    found = []
    fields = getattr(type(value), "__attrs_attrs__", None)
    if fields is not None:
        declared = [f.name for f in fields if f.name != "additional_properties"]
        extra = getattr(value, "additional_properties", {}) or {}
        # A model with declared fields must not collect others; a free-form map has none.
        if declared and extra:
            found.append(f"{path}: {sorted(extra)}")
        for f in fields:
            if f.name != "additional_properties":
                found += undeclared(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += undeclared(item, f"{path}[{i}]")
    return found


def call(group, operation, expected, model, **kwargs):
    """Calls one operation; the status must be `expected` and the body parse into `model`."""
    global checked
    response = api(group, operation).sync_detailed(client=client, **kwargs)
    body = response.content.decode()[:400]
    assert response.status_code == expected, f"{operation}: {response.status_code} {body}"
    parsed = response.parsed
    assert isinstance(parsed, model), f"{operation}: parsed {type(parsed).__name__}, not {model.__name__}: {body}"
    extra = undeclared(parsed)
    assert not extra, f"{operation}: undeclared fields {extra}"
    checked += 1
    print(f"ok {operation} -> {response.status_code} {model.__name__}", flush=True)
    return parsed


# Health and state.
call("system", "get_health", 200, models.Health)
call("system", "get_state", 200, models.StateDigest)

# Targets: the whole lifecycle.
target = call(
    "targets", "register_target", 201, models.TargetView,
    body=models.TargetRegisterRequest(
        name="py-box", agent_type="claude-code", capabilities=["rust"],
        boundaries=["personal"], mechanism=models.MechanismName.LOCAL,
        config=models.TargetRegisterRequestConfig.from_dict({"command": "true"}),
        tags=["generated"],
    ),
)
assert target.status == models.TargetStatusName.AVAILABLE
call("targets", "list_targets", 200, models.TargetList, tag="generated", limit=10)
call("targets", "get_target", 200, models.TargetView, id=target.id)
call(
    "targets", "update_target", 200, models.TargetView, id=target.id,
    body=models.TargetUpdateRequest(description="from a generated client"),
)
call("targets", "disable_target", 200, models.TargetChanged, id=target.id, reason="testing")
call("targets", "enable_target", 200, models.TargetChanged, id=target.id)
health = call("targets", "test_target", 200, models.HealthCheckResult, id=target.id)
assert health.healthy, health
call(
    "targets", "disable_targets", 200, models.DisableBatchResponse,
    body=models.DisableBatchRequestWithTargetIds(target_ids=[target.id]),
)
missing = call("targets", "get_target", 404, models.ErrorBody, id="no-such-target")
assert missing.error == "NotFound"
call("targets", "remove_target", 200, models.TargetChanged, id=target.id)

# Work: submitted, done by the agent, listed; another cancelled; bad input refused.
submitted = call(
    "work", "submit_work", 201, models.WorkSubmitResponse,
    body=models.WorkSubmitRequestWithBoundary(
        description="say hello", capability="rust", boundary="personal", priority=7,
    ),
)
for _ in range(200):
    item = call("work", "get_work", 200, models.WorkView, id=submitted.id)
    if item.status == models.WorkStatusName.COMPLETED:
        break
    time.sleep(0.1)
assert item.status == models.WorkStatusName.COMPLETED, item
assert item.assigned_to == AGENT_ID
call("work", "list_work", 200, models.WorkList, status=models.WorkStatusName.COMPLETED, limit=5)
waiting = call(
    "work", "submit_work", 201, models.WorkSubmitResponse,
    body=models.WorkSubmitRequestWithClassification(
        description="nobody can take this", capability="cobol", classification="personal",
    ),
)
cancelled = call("work", "cancel_work", 200, models.WorkChanged, id=waiting.id)
assert cancelled.work_item.status == models.WorkStatusName.CANCELLED
call(
    "work", "cancel_work_batch", 200, models.CancelBatchResponse,
    body=models.CancelBatchRequestWithFilter(
        filter_=models.CancelBatchFilter(status=models.WorkStatusName.PENDING),
    ),
)
refused = call("work", "retry_work", 409, models.ErrorBody, id=submitted.id)
assert refused.error == "Conflict"
invalid = call(
    "work", "submit_work", 400, models.ErrorBody,
    body=models.WorkSubmitRequestWithBoundary(
        description="x", capability="rust", boundary="personal", priority=11,
    ),
)
assert invalid.error == "ValidationError"

# Agents: Weft's own, one by one and in a batch.
agents = call("agents", "list_agents", 200, models.AgentList)
assert any(a.guid == AGENT_ID for a in agents.agents)
agent = call("agents", "get_agent", 200, models.AgentView, guid=AGENT_ID)
assert agent.status in (models.AgentStatusName.ONLINE, models.AgentStatusName.BUSY)
call(
    "agents", "shutdown_agents", 200, models.ShutdownBatchResponse,
    body=models.ShutdownBatchRequestWithAgentGuids(agent_guids=["no-such-agent"]),
)
call(
    "agents", "shutdown_agent", 200, models.ShutdownResponse, guid=AGENT_ID,
    body=models.ShutdownBody(graceful=False),
)

# The audit log and the numbers.
events = call("events", "list_events", 200, models.EventPage, type_="work.completed", limit=10)
assert any(e.aggregate_id == submitted.id for e in events.events)
call("system", "get_stats", 200, models.GlobalStats)
call("system", "list_projects", 200, models.ProjectList)
call("system", "get_project_stats", 200, models.ProjectStats, project="default")
call("system", "list_channels", 200, models.ChannelList)

print(f"{checked} calls, every response documented and parsed", flush=True)

"""Authentication, roles and bad input (SPEC 2 and 3): clear 4xx answers in the SPEC error body."""

from __future__ import annotations

from tests.stack import Stack

JOBS = "/north/v80/operation/jobs"
REBOOT = {
    "job": {"request": {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": ["x"]}}}}
}


def error_of(answer) -> dict:
    body = answer.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    error = body["errors"][0]
    assert isinstance(error["code"], int) and error["message"]
    return error


async def new_key(stack: Stack, role: str) -> str:
    answer = await stack.api.post("/north/v80/apiKeys", json={"name": f"{role}-key", "role": role})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["role"] == role and body["apiKey"]
    return body["apiKey"]


async def test_missing_and_unknown_keys_are_401(stack: Stack) -> None:
    async with stack.as_key("") as anonymous:
        answer = await anonymous.get(JOBS, headers={"X-ApiKey": ""})
    assert answer.status_code == 401
    error_of(answer)
    async with stack.as_key("abc.def") as stranger:
        assert (await stranger.get(JOBS)).status_code == 401
    async with stack.as_key(stack.admin_key + "x") as wrong_secret:
        assert (await wrong_secret.post(JOBS, json=REBOOT)).status_code == 401
    health = await stack.as_key("").get("/health/live")
    assert health.status_code == 200


async def test_viewer_reads_but_cannot_create_jobs(stack: Stack) -> None:
    viewer = await new_key(stack, "viewer")
    async with stack.as_key(viewer) as client:
        assert (await client.get(JOBS)).status_code == 200
        answer = await client.post(JOBS, json=REBOOT)
        assert answer.status_code == 403
        assert error_of(answer)["code"] == 1006
        assert (await client.get("/north/v80/apiKeys")).status_code == 403


async def test_operator_creates_jobs_and_the_job_records_the_user(stack: Stack) -> None:
    await stack.provision(1)
    operator = await new_key(stack, "operator")
    async with stack.as_key(operator) as client:
        answer = await client.post(
            JOBS,
            json={
                "job": {
                    "request": {
                        "name": "REBOOT_EQUIPMENT",
                        "user": "someone-else",
                        "target": {"append": {"entities": ["dev-00001"]}},
                    }
                }
            },
        )
    assert answer.status_code == 201, answer.text
    assert answer.headers["Location"] == f"{JOBS}/{answer.json()['id']}"
    assert answer.json()["request"]["user"] == "operator-key"


async def test_a_device_key_cannot_call_north_routes(stack: Stack) -> None:
    device = (await stack.provision(1))[0]
    async with stack.as_key(device["apiKey"]) as client:
        for answer in (
            await client.get(JOBS),
            await client.post(JOBS, json=REBOOT),
            await client.get("/north/v80/provision/devices"),
        ):
            assert answer.status_code == 403
            error_of(answer)


async def test_revoked_key_is_refused_at_once(stack: Stack) -> None:
    operator = await new_key(stack, "operator")
    keys = (await stack.api.get("/north/v80/apiKeys")).json()["apiKeys"]
    key_id = next(k["id"] for k in keys if k["name"] == "operator-key")
    assert all("apiKey" not in k for k in keys)
    assert (await stack.api.delete(f"/north/v80/apiKeys/{key_id}")).status_code == 200
    async with stack.as_key(operator) as client:
        assert (await client.get(JOBS)).status_code == 401


async def test_bad_job_requests_are_400_with_the_field(stack: Stack) -> None:
    unknown = await stack.api.post(
        JOBS,
        json={
            "job": {"request": {"name": "MAKE_COFFEE", "target": {"append": {"entities": ["a"]}}}}
        },
    )
    assert unknown.status_code == 400
    error = error_of(unknown)
    assert error["context"] == [{"name": "name", "value": "MAKE_COFFEE"}]

    no_target = await stack.api.post(JOBS, json={"job": {"request": {"name": "REBOOT_EQUIPMENT"}}})
    assert no_target.status_code == 400
    error_of(no_target)

    wrong_type = await stack.api.post(
        JOBS,
        json={
            "job": {
                "request": {"name": "REBOOT_EQUIPMENT", "target": {"append": {"entities": "a"}}}
            }
        },
    )
    assert wrong_type.status_code == 400
    assert error_of(wrong_type)["context"][0]["name"] == "job.request.target.append.entities"

    malformed = await stack.api.post(
        JOBS, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    error_of(malformed)

    extra = await stack.api.post(
        JOBS,
        json={
            "job": {
                "request": {
                    "name": "REBOOT_EQUIPMENT",
                    "colour": "red",
                    "target": {"append": {"entities": ["a"]}},
                }
            }
        },
    )
    assert extra.status_code == 400
    assert error_of(extra)["message"].startswith("Forbidden field")


async def test_unknown_job_is_404(stack: Stack) -> None:
    for job_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        answer = await stack.api.get(f"{JOBS}/{job_id}")
        assert answer.status_code == 404
        error_of(answer)


async def test_oversized_body_is_413(stack: Stack) -> None:
    body = b'{"job":' + b" " * (stack.settings.max_body_bytes + 1) + b"}"
    answer = await stack.api.post(JOBS, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert error_of(answer)["code"] == 1013

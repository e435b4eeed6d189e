"""The OpenAPI document is served, valid, and describes exactly the routes the app has."""

from __future__ import annotations

import re
from pathlib import Path

from umbra_waku.bridge.api import ROUTES, make_app

from .conftest import StartBridge

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _app_routes(app_routes: object) -> set[tuple[str, str]]:
    found = set()
    for route in app_routes:  # type: ignore[attr-defined]
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD for every GET
        found.add((route.method, route.resource.canonical))
    return found


async def test_served_document_covers_every_route(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    response = await h.http.get("/v1/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document = await response.json()
    assert document["openapi"].startswith("3.1")

    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    app = make_app(h.bridge)
    assert _app_routes(app.router.routes()) == documented
    assert {(m, p) for m, p, _ in ROUTES} == documented


async def test_document_is_valid_openapi_and_references_resolve(start_bridge: StartBridge) -> None:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    h = await start_bridge()
    document = await (await h.http.get("/v1/openapi.json")).json()
    schemas = document["components"]["schemas"]
    text = str(document)
    for name in re.findall(r"#/components/schemas/([A-Za-z0-9_]+)", text):
        assert name in schemas, name
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            assert "security" in operation, (method, path)
            for name in re.findall(r"{(\w+)}", path):
                assert any(
                    p["in"] == "path" and p["name"] == name for p in operation.get("parameters", [])
                ), (method, path, name)


async def test_security_matches_the_routes(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    document = await (await h.http.get("/v1/openapi.json")).json()
    for method, path, handler in ROUTES:
        operation = document["paths"][path][method.lower()]
        auth = getattr(handler, "auth", None)
        expected: list[dict[str, list[str]]] = [] if auth is None else [{f"{auth}Token": []}]
        assert operation["security"] == expected, (method, path)


def test_docs_mention_every_route() -> None:
    text = DOCS.read_text()
    for method, path, _ in ROUTES:
        assert f"{method} {path}" in text, f"docs/api.md does not describe {method} {path}"

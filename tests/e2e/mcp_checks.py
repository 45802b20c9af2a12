"""MCP through the gateway with the official MCP Python SDK (1.x): conversion-listener
and passthrough-listener over streamable HTTP, passthrough over the older HTTP+SSE
transport, and Kong's ACLs. Prints PASS:/FAIL: lines."""

import argparse
import asyncio
import json

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError


def report(ok, name, detail=""):
    print(("PASS: " if ok else "FAIL: ") + name + ("" if ok else ": " + detail), flush=True)


async def session(url, key, work, transport=streamablehttp_client):
    """One SDK session over `transport` (streamable HTTP, or `sse_client` for HTTP+SSE)."""
    async with transport(url, headers={"apikey": key}, timeout=30) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            init = await s.initialize()
            return await work(s, init)


async def main(gateway):
    conv = gateway + "/marketplace"

    async def alice_conversion(s, init):
        names = [t.name for t in (await s.list_tools()).tools]
        report(init.serverInfo.name == "tollgate" and names == ["Get users", "Get users orders"],
               "mcp sdk: conversion-listener initialize + tools/list", f"{init.serverInfo.name} {names}")
        r = await s.call_tool("Get users", {"query_id": "a1b2c3d4"})
        text = r.content[0].text if r.content else ""
        report(not r.isError and json.loads(text).get("name") == "Alice Johnson",
               "mcp sdk: a REST endpoint called as a tool", text[:200])

    async def bob_conversion(s, init):
        names = [t.name for t in (await s.list_tools()).tools]
        report(names == ["Get users orders"], "mcp sdk: ACL hides the admin tool from a developer", str(names))
        try:
            r = await s.call_tool("Get users", {})
            report(False, "mcp sdk: ACL refuses the admin tool to a developer", f"answered {r}")
        except McpError as e:
            msg = str(e.error.message)
            report("Get users" in msg and "mcp-bob" in msg, "mcp sdk: ACL refuses the admin tool to a developer", msg)

    async def passthrough(s, init):
        names = [t.name for t in (await s.list_tools()).tools]
        r = await s.call_tool("search_orders", {"name": "laptop"})
        text = r.content[0].text if r.content else ""
        report(init.serverInfo.name == "mock-marketplace" and "list_users" in names and "Laptop" in text,
               "mcp sdk: passthrough-listener to an MCP server", f"{init.serverInfo.name} {names} {text[:100]}")

    async def bob_passthrough(s, init):
        names = [t.name for t in (await s.list_tools()).tools]
        report("list_users" not in names and "get_user" in names,
               "mcp sdk: passthrough tools/list filtered by the ACL", str(names))

    async def alice_legacy(s, init):
        names = [t.name for t in (await s.list_tools()).tools]
        r = await s.call_tool("list_users", {})
        text = r.content[0].text if r.content else ""
        report(init.serverInfo.name == "mock-marketplace" and "list_users" in names and "Alice" in text,
               "mcp sdk: passthrough over HTTP+SSE (sse_client)", f"{init.serverInfo.name} {names} {text[:100]}")

    async def bob_legacy(s, init):
        names = [t.name for t in (await s.list_tools()).tools]
        report("list_users" not in names and "get_user" in names,
               "mcp sdk: HTTP+SSE tools/list filtered by the ACL", str(names))
        try:
            r = await asyncio.wait_for(s.call_tool("list_users", {}), 10)
            report(False, "mcp sdk: HTTP+SSE call refused by the ACL on the stream", f"answered {r}")
        except McpError as e:
            msg = str(e.error.message)
            report("list_users" in msg and "mcp-bob" in msg,
                   "mcp sdk: HTTP+SSE call refused by the ACL on the stream", msg)

    for url, key, work in [(gateway + "/mcp-legacy/sse", "mcp-alice-key", alice_legacy),
                           (gateway + "/mcp-legacy/sse", "mcp-bob-key", bob_legacy)]:
        try:
            await session(url, key, work, sse_client)
        except Exception as e:
            report(False, f"mcp sdk: HTTP+SSE session {url} as {key}", repr(e)[:400])

    for url, key, work in [(conv, "mcp-alice-key", alice_conversion), (conv, "mcp-bob-key", bob_conversion),
                           (gateway + "/mcp", "mcp-alice-key", passthrough),
                           (gateway + "/mcp", "mcp-bob-key", bob_passthrough)]:
        try:
            await session(url, key, work)
        except Exception as e:  # a failed session is a failed check, with its cause
            report(False, f"mcp sdk: session {url} as {key}", repr(e)[:400])


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    asyncio.run(main(p.parse_args().gateway))

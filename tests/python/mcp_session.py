"""An MCP client session with `weft mcp`, through the official Python MCP client over stdio.

    mcp_session.py work WEFT_BINARY ARGS...   list the tools, take an item, report progress,
                                              hand a sub-task to the fleet, complete the item,
                                              and print what happened as one JSON line
    mcp_session.py hold WEFT_BINARY ARGS...   take an item, print `TAKEN <id>`, then wait to
                                              be killed
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def text(result):
    return "".join(getattr(block, "text", "") for block in result.content)


async def call(session, name, arguments):
    try:
        result = await session.call_tool(name, arguments)
    except Exception as e:  # a protocol-level error: invalid arguments
        return {"protocolError": str(e)}
    body = text(result)
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return {"isError": result.is_error, "body": body}


async def main(mode, binary, args):
    server = StdioServerParameters(command=binary, args=["mcp", *args])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            if mode == "hold":
                taken = await call(session, "weft_next_work", {"waitSeconds": 30})
                print("TAKEN", taken["body"]["work"]["workId"], flush=True)
                await asyncio.sleep(120)
                return
            report = {
                "tools": sorted(t.name for t in tools.tools),
                "schemas": {t.name: t.input_schema for t in tools.tools},
            }
            report["unknownItem"] = await call(
                session, "weft_progress", {"workId": "not-mine", "percent": 5}
            )
            report["badPercent"] = await call(
                session, "weft_progress", {"workId": "not-mine", "percent": 500}
            )
            taken = await call(session, "weft_next_work", {"waitSeconds": 30})
            report["taken"] = taken
            work_id = taken["body"]["work"]["workId"]
            report["progress"] = await call(
                session, "weft_progress", {"workId": work_id, "percent": 50, "message": "halfway"}
            )
            report["submitted"] = await call(
                session,
                "weft_submit",
                {"description": "a sub-task", "capability": "docs", "boundary": "personal"},
            )
            sub_id = report["submitted"]["body"].get("id")
            report["subStatus"] = await call(session, "weft_status", {"workId": sub_id})
            report["fleet"] = await call(session, "weft_status", {})
            report["completed"] = await call(
                session,
                "weft_complete",
                {"workId": work_id, "summary": "done over MCP", "result": "the whole result"},
            )
            report["completedTwice"] = await call(
                session, "weft_complete", {"workId": work_id, "summary": "again"}
            )
            report["nothingMore"] = await call(session, "weft_next_work", {"waitSeconds": 1})
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))

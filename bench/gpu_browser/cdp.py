"""Drive headless Chromium over the DevTools protocol (aiohttp only): open URL, poll a JS expression until it is
truthy or time runs out, print its value. Usage: cdp.py PORT URL EXPR [TIMEOUT_S] [DONE_EXPR]"""

import asyncio
import json
import sys
import time

import aiohttp


async def main(port, url, expr, timeout, done):
    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            try:
                async with s.get(f"http://127.0.0.1:{port}/json") as r:
                    targets = await r.json()
                    break
            except Exception:
                await asyncio.sleep(0.2)
        page = [t for t in targets if t.get("type") == "page"][0]
        async with s.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            n = 0

            async def call(method, **params):
                nonlocal n
                n += 1
                mid = n
                await ws.send_json({"id": mid, "method": method, "params": params})
                while True:
                    m = await ws.receive_json()
                    if m.get("id") == mid:
                        return m
                    if m.get("method") == "Runtime.consoleAPICalled":
                        args = " ".join(str(a.get("value", a.get("description", ""))) for a in m["params"]["args"])
                        if m["params"]["type"] in ("error", "warning"):
                            print("console", m["params"]["type"], args[:300], flush=True)

            await call("Runtime.enable")
            await call("Page.navigate", url=url)
            t0 = time.time()
            while time.time() - t0 < timeout:
                r = await call("Runtime.evaluate", expression=done or expr, returnByValue=True)
                v = r.get("result", {}).get("result", {}).get("value")
                if v:
                    break
                await asyncio.sleep(1)
            r = await call("Runtime.evaluate", expression=expr, returnByValue=True)
            print(
                json.dumps(
                    {"after_s": round(time.time() - t0, 1), "value": r.get("result", {}).get("result", {}).get("value")}
                )
            )


asyncio.run(
    main(
        int(sys.argv[1]),
        sys.argv[2],
        sys.argv[3],
        float(sys.argv[4]) if len(sys.argv) > 4 else 60,
        sys.argv[5] if len(sys.argv) > 5 else None,
    )
)

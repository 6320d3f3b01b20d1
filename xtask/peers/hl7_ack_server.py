"""The peer of `cargo xtask bench mllp`: python-hl7's asyncio MLLP server
answering every message with `create_ack()` and storing nothing.

Prints `port=N` once listening on 127.0.0.1 (port 0 picks a free one) and
serves until killed.
"""

import asyncio
import sys

import hl7
import hl7.mllp


async def answer(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except asyncio.IncompleteReadError:
        if not writer.is_closing():
            writer.close()
            await writer.wait_closed()


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = await hl7.mllp.start_hl7_server(answer, host="127.0.0.1", port=port)
    async with server:
        print(f"port={server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()


asyncio.run(main())

"""python -m bench.floor --body FILE (--port PORT | --uds PATH): the floor the list endpoint is held
to. A bare FastAPI app whose one sync route answers a fixed JSON body (the same bytes vmhost answers,
read once at start), served by uvicorn with the same HTTP implementation and no access log: what any
FastAPI route costs, with no authentication, database or middleware."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response


def make_app(body: bytes) -> FastAPI:
    app = FastAPI()

    @app.get("/floor")
    def floor() -> Response:
        return Response(body, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--body", type=Path, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--uds")
    args = parser.parse_args()
    uvicorn.run(make_app(args.body.read_bytes()), host="127.0.0.1", port=args.port or 0, uds=args.uds, http="h11",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()

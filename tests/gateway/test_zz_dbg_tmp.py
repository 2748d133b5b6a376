import asyncio, sys, time
from iir_dev.datastores import free_port
from tests.gateway.conftest import Fleet, running_gateway

async def test_dbg(fleet: Fleet) -> None:
    t = time.monotonic()
    try:
        async with running_gateway(fleet.settings(auth_addr=f"127.0.0.1:{free_port()}", grpc_timeout_s=0.5)) as gw:
            await gw.client.get("/health")
            print("before exit", time.monotonic() - t, file=sys.stderr)
            async def dump():
                await asyncio.sleep(4)
                for task in asyncio.all_tasks():
                    print("TASK", task.get_name(), file=sys.stderr)
                    try:
                        task.print_stack(file=sys.stderr)
                    except Exception as e:
                        print("cannot", e, file=sys.stderr)
            asyncio.create_task(dump())
            pass
    except KeyError:
        pass
    print("exited", time.monotonic() - t, file=sys.stderr)

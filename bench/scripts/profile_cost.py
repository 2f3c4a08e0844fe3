#!/usr/bin/env python3
"""What a 1 kHz native-stack profile costs the profiled process (issue 25,
docs/performance.md "Native stacks").

Against a running daemon in HOME: starts a `-1` sum over the WebSocket, then
alternates 5-s windows in which `Runtime.profile` samples the sum and 5-s
windows in which it "profiles" an idle process (the sampler runs, no signal
is sent), and prints the sum's reductions per CPU-second of the scheduler
threads (their utime + stime from /proc). Needs Python's `websockets`.

It only reads and asks: it must not change the daemon's settings or kill
anything (the sum it started ends with the daemon).

Usage: profile_cost.py HOME SYSTEM_BINARY [ROUNDS]
"""
import asyncio, json, subprocess, sys, os
home, system = sys.argv[1], sys.argv[2]
def rpc(script):
    out = subprocess.run([system, "--home", home, "rpc", "--json", script], capture_output=True, text=True)
    if out.returncode != 0: raise SystemExit(out.stdout + out.stderr)
    return json.loads(out.stdout)
async def main():
    import websockets
    state = json.load(open(os.path.join(home, "system.json")))
    url = state["url"].replace("http://", "ws://") + "/ws"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "sum", "id": 1, "input": "-1"}))
        pid = None
        while pid is None:
            m = json.loads(await ws.recv())
            if m.get("type") == "sum" and m.get("status") == "calculating": pid = m["pid"]
        idle = rpc('Process.whereis("admin_server")')
        daemon = state["pid"]
        def worker_ticks():
            total = 0
            for tid in os.listdir(f"/proc/{daemon}/task"):
                comm = open(f"/proc/{daemon}/task/{tid}/comm").read().strip()
                if comm.startswith("tokio-rt-worker") or comm.startswith("scheduler"):
                    fields = open(f"/proc/{daemon}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
                    total += int(fields[11]) + int(fields[12])
            return total
        print("threads:", sorted({open(f"/proc/{daemon}/task/{t}/comm").read().strip() for t in os.listdir(f"/proc/{daemon}/task")}))
        for i in range(int(sys.argv[3]) if len(sys.argv) > 3 else 3):
            for kind, target in (("idle", idle), ("profiled", pid)):
                t0 = worker_ticks()
                r = rpc(f'let p = pid("{pid}"); let a = Process.info(p, :reductions); let out = Runtime.profile(pid("{target}"), 5000); let b = Process.info(p, :reductions); #{{reductions: b - a, out: out}}')
                head = (r["out"] or "").split("\n")[0] if isinstance(r["out"], str) else r["out"]
                t1 = worker_ticks()
                cpu = (t1 - t0) / os.sysconf("SC_CLK_TCK")
                print(f"{kind:9} {r['reductions']/cpu/1e6:8.1f} M reductions per scheduler CPU-second ({cpu:.2f} s CPU)  {head}", flush=True)
asyncio.run(main())

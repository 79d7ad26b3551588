// A TCP server and clients for the multi-WAN lab, run inside the lab's namespaces.
// The server answers every line with the address it sees the connection come from:
// behind the Pi's per-uplink masquerading, that address names the uplink.
//
//   server PORT                      listen on PORT
//   split HOST PORT COUNT            COUNT new connections (10 at a time) → {"<address>": n, "failed": n}
//   long HOST PORT SECONDS           one connection, a line every 100 ms → {"first": address} as soon as
//                                    it answers, at the end {"addresses": [...], "sent": n, "answers": n, "error": …}
//   watch HOST PORT SECONDS          a new connection every 100 ms → one JSON line each {"t": ms, "address": … | null}
import { createConnection, createServer, type Socket } from "node:net";

const [mode, ...args] = process.argv.slice(2);

function connectOnce(host: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (address: string | null) => {
      socket.destroy();
      resolve(address);
    };
    socket.setTimeout(timeoutMs, () => done(null));
    socket.on("error", () => done(null));
    let buffer = "";
    socket.on("data", (d) => {
      buffer += d;
      if (buffer.includes("\n")) done(buffer.split("\n")[0]);
    });
    socket.on("connect", () => socket.write("hello\n"));
  });
}

async function split(host: string, port: number, count: number): Promise<void> {
  const tally: Record<string, number> = {};
  for (let i = 0; i < count; i += 10) {
    const batch = await Promise.all(Array.from({ length: Math.min(10, count - i) }, () => connectOnce(host, port, 3000)));
    for (const a of batch) tally[a ?? "failed"] = (tally[a ?? "failed"] ?? 0) + 1;
  }
  console.log(JSON.stringify(tally));
}

function long(host: string, port: number, seconds: number): void {
  const socket: Socket = createConnection({ host, port });
  const addresses = new Set<string>();
  let answers = 0,
    sent = 0,
    error: string | null = null,
    buffer = "";
  const finish = () => {
    clearInterval(ticker);
    // let the last answers arrive
    setTimeout(() => {
      console.log(JSON.stringify({ addresses: [...addresses], sent, answers, error }));
      socket.destroy();
    }, 2000);
  };
  socket.on("data", (d) => {
    buffer += d;
    const lines = buffer.split("\n");
    buffer = lines.pop()!;
    for (const l of lines) {
      if (!answers) console.log(JSON.stringify({ first: l }));
      addresses.add(l);
      answers++;
    }
  });
  socket.on("error", (e) => {
    error = e.message;
  });
  socket.on("close", () => {
    if (!error) error = "closed by the peer";
  });
  const ticker = setInterval(() => {
    if (!socket.destroyed) {
      socket.write(`${sent++}\n`);
    }
  }, 100);
  setTimeout(finish, seconds * 1000);
}

async function watch(host: string, port: number, seconds: number): Promise<void> {
  const start = Date.now();
  while (Date.now() - start < seconds * 1000) {
    const t = Date.now();
    const address = await connectOnce(host, port, 500);
    console.log(JSON.stringify({ t, address }));
    const wait = 100 - (Date.now() - t);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}

if (mode === "server") {
  process.on("uncaughtException", (error) => console.error(`server: ${error.stack}`));
  createServer((socket) => {
    const from = `${socket.remoteAddress?.replace(/^::ffff:/, "")}\n`;
    socket.on("data", (d) => {
      for (const _ of String(d).split("\n").slice(1)) socket.write(from);
    });
    socket.on("error", () => socket.destroy());
  }).listen(Number(args[0]), () => console.log("listening"));
} else if (mode === "split") await split(args[0], Number(args[1]), Number(args[2]));
else if (mode === "long") long(args[0], Number(args[1]), Number(args[2]));
else if (mode === "watch") await watch(args[0], Number(args[1]), Number(args[2]));
else {
  console.error("usage: wan-probe server PORT | split HOST PORT COUNT | long HOST PORT SECONDS | watch HOST PORT SECONDS");
  process.exit(64);
}

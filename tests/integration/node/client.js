// A Node.js client of RT's language-neutral API (protos/rtproto/v1/publisher.proto),
// driven by tests/integration/test_node_client.py. It reads no RT log format: it
// publishes JSON text as RAW payloads through a publisher-agent sidecar, and reads
// decoded messages back from a node.
//
//   node client.js publish HOST:PORT TOPIC COUNT   -> one JSON line: the call's outcome
//   node client.js subscribe HOST:PORT COUNT       -> one JSON line: what it received
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "../../../protos");
const definition = protoLoader.loadSync("rtproto/v1/publisher.proto", {
  includeDirs: [PROTOS],
  longs: String, // positions are uint64: exact as strings
  enums: String,
  defaults: true,
});
const rtproto = grpc.loadPackageDefinition(definition).rtproto.v1;
const BATCH = 500;

function publish(address, topic, count) {
  const client = new rtproto.Publisher(address, grpc.credentials.createInsecure());
  const call = client.Publish();
  let sent = 0;
  let window = 0;
  let durable = 0;
  let replicated = "0";
  const positions = [];
  let stream = "";
  let ended = false;

  function sendWhatTheWindowAllows() {
    while (sent < count && sent < window) {
      const messages = [];
      for (let i = 0; i < BATCH && sent < count && sent < window; i++, sent++) {
        messages.push({ payload: Buffer.from(JSON.stringify({ n: sent, from: "node" })), codec: "RAW" });
      }
      call.write({ batch: { messages } });
    }
    if (sent === count && !ended) {
      ended = true;
      call.end();
    }
  }

  call.on("data", (reply) => {
    if (reply.stream) stream = reply.stream;
    durable = Number(reply.durable);
    replicated = reply.replicated;
    positions.push(...reply.positions);
    window = Number(reply.window);
    sendWhatTheWindowAllows();
  });
  call.on("error", (error) => {
    console.log(JSON.stringify({ error: error.code, details: error.details }));
    process.exit(1);
  });
  call.on("end", () => {
    const last = positions[positions.length - 1];
    const ordered = positions.every((p, i) => i === 0 || BigInt(p) > BigInt(positions[i - 1]));
    console.log(JSON.stringify({ stream, durable, positions: positions.length, ordered, last, replicated }));
    client.close();
  });
  call.write({ open: { topic, origin: "node-client" } });
}

function subscribe(address, count) {
  const client = new rtproto.Subscriber(address, grpc.credentials.createInsecure());
  const call = client.Subscribe({ from: "START" });
  const numbers = [];
  let lastPosition = 0n;
  let ordered = true;
  call.on("data", (reply) => {
    for (const message of reply.messages) {
      const position = BigInt(message.position);
      ordered = ordered && position > lastPosition;
      lastPosition = position;
      if (message.origin === "node-client") numbers.push(JSON.parse(message.payload.toString()).n);
    }
    if (numbers.length >= count) {
      const inOrder = numbers.every((n, i) => n === i);
      console.log(JSON.stringify({ received: numbers.length, inOrder, ordered }));
      call.cancel();
      client.close();
    }
  });
  call.on("error", (error) => {
    if (error.code !== grpc.status.CANCELLED) {
      console.log(JSON.stringify({ error: error.code, details: error.details }));
      process.exit(1);
    }
  });
}

const [mode, address, ...rest] = process.argv.slice(2);
if (mode === "publish") publish(address, rest[0], Number(rest[1]));
else if (mode === "subscribe") subscribe(address, Number(rest[0]));
else {
  console.error("usage: node client.js publish HOST:PORT TOPIC COUNT | subscribe HOST:PORT COUNT");
  process.exit(2);
}

// Shared by the Socket.IO compatibility tests: the herald processes they
// talk to (started by crates/gateway/tests/socketio.rs and named in the
// environment), the test apps' keys (crates/gateway/tests/common/mod.rs),
// and small helpers over stock socket.io-client.
import { io } from "socket.io-client";
import { createHmac } from "node:crypto";
import WebSocket from "ws";

export const URL_A = required("HERALD_URL");
export const URL_B = process.env.HERALD_URL_B;
export const PID_B = process.env.HERALD_PID_B ? Number(process.env.HERALD_PID_B) : undefined;

// The `insforge` test app.
export const API_KEY = "key-insforge";
export const ANON_KEY = "anon_insforge_test_key";
export const ISSUER = "https://insforge.test";
const SECRET = "secret-insforge-test-only-0123456789abcdefghij";
// The `insforge-limited` test app: 1 operation/s, burst 3.
export const LIMITED_API_KEY = "key-insforge-limited";

export const WAIT_MS = 5000;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through cargo nextest (crates/gateway/tests/socketio.rs)`);
  return value;
}

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

// A user JWT as an InsForge app's identity provider issues it: no Herald
// `app` claim, the app's issuer instead.
export function userToken(sub, { ttl = 300, claims = {} } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, iss: ISSUER, role: "authenticated", exp: now + ttl, ...claims });
  const sig = createHmac("sha256", SECRET).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${sig}`;
}

// A connected socket (rejects with the connect_error).
export function connect(url, auth, opts = {}) {
  const socket = io(url, { auth, reconnection: false, forceNew: true, ...opts });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("connect timed out")), WAIT_MS);
    socket.once("connect", () => { clearTimeout(timer); resolve(socket); });
    socket.once("connect_error", (e) => { clearTimeout(timer); socket.close(); reject(e); });
  });
}

// The next `event` on `socket` (its first argument), or a timeout error.
export function next(socket, event, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.off(event, on); reject(new Error(`no ${event} within ${ms} ms`)); }, ms);
    const on = (m) => { clearTimeout(timer); resolve(m); };
    socket.once(event, on);
  });
}

// Every `event` on `socket`, collected until read.
export function collect(socket, event) {
  const seen = [];
  socket.on(event, (m) => seen.push(m));
  return seen;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(check, ms = WAIT_MS) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return;
    await sleep(20);
  }
  throw new Error(`condition not met within ${ms} ms: ${check}`);
}

export function subscribe(socket, channel, extra = {}) {
  return socket.timeout(WAIT_MS).emitWithAck("realtime:subscribe", { channel, ...extra });
}

export function publish(socket, channel, event, payload) {
  return socket.timeout(WAIT_MS).emitWithAck("realtime:publish", { channel, event, payload });
}

// The server API's publishGlobal.
export async function publishGlobal(url, channel, event, payload, apiKey = API_KEY) {
  const res = await fetch(`${url}/api/v1/publish/global`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": apiKey },
    body: JSON.stringify({ channel, event, payload }),
  });
  return { status: res.status, body: await res.json() };
}

// A native /v1/ws client (docs/protocol.md), for the meeting of surfaces.
export async function native(url, query) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/v1/ws?${query}`);
  const frames = [];
  const waiters = [];
  ws.on("message", (data) => {
    const frame = JSON.parse(data.toString());
    frames.push(frame);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise((resolve, reject) => { ws.once("open", resolve); ws.once("error", reject); });
  let id = 0;
  const waitFor = async (match) => {
    const end = Date.now() + WAIT_MS;
    for (;;) {
      const i = frames.findIndex(match);
      if (i >= 0) return frames.splice(i, 1)[0];
      if (Date.now() > end) throw new Error("native frame did not come");
      await new Promise((r) => { waiters.push(r); setTimeout(r, 50); });
    }
  };
  return {
    ws,
    frames,
    waitFor,
    async request(frame) {
      const mine = ++id;
      ws.send(JSON.stringify({ ...frame, id: mine }));
      return waitFor((f) => f.type === "reply" && f.id === mine);
    },
    close() { ws.close(); },
  };
}

// The admin API (/api/realtime/...), with the app's API key.
export async function admin(url, method, path, body) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { "content-type": "application/json", "x-api-key": API_KEY },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

// Stock socket.io-client and @insforge/sdk against one embedded herald:
// the InsForge Realtime contract (docs/insforge.md), and each weakness of
// the original that Herald must not have (../shared/design/insforge.md).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "@insforge/sdk";
import WebSocket from "ws";
import {
  URL_A, API_KEY, ANON_KEY, LIMITED_API_KEY, connect, next, collect, sleep, until,
  subscribe, publish, publishGlobal, native, userToken, admin,
} from "./lib.mjs";

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

for (const transports of [["polling", "websocket"], ["websocket"], ["polling"]]) {
  test(`subscribe, publish and receive over ${transports.join("+")}`, async () => {
    const opts = { transports, upgrade: transports.length > 1 };
    const a = await connect(URL_A, { token: ANON_KEY }, opts);
    const b = await connect(URL_A, { apiKey: API_KEY }, opts);
    try {
      const channel = `order:${transports.join("-")}`;
      const subA = await subscribe(a, channel);
      assert.equal(subA.ok, true);
      assert.equal(subA.channel, channel);
      // The members always include the subscriber itself.
      assert.deepEqual(subA.presence.members.map((m) => m.presenceId), [a.id]);
      assert.match(subA.presence.members[0].joinedAt, ISO);

      const joined = next(a, "presence:join");
      const subB = await subscribe(b, channel);
      assert.equal(subB.presence.members.length, 2);
      const join = await joined;
      assert.equal(join.member.presenceId, b.id);
      assert.equal(join.meta.channel, channel);

      // Subscribing again is idempotent: a fresh list, no second join.
      const joinsAtB = collect(b, "presence:join");
      const again = await subscribe(a, channel);
      assert.equal(again.ok, true);
      assert.equal(again.presence.members.length, 2);
      await sleep(100);
      assert.equal(joinsAtB.length, 0, "a repeated subscribe announced a second join");

      const gotA = next(a, "created");
      const gotB = next(b, "created");
      const ack = await publish(b, channel, "created", { id: 7, nested: { x: [1, 2] } });
      assert.equal(ack.ok, true);
      assert.ok(ack.messageId);
      for (const message of [await gotA, await gotB]) {
        // The payload flattened, with meta added; the publisher gets its own.
        assert.equal(message.id, 7);
        assert.deepEqual(message.nested, { x: [1, 2] });
        assert.equal(message.meta.channel, `realtime:${channel}`);
        assert.equal(message.meta.messageId, ack.messageId);
        assert.equal(message.meta.senderType, "system");
        assert.match(message.meta.timestamp, ISO);
      }
      // A payload that is not an object arrives as {value}.
      const wrapped = next(b, "count");
      await publish(a, channel, "count", 5);
      const w = await wrapped;
      assert.equal(w.value, 5);
      assert.equal(w.meta.senderType, "user");
      assert.equal(w.meta.senderId, undefined);

      if (transports.includes("websocket") && transports.length > 1) {
        await until(() => a.io.engine.transport.name === "websocket");
      }
    } finally {
      a.close();
      b.close();
    }
  });
}

test("a user JWT from the app's own identity provider: presence by sub, one member per user", async () => {
  const token = userToken("user-42");
  const one = await connect(URL_A, { token });
  const two = await connect(URL_A, { token });
  const watcher = await connect(URL_A, { apiKey: API_KEY });
  try {
    await subscribe(watcher, "chat:users");
    const joins = collect(watcher, "presence:join");
    const leaves = collect(watcher, "presence:leave");
    const first = await subscribe(one, "chat:users");
    assert.ok(first.presence.members.some((m) => m.presenceId === "user-42" && m.type === "user"));
    await subscribe(two, "chat:users");
    const got = next(watcher, "hello");
    await publish(one, "chat:users", "hello", { hi: 1 });
    const message = await got;
    assert.equal(message.meta.senderType, "user");
    assert.equal(message.meta.senderId, "user-42");
    await until(() => joins.length === 1);
    one.close();
    await sleep(300);
    assert.equal(leaves.length, 0, "the user still has a socket");
    two.close();
    await until(() => leaves.length === 1);
    assert.equal(leaves[0].member.presenceId, "user-42");
    assert.equal(joins.length, 1);
  } finally {
    one.close();
    two.close();
    watcher.close();
  }
});

test("refused handshakes say why in connect_error's data.code", async () => {
  const refusal = async (auth) => {
    const e = await connect(URL_A, auth).then(
      (s) => { s.close(); throw new Error("connected"); },
      (e) => e,
    );
    return e;
  };
  let e = await refusal({});
  assert.equal(e.data.code, "UNAUTHORIZED");
  assert.ok(e.message.length > 0);
  e = await refusal({ token: "anon_not_a_key" });
  assert.equal(e.data.code, "UNAUTHORIZED");
  e = await refusal({ apiKey: "wrong" });
  assert.equal(e.data.code, "UNAUTHORIZED");
  e = await refusal({ token: userToken("u", { ttl: -10 }) });
  assert.equal(e.data.code, "TOKEN_EXPIRED");
  e = await refusal({ token: "not.a.jwt" });
  assert.equal(e.data.code, "INVALID_TOKEN");
});

for (const transports of [["websocket"], ["polling"]]) {
  test(`a JWT's expiry ends the socket (${transports})`, async () => {
    const socket = await connect(URL_A, { token: userToken("short", { ttl: 2 }) }, { transports });
    try {
      const error = next(socket, "realtime:error", 6000);
      const gone = next(socket, "disconnect", 6000);
      assert.equal((await error).code, "TOKEN_EXPIRED");
      assert.equal(await gone, "io server disconnect");
    } finally {
      socket.close();
    }
  });
}

test("Socket.IO, native /v1/ws and the server API meet on the app's global channel", async () => {
  const sio = await connect(URL_A, { token: ANON_KEY });
  const ws = await native(URL_A, `apiKey=${API_KEY}`);
  try {
    assert.equal((await subscribe(sio, "order:meet")).ok, true);
    const reply = await ws.request({ type: "subscribe", channel: "order:meet", global: true });
    assert.equal(reply.ok, true, JSON.stringify(reply));

    // Socket.IO -> native.
    await publish(sio, "order:meet", "from-sio", { n: 1 });
    const event = await ws.waitFor((f) => f.type === "event" && f.event === "from-sio");
    assert.deepEqual(event.payload, { n: 1 });
    assert.equal(event.global, true);

    // native -> Socket.IO.
    const fromNative = next(sio, "from-native");
    const published = await ws.request({
      type: "publish", channel: "order:meet", global: true, event: "from-native", payload: { n: 2 },
    });
    assert.equal(published.ok, true);
    const m = await fromNative;
    assert.equal(m.n, 2);
    assert.equal(m.meta.messageId, published.eventId);

    // Server API -> both.
    const fromApi = next(sio, "from-api");
    const res = await publishGlobal(URL_A, "order:meet", "from-api", { n: 3 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal((await fromApi).n, 3);
    await ws.waitFor((f) => f.type === "event" && f.event === "from-api");
  } finally {
    sio.close();
    ws.close();
  }
});

test("@insforge/sdk's realtime module works unchanged", async () => {
  const client = createClient({ baseUrl: URL_A, anonKey: ANON_KEY });
  const other = createClient({ baseUrl: URL_A, anonKey: ANON_KEY });
  try {
    await client.realtime.connect();
    assert.equal(client.realtime.isConnected, true);
    const sub = await client.realtime.subscribe("room:sdk");
    assert.equal(sub.ok, true, JSON.stringify(sub));
    assert.deepEqual(sub.presence.members.map((m) => m.presenceId), [client.realtime.socketId]);

    const received = [];
    client.realtime.on("said", (m) => received.push(m));
    await other.realtime.connect();
    assert.equal((await other.realtime.subscribe("room:sdk")).ok, true);
    // The SDK tracks presence from presence:join (keyed by meta.channel).
    await until(() => client.realtime.getPresenceState("room:sdk").length === 2);
    await other.realtime.publish("room:sdk", "said", { text: "hi" });
    await until(() => received.length === 1);
    assert.equal(received[0].text, "hi");
    assert.equal(received[0].meta.channel, "realtime:room:sdk");

    const errors = [];
    client.realtime.on("error", (e) => errors.push(e));
    await client.realtime.publish("room:not-subscribed", "said", {});
    await until(() => errors.length === 1);
    assert.equal(errors[0].code, "REALTIME_NOT_SUBSCRIBED");

    other.realtime.disconnect();
    await until(() => client.realtime.getPresenceState("room:sdk").length === 1);
    const undefinedChannel = await client.realtime.subscribe("nowhere:1");
    assert.equal(undefinedChannel.ok, false);
    assert.equal(undefinedChannel.error.code, "REALTIME_CHANNEL_NOT_FOUND");
  } finally {
    client.realtime.disconnect();
    other.realtime.disconnect();
  }
});

// Weakness 2: no ordering, no replay after a disconnect.
test("messages arrive in order and a resubscribe with since recovers what was missed", async () => {
  const s = await connect(URL_A, { token: ANON_KEY });
  const publisher = await connect(URL_A, { apiKey: API_KEY });
  try {
    await subscribe(s, "order:replay");
    await subscribe(publisher, "order:replay");
    const seen = collect(s, "n");
    for (let i = 0; i < 50; i++) publisher.emit("realtime:publish", { channel: "order:replay", event: "n", payload: { i } });
    await until(() => seen.length === 50);
    assert.deepEqual(seen.map((m) => m.i), [...Array(50).keys()]);
    const last = seen[49].meta;

    s.emit("realtime:unsubscribe", { channel: "order:replay" });
    await sleep(100);
    for (let i = 50; i < 55; i++) await publish(publisher, "order:replay", "n", { i });
    const back = await subscribe(s, "order:replay", { since: { epoch: last.epoch, offset: last.offset } });
    assert.equal(back.ok, true);
    assert.equal(back.recovered, true);
    assert.deepEqual(back.publications.map((p) => p.message.i), [50, 51, 52, 53, 54]);
    assert.equal(back.publications[0].event, "n");

    const unknown = await subscribe(s, "order:replay", { since: { epoch: "other-epoch", offset: 1 } });
    assert.equal(unknown.recovered, false);
  } finally {
    s.close();
    publisher.close();
  }
});

// Weakness 3: reserved names could be spoofed.
test("reserved and unknown event names are refused with REALTIME_INVALID_EVENT", async () => {
  const s = await connect(URL_A, { token: ANON_KEY });
  const peer = await connect(URL_A, { token: ANON_KEY });
  try {
    await subscribe(s, "order:reserved");
    await subscribe(peer, "order:reserved");
    const spoofed = collect(peer, "presence:join");
    for (const event of ["presence:join", "presence:leave", "realtime:error", "notification",
      "connect", "disconnect", "disconnecting", "connect_error", "newListener", "removeListener"]) {
      const ack = await publish(s, "order:reserved", event, { fake: true });
      assert.equal(ack.ok, false, event);
      assert.equal(ack.error.code, "REALTIME_INVALID_EVENT", event);
    }
    const ack = await s.timeout(5000).emitWithAck("made-up", {});
    assert.equal(ack.error.code, "REALTIME_INVALID_EVENT");
    await sleep(200);
    assert.equal(spoofed.length, 0);
  } finally {
    s.close();
    peer.close();
  }
});

// Weakness 4 (payloads unvalidated, no size or rate limit) and weakness 7
// (failures share one code; no publish ack).
test("bad requests get their own code and the socket keeps working", async () => {
  const s = await connect(URL_A, { token: ANON_KEY });
  try {
    await subscribe(s, "order:bad");
    const code = async (event, ...args) => (await s.timeout(5000).emitWithAck(event, ...args)).error?.code;
    assert.equal(await code("realtime:publish", { channel: "order:bad", event: "x" }), "REALTIME_INVALID_CHANNEL_REQUEST");
    assert.equal(await code("realtime:publish", "just a string"), "REALTIME_INVALID_CHANNEL_REQUEST");
    assert.equal(await code("realtime:publish"), "REALTIME_INVALID_CHANNEL_REQUEST");
    assert.equal(await code("realtime:subscribe", { channel: 42 }), "REALTIME_INVALID_CHANNEL_REQUEST");
    assert.equal(await code("realtime:subscribe", {}), "REALTIME_INVALID_CHANNEL_REQUEST");
    assert.equal(await code("realtime:publish", { channel: "order:other", event: "x", payload: {} }), "REALTIME_NOT_SUBSCRIBED");
    assert.equal(await code("realtime:subscribe", { channel: "undefined:1" }), "REALTIME_CHANNEL_NOT_FOUND");
    assert.equal(await code("realtime:subscribe", { channel: "closed" }), "REALTIME_CHANNEL_NOT_FOUND");
    assert.equal(await code("realtime:subscribe", { channel: "order:" + "x".repeat(300) }), "REALTIME_INVALID_CHANNEL_REQUEST");
    const big = { blob: "x".repeat(70 * 1024) };
    assert.equal(await code("realtime:publish", { channel: "order:bad", event: "x", payload: big }), "PAYLOAD_TOO_LARGE");
    // A failed publish without an ack callback is still told.
    const told = next(s, "realtime:error");
    s.emit("realtime:publish", { channel: "order:bad", event: "x" });
    assert.equal((await told).code, "REALTIME_INVALID_CHANNEL_REQUEST");
    // Still working.
    const ok = await publish(s, "order:bad", "fine", { ok: 1 });
    assert.equal(ok.ok, true);
  } finally {
    s.close();
  }
});

test("the app's rate limit applies: RATE_LIMIT_EXCEEDED, and a rate-limited re-subscribe keeps the working subscription", async () => {
  const s = await connect(URL_A, { apiKey: LIMITED_API_KEY });
  try {
    // Burst 3: subscribe, then two publishes use it up.
    assert.equal((await subscribe(s, "limited:1")).ok, true);
    const seen = collect(s, "m");
    assert.equal((await publish(s, "limited:1", "m", { n: 1 })).ok, true);
    assert.equal((await publish(s, "limited:1", "m", { n: 2 })).ok, true);
    const refused = await subscribe(s, "limited:1");
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, "RATE_LIMIT_EXCEEDED");
    await until(() => seen.length === 2);
    // "Not now" is no denial: the subscription the socket had still
    // delivers (a denied re-subscribe ends it: see the definitions test).
    await sleep(1100);
    const res = await publishGlobal(URL_A, "limited:1", "m", { n: 3 }, LIMITED_API_KEY);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await until(() => seen.length === 3);
  } finally {
    s.close();
  }
});

for (const transports of [["websocket"], ["polling"]]) {
  test(`a flooding socket is told once, then disconnected (${transports})`, async () => {
    const url = process.env.HERALD_URL_FLOOD;
    assert.ok(url, "HERALD_URL_FLOOD is not set");
    const s = await connect(url, { token: ANON_KEY }, { transports });
    try {
      const errors = collect(s, "realtime:error");
      const gone = next(s, "disconnect");
      await subscribe(s, "order:flood");
      // Burst 5 at 5/s: the first few pass, the next is refused and told,
      // later ones are dropped, and 20 refused in a row end the connection.
      for (let i = 0; i < 60; i++) s.emit("realtime:publish", { channel: "order:flood", event: "x", payload: { i } });
      assert.equal(await gone, "transport close");
      assert.equal(errors.filter((e) => e.code === "RATE_LIMIT_EXCEEDED").length, 1);
    } finally {
      s.close();
    }
  });
}

// Weakness 6: a disabled channel kept its existing subscribers.
test("definitions made over the admin API open channels, and disabling or deleting one unsubscribes its sockets", async () => {
  const s = await connect(URL_A, { token: ANON_KEY });
  try {
    assert.equal((await subscribe(s, "live:1")).error.code, "REALTIME_CHANNEL_NOT_FOUND");
    const created = await admin(URL_A, "POST", "/api/realtime/channels", { pattern: "live:%" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal((await subscribe(s, "live:1")).ok, true);
    const seen = collect(s, "tick");
    await publishGlobal(URL_A, "live:1", "tick", { n: 1 });
    await until(() => seen.length === 1);

    const lost = next(s, "realtime:error", 2000);
    const disabled = await admin(URL_A, "PUT", `/api/realtime/channels/${created.body.id}`, { enabled: false });
    assert.equal(disabled.status, 200);
    const e = await lost;
    assert.equal(e.code, "REALTIME_CHANNEL_NOT_FOUND");
    assert.equal(e.channel, "live:1");
    await publishGlobal(URL_A, "live:1", "tick", { n: 2 });
    await sleep(300);
    assert.equal(seen.length, 1, "no delivery after the definition was disabled");
    assert.equal((await subscribe(s, "live:1")).error.code, "REALTIME_CHANNEL_NOT_FOUND");

    await admin(URL_A, "PUT", `/api/realtime/channels/${created.body.id}`, { enabled: true });
    assert.equal((await subscribe(s, "live:1")).ok, true);
    const gone = next(s, "realtime:error", 2000);
    const deleted = await admin(URL_A, "DELETE", `/api/realtime/channels/${created.body.id}`);
    assert.deepEqual(deleted.body, { message: "Channel deleted" });
    assert.equal((await gone).code, "REALTIME_CHANNEL_NOT_FOUND");
  } finally {
    s.close();
  }
});

test("Engine.IO heartbeats: a client that answers pings stays, one that does not is dropped", async () => {
  const url = process.env.HERALD_URL_FLOOD; // pings every second; a client silent 6 s is gone
  const stays = async (transports) => {
    const s = await connect(url, { token: ANON_KEY }, { transports });
    try {
      await sleep(8000);
      assert.equal(s.connected, true, `${transports}: still connected after 8 pings`);
      assert.equal((await subscribe(s, "order:alive")).ok, true);
    } finally {
      s.close();
    }
  };
  // A raw WebSocket client that connects and then never answers `2`.
  const silent = async () => {
    const ws = new WebSocket(`${url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
    const frames = [];
    ws.on("message", (d) => {
      const text = d.toString();
      frames.push(text);
      if (text.startsWith("0")) ws.send(`40${JSON.stringify({ token: ANON_KEY })}`);
    });
    const closed = new Promise((resolve) => ws.on("close", resolve));
    const started = Date.now();
    await Promise.race([closed, sleep(15000)]);
    assert.equal(ws.readyState, WebSocket.CLOSED, "dropped after missing its pongs");
    assert.ok(frames.some((f) => f.startsWith("40{")), JSON.stringify(frames));
    assert.ok(frames.filter((f) => f === "2").length >= 2, JSON.stringify(frames));
    console.log(`silent client dropped after ${Date.now() - started} ms`);
  };
  await Promise.all([stays(["websocket"]), stays(["polling"]), silent()]);
});

// Permissions: policies by role and condition, on the Socket.IO surface.
test("permission policies allow and deny subscribe and publish by role and condition", async () => {
  const def = await admin(URL_A, "POST", "/api/realtime/channels", { pattern: "desk:%" });
  assert.equal(def.status, 201, JSON.stringify(def.body));
  const anon = await connect(URL_A, { token: ANON_KEY });
  const user = await connect(URL_A, { token: userToken("ann") });
  const other = await connect(URL_A, { token: userToken("bob") });
  const backend = await connect(URL_A, { apiKey: API_KEY });
  const made = [];
  const policy = async (body) => {
    const r = await admin(URL_A, "POST", "/api/realtime/permissions", body);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    made.push(`${body.command}/${encodeURIComponent(body.policyName)}`);
  };
  try {
    const bad = await admin(URL_A, "POST", "/api/realtime/permissions", { command: "publish", policyName: "bad", condition: "message.payload.(" });
    assert.equal(bad.status, 400);
    assert.match(bad.body.message, /^condition: 1:\d+: /);

    await policy({ command: "subscribe", policyName: "own desk", roles: ["authenticated"], condition: "channel.name == 'desk:' + user.sub" });
    await policy({ command: "publish", policyName: "polite", roles: ["authenticated", "anon"], condition: "message.payload.text != 'rude'" });

    assert.equal((await subscribe(user, "desk:ann")).ok, true);
    const refused = await subscribe(other, "desk:ann");
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, "REALTIME_UNAUTHORIZED");
    assert.equal((await subscribe(anon, "desk:ann")).error.code, "REALTIME_UNAUTHORIZED");
    assert.equal((await subscribe(backend, "desk:ann")).ok, true, "API-key sockets bypass policies");

    const seen = collect(user, "note");
    assert.equal((await publish(user, "desk:ann", "note", { text: "hello" })).ok, true);
    const rude = await publish(user, "desk:ann", "note", { text: "rude" });
    assert.equal(rude.ok, false);
    assert.equal(rude.error.code, "REALTIME_UNAUTHORIZED");
    await until(() => seen.length === 1);
    await sleep(200);
    assert.equal(seen.length, 1, "the refused message was not delivered");

    const list = await admin(URL_A, "GET", "/api/realtime/permissions");
    assert.equal(list.body.subscribe.policies[0].tableName, "channels");
    assert.equal(list.body.publish.policies[0].command, "INSERT");

    // A policy change reaches sockets already subscribed: when the only
    // subscribe policy becomes admins-only, ann's subscription ends.
    const lost = next(user, "realtime:error", 3000);
    await policy({ command: "subscribe", policyName: "admins", roles: ["project_admin"] });
    const removed = await admin(URL_A, "DELETE", "/api/realtime/permissions/subscribe/own%20desk");
    assert.equal(removed.status, 200);
    made.splice(made.indexOf("subscribe/own%20desk"), 1);
    const e = await lost;
    assert.equal(e.code, "REALTIME_UNAUTHORIZED");
    assert.equal(e.channel, "desk:ann");
    await publishGlobal(URL_A, "desk:ann", "note", { text: "after" });
    await sleep(300);
    assert.equal(seen.length, 1, "nothing more after the policy change");
  } finally {
    for (const m of made) await admin(URL_A, "DELETE", `/api/realtime/permissions/${m}`);
    await admin(URL_A, "DELETE", `/api/realtime/channels/${def.body.id}`);
    for (const s of [anon, user, other, backend]) s.close();
  }
});

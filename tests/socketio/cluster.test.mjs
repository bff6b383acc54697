// Two herald gateways over one Redis (weakness 1 of the original: single
// node only). Gateway B's pid is given so the last test can kill it.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  URL_A, URL_B, PID_B, API_KEY, ANON_KEY, connect, next, collect, sleep, until,
  subscribe, publish, userToken, admin,
} from "./lib.mjs";

assert.ok(URL_B, "HERALD_URL_B is not set");

test("a subscriber on gateway B gets a publish made on gateway A, over both transports", async () => {
  const onB = await connect(URL_B, { token: ANON_KEY }, { transports: ["polling"] });
  const onA = await connect(URL_A, { apiKey: API_KEY });
  try {
    await subscribe(onB, "order:cross");
    await subscribe(onA, "order:cross");
    const got = next(onB, "shipped");
    const ack = await publish(onA, "order:cross", "shipped", { id: 9 });
    const m = await got;
    assert.equal(m.id, 9);
    assert.equal(m.meta.messageId, ack.messageId);
  } finally {
    onB.close();
    onA.close();
  }
});

test("a user with sockets on both gateways joins once and leaves once", async () => {
  const watcher = await connect(URL_A, { apiKey: API_KEY });
  const token = userToken("both-gateways");
  let onA, onB;
  try {
    await subscribe(watcher, "chat:cluster");
    const joins = collect(watcher, "presence:join");
    const leaves = collect(watcher, "presence:leave");
    onA = await connect(URL_A, { token });
    onB = await connect(URL_B, { token });
    await subscribe(onA, "chat:cluster");
    const second = await subscribe(onB, "chat:cluster");
    // Gateway B sees the member gateway A added: one member, not two.
    assert.equal(second.presence.members.filter((m) => m.presenceId === "both-gateways").length, 1);
    await until(() => joins.length === 1);
    onA.close();
    await sleep(500);
    assert.equal(leaves.length, 0, "the user is still on gateway B");
    onB.close();
    await until(() => leaves.length === 1);
    assert.equal(leaves[0].member.presenceId, "both-gateways");
    await sleep(300);
    assert.equal(joins.length, 1);
    assert.equal(leaves.length, 1);
  } finally {
    watcher.close();
    onA?.close();
    onB?.close();
  }
});

test("a definition changed on gateway A takes effect on gateway B by its next poll of PostgreSQL", async () => {
  const onB = await connect(URL_B, { token: ANON_KEY });
  try {
    assert.equal((await subscribe(onB, "shared:1")).error.code, "REALTIME_CHANNEL_NOT_FOUND");
    const created = await admin(URL_A, "POST", "/api/realtime/channels", { pattern: "shared:%" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const made = Date.now();
    // Gateway B sees it by its next poll of the database.
    let ack;
    do {
      ack = await subscribe(onB, "shared:1");
      if (!ack.ok) await sleep(20);
    } while (!ack.ok && Date.now() - made < 3000);
    assert.equal(ack.ok, true);
    // Gateways poll every 500 ms; the bound here is loose so a loaded CI
    // machine does not fail it (the figure is printed).
    console.log(`definition visible on gateway B after ${Date.now() - made} ms`);
    // B lists what A made: one database.
    const listed = await admin(URL_B, "GET", "/api/realtime/channels");
    assert.ok(listed.body.some((d) => d.id === created.body.id));

    const lost = next(onB, "realtime:error", 3000);
    const disabledAt = Date.now();
    await admin(URL_A, "PUT", `/api/realtime/channels/${created.body.id}`, { enabled: false });
    const e = await lost;
    assert.equal(e.code, "REALTIME_CHANNEL_NOT_FOUND");
    console.log(`subscriber on gateway B unsubscribed ${Date.now() - disabledAt} ms after the change`);
  } finally {
    onB.close();
  }
});

test("a killed gateway's members leave", async () => {
  assert.ok(PID_B, "HERALD_PID_B is not set");
  const watcher = await connect(URL_A, { apiKey: API_KEY });
  const victim = await connect(URL_B, { token: userToken("on-the-dead-gateway") });
  try {
    await subscribe(watcher, "chat:death");
    await subscribe(victim, "chat:death");
    const left = next(watcher, "presence:leave", 30000);
    process.kill(PID_B, "SIGKILL");
    const leave = await left;
    assert.equal(leave.member.presenceId, "on-the-dead-gateway");
  } finally {
    watcher.close();
    victim.close();
  }
});

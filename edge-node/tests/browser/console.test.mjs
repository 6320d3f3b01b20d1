// The fleet console in a real browser: a real hms-cloud (fleet channel on
// its embedded MQTT broker, EMPI) and a real hms-edge (the demo hospital,
// syncing to that cloud and reporting on that broker). Sign-in with an operator token,
// the fleet table as the registry says (state, filter, sort, refreshing by
// itself), a node's page with a signed command sent from the page and its
// result, the hospital's census and ADT charts from the synced events, DR
// status, the EMPI review queue with per-field explanations and a decision,
// scopes, a SIGKILLed appliance shown offline, axe on every page,
// screenshots.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { Edge, Cloud, CONFIG, repo, cli, cloudCli, configCli, browser, axe, shot, until } from "./harness.mjs";

const HOSPITAL = "demo-general";
const NODE = `edge-console-${process.pid}`;

let cloud, edge, chrome, ops, reader;

async function noAxeViolations(page, what) {
  const v = await axe(page);
  assert.deepEqual(v, [], `${what}: ${JSON.stringify(v, null, 1)}`);
}

/** Now as HL7 writes it (UTC, to the second, with its offset: the demo
 * hospital's own zone is Europe/Warsaw), and its UTC day: the ADT volumes are
 * counted by the day of the event, so the admissions are today's. */
const HL7_UTC = new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14);
const HL7_NOW = `${HL7_UTC}+0000`;
const TODAY = `${HL7_UTC.slice(0, 4)}-${HL7_UTC.slice(4, 6)}-${HL7_UTC.slice(6, 8)}`;

/** An ADT^A01 into `bed` of the demo hospital, now. */
// Three different people (one hospital's MRNs are three people to the
// regional EMPI, so they must not look alike).
const PEOPLE = [["Berg", "Alva", "19700101"], ["Lund", "Signe", "19650505"], ["Holm", "Maja", "19801212"]];

function admit(control, mrn, bed, visit, who = 0) {
  const [unit, room, b] = bed.split("-");
  const [family, given, born] = PEOPLE[who];
  return [
    `MSH|^~\\&|ADT|DGH|HMS|EDGE|${HL7_NOW}||ADT^A01^ADT_A01|${control}|P|2.5.1`,
    `EVN|A01|${HL7_NOW}`,
    `PID|1||${mrn}^^^DGH^MR||${family}^${given}||${born}|F`,
    `PV1|1|I|${unit}^${room}^${b}^DGH||||||||||||||||${visit}`,
  ].join("\n");
}

/** A TCP port free at the moment (for the embedded broker, which takes no port 0). */
async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

let BROKER;

before(async () => {
  const port = await freePort();
  BROKER = `mqtt://127.0.0.1:${port}`;
  cloud = new Cloud(
    `region = "eu-west"\nlisten = "127.0.0.1:0"\ndata_dir = "data"\nempi = true\n\n` +
    `[fleet]\nembedded = true\nlisten = "127.0.0.1:${port}"\nkey_file = "fleet.pk8"\n`,
  ).write();
  cloudCli("fleet", "keygen", "--out", join(cloud.dir, "fleet.pk8"));
  configCli("keygen", "--out", join(cloud.dir, "bundle.pk8"));
  ops = cloud.token("ops", "admin");
  reader = cloud.token("analyst", "read");
  await cloud.start();

  // The appliance: the demo hospital under a node id of this run, syncing
  // to this cloud and reporting on the same broker.
  edge = new Edge();
  cli("sync", "keygen", "--data-dir", edge.data);
  const pub = readFileSync(join(edge.data, "sync-key.pub")).toString("base64");
  const enrolled = await cloud.api(ops, "POST", "/api/v1/hospitals", { hospital: HOSPITAL, region: "eu-west", node: NODE, public_key: pub });
  assert.equal(enrolled.status, 201, JSON.stringify(enrolled.body));
  const demo = readFileSync(CONFIG, "utf8")
    .replace('node_id = "edge-1"', `node_id = "${NODE}"`)
    .replace('models = "../models"', `models = "${join(repo, "models")}"`);
  edge.config = join(edge.dir, "edge.toml");
  writeFileSync(edge.config, `${demo}\n[uplink]\ncloud = "${cloud.url}"\n\n[fleet]\nbroker = "${BROKER}"\ncommand_key = "${join(cloud.dir, "fleet.pk8.pub")}"\nkeepalive_s = 5\ntelemetry_s = 5\n\n[bundles]\ntrusted_keys = ["${join(cloud.dir, "bundle.pk8.pub")}"]\nprobation_s = 5\n`);
  await edge.start();
  for (const [i, bed] of ["3W-301-A", "3W-302-A", "4E-401-A"].entries()) {
    const ack = await edge.hl7(admit(`C-${i}`, `MRN-C${i}`, bed, `V-C${i}`, i));
    assert.match(ack, /MSA\|AA\|/, ack);
  }
  // Two review tasks in the regional EMPI: records of two sources that
  // share a given name and nearly a birth date (between the review and
  // link thresholds).
  for (const [src, id, given, family, born] of [
    ["hosp-d", "I1", "Ingrid", "Holmberg", "1933-07-07"],
    ["hosp-e", "I2", "Ingrid", "Wallin", "1933-07-17"],
    ["hosp-d", "K1", "Astrid", "Lindell", "1931-04-04"],
    ["hosp-e", "K2", "Astrid", "Fors", "1931-04-14"],
  ]) {
    const r = await cloud.api(ops, "POST", "/api/v1/empi/records", { source: src, local_id: id, given_name: given, family_name: family, birth_date: born });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  const reviews = await cloud.api(ops, "GET", "/api/v1/empi/reviews");
  assert.equal(reviews.body.reviews.length, 2, JSON.stringify(reviews.body));
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await edge?.stop();
  await cloud?.stop();
});

async function signedIn(token, viewport = { width: 1400, height: 1000 }) {
  const ctx = await chrome.newContext({ viewport });
  const page = await ctx.newPage();
  await page.goto(cloud.url + "/console/login");
  await page.fill("#token", token);
  await page.click("form button[type=submit]");
  return { ctx, page };
}

test("sign-in: a bad token is refused with a message; a good one opens the fleet", async () => {
  const ctx = await chrome.newContext();
  const page = await ctx.newPage();
  const r = await page.goto(cloud.url + "/console");
  assert.equal(new URL(page.url()).pathname, "/console/login", "not signed in: to the sign-in page");
  assert.equal(r.status(), 200);
  await noAxeViolations(page, "console sign-in");
  await shot(page, "console-login");
  await page.fill("#token", "not-a-token");
  const [resp] = await Promise.all([page.waitForResponse((x) => x.request().method() === "POST"), page.click("form button[type=submit]")]);
  assert.equal(resp.status(), 401);
  assert.match(await page.textContent("#login-error"), /not valid/);
  const cookie = resp.headers()["set-cookie"];
  assert.equal(cookie, undefined, "no session for a bad token");
  await ctx.close();
});

test("the fleet table: the appliance as the registry has it, filtered and sorted; a reader without the fleet scope is refused", async () => {
  const { ctx, page } = await signedIn(ops);
  await page.waitForURL(cloud.url + "/console");
  const row = `tr[data-node="${HOSPITAL}/${NODE}"]`;
  // Wait until the appliance reported online (the page refreshes itself).
  await page.waitForSelector(`${row}[data-state="online"]`, { timeout: 20000 });
  const api = await cloud.api(ops, "GET", "/api/v1/fleet");
  const mine = api.body.nodes.find((n) => n.node === NODE);
  assert.equal(mine.online, true);
  assert.match(await page.textContent(`${row} td:nth-child(4)`), new RegExp(mine.version.replace(/\./g, "\\.")));
  assert.equal(await page.textContent(".broker"), "connected");
  await noAxeViolations(page, "fleet table");
  await shot(page, "console-fleet");

  // Filter: the offline view does not list it; sort by lag marks the column.
  await page.selectOption("#state", "offline");
  await page.click("form.filter button[type=submit]");
  await page.waitForURL(/state=offline/);
  assert.equal(await page.locator(row).count(), 0);
  await page.goto(cloud.url + "/console?state=all");
  await page.click("th a[data-key=sort-lag]");
  await page.waitForURL(/sort=lag&dir=asc/);
  assert.equal(await page.getAttribute("th[aria-sort]", "aria-sort"), "ascending");
  await page.click("th a[data-key=sort-lag]");
  await page.waitForURL(/sort=lag&dir=desc/);
  assert.equal(await page.getAttribute("th[aria-sort]", "aria-sort"), "descending");
  const bad = await page.goto(cloud.url + "/console?state=dead");
  assert.equal(bad.status(), 400);

  // A reader (read scope only) has no fleet page and no link to it.
  const r = await signedIn(reader);
  await r.page.waitForURL(cloud.url + "/console/hospitals");
  assert.equal(await r.page.locator("nav a[href='/console']").count(), 0);
  assert.equal((await r.page.goto(cloud.url + "/console")).status(), 403);
  assert.match(await r.page.textContent("main"), /needs the fleet scope/);
  await r.ctx.close();

  await ctx.close();
});

test("a node's page: status and history, a signed ping sent from the page reaches the appliance and its result shows", async () => {
  const { ctx, page } = await signedIn(ops);
  await page.waitForURL(cloud.url + "/console");
  await page.click(`a[data-key="node-${HOSPITAL}/${NODE}"]`);
  await page.waitForURL(`${cloud.url}/console/nodes/${HOSPITAL}/${NODE}`);
  assert.equal(await page.textContent("#node-state"), "online");
  // Telemetry every 5 s: the sparklines fill.
  await until("telemetry history", async () => {
    await page.reload();
    const label = await page.getAttribute("svg.spark >> nth=1", "aria-label");
    return /values/.test(label) ? label : null;
  });
  await page.selectOption("#command", "ping");
  await page.click(".commands form button[type=submit]");
  await page.waitForSelector("#sent-notice");
  const id = (await page.textContent("#sent-notice")).match(/Command (\d+) sent/)[1];
  // The list refreshes itself until the appliance's answer is there.
  await page.waitForSelector(`tr[data-command="${id}"] td[data-status="done"]`, { timeout: 20000 });
  assert.match(await page.textContent(`tr[data-command="${id}"]`), /pong/);
  const api = await cloud.api(ops, "GET", `/api/v1/fleet/${HOSPITAL}/${NODE}/commands/${id}`);
  assert.equal(api.body.status, "done");
  await noAxeViolations(page, "node page");
  await shot(page, "console-node");

  // A command the appliance refuses to carry out shows as failed, with why.
  await page.selectOption("#command", "revoke_token");
  await page.fill("#name", "no-such-token");
  await page.click(".commands form button[type=submit]");
  await page.waitForSelector("#sent-notice");
  const id2 = (await page.textContent("#sent-notice")).match(/Command (\d+) sent/)[1];
  await page.waitForSelector(`tr[data-command="${id2}"] td[data-status="failed"]`, { timeout: 20000 });
  assert.match(await page.textContent(`tr[data-command="${id2}"]`), /unknown_token/);
  await ctx.close();
});

test("hospitals: the synced census and ADT volumes as charts with their figures; DR status", async () => {
  const { ctx, page } = await signedIn(reader);
  await page.waitForURL(cloud.url + "/console/hospitals");
  // The appliance's events reach the cloud.
  await until("the hospital synced", async () => {
    const h = await cloud.api(ops, "GET", "/api/v1/hospitals");
    return h.body.hospitals.find((x) => x.id === HOSPITAL && x.events > 0);
  });
  await page.reload();
  await page.click(`a[href="/console/hospitals/${HOSPITAL}"]`);
  await page.waitForURL(`${cloud.url}/console/hospitals/${HOSPITAL}`);
  const day = TODAY;
  const vol = await cloud.api(reader, "GET", `/api/v1/hospitals/${HOSPITAL}/adt-volumes?from=${day}&to=${day}`);
  const admissions = vol.body.days[0].admissions;
  assert.ok(admissions >= 3, JSON.stringify(vol.body));
  assert.equal(await page.textContent("#volumes tbody tr:first-child td:nth-child(2)"), String(admissions));
  assert.match(await page.getAttribute("svg.chart.line", "aria-label"), /^Occupied beds: /);
  assert.match(await page.getAttribute("svg.chart.bars", "aria-label"), /^ADT events: /);
  const occupied = Number(await page.textContent("#census-now"));
  assert.ok(occupied >= 3, `occupied now: ${occupied}`);
  await noAxeViolations(page, "hospital charts");
  await shot(page, "console-hospital");

  await page.click("nav a[href='/console/replication']");
  await page.waitForURL(cloud.url + "/console/replication");
  assert.equal(await page.textContent("#dr-role"), "primary");
  assert.match(await page.textContent("main"), /No DR peer/);
  await noAxeViolations(page, "replication");
  await ctx.close();
});

test("EMPI reviews: each candidate's per-field explanation; never link and close from the page", async () => {
  const { ctx, page } = await signedIn(ops);
  await page.goto(cloud.url + "/console/empi");
  assert.equal(await page.textContent("#open-count"), "2");
  const first = page.locator("article.review").first();
  // One row per compared field, the given name agreeing, the total in bits.
  assert.equal(await first.locator("table.explanation tbody tr").count(), 11);
  assert.match(await first.locator("table.explanation").textContent(), /given name\s*exact/);
  await noAxeViolations(page, "EMPI reviews");
  await shot(page, "console-empi");
  const id = await first.getAttribute("data-review");
  await first.locator("button:has-text('never link')").click();
  await page.waitForSelector("#done-notice");
  assert.equal(await page.textContent("#open-count"), "1");
  const closed = await cloud.api(ops, "GET", "/api/v1/empi/reviews?status=closed");
  const c = closed.body.reviews.find((r) => String(r.id) === id);
  assert.match(c.resolution, /^never_link E/);
  assert.equal(c.closed_by, "operator:ops");
  await page.locator("article.review button:has-text('Close')").click();
  await page.waitForSelector("#done-notice");
  assert.equal(await page.textContent("#open-count"), "0");
  // Posts from another origin are refused; an unknown action is a 400.
  const cookie = (await ctx.cookies()).find((c) => c.name === "hms_console");
  const post = (origin, body) => fetch(cloud.url + "/console/empi/reviews/1", {
    method: "POST", redirect: "manual",
    headers: { cookie: `hms_console=${cookie.value}`, origin, "content-type": "application/x-www-form-urlencoded" },
    body,
  });
  assert.equal((await post("http://evil.example", "action=close")).status, 403);
  assert.equal((await post(cloud.url, "action=merge_everything")).status, 400);
  // A reader may not see the queue.
  const r = await signedIn(reader);
  assert.equal((await r.page.goto(cloud.url + "/console/empi")).status(), 403);
  await r.ctx.close();
  await ctx.close();
});

test("rollouts: a signed model set rolled out through the API shows wave by wave and ends in force by itself", async () => {
  const bundle = join(cloud.dir, "models-7.bundle");
  configCli("sign", "--key", join(cloud.dir, "bundle.pk8"), "--version", "7", "--out", bundle, join(repo, "models"));
  const up = await fetch(cloud.url + "/api/v1/fleet/bundles", {
    method: "POST", headers: { authorization: `Bearer ${ops}` }, body: readFileSync(bundle),
  });
  assert.equal(up.status, 201);
  const { sha256 } = await up.json();
  // The feed keeps flowing through the probation (it flowed before).
  let n = 0;
  const feed = setInterval(() => { edge.hl7(admit(`R-${n++}`, "MRN-C0", "3W-301-A", "V-C0")).catch(() => {}); }, 1000);
  try {
    const r = await cloud.api(ops, "POST", "/api/v1/fleet/rollouts", { bundle: sha256, nodes: [{ hospital: HOSPITAL, node: NODE }], canary: 1, wait_s: 2 });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const { ctx, page } = await signedIn(ops);
    await page.waitForURL(cloud.url + "/console");
    await page.click("nav a[href='/console/rollouts']");
    await page.waitForURL(cloud.url + "/console/rollouts");
    await page.click(`tr[data-rollout="${r.body.id}"] a`);
    // The page refreshes itself until the rollout ends.
    await page.waitForSelector('[data-rollout-state="succeeded"]', { timeout: 40000 });
    assert.equal(await page.getAttribute(`tr[data-node="${HOSPITAL}/${NODE}"]`, "data-state"), "done");
    const api = await cloud.api(ops, "GET", `/api/v1/fleet/rollouts/${r.body.id}`);
    assert.equal(api.body.state, "succeeded");
    await noAxeViolations(page, "rollout");
    await shot(page, "console-rollout");
    await ctx.close();
  } finally {
    clearInterval(feed);
  }
});

test("an appliance killed shows offline in the open table by itself; sign-out ends the session", async () => {
  const { ctx, page } = await signedIn(ops);
  await page.waitForURL(cloud.url + "/console");
  const row = `tr[data-node="${HOSPITAL}/${NODE}"]`;
  await page.waitForSelector(`${row}[data-state="online"]`, { timeout: 20000 });
  await edge.kill();
  // keepalive 5 s: the broker publishes the will within 7.5 s; the table
  // refreshes every 5 s without a reload.
  await page.waitForSelector(`${row}[data-state="offline"]`, { timeout: 20000 });
  const api = await cloud.api(ops, "GET", `/api/v1/fleet/${HOSPITAL}/${NODE}`);
  assert.equal(api.body.online, false);
  await shot(page, "console-fleet-offline");
  await page.click("header .user button[type=submit]");
  await page.waitForURL(cloud.url + "/console/login");
  await page.goto(cloud.url + "/console");
  assert.equal(new URL(page.url()).pathname, "/console/login");
  await ctx.close();
});

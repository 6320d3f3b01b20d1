// The kiosk web app in a real browser: sign-in and sign-out, kiosk codes,
// the unit board against the API, live changes from the API and from HL7
// within 1 s, one-tap housekeeping (mouse and keyboard), the 409 flow, the
// stale banner while the appliance is down, axe on every page, screenshots.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Edge, browser, cli, signIn, axe, shot } from "./harness.mjs";

let edge, chrome, tokens;

before(async () => {
  edge = new Edge();
  // Tokens before the start: the CLI works either way.
  tokens = {
    viewer: edge.token("viewer", "wall-3w"),
    nurse: edge.token("nurse", "nurse-ann"),
    manager: edge.token("bed_manager", "bm-bob"),
  };
  await edge.start();
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await edge?.stop();
});

async function noAxeViolations(page, what) {
  const v = await axe(page);
  assert.deepEqual(v, [], `${what}: serious or critical axe violations:\n${JSON.stringify(v, null, 2)}`);
}

async function bedsOf(unit) {
  const r = await edge.api(tokens.manager, "GET", `/api/v1/units/${unit}/beds`);
  assert.equal(r.status, 200);
  return r.body.beds;
}

async function makeDirty(bed) {
  const b = (await edge.api(tokens.manager, "GET", `/api/v1/beds/${bed}`)).body;
  const r = await edge.api(tokens.nurse, "POST", `/api/v1/beds/${bed}/status`, { status: "dirty", version: (b.bed ?? b).version });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.bed;
}

test("the pages answer with the security headers and no page without sign-in", async () => {
  const r = await fetch(edge.url + "/", { redirect: "manual" });
  assert.ok([302, 303, 307].includes(r.status), `status ${r.status}`);
  assert.equal(r.headers.get("location"), "/login");
  const login = await fetch(edge.url + "/login");
  const csp = login.headers.get("content-security-policy");
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(login.headers.get("x-content-type-options"), "nosniff");
  assert.equal(login.headers.get("referrer-policy"), "same-origin");
  const html = await login.text();
  assert.doesNotMatch(html, /<script>/, "no inline script");
  // A sign-in posted from another origin is refused.
  const forged = await fetch(edge.url + "/login", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", origin: "http://evil.example" },
    body: `token=${tokens.nurse}`,
  });
  assert.equal(forged.status, 403);
  assert.equal(forged.headers.get("set-cookie"), null);
});

test("malformed, oversized and hostile page requests get a clear 4xx, and the appliance carries on", async () => {
  const form = (path, body, extra = {}) =>
    fetch(edge.url + path, {
      method: "POST",
      redirect: "manual",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: edge.url, ...extra },
      body,
    });
  // A session to post changes with.
  const signed = await form("/login", `token=${tokens.nurse}`);
  assert.equal(signed.status, 303);
  const cookie = signed.headers.get("set-cookie").split(";")[0];
  for (const [path, body, extra] of [
    ["/login", "code=%FF%FE%00", {}],
    ["/login", "code=" + "A".repeat(5000), {}],
    ["/login", "token=hms_" + "x".repeat(200), {}],
    ["/login", "{not a form", { "content-type": "application/json" }],
    ["/beds/3W-301-A/status", "status=bogus&version=1", { cookie }],
    ["/beds/3W-301-A/status", "status=clean&version=-1", { cookie }],
    ["/beds/3W-301-A/isolation", "isolation=maybe&version=1", { cookie }],
    ["/beds/NO-SUCH-BED/status", "status=clean&version=1", { cookie }],
    ["/beds/3W-301-A/block", "version=1&reason=" + "x".repeat(300), { cookie }],
    ["/units/3W/propose", "encounter=", { cookie }],
  ]) {
    const r = await form(path, body, extra);
    assert.ok(r.status >= 400 && r.status < 500, `${path} ${body.slice(0, 40)}: ${r.status}`);
  }
  // A look-up for control characters is a search that finds nobody.
  const nul = await form("/patients", "family_name=" + "%00".repeat(10), { cookie });
  assert.equal(nul.status, 200);
  assert.match(await nul.text(), /0 found/);
  // A body over the limit is refused from its length, before it is read.
  const big = await form("/login", "token=" + "x".repeat(70_000));
  assert.equal(big.status, 413);
  // A session cookie that is not one, and a path with odd bytes.
  const bogus = await fetch(edge.url + "/units/3W", { headers: { cookie: "hms_session=s_%00%FF" }, redirect: "manual" });
  assert.equal(bogus.headers.get("location"), "/login");
  const odd = await fetch(edge.url + "/units/%FF%FE", { headers: { cookie }, redirect: "manual" });
  assert.ok(odd.status >= 400 && odd.status < 500, `odd path: ${odd.status}`);
  // Still serving.
  assert.equal((await fetch(edge.url + "/health")).status, 200);
});

test("sign-in with a token, the unit list, sign-out", async () => {
  const ctx = await chrome.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(edge.url + "/");
  assert.equal(new URL(page.url()).pathname, "/login");
  await noAxeViolations(page, "sign-in page");
  await shot(page, "login");

  await signIn(page, edge, "token", "hms_not-a-real-token");
  await page.waitForSelector("#login-error");
  assert.match(await page.textContent("#login-error"), /not valid/);

  await signIn(page, edge, "token", tokens.nurse);
  await page.waitForURL(edge.url + "/");
  const cookie = (await ctx.cookies()).find((c) => c.name === "hms_session");
  assert.ok(cookie, "session cookie set");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.ok(!cookie.value.includes(tokens.nurse), "the cookie is not the token");
  assert.ok(!page.url().includes("hms_"), "no token in the URL");
  const units = await page.$$eval("tr[data-unit]", (rows) => rows.map((r) => r.getAttribute("data-unit")));
  assert.deepEqual(units.sort(), ["3W", "4E", "ICU", "MAT", "OBS"]);
  await noAxeViolations(page, "unit list");
  await shot(page, "units");

  await page.click("header button:has-text('Sign out')");
  await page.waitForURL(edge.url + "/login");
  await page.goto(edge.url + "/units/3W");
  assert.equal(new URL(page.url()).pathname, "/login", "signed out: the board needs a sign-in again");
  // The old cookie is dead too, not just deleted by the browser.
  const again = await fetch(edge.url + "/units/3W", { headers: { cookie: `hms_session=${cookie.value}` }, redirect: "manual" });
  assert.equal(again.headers.get("location"), "/login");
  await ctx.close();
});

test("the board shows every bed of the unit with the API's status; viewers see initials and no actions", async () => {
  // An admitted patient on 3W, over MLLP as the ADT system sends it.
  const ack = await edge.hl7("MSH|^~\\&|ADT|DGH|HMS|EDGE|20261205080000||ADT^A01^ADT_A01|B-1|P|2.5.1\nEVN|A01|20261205080000\nPID|1||MRN-77^^^DGH^MR||Kowalska^Anna||19620304|F\nPV1|1|I|3W^301^A^DGH||||||||||||||||V-77");
  assert.match(ack, /MSA\|AA\|B-1/);
  await makeDirty("3W-302-A");

  const ctx = await chrome.newContext({ viewport: { width: 1920, height: 1080 } });
  const page = await ctx.newPage();
  const code = edge.pairCode("wall-3w");
  assert.match(code, /^[A-Z2-9]{4}-[A-Z2-9]{4}$/);
  await signIn(page, edge, "code", code.toLowerCase());
  await page.waitForURL(edge.url + "/");
  await page.goto(edge.url + "/units/3W");
  await page.waitForLoadState("load");
  // Everything the board page loaded (the page, its style sheet, script and
  // icon; the live stream is not finished, so not listed), and from where.
  const loaded = await page.evaluate(() =>
    [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")].map((e) => ({
      url: e.name,
      bytes: e.decodedBodySize,
    })),
  );
  assert.ok(loaded.length >= 3, JSON.stringify(loaded));
  assert.ok(loaded.every((l) => l.url.startsWith(edge.url)), `nothing from outside the appliance: ${JSON.stringify(loaded)}`);
  const weight = loaded.reduce((n, l) => n + l.bytes, 0);
  assert.ok(weight > 0 && weight < 200_000, `the board page weighs ${weight} bytes uncompressed`);
  const api = await bedsOf("3W");
  const tiles = await page.$$eval("[data-bed]", (els) => els.map((e) => [e.getAttribute("data-bed"), e.getAttribute("data-status")]));
  assert.deepEqual(tiles, api.map((b) => [b.id, b.state]));
  const occupied = page.locator('[data-bed="3W-301-A"]');
  assert.equal(await occupied.getAttribute("data-status"), "occupied");
  assert.match(await occupied.textContent(), /A\.K\./);
  assert.doesNotMatch(await occupied.textContent(), /Kowalska/, "a viewer sees initials only");
  assert.equal(await page.locator("[data-bed] button").count(), 0, "a viewer has no actions");
  await noAxeViolations(page, "unit board (viewer)");
  await shot(page, "board-viewer-1920");

  // The code was used: it does not work twice.
  const other = await chrome.newContext();
  const p2 = await other.newPage();
  await signIn(p2, edge, "code", code);
  await p2.waitForSelector("#login-error");
  await other.close();
  await ctx.close();
});

test("changes from the API and from HL7 reach an open board within 1 s", async () => {
  const ctx = await chrome.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  await signIn(page, edge, "token", tokens.viewer);
  await page.waitForURL(edge.url + "/");
  await page.goto(edge.url + "/units/ICU");
  await page.waitForFunction(() => document.querySelector("[data-live]")?.hasAttribute("data-as-of"));

  let t0 = Date.now();
  await makeDirty("ICU-202-A");
  await page.waitForSelector('[data-bed="ICU-202-A"][data-status="vacant_dirty"]', { timeout: 1000 });
  const viaApi = Date.now() - t0;

  t0 = Date.now();
  const ack = await edge.hl7("MSH|^~\\&|ADT|DGH|HMS|EDGE|20261205081000||ADT^A01^ADT_A01|B-2|P|2.5.1\nEVN|A01|20261205081000\nPID|1||MRN-78^^^DGH^MR||Nowak^Jan||19500101|M\nPV1|1|I|ICU^201^A^DGH||||||||||||||||V-78");
  assert.match(ack, /MSA\|AA\|B-2/);
  await page.waitForSelector('[data-bed="ICU-201-A"][data-status="occupied"]', { timeout: 1000 });
  const viaHl7 = Date.now() - t0;
  const census = await page.textContent("#census");
  assert.match(census, /1\s*occupied/);
  console.log(`change to screen: API ${viaApi} ms, HL7 ${viaHl7} ms`);
  await shot(page, "board-live");
  await ctx.close();
});

test("housekeeping: one tap each, by mouse and by keyboard only", async () => {
  await makeDirty("4E-401-A");
  const ctx = await chrome.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await ctx.newPage();
  await signIn(page, edge, "token", tokens.nurse);
  await page.waitForURL(edge.url + "/");
  await page.goto(edge.url + "/units/4E");
  const tile = '[data-bed="4E-401-A"]';
  await page.click(`${tile} button:has-text("Start cleaning")`);
  await page.waitForSelector(`${tile}[data-status="cleaning"]`);
  await noAxeViolations(page, "unit board (nurse)");
  await shot(page, "board-nurse-tablet");

  // Keyboard only: Tab to the tile's "Mark clean" and press Enter.
  await page.goto(edge.url + "/units/4E");
  const target = `${tile} button[data-key="clean"]`;
  let found = false;
  for (let i = 0; i < 200 && !found; i++) {
    await page.keyboard.press("Tab");
    found = await page.evaluate((sel) => document.activeElement === document.querySelector(sel), target);
  }
  assert.ok(found, "the button is reachable with Tab");
  await page.keyboard.press("Enter");
  await page.waitForSelector(`${tile}[data-status="vacant_clean"]`);
  const api = (await edge.api(tokens.manager, "GET", "/api/v1/beds/4E-401-A")).body;
  assert.equal(api.bed.state, "vacant_clean");
  await ctx.close();
});

test("a bed changed by someone else meanwhile: 409, the fresh state and what was not applied", async () => {
  await makeDirty("4E-402-A");
  const ctx = await chrome.newContext();
  const page = await ctx.newPage();
  await signIn(page, edge, "token", tokens.nurse);
  await page.waitForURL(edge.url + "/");
  // This page hears nothing live: its tiles keep the version it loaded.
  await page.route("**/live", (route) => route.abort());
  await page.goto(edge.url + "/units/4E");
  const tile = '[data-bed="4E-402-A"]';
  await page.waitForSelector(`${tile}[data-status="vacant_dirty"]`);
  // Someone else starts cleaning it.
  const now = (await edge.api(tokens.manager, "GET", "/api/v1/beds/4E-402-A")).body;
  const r = await edge.api(tokens.nurse, "POST", "/api/v1/beds/4E-402-A/status", { status: "cleaning", version: (now.bed ?? now).version });
  assert.equal(r.status, 200);
  const [resp] = await Promise.all([
    page.waitForResponse((x) => x.url().endsWith("/beds/4E-402-A/status")),
    page.click(`${tile} button:has-text("Mark clean")`),
  ]);
  assert.equal(resp.status(), 409);
  await page.waitForSelector("#refused");
  assert.match(await page.textContent("#refused"), /Not applied: mark clean, bed 4E-402-A/);
  assert.equal(await page.getAttribute(tile, "data-status"), "cleaning", "the fresh state is shown");
  await noAxeViolations(page, "refused change");
  await shot(page, "board-409");
  await ctx.close();
});

test("the stale banner while the appliance is down, gone when it is back", async () => {
  const ctx = await chrome.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await signIn(page, edge, "token", tokens.viewer);
  await page.waitForURL(edge.url + "/");
  await page.goto(edge.url + "/units/MAT");
  await page.waitForFunction(() => document.querySelector("[data-live]")?.hasAttribute("data-as-of"));
  const before = await page.locator("[data-bed]").count();
  await edge.stop();
  await page.waitForSelector("#live-banner:not([hidden])", { timeout: 9000 });
  const banner = await page.textContent("#live-banner");
  const m = banner.match(/as of (\d\d):(\d\d):(\d\d)/);
  assert.ok(m, banner);
  // The time of the data on the hospital's clock (the demo is in Europe/Warsaw), as the tiles show it.
  const [h, mi, se] = new Date().toLocaleTimeString("en-GB", { timeZone: "Europe/Warsaw", hour12: false }).split(":").map(Number);
  const lag = (h * 3600 + mi * 60 + se - (Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3])) + 86400) % 86400;
  assert.ok(lag >= 5 && lag < 60, `banner "${banner}" is ${lag} s behind the hospital's clock`);
  assert.equal(await page.locator("[data-bed]").count(), before, "the board stays");
  await shot(page, "board-stale");
  await edge.start();
  // Changed while the page was away: it catches up on reconnection.
  await makeDirty("MAT-211-A");
  await page.waitForSelector('[data-bed="MAT-211-A"][data-status="vacant_dirty"]', { timeout: 15000 });
  await page.waitForSelector("#live-banner[hidden]", { state: "attached", timeout: 15000 });
  await ctx.close();
});

test("revoking a kiosk's token signs the kiosk out", async () => {
  const ctx = await chrome.newContext();
  const page = await ctx.newPage();
  const code = edge.pairCode("wall-icu");
  await signIn(page, edge, "code", code);
  await page.waitForURL(edge.url + "/");
  await page.goto(edge.url + "/units/ICU");
  await page.waitForFunction(() => document.querySelector("[data-live]")?.hasAttribute("data-as-of"));
  cli("token", "revoke", "wall-icu", "--data-dir", edge.data);
  await page.waitForURL(edge.url + "/login", { timeout: 10000 });
  await ctx.close();
});

// The kiosk app's patient look-up and administration pages in a real
// browser: role gating, a posted search (no patient data in the URL) that
// finds an admitted patient and where they lie, the health of each
// component, a parked HL7 message replayed, a token revoked from the page
// (its holder's open page is signed out), axe on every page, screenshots.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Edge, browser, signIn, axe, shot } from "./harness.mjs";

let edge, chrome, tokens;

before(async () => {
  edge = new Edge();
  tokens = {
    viewer: edge.token("viewer", "wall-1"),
    nurse: edge.token("nurse", "nurse-eva"),
    nurse2: edge.token("nurse", "nurse-tom"),
    admin: edge.token("admin", "it-admin"),
    manager: edge.token("bed_manager", "bm-kim"),
  };
  await edge.start();
  chrome = await browser();
  const ack = await edge.hl7("MSH|^~\\&|ADT|DGH|HMS|EDGE|20261205090000||ADT^A01^ADT_A01|P-1|P|2.5.1\nEVN|A01|20261205090000\nPID|1||MRN-4711^^^DGH^MR||Wiśniewska^Zofia||19480512|F\nPV1|1|I|4E^401^A^DGH||||||||||||||||V-4711");
  assert.match(ack, /MSA\|AA\|P-1/);
});

after(async () => {
  await chrome?.close();
  await edge?.stop();
});

async function noAxeViolations(page, what) {
  const v = await axe(page);
  assert.deepEqual(v, [], `${what}: serious or critical axe violations:\n${JSON.stringify(v, null, 2)}`);
}

async function signedIn(token, viewport = { width: 1280, height: 900 }) {
  const ctx = await chrome.newContext({ viewport });
  const page = await ctx.newPage();
  await signIn(page, edge, "token", token);
  await page.waitForURL(edge.url + "/");
  return { ctx, page };
}

test("patient look-up: nurses only, posted, finds the patient and the bed", async () => {
  const viewer = await signedIn(tokens.viewer);
  assert.equal(await viewer.page.locator("nav a[href='/patients']").count(), 0, "no link for a viewer");
  const refused = await viewer.page.goto(edge.url + "/patients");
  assert.equal(refused.status(), 403);
  await viewer.ctx.close();

  const { ctx, page } = await signedIn(tokens.nurse);
  await page.click("nav a[href='/patients']");
  await page.waitForURL(edge.url + "/patients");
  await page.fill("#family_name", "Wisniewska");
  await page.fill("#birth_date", "1948-05-12");
  await page.click("button:has-text('Look up')");
  await page.waitForSelector("tr[data-mrn='MRN-4711']");
  assert.ok(!page.url().includes("Wis"), "no patient data in the URL");
  const row = await page.textContent("tr[data-mrn='MRN-4711']");
  assert.match(row, /Wiśniewska, Zofia/);
  assert.match(row, /1948-05-12/);
  assert.match(row, /4E-401-A/);
  await noAxeViolations(page, "patient look-up");
  await shot(page, "patients");
  // By MRN; and a search with nothing to search by says why.
  await page.fill("#family_name", "");
  await page.fill("#birth_date", "");
  await page.fill("#mrn", "MRN-4711");
  await page.click("button:has-text('Look up')");
  await page.waitForSelector("tr[data-mrn='MRN-4711']");
  await page.fill("#mrn", "");
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/patients") && r.request().method() === "POST"),
    page.click("button:has-text('Look up')"),
  ]);
  assert.equal(resp.status(), 400);
  assert.match(await page.textContent("#lookup-error"), /give \?mrn= or demographics/);
  await ctx.close();
});

test("administration: health, a parked message replayed, a token revoked", async () => {
  const nurse = await signedIn(tokens.nurse);
  assert.equal((await nurse.page.goto(edge.url + "/admin")).status(), 403);

  // A bed this hospital does not have, in a unit it manages: parked.
  const ack = await edge.hl7("MSH|^~\\&|ADT|DGH|HMS|EDGE|20261205091000||ADT^A01^ADT_A01|P-2|P|2.5.1\nEVN|A01|20261205091000\nPID|1||MRN-9^^^DGH^MR||Test^Parked||19900101|M\nPV1|1|I|4E^499^Z^DGH||||||||||||||||V-9");
  assert.match(ack, /MSA\|AE\|P-2/);

  const other = await signedIn(tokens.nurse2);
  await other.page.goto(edge.url + "/units/4E");
  await other.page.waitForFunction(() => document.querySelector("[data-live]")?.hasAttribute("data-as-of"));

  const { ctx, page } = await signedIn(tokens.admin, { width: 1280, height: 1000 });
  await page.click("nav a[href='/admin']");
  await page.waitForURL(edge.url + "/admin");
  assert.match(await page.getAttribute("[data-health]", "data-health"), /^(ok|degraded)$/);
  for (const c of ["store", "board", "uplink", "models"]) {
    assert.equal(await page.locator(`tr[data-component='${c}']`).count(), 1, c);
  }
  const parked = page.locator("tr[data-parked]");
  assert.equal(await parked.count(), 1);
  assert.match(await parked.textContent(), /ADT\^A01/);
  await noAxeViolations(page, "administration");
  await shot(page, "admin");
  await parked.locator("button").click();
  await page.waitForSelector("#admin-notice");
  assert.match(await page.textContent("#admin-notice"), /still parked/);
  assert.equal(await page.locator("tr[data-parked]").count(), 1, "still parked: the bed is still unknown");

  // Revoke nurse-tom from the page: his open board goes to the sign-in page.
  await page.click("tr[data-token='nurse-tom'] button:has-text('Revoke')");
  await page.waitForSelector("#admin-notice");
  assert.match(await page.textContent("#admin-notice"), /revoked/);
  assert.equal(await page.locator("tr[data-token='nurse-tom']").count(), 0);
  await other.page.waitForURL(edge.url + "/login", { timeout: 5000 });
  const api = await edge.api(tokens.nurse2, "GET", "/api/v1/units");
  assert.equal(api.status, 401);
  await other.ctx.close();
  await nurse.ctx.close();
  await ctx.close();
});

/** Presses Tab until `selector` has the focus (keyboard only); fails after 200. */
async function tabTo(page, selector) {
  for (let i = 0; i < 200; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate((sel) => document.activeElement === document.querySelector(sel), selector)) return;
  }
  assert.fail(`${selector} is not reachable with Tab`);
}

test("bed manager, keyboard only: request a placement, get a proposal, assign it", async () => {
  const { ctx, page } = await signedIn(tokens.manager);
  await page.goto(edge.url + "/units/3W");
  await page.waitForFunction(() => document.querySelector("[data-live]")?.hasAttribute("data-as-of"));
  await noAxeViolations(page, "unit board (bed manager)");
  await shot(page, "board-bed-manager");
  await tabTo(page, "#place-encounter");
  await page.keyboard.type("V-900");
  await tabTo(page, "#place-sex");
  await page.keyboard.press("ArrowDown"); // female
  await tabTo(page, "form.placement button[type=submit]");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#proposal[data-proposed]");
  const bed = await page.getAttribute("#proposal", "data-proposed");
  assert.match(bed, /^3W-/);
  await noAxeViolations(page, "placement proposal");
  await shot(page, "placement-proposal");
  await tabTo(page, "#proposal button[type=submit]");
  await page.keyboard.press("Enter");
  await page.waitForSelector(`[data-bed="${bed}"][data-status="occupied"]`);
  const api = (await edge.api(tokens.manager, "GET", `/api/v1/beds/${bed}`)).body.bed;
  assert.equal(api.state, "occupied");
  assert.equal(api.encounter, "V-900");
  // The pending lists follow live: a discharge expected on that bed.
  const r = await edge.api(tokens.nurse, "POST", `/api/v1/beds/${bed}/pending-discharge`, { pending: true, version: api.version });
  assert.equal(r.status, 200);
  await page.waitForFunction((b) => document.querySelector("#pending")?.textContent.includes(b), bed);
  await ctx.close();
});

test("a bed's own page: history and changes; block needs a reason, back in service", async () => {
  const { ctx, page } = await signedIn(tokens.manager);
  await page.goto(edge.url + "/beds/4E-403-A");
  assert.equal(await page.getAttribute("#bed", "data-status"), "vacant_clean");
  await noAxeViolations(page, "bed page");
  await shot(page, "bed-page");
  await page.fill("#block-reason", "bed frame broken");
  await page.click("form[action$='/block'] button");
  await page.waitForSelector('[data-bed="4E-403-A"][data-status="blocked"]');
  assert.match(await page.textContent('[data-bed="4E-403-A"]'), /bed frame broken/);
  await page.goto(edge.url + "/beds/4E-403-A");
  await page.click("button:has-text('Back in service')");
  await page.waitForSelector('[data-bed="4E-403-A"][data-status="vacant_dirty"]');
  // A viewer may not open a bed's page.
  const viewer = await signedIn(tokens.viewer);
  assert.equal((await viewer.page.goto(edge.url + "/beds/4E-403-A")).status(), 403);
  await viewer.ctx.close();
  await ctx.close();
});

test("the forecast: every unit's chart with its band, figures and source", async () => {
  const { ctx, page } = await signedIn(tokens.viewer);
  await page.click("nav a[href='/forecast']");
  await page.waitForURL(edge.url + "/forecast");
  const units = await page.$$eval("section.forecast", (s) => s.map((e) => [e.getAttribute("data-unit"), e.getAttribute("data-source")]));
  assert.deepEqual(units.map((u) => u[0]).sort(), ["3W", "4E", "ICU", "MAT", "OBS"]);
  const api = await edge.api(tokens.viewer, "GET", "/api/v1/forecast/units/3W");
  assert.equal(api.status, 200);
  const section = page.locator("section.forecast[data-unit='3W']");
  assert.equal(await section.getAttribute("data-source"), api.body.source);
  if (api.body.source === "fallback") {
    assert.match(await section.locator(".source").textContent(), new RegExp(api.body.reason.replace(/_/g, " ")));
  }
  assert.equal(await section.locator("svg.chart polygon.band").count(), 1);
  const rows = await section.locator("table.figures tbody tr").allTextContents();
  assert.equal(rows.length, 4);
  assert.match(rows[3], new RegExp(`In 72 h\\s*${Math.round(api.body.horizons[2].low)}\\s*${Math.round(api.body.horizons[2].mid)}\\s*${Math.round(api.body.horizons[2].high)}`));
  await noAxeViolations(page, "forecast");
  await shot(page, "forecast");
  await ctx.close();
});

test("a bed's own page: reserve, cancel the reservation, assign with a patient, release", async () => {
  const { ctx, page } = await signedIn(tokens.manager);
  const bed = "4E-404-A";
  const tile = `[data-bed="${bed}"]`;
  await page.goto(edge.url + `/beds/${bed}`);
  await page.fill("#reserve-encounter", "V-R1");
  await page.click("form[action$='/reserve'] button[type=submit]");
  await page.waitForSelector(`${tile}[data-status="reserved"]`);
  assert.match(await page.textContent("#pending"), new RegExp(`${bed} — encounter V-R1`));
  await page.goto(edge.url + `/beds/${bed}`);
  await page.click("button:has-text('Cancel the reservation')");
  await page.waitForSelector(`${tile}[data-status="vacant_clean"]`);
  await page.goto(edge.url + `/beds/${bed}`);
  await page.fill("#assign-encounter", "V-A1");
  await page.fill("#assign-mrn", "MRN-A1");
  await page.fill("#assign-name", "Lovelace, Ada");
  await page.selectOption("#assign-sex", "female");
  await page.click("form[action$='/assign'] button[type=submit]");
  await page.waitForSelector(`${tile}[data-status="occupied"]`);
  assert.match(await page.textContent(tile), /Lovelace, Ada/);
  const api = (await edge.api(tokens.manager, "GET", `/api/v1/beds/${bed}`)).body.bed;
  assert.equal(api.encounter, "V-A1");
  assert.equal(api.patient.mrn, "MRN-A1");
  assert.equal(api.patient.sex, "female");
  await page.goto(edge.url + `/beds/${bed}`);
  await page.click("button:has-text('Release')");
  await page.waitForSelector(`${tile}[data-status="vacant_dirty"]`);
  // A nurse may not reserve: the page answers 403 through the API's role check.
  const nurse = await signedIn(tokens.nurse);
  const v = (await edge.api(tokens.manager, "GET", `/api/v1/beds/${bed}`)).body.bed.version;
  const r = await nurse.page.evaluate(async ([b, version]) => {
    const res = await fetch(`/beds/${b}/reserve`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `version=${version}&encounter=V-N1` });
    return res.status;
  }, [bed, v]);
  assert.equal(r, 403);
  await nurse.ctx.close();
  await ctx.close();
});

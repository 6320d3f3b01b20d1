// The OR board page in a real browser: SIU bookings over MLLP, the day's
// timeline with a lane per operating room and a block per case, overrun
// risk and bumped cases exactly as the API reports them, the day chosen
// with the keyboard, nurses only, axe, a screenshot.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Edge, browser, signIn, axe, shot } from "./harness.mjs";

let edge, chrome, tokens;

const DAY = "2026-12-10";

/** An SIU message: `case` in `room` at `start` (local HH:MM on DAY) for `minutes`. */
function siu(trigger, control, c, room, start, minutes, { urgent = false, surgeon = "S03", procedure = "total_hip_replacement" } = {}) {
  const when = DAY.replace(/-/g, "") + start.replace(":", "");
  const [reason, prio] = urgent ? ["EMERGENCY", "S"] : ["ROUTINE", "R"];
  return [
    `MSH|^~\\&|ORSCHED|DGH|HMS|EDGE|20261204070000||SIU^${trigger}^SIU_S12|${control}|P|2.5.1`,
    `SCH|${c}^ORSCHED||||||${reason}||${minutes}|min|^^^${when}^^${prio}`,
    "PID|1||MRN-900^^^DGH^MR||Lindqvist^Karin||19580304|F",
    `AIS|1||${procedure}^Procedure|${when}|||${minutes}|min`,
    `AIL|1||OR^${room}^^DGH`,
    `AIP|1||${surgeon}^Okafor^Ada|SURG^Surgeon`,
  ].join("\n");
}

before(async () => {
  edge = new Edge();
  tokens = { viewer: edge.token("viewer", "wall-or"), nurse: edge.token("nurse", "nurse-or") };
  await edge.start();
  chrome = await browser();
  const messages = [
    // OR-1: a 2-hour booking at 08:00 before a case at 09:00: at risk whatever predicts it.
    siu("S12", "O1", "HIP-1", "OR-1", "08:00", 120),
    siu("S12", "O2", "KNEE-1", "OR-1", "09:00", 90, { procedure: "total_knee_replacement" }),
    siu("S12", "O3", "CARP-1", "OR-1", "13:00", 45, { procedure: "carpal_tunnel_release" }),
    // OR-2: an elective list, then an emergency add-on that displaces one case.
    siu("S12", "O4", "CHOLE-1", "OR-2", "08:30", 60, { procedure: "laparoscopic_cholecystectomy", surgeon: "S07" }),
    siu("S12", "O5", "HERNIA-1", "OR-2", "11:00", 60, { procedure: "inguinal_hernia_repair", surgeon: "S07" }),
    siu("S12", "O6", "EMERG-1", "OR-2", "09:00", 90, { urgent: true, procedure: "colectomy", surgeon: "S11" }),
    // OR-3: one case, cancelled.
    siu("S12", "O7", "THYR-1", "OR-3", "10:00", 120, { procedure: "thyroidectomy" }),
    siu("S15", "O8", "THYR-1", "OR-3", "10:00", 120, { procedure: "thyroidectomy" }),
  ];
  for (const m of messages) {
    const ack = await edge.hl7(m);
    assert.match(ack, /MSA\|AA\|/, ack);
  }
});

after(async () => {
  await chrome?.close();
  await edge?.stop();
});

test("the OR board: a lane per room, a block per case, overrun risk and bumping as the API says", async () => {
  const viewerCtx = await chrome.newContext();
  const viewer = await viewerCtx.newPage();
  await signIn(viewer, edge, "token", tokens.viewer);
  await viewer.waitForURL(edge.url + "/");
  assert.equal(await viewer.locator("nav a[href='/or']").count(), 0, "no link for a viewer");
  assert.equal((await viewer.goto(edge.url + "/or")).status(), 403);
  await viewerCtx.close();

  const rooms = await edge.api(tokens.nurse, "GET", "/api/v1/or/rooms");
  assert.equal(rooms.status, 200);
  const api = await edge.api(tokens.nurse, "GET", `/api/v1/or/cases?date=${DAY}`);
  assert.equal(api.status, 200);
  const byId = Object.fromEntries(api.body.cases.map((c) => [c.case_id, c]));
  assert.equal(byId["HIP-1"].overrun_risk, true, JSON.stringify(byId["HIP-1"]));
  assert.equal(byId["CHOLE-1"].status, "bumped");
  assert.equal(byId["CHOLE-1"].bumped_by, "EMERG-1");
  assert.equal(byId["THYR-1"].status, "cancelled");

  const ctx = await chrome.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await ctx.newPage();
  await signIn(page, edge, "token", tokens.nurse);
  await page.waitForURL(edge.url + "/");
  await page.click("nav a[href='/or']");
  await page.waitForURL(/\/or$/);
  // Choose the day with the keyboard only.
  await page.focus("#or-date");
  await page.keyboard.type(DAY.slice(5, 7) + DAY.slice(8, 10) + DAY.slice(0, 4));
  await page.keyboard.press("Enter");
  await page.waitForURL(edge.url + `/or?date=${DAY}`);
  assert.match(await page.locator("h1").textContent(), new RegExp(DAY));

  assert.equal(await page.locator("svg.timeline rect.lane").count(), rooms.body.rooms.length);
  const blocks = await page.$$eval("svg.timeline g.case", (gs) => gs.map((g) => [g.getAttribute("data-case"), g.getAttribute("class")]));
  assert.deepEqual(blocks.map((b) => b[0]).sort(), api.body.cases.map((c) => c.case_id).sort());
  for (const [id, cls] of blocks) {
    const c = byId[id];
    assert.ok(cls.includes(c.status), `${id}: ${cls}`);
    assert.equal(cls.includes("risk"), c.overrun_risk, `${id}: ${cls}`);
    assert.equal(cls.includes("urgent"), c.priority === "urgent", `${id}: ${cls}`);
  }
  const rows = await page.$$eval("table.or-cases tbody tr", (trs) => trs.map((tr) => ({
    id: tr.getAttribute("data-case"),
    status: tr.getAttribute("data-status"),
    overrun: tr.getAttribute("data-overrun"),
    text: tr.textContent,
  })));
  assert.deepEqual(rows.map((r) => r.id), api.body.cases.map((c) => c.case_id), "the table in the API's order");
  for (const r of rows) {
    assert.equal(r.status, byId[r.id].status);
    assert.equal(r.overrun, String(byId[r.id].overrun_risk));
  }
  const chole = rows.find((r) => r.id === "CHOLE-1");
  assert.match(chole.text, /Bumped by EMERG-1/);
  const hip = rows.find((r) => r.id === "HIP-1");
  assert.match(hip.text, /⚠ Yes/);
  assert.match(hip.text, /Lindqvist, Karin/);
  const summary = await page.locator("p.summary").textContent();
  const risks = api.body.cases.filter((c) => c.overrun_risk).length;
  assert.match(summary, new RegExp(`${risks} at risk`));

  const v = await axe(page);
  assert.deepEqual(v, [], `OR board: serious or critical axe violations:\n${JSON.stringify(v, null, 2)}`);
  await shot(page, "or-board");

  // The next day is empty and says so; a bad date is refused with a page.
  await page.click("a:has-text('Next day')");
  await page.waitForURL(edge.url + "/or?date=2026-12-11");
  assert.equal(await page.locator("svg.timeline g.case").count(), 0);
  assert.match(await page.locator("main").textContent(), /No cases are booked on this day/);
  assert.equal((await page.goto(edge.url + "/or?date=2026-13-01")).status(), 400);
  await ctx.close();
});

// The kiosk app's browser tests: the appliance as a real process (the
// binary named by HMS_EDGE_BIN, started as an operator would, waited for on
// its ready line), Debian's chromium driven by playwright-core, axe-core
// injected into every page, screenshots under SCREENSHOTS.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = join(here, "..", "..", "..");
export const BIN = process.env.HMS_EDGE_BIN || join(repo, "target", "debug", "hms-edge");
export const CLOUD_BIN = process.env.HMS_CLOUD_BIN || join(repo, "target", "debug", "hms-cloud");
export const CONFIG_BIN = process.env.HMS_CONFIG_BIN || join(repo, "target", "debug", "hms-config");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const SCREENSHOTS = process.env.SCREENSHOTS || join(repo, "target", "screenshots");
export const CONFIG = join(repo, "config", "demo-hospital.toml");
mkdirSync(SCREENSHOTS, { recursive: true });

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

/** Runs `hms-edge ARGS…` to completion; its stdout. */
export function cli(...args) {
  return execFileSync(BIN, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** The last line of a command's output (a token, a code). */
export function lastLine(out) {
  return out.trim().split("\n").pop().trim();
}

/** One appliance on the demo hospital, in its own data dir. */
export class Edge {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "hms-browser-"));
    this.data = join(this.dir, "data");
    this.http = "127.0.0.1:0";
    this.proc = null;
    this.config = CONFIG;
  }

  /** Starts it (on the same HTTP port as before, when restarted). */
  async start() {
    const args = ["run", "--config", this.config, "--data-dir", this.data, "--http", this.http, "--mllp", this.mllp || "127.0.0.1:0"];
    const proc = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HMS_LOG: "warn" } });
    this.proc = proc;
    let err = "";
    proc.stderr.on("data", (d) => { err += d; });
    const line = await new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error("no ready line in 30 s: " + err)), 30000);
      proc.stdout.on("data", (d) => {
        out += d;
        const m = out.match(/hms-edge ready (.*)\n/);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      });
      proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`hms-edge exited ${code}: ${err}`)); });
    });
    const http = line.match(/http=http:\/\/(\S+)/)[1];
    const mllp = line.match(/mllp=(\S+)/);
    this.http = http;
    if (mllp) this.mllp = mllp[1];
    this.url = `http://${http}`;
    return this;
  }

  /** SIGKILL (no clean stop: the broker publishes its last will). */
  async kill() {
    if (!this.proc) return;
    const p = this.proc;
    this.proc = null;
    if (p.exitCode !== null) return;
    await new Promise((resolve) => { p.on("exit", resolve); p.kill("SIGKILL"); });
  }

  /** SIGTERM, and wait for the exit. */
  async stop() {
    if (!this.proc) return;
    const p = this.proc;
    this.proc = null;
    if (p.exitCode !== null) return;
    await new Promise((resolve) => { p.on("exit", resolve); p.kill("SIGTERM"); });
  }

  /** A new token of `role`. */
  token(role, name) {
    return lastLine(cli("token", "create", "--role", role, "--name", name, "--data-dir", this.data));
  }

  /** A kiosk sign-in code for the token `name`. */
  pairCode(name) {
    return lastLine(cli("kiosk", "pair", "--name", name, "--data-dir", this.data));
  }

  /** The API with a bearer token. */
  async api(token, method, path, body) {
    const r = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null, headers: r.headers };
  }

  /** One HL7 message over MLLP; the ACK. */
  async hl7(message) {
    const [host, port] = this.mllp.split(":");
    return new Promise((resolve, reject) => {
      const s = net.connect(Number(port), host, () => {
        s.write(Buffer.concat([Buffer.from([0x0b]), Buffer.from(message.replace(/\n/g, "\r")), Buffer.from([0x1c, 0x0d])]));
      });
      let got = Buffer.alloc(0);
      s.on("data", (d) => {
        got = Buffer.concat([got, d]);
        if (got.includes(0x1c)) { s.end(); resolve(got.toString("utf8").replace(/[\x0b\x1c]/g, "")); }
      });
      s.on("error", reject);
    });
  }
}

/** Runs `hms-config ARGS…` to completion; its stdout. */
export function configCli(...args) {
  return execFileSync(CONFIG_BIN, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Runs `hms-cloud ARGS…` to completion; its stdout. */
export function cloudCli(...args) {
  return execFileSync(CLOUD_BIN, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** A regional cloud (`hms-cloud run`) in its own directory, on `toml`
 * (written to cloud.toml there; `data_dir` relative to it). */
export class Cloud {
  constructor(toml) {
    this.dir = mkdtempSync(join(tmpdir(), "hms-cloud-browser-"));
    this.config = join(this.dir, "cloud.toml");
    this.toml = toml;
    this.proc = null;
  }

  /** Writes the configuration (call before tokens and start). */
  write(extra = "") {
    writeFileSync(this.config, this.toml + extra);
    return this;
  }

  /** A new operator token with `scopes` (comma-separated). */
  token(name, scopes) {
    return lastLine(cloudCli("token", "create", "--name", name, "--scope", scopes, "--config", this.config)).replace(/^.*\s/, "");
  }

  /** Starts it; waits for its ready line. */
  async start() {
    const proc = spawn(CLOUD_BIN, ["run", "--config", this.config], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HMS_LOG: "warn" } });
    this.proc = proc;
    let err = "";
    proc.stderr.on("data", (d) => { err += d; });
    const http = await new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error("no ready line in 30 s: " + err)), 30000);
      proc.stdout.on("data", (d) => {
        out += d;
        const m = out.match(/hms-cloud ready http=http:\/\/(\S+)/);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      });
      proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`hms-cloud exited ${code}: ${err}`)); });
    });
    this.http = http;
    this.url = `http://${http}`;
    return this;
  }

  /** SIGTERM, and wait for the exit. */
  async stop() {
    if (!this.proc) return;
    const p = this.proc;
    this.proc = null;
    if (p.exitCode !== null) return;
    await new Promise((resolve) => { p.on("exit", resolve); p.kill("SIGTERM"); });
  }

  /** The operator API with a bearer token. */
  async api(token, method, path, body) {
    const r = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }
}

/** Polls `f` every 200 ms until it gives a truthy value, for up to `ms`. */
export async function until(what, f, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A headless chromium whose pages give up on a wait after 5 s. */
export async function browser() {
  const b = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  const newContext = b.newContext.bind(b);
  b.newContext = async (opts) => {
    const ctx = await newContext(opts);
    ctx.setDefaultTimeout(5000);
    return ctx;
  };
  return b;
}

/** Signs in through the form with `field` = token or code. */
export async function signIn(page, edge, field, value) {
  await page.goto(edge.url + "/login");
  await page.fill(`#${field}`, value);
  await page.click(`form:has(#${field}) button[type=submit]`);
}

/** axe-core on the page: the serious and critical violations (WCAG 2.x A/AA, 2.2). */
export async function axe(page) {
  // Evaluated through the DevTools protocol: the page's CSP (no inline
  // script) stays in force and is not what lets axe in.
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  return result.filter((v) => v.impact === "serious" || v.impact === "critical");
}

/** A screenshot of the whole page under SCREENSHOTS. */
export async function shot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

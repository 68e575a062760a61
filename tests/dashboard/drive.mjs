// Drives Debian's Chromium through the dashboard of a running master, as
// an operator would: tests/dashboard.rs starts the master and runs this.
//
//   MESHPLAY_URL    the API's base URL (http://127.0.0.1:PORT)
//   MESHPLAY_TOKEN  a token to sign in with
//   SCREENSHOTS     where the screenshots go
//   CHROMIUM        the browser (default /usr/bin/chromium)
//
// Every step prints one line; the last line is a JSON summary the Rust test
// checks against the API. Any failed expectation exits non-zero.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.MESHPLAY_URL;
const token = process.env.MESHPLAY_TOKEN;
const shots = process.env.SCREENSHOTS;
const WAIT = { timeout: 20000 };
mkdirSync(shots, { recursive: true });

const step = (what) => console.log(`step: ${what}`);
const fail = (what) => { throw new Error(what); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run"],
});
const failures = [];
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  // The browser logs every 4xx answer as an error ("Failed to load
  // resource"); the refused token and the unknown event are meant to fail.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      failures.push(`console error: ${m.text()}`);
    }
  });

  step("open the dashboard: it asks for a token");
  await page.goto(url);
  await page.locator("#sign-in").waitFor({ state: "visible", ...WAIT });
  if (await page.locator("#main").isVisible()) fail("the dashboard shows before signing in");

  step("a wrong token is refused and says so");
  await page.fill("#token", "not-a-token");
  await page.click("#sign-in-form button");
  await page.locator("#sign-in-error", { hasText: "refused" }).waitFor(WAIT);
  if (await page.locator("#main").isVisible()) fail("a refused token shows the dashboard");

  step("sign in");
  await page.fill("#token", token);
  await page.click("#sign-in-form button");
  await page.locator("#main").waitFor({ state: "visible", ...WAIT });
  const kept = await page.evaluate(() => ({
    session: Object.values(sessionStorage),
    local: Object.keys(localStorage).length,
    url: location.href,
    cookies: document.cookie,
  }));
  if (!kept.session.includes(token)) fail("the token is not in the tab's session");
  if (kept.local !== 0 || kept.cookies !== "" || kept.url.includes(token)) {
    fail(`the token left the session: ${JSON.stringify({ ...kept, session: undefined })}`);
  }

  step("both workers show as running, with their pids");
  const running = page.locator('#workers tbody tr[data-state="running"]');
  await page.waitForFunction(() =>
    document.querySelectorAll('#workers tbody tr[data-state="running"]').length === 2, null, WAIT);
  const pids = await running.evaluateAll((rows) => rows.map((r) => Number(r.dataset.pid)));
  const firstPid = await page.getAttribute('#workers tbody tr[data-worker="0"]', "data-pid");

  step("the live console is connected");
  await page.locator("#stream-state", { hasText: "live" }).waitFor(WAIT);

  step("dispatch echo from the form; its result appears in the live console");
  await page.fill("#d-type", "user");
  await page.fill("#d-id", "dash-1");
  await page.fill("#d-event", "echo");
  await page.fill("#d-data", '{"from": "the browser"}');
  await page.click("#dispatch-form button");
  const echoed = page.locator('#console li[data-event="echo"][data-result="ok"]', { hasText: '"from":"the browser"' });
  await echoed.waitFor(WAIT);
  await page.locator("#dispatch-answer", { hasText: '"plugin": "echo"' }).waitFor(WAIT);

  step("a failing dispatch shows its error in the console");
  await page.fill("#d-event", "no-such-event");
  await page.click("#dispatch-form button");
  await page.locator('#console li.error[data-result="not_found"]').waitFor(WAIT);
  await page.locator("#dispatch-answer.error", { hasText: "not_found" }).waitFor(WAIT);

  step("the plugins, the live tenant and the KV the test stored are shown");
  await page.locator('#plugins tbody tr[data-plugin="echo"]').waitFor(WAIT);
  await page.locator('#filters tbody tr[data-filter="redact"]').waitFor(WAIT);
  await page.locator('#tenants tbody tr[data-tenant="user:dash-1"]').waitFor(WAIT);
  await page.fill("#kv-type", "guild");
  await page.fill("#kv-id", "dash");
  await page.fill("#kv-scope", "default");
  await page.click("#kv-form button");
  await page.locator('#kv tbody tr[data-key="motd"]', { hasText: "hello from the test" }).waitFor(WAIT);

  step("the tenant's schedule and its pending run are shown");
  await page.fill("#t-type", "guild");
  await page.fill("#t-id", "dash");
  await page.click("#timers-form button");
  await page.locator('#schedules tbody tr[data-schedule="nightly"]', { hasText: "30 2 * * *" }).waitFor(WAIT);
  await page.locator('#timers tbody tr[data-event="tick"]', { hasText: "nightly" }).waitFor(WAIT);

  step("the charts count the traffic");
  await page.locator("#traffic-summary", { hasText: /^[1-9]\d* events/ }).waitFor(WAIT);
  await page.screenshot({ path: join(shots, "dashboard.png"), fullPage: true });

  step(`kill worker 0 (pid ${firstPid}): the page sees it go and come back`);
  process.kill(Number(firstPid), "SIGKILL");
  await page.locator('#console li.worker[data-worker="0"][data-state="disconnected"]').waitFor(WAIT);
  await page.locator('#console li.worker[data-worker="0"][data-state="connected"]').waitFor(WAIT);
  await page.waitForFunction((old) => {
    const r = document.querySelector('#workers tbody tr[data-worker="0"]');
    return r && r.dataset.state === "running" && r.dataset.pid !== old && r.dataset.pid !== ""
      && Number(r.dataset.restarts) >= 1;
  }, firstPid, WAIT);
  const newPid = await page.getAttribute('#workers tbody tr[data-worker="0"]', "data-pid");
  await page.screenshot({ path: join(shots, "worker-restarted.png"), fullPage: true });

  step("sign out forgets the token");
  await page.click("#sign-out");
  await page.locator("#sign-in").waitFor({ state: "visible", ...WAIT });
  const left = await page.evaluate(() => sessionStorage.length);
  if (left !== 0) fail("the token is still in the session after signing out");

  if (failures.length) fail(failures.join("\n"));
  console.log(JSON.stringify({ pids, killed: Number(firstPid), restarted: Number(newPid) }));
} finally {
  await browser.close();
}

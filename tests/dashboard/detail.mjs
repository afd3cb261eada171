// Opens the dashboard in headless Chromium, clicks a running work item and checks its
// detail: live output (the agent prints `line 1`, `line 2`, ...), the routing explanation
// naming an agent that routing rejected for `capability-missing`, and a chart that moves.
// Arguments: dashboard URL, work item id, the rejected agent's id, and the directory to
// write `detail.png` and `charts.png` to. Exits non-zero with a reason on any failure.
import { launch, openPage } from "./browser.mjs";
import { join } from "node:path";

const [url, workId, rejectedAgent, shotDir] = process.argv.slice(2);
if (!url || !workId || !rejectedAgent || !shotDir) {
  console.error("usage: node detail.mjs <dashboard url> <work id> <rejected agent id> <screenshot dir>");
  process.exit(2);
}

// Waits for `predicate` in the page, failing with `what` (and what the page shows) on timeout.
async function waitFor(page, what, predicate, arg, timeout = 20000) {
  try {
    await page.waitForFunction(predicate, arg, { timeout, polling: 100 });
  } catch (e) {
    const shown = await page.evaluate(() => ({
      detail: document.querySelector("#detail")?.innerText?.slice(0, 3000),
      error: document.querySelector("#error")?.textContent,
    })).catch(() => ({}));
    throw new Error(`timed out waiting for ${what}: ${e.message}\npage error line: ${shown.error}\ndetail panel:\n${shown.detail}`);
  }
}

const browser = await launch();
let failed = false;
try {
  const page = await openPage(browser, 20000);
  await page.goto(url);
  await page.waitForSelector("#connection.live");

  // The item's row, clicked on its first cell (not on its cancel button).
  const row = `#work tr[data-id="${workId}"]`;
  await page.waitForSelector(row);
  await page.click(`${row} td:first-child`);
  await page.waitForSelector("#detail:not([hidden])");
  await page.waitForSelector(`${row}.selected`);

  // Live output: paged, then followed over Server-Sent Events while the agent prints.
  await waitFor(page, "#output to show `line 3`", () => (document.querySelector("#output")?.textContent || "").includes("line 3"));

  // The routing explanation names the rejected agent and why.
  await waitFor(page, `#routing to name ${rejectedAgent} with capability-missing`, (agent) => {
    const routing = document.querySelector("#routing");
    const row = routing && [...routing.querySelectorAll("tr[data-candidate]")].find((r) => r.dataset.candidate === agent);
    return !!row && row.textContent.includes("capability-missing") && row.dataset.eligible === "false";
  }, rejectedAgent);
  const routingText = await page.locator("#routing").innerText();
  if (!routingText.includes(rejectedAgent) || !routingText.includes("capability-missing")) {
    throw new Error(`#routing does not name ${rejectedAgent} and capability-missing:\n${routingText}`);
  }

  // The timeline has the item's events with their times.
  await waitFor(page, "the timeline to show work.started", () => [...document.querySelectorAll("#timeline li")].some((li) => li.textContent.includes("work.started") && li.querySelector("time")));

  // A chart moves: an item no agent can take, submitted through the form, raises the
  // queue depth chart.
  const points = () => page.$$eval("#charts svg[data-points]", (svgs) => svgs.map((s) => Number(s.getAttribute("data-points"))));
  const before = await points();
  if (before.length < 3) throw new Error(`expected three charts, found ${before.length}`);
  await page.screenshot({ path: join(shotDir, "detail.png") });
  await page.keyboard.press("Escape");
  await page.waitForSelector("#detail", { state: "hidden" });
  await page.fill("#submit input[name=description]", "nobody takes this");
  await page.fill("#submit input[name=capability]", "haskell");
  await page.click("#submit button[type=submit]");
  await waitFor(page, "the queue depth chart to show the waiting item", () => {
    const svg = document.querySelector('#charts svg[data-series="pending"]');
    return Number(svg.getAttribute("data-max")) >= 1 && svg.querySelector("polyline") !== null;
  });
  await page.screenshot({ path: join(shotDir, "charts.png") });
  console.log(`the dashboard showed ${workId}'s output, routing (${rejectedAgent}: capability-missing) and moving charts ${JSON.stringify(before)} -> ${JSON.stringify(await points())}`);
} catch (e) {
  failed = true;
  console.error(`dashboard detail check failed: ${e.stack || e.message}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

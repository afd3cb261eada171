// Opens the dashboard in headless Chromium, submits work through its form, and checks
// that the page follows the item live to `completed`. Arguments: dashboard URL, agent id,
// a file to create when the item runs (which lets the agent's command finish), and where
// to write the screenshot. Exits non-zero with a reason on any failure.
import { launch, openPage } from "./browser.mjs";
import { writeFileSync } from "node:fs";

const [url, agentId, goFile, screenshot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await openPage(browser, 20000);
  await page.goto(url);
  await page.waitForSelector("#connection.live");
  await page.waitForSelector(`#agents tr[data-guid="${agentId}"]`);
  await page.fill("#submit input[name=description]", "dashboard job");
  await page.fill("#submit input[name=capability]", "rust");
  await page.click("#submit button[type=submit]");
  const row = page.locator("#work tr", { hasText: "dashboard job" });
  await row.locator(".s-in-progress").waitFor();
  writeFileSync(goFile, "go");
  await row.locator(".s-completed").waitFor();
  await page.waitForSelector("#events li:has-text('work:completed')");
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("dashboard followed the item to completed");
} finally {
  await browser.close();
}

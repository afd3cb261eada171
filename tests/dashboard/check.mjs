// Opens the dashboard in headless Chromium, submits work through its form, and checks
// that the page follows the item live to `completed`. Arguments: dashboard URL, agent id,
// a file to create when the item runs (which lets the agent's command finish), and where
// to write the screenshot. Exits non-zero with a reason on any failure.
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";

const [url, agentId, goFile, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(20000);
  // What the page says goes to stderr, so a failure explains itself.
  page.on("console", (m) => console.error(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
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

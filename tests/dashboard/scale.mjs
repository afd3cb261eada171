// Opens the dashboard on a fleet of 1,000 work items and 100 agents: the tables render one
// page (200 rows), the rest is a click away, search finds one item among them and a click
// opens it. Prints how long the first full render and the
// longest main-thread task took (figures, not checks). Arguments: dashboard URL, the task id
// to search for, screenshot path. Exits non-zero with a reason on failure.
import { launch, openPage } from "./browser.mjs";

const [url, taskId, screenshot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await openPage(browser, 60000);
  await page.addInitScript(() => {
    window.__longest = 0;
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longest = Math.max(window.__longest, e.duration);
    }).observe({ type: "longtask", buffered: true });
  });
  const started = Date.now();
  await page.goto(url);
  await page.waitForSelector("#connection.live");
  await page.waitForFunction(() => document.querySelector('[data-pager="work"]')?.textContent.includes("of 1000"));
  await page.waitForFunction(() => document.querySelector('[data-pager="agents"]')?.textContent.includes("of 100"));
  const rendered = Date.now() - started;
  const rows = await page.$$eval("#work tr[data-id]", (r) => r.length);
  if (rows > 200) throw new Error(`${rows} work rows in the DOM: the list is not paged`);
  const agentRows = await page.$$eval("#agents tr[data-guid]", (r) => r.length);
  if (agentRows !== 100) throw new Error(`${agentRows} agent rows, expected 100 (one page)`);
  await page.click('[data-page="work:1"]');
  await page.waitForFunction(() => document.querySelector('[data-pager="work"]')?.textContent.includes("201–400 of 1000"));
  await page.fill("#search", taskId);
  await page.waitForFunction((id) => {
    const rows = [...document.querySelectorAll("#work tr[data-id]")];
    return rows.length === 1 && rows[0].textContent.length > 0 && document.querySelector('[data-pager="work"]').textContent.includes("of 1");
  }, taskId);
  // Still answering: a click opens the found item's detail.
  await page.click("#work tr[data-id]");
  await page.waitForSelector("#detail #timeline");
  await page.screenshot({ path: screenshot });
  const longest = await page.evaluate(() => window.__longest);
  console.log(`1000 items and 100 agents: first full render ${rendered} ms, longest main-thread task ${Math.round(longest)} ms, ${rows} work rows in the DOM`);
} finally {
  await browser.close();
}

// Drives the Sluice console in Debian's headless Chromium, as a user would, and checks what
// the page shows. Started by tests/all/console.rs, which sets the engine up first: a topic
// `orders` with records, a plugin group `copy` (paused, so it lags) whose input holds one
// record it traps on, and a topic `clicks` whose oldest records are only in the archive.
//
//   node drive.mjs URL TOKEN SCREENSHOT_DIR
//
// Prints one JSON object of what it saw; exits non-zero, naming the step, when a check fails.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [url, token, shots] = process.argv.slice(2);
if (!url || !token || !shots) {
  console.error('usage: node drive.mjs URL TOKEN SCREENSHOT_DIR');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const STEP_TIMEOUT_MS = 30_000;
const seen = { lag: [], steps: [] };
const errors = [];
let step = 'start';

function check(condition, what) {
  if (!condition) throw new Error(what);
}

async function number(page, selector) {
  const text = await page.locator(selector).first().innerText();
  return Number(text.replace(/[^0-9]/g, ''));
}

async function waitFor(page, what, predicate) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    if (await predicate()) return;
    check(Date.now() < deadline, `timed out waiting for ${what}`);
    await page.waitForTimeout(100);
  }
}

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  seen.steps.push(name);
}

async function fitsWidth(page, width, name) {
  const scroll = await page.evaluate(() => document.documentElement.scrollWidth);
  check(scroll <= width, `${name} at ${width} px is ${scroll} px wide: it scrolls sideways`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });

  step = '1. the console loads and shows the topic and the lagging plugin group';
  await page.goto(url);
  await page.locator('#topics').getByText('orders', { exact: true }).waitFor({ timeout: STEP_TIMEOUT_MS });
  await page.locator('#plugins').getByText('copy', { exact: true }).waitFor();
  const lag = await number(page, '[data-lag="copy"]');
  check(lag > 0, `the plugin group shows lag ${lag}`);
  seen.lag.push(lag);
  await shot(page, 'overview-1280');

  step = '3a. sign in from the plugin page';
  await page.locator('#plugins a', { hasText: 'copy' }).click();
  await page.locator('#plugin-status [data-status="paused"]').waitFor();
  await page.locator('#sign-in-to-act').click();
  await page.locator('#token-input').fill(token);
  await page.locator('#token-save').click();
  await page.locator('#resume').waitFor();

  step = '2. resumed from the page, the lag falls as the plugin catches up';
  await page.locator('#resume').click();
  await page.locator('#plugin-status [data-status="running"]').waitFor({ timeout: STEP_TIMEOUT_MS });
  await waitFor(page, 'the lag to reach 0', async () => {
    const now = await number(page, '#plugin-lag b');
    if (seen.lag[seen.lag.length - 1] !== now) seen.lag.push(now);
    return now === 0;
  });
  check(seen.lag.every((v, i) => i === 0 || v <= seen.lag[i - 1]), `the lag went up: ${seen.lag}`);

  step = '4. the dead letter is shown with its error, and replayed from the page';
  await waitFor(page, 'one dead letter', async () => (await number(page, '#plugin-dead-letters b')) === 1);
  const letters = page.locator('#dead-letter-table');
  await letters.getByText('trapped', { exact: false }).first().waitFor();
  await letters.getByText('bad', { exact: true }).first().waitFor();
  await shot(page, 'plugin-1280');
  await page.locator('#replay').click();
  // The record still traps: replayed, it is dead-lettered again.
  await waitFor(page, 'the replayed letter dead-lettered again', async () => (await number(page, '#plugin-dead-letters b')) === 2);

  step = '3b. paused from the page';
  await page.locator('#pause').click();
  await page.locator('#plugin-status [data-status="paused"]').waitFor({ timeout: STEP_TIMEOUT_MS });

  step = '5. browsing records shows the produced values';
  await page.goto(`${url}#/topic/orders`);
  await page.locator('#records table').waitFor({ timeout: STEP_TIMEOUT_MS });
  const first = await page.locator('#records tbody tr').first().innerText();
  check(first.includes('"order": 0') && first.includes('"amount"'), `the first record reads ${first}`);
  await page.locator('#browse-offset').fill('150');
  await page.locator('#browse').click();
  await page.locator('#records tbody tr').first().getByText('"order": 150').waitFor();
  await shot(page, 'topic-1280');

  step = '6. archived offsets are browsed, and the archive is a timeline of verified files';
  await page.goto(`${url}#/topic/clicks`);
  await page.locator('#archive-files tbody tr').first().waitFor({ timeout: STEP_TIMEOUT_MS });
  const files = await page.locator('#archive-files tbody tr').count();
  check(files >= 2, `${files} archived files listed`);
  check(await page.locator('.timeline span').count() >= files, 'the timeline shows the files');
  await page.locator('#verify').click();
  await page.locator('#verify-result', { hasText: 'files checked: all match' }).waitFor({ timeout: STEP_TIMEOUT_MS });
  // Offset 0 is below the log start: it comes from the archive.
  await page.locator('#records tbody tr').first().waitFor();
  const archived = await page.locator('#records tbody tr').first().innerText();
  check(/^0\s/.test(archived.trim()) && archived.includes('"click": 0'), `offset 0 reads ${archived}`);
  seen.archived_files = files;
  await shot(page, 'archive-1280');

  step = 'the layout at 390 px';
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [hash, name] of [['#/', 'overview'], ['#/plugin/copy', 'plugin'], ['#/topic/orders', 'topic']]) {
    await page.goto(`${url}${hash}`);
    await page.locator('main h1').waitFor();
    await page.waitForLoadState('networkidle');
    await fitsWidth(page, 390, name);
    await shot(page, `${name}-390`);
  }

  check(errors.length === 0, `the page logged errors: ${errors.join(' | ')}`);
  console.log(JSON.stringify(seen));
} catch (error) {
  const pages = browser.contexts().flatMap((c) => c.pages());
  const main = pages.length ? await pages[0].locator('main').innerText().catch(() => '') : '';
  if (pages.length) await pages[0].screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`console check failed at step "${step}": ${error.message}\nthe page's errors: ${errors.join(' | ')}\nthe page showed:\n${main}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

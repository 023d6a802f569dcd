// The web console end to end in headless Chromium (playwright-core driving
// Debian's chromium). scripts/consoletest starts the control plane, two edges
// and mock providers, then runs this with:
//   CONSOLE_URL   the control node's API, serving /ui
//   ADMIN_TOKEN, READ_TOKEN   its tokens
//   CHROMIUM      the browser binary (default /usr/bin/chromium)
//   SCREENSHOT_DIR  where the PNGs go
// It exits non-zero on the first failed expectation, within 60 s.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const base = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOT_DIR || '.';
if (!base || !process.env.ADMIN_TOKEN || !process.env.READ_TOKEN) {
  console.error('e2e.mjs: set CONSOLE_URL, ADMIN_TOKEN and READ_TOKEN');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const deadline = setTimeout(() => {
  console.error('e2e.mjs: over 60 s, giving up');
  process.exit(1);
}, 60_000);

function check(cond, what) {
  if (!cond) throw new Error('expectation failed: ' + what);
  console.log('ok  ' + what);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  timeout: 30_000,
});
// Any script error or refused resource (a CSP violation shows as a console
// error) fails the run.
const problems = [];
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) problems.push(`${page.url()}: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  return page;
}
// nav follows a menu link and waits until htmx has bound the new page's
// forms: htmx loads deferred, and a click before that would submit a form
// the plain way.
async function nav(page, text) {
  await page.click(`nav >> text=${text}`);
  await page.waitForLoadState('load');
  await page.waitForFunction(() => window.htmx !== undefined && document.readyState === 'complete');
}
async function shot(page, name) {
  // caret: 'initial' keeps Playwright from injecting a style element of
  // its own, which the console's CSP would (rightly) refuse.
  await page.screenshot({ path: join(shots, name + '.png'), fullPage: true, caret: 'initial' });
}

try {
  const page = await newPage();

  // No session: the console sends us to its login form.
  await page.goto(base + '/ui/');
  check(page.url().startsWith(base + '/ui/login'), 'an unauthenticated visit lands on the login page');
  await page.fill('#token', 'not-a-token-of-this-cluster');
  await page.click('#login');
  await page.locator('.error').waitFor();
  check(true, 'a wrong token is refused');
  await page.fill('#token', process.env.ADMIN_TOKEN);
  await shot(page, 'login');
  await page.click('#login');
  await page.waitForURL(base + '/ui/');
  check((await page.textContent('#role')).trim() === 'admin', 'logged in as admin');
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'meridian_console');
  check(session && session.httpOnly && session.sameSite === 'Strict', 'the session cookie is HttpOnly and SameSite=Strict');
  check(await page.evaluate(() => document.cookie) === '', 'no script can read the session');

  // The map: three regions, three PoPs, two of them current, one never seen.
  for (const r of ['eu-west', 'us-east', 'ap-south']) {
    check(await page.locator(`#map g.region[data-region="${r}"]`).count() === 1, `the map shows region ${r}`);
  }
  check(await page.locator('#map g.pop').count() === 3, 'the map shows three PoPs');
  check(await page.getAttribute('#map g.pop[data-pop="edge-eu"]', 'data-health') === 'current', 'edge-eu is current');
  check(await page.getAttribute('#map g.pop[data-pop="edge-us"]', 'data-health') === 'current', 'edge-us is current');
  check(await page.getAttribute('#map g.pop[data-pop="edge-ap"]', 'data-health') === 'unreported', 'edge-ap never reported');
  const revision = Number(await page.textContent('#table-revision'));
  check(revision > 0, `the table revision is shown (${revision})`);
  check(/^12 requests/.test(await page.textContent('#traffic-total')), 'the last 24 h of traffic is shown');
  // The PoP marker sits where the region's coordinates put it: Dublin is
  // in the top left quarter, Mumbai right of the middle.
  const eu = await page.locator('#map g.region[data-region="eu-west"] circle').boundingBox();
  const ap = await page.locator('#map g.region[data-region="ap-south"] circle').boundingBox();
  const map = await page.locator('#map').boundingBox();
  check(eu.x + eu.width / 2 < map.x + map.width / 2 && eu.y + eu.height / 2 < map.y + map.height / 2, 'Dublin is north-west of the centre');
  check(ap.x + ap.width / 2 > map.x + map.width / 2, 'Mumbai is east of the centre');
  await shot(page, 'map');

  // The decision explorer: edge-us deciding for a client in Dublin with the
  // EU tenant's key: the EU provider first, the US one excluded by residency.
  await nav(page, 'Decision explorer');
  await page.selectOption('#edge', 'edge-us');
  await page.selectOption('#model', 'chat');
  await page.selectOption('#location', 'region:eu-west');
  await page.selectOption('#key', 'key-eu');
  await page.click('#explain');
  await page.locator('#candidates tbody tr').first().waitFor();
  const first = await page.getAttribute('#candidates tbody tr >> nth=0', 'data-target');
  check(/mock-eu/.test(first), `the EU provider is the first candidate (${first})`);
  const excluded = await page.textContent('#excluded');
  check(/mock-us/.test(excluded), 'the US provider is excluded for the EU-only key');
  // Without the key, nearest orders both: the EU one first for a Dublin client.
  await page.selectOption('#key', '');
  await page.click('#explain');
  await page.waitForFunction(() => document.querySelectorAll('#candidates tbody tr[data-target]').length === 2);
  const order = await page.$$eval('#candidates tbody tr', (rows) => rows.map((r) => r.dataset.target));
  check(/mock-eu/.test(order[0]) && /mock-us/.test(order[1]), `nearest orders EU then US for a Dublin client (${order})`);
  await page.selectOption('#key', 'key-eu');
  await page.click('#explain');
  await page.waitForFunction(() => document.querySelectorAll('#candidates tbody tr[data-target]').length === 1);
  await shot(page, 'explain');

  // Keys: create one, see it once, revoke it.
  await nav(page, 'Keys');
  await page.fill('#new-key-id', 'e2e-key');
  await page.selectOption('#new-key-tenant', 'open');
  await page.click('#create');
  const secret = (await page.locator('#created-secret').textContent()).trim();
  check(/^mk-[0-9a-f]{48}$/.test(secret), 'the new key is shown once');
  check(await page.locator('#keys-table tr[data-key="e2e-key"]').count() === 1, 'the new key is listed');
  await shot(page, 'keys');
  page.once('dialog', (d) => d.accept());
  await page.click('#keys-table tr[data-key="e2e-key"] button');
  await page.locator('#keys-table tr[data-key="e2e-key"]').waitFor({ state: 'detached' });
  check(await page.locator('#created-secret').count() === 0, 'the key is revoked and its secret gone from the page');
  await page.reload();
  check(await page.locator('#keys-table tr[data-key="e2e-key"]').count() === 0, 'the revoked key stays gone');

  // Spend, routes and placements render; screenshots for README.
  await page.goto(base + '/ui/spend?by=tenant&range=24h');
  check(await page.locator('#spend-chart rect').count() === 2, 'spend is drawn over time, one colour per tenant');
  const totals = await page.textContent('#spend-totals');
  check(/open/.test(totals) && /eu-only/.test(totals), 'spend totals list both tenants');
  await shot(page, 'spend');
  await nav(page, 'Routes');
  check(await page.locator('#routes tr[data-model="chat"]').count() === 1, 'the routes page lists chat');
  await shot(page, 'routes');
  await nav(page, 'Placements');
  const row = '#placements-table tr[data-placement="tiny-eu"]';
  check((await page.textContent(row + ' td.nodes')).trim() === 'edge-eu', 'tiny-eu resolves to edge-eu');
  // Move it to us-east: the table now places it on edge-us.
  await page.selectOption('#placements-table tr[data-placement="tiny-eu"] select', 'region:us-east');
  await page.click('#placements-table tr[data-placement="tiny-eu"] button');
  await page.locator('#placements-notice, #placements-error').first().waitFor();
  check(await page.locator('#placements-error').count() === 0, 'the move is accepted' +
    (await page.locator('#placements-error').count() ? ': ' + await page.textContent('#placements-error') : ''));
  check((await page.textContent(row + ' td.on')).trim() === 'region us-east', 'the placement moved to us-east');
  check((await page.textContent(row + ' td.nodes')).trim() === 'edge-us', 'the published table places it on edge-us');
  await shot(page, 'placements');

  // A read-only token sees and cannot change.
  const reader = await newPage();
  await reader.goto(base + '/ui/login');
  await reader.fill('#token', process.env.READ_TOKEN);
  await reader.click('#login');
  await reader.waitForURL(base + '/ui/');
  check((await reader.textContent('#role')).trim() === 'read-only', 'logged in as read-only');
  await nav(reader, 'Keys');
  check(await reader.locator('#create-key').count() === 0, 'a reader is offered no key creation');
  check(await reader.locator('#keys-table button').count() === 0, 'a reader is offered no revoke');
  const status = await reader.evaluate(async () => {
    const r = await fetch('/ui/keys', { method: 'POST', headers: { 'HX-Request': 'true', 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'id=reader-key' });
    return r.status;
  });
  check(status === 403, 'a reader creating a key through the console is refused (403)');

  check(problems.length === 0, 'no script errors or CSP violations' + (problems.length ? ': ' + problems.join(' | ') : ''));
  console.log('e2e.mjs: all checks passed');
} catch (e) {
  console.error('e2e.mjs: ' + (e.stack || e));
  process.exitCode = 1;
} finally {
  clearTimeout(deadline);
  await browser.close();
}

// The UI under `weir serve` (/ui/) in a real headless Chromium: the token once through the login
// form, then the same pages as `weir ui`, read from PostgreSQL. Run by serve.sh, which starts
// serve and a worker, runs the pipeline demo as run `e2e`, and sets:
//   WEIR_SERVE_URL    serve's base URL
//   WEIR_TOKEN_FILE   the cluster token's file
//   WEIR_UI_SHOTS     where screenshots go
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.WEIR_SERVE_URL;
assert.ok(BASE, 'WEIR_SERVE_URL must be set (use serve.sh)');
const TOKEN = readFileSync(process.env.WEIR_TOKEN_FILE, 'utf8').trim();
const SHOTS = process.env.WEIR_UI_SHOTS || 'target/ui-screenshots/serve';
mkdirSync(SHOTS, { recursive: true });

test('serve: log in with the token, then runs, a run tree, an action and the timeline', async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));

    // Without the session: the login page, and the API refuses.
    const first = await page.goto(`${BASE}/ui/`);
    assert.equal(first.status(), 401);
    assert.match(await page.innerText('body'), /needs the cluster token/);
    const refused = await page.evaluate(async (u) => (await fetch(u)).status, `${BASE}/ui/api/runs`);
    assert.equal(refused, 401);
    // A wrong token is refused; the right one sets the cookie and opens the UI.
    await page.fill('input[name=token]', 'not the token');
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    assert.match(await page.innerText('body'), /not this server's cluster token/);
    await page.fill('input[name=token]', TOKEN);
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    assert.equal(new URL(page.url()).pathname, '/ui/');
    const cookies = await page.context().cookies();
    assert.equal(cookies.length, 1);
    assert.equal(cookies[0].httpOnly, true);
    assert.equal(cookies[0].sameSite, 'Strict');
    assert.ok(!cookies[0].value.includes(TOKEN));

    // After logging in, nothing the page asks for is refused.
    page.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
    await page.locator('tr[data-run="e2e"]').waitFor();
    assert.match(await page.locator('tr[data-run="e2e"]').innerText(), /succeeded/);
    await page.screenshot({ path: join(SHOTS, 'runs.png') });

    await page.locator('tr[data-run="e2e"] a').click();
    const group = page.locator('[data-group]').first();
    await group.waitFor();
    assert.match(await group.innerText(), /× 8/, 'the 8 batches are one folded row');
    await group.click();
    const member = page.locator('.trow[data-action]', { hasText: 'process_batch' }).first();
    await member.waitFor();
    const id = await member.getAttribute('data-action');
    await member.click();
    await page.locator('#detail > .mono', { hasText: new RegExp(`^${id}$`) }).waitFor();
    const detail = await page.locator('#detail').innerText();
    assert.match(detail, /inputs/i);
    assert.match(detail, /output/i);
    await page.screenshot({ path: join(SHOTS, 'run.png') });

    await page.locator('#tab-timeline').click();
    await page.waitForFunction(() => document.body.dataset.ready === 'timeline');
    assert.match(await page.locator('#env-legend').innerText(), /optimized-pipeline: /);
    await page.screenshot({ path: join(SHOTS, 'timeline.png'), fullPage: true });
    assert.deepEqual(errors, [], 'no page errors and no refused requests');
  } finally {
    await browser.close();
  }
});

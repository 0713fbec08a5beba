// End-to-end tests of the weir UI in a real headless Chromium, through playwright-core.
// Run by run.sh, which builds a state directory, starts the server and sets:
//   WEIR_UI_URL     the server's base URL
//   WEIR_UI_SHOTS   where screenshots go
//   WEIR_UI_BIG     "1" when the state has the w1m (1 000 000 actions) and flat runs
//   WEIR_UI_SLOW    a command that starts a live run named "slow" (optional)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';

const BASE = process.env.WEIR_UI_URL;
const SHOTS = process.env.WEIR_UI_SHOTS || 'target/ui-screenshots';
const BIG = process.env.WEIR_UI_BIG === '1';
assert.ok(BASE, 'WEIR_UI_URL must be set (use run.sh)');
mkdirSync(SHOTS, { recursive: true });

let context;
let profile;
const apiSizes = new Map(); // url -> bytes of the largest answer seen
const metrics = {};

before(async () => {
  profile = mkdtempSync(join(tmpdir(), 'weir-ui-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1400, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  context.on('response', async (res) => {
    if (!res.url().includes('/api/') || res.url().endsWith('/events')) return;
    try {
      const n = (await res.body()).length;
      const key = res.url().replace(BASE, '');
      apiSizes.set(key, Math.max(n, apiSizes.get(key) || 0));
    } catch { /* navigation raced the body */ }
  });
});

after(async () => {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
  const largest = [...apiSizes.entries()].sort((a, b) => b[1] - a[1])[0];
  if (largest) metrics.largest_api_response_in_browser = { url: largest[0], bytes: largest[1] };
  writeFileSync(join(SHOTS, 'metrics.json'), JSON.stringify(metrics, null, 2));
  console.log('metrics', JSON.stringify(metrics));
});

const pageErrors = [];
async function newPage() {
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  return page;
}
function noPageErrors() {
  assert.deepEqual(pageErrors.splice(0), [], 'no JavaScript errors in the page');
}

// GET /api{path}: the JSON answer, or null when it is not a 200.
async function apiJson(path) {
  const res = await fetch(`${BASE}/api${path}`);
  return res.ok ? res.json() : null;
}

// Polls `cond` (every 50 ms) until it holds; fails after `ms`.
async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// The first member of a group (of the children of a run's root) that `pick` accepts, with its
// position in the group as the API (and so the tree) lists it.
async function groupMember(run, group, pick) {
  for (let offset = 0; ; offset += 500) {
    const d = await apiJson(`/runs/${run}/actions/a0/groups/${group}?offset=${offset}&limit=500`);
    assert.ok(d, `group ${group} of run ${run}`);
    const i = d.actions.findIndex(pick);
    if (i >= 0) return { index: offset + i, id: d.actions[i].id };
    assert.ok(d.actions.length && offset + d.actions.length < d.total, `no member of ${group} matches`);
  }
}

// Scrolls the virtualized tree so that row `index` (0: the run's root) is in its window.
async function scrollTreeTo(page, index) {
  await page.locator('#tree .trow').first().waitFor();
  await page.locator('#tree').evaluate((el, i) => {
    const rowH = el.querySelector('.trow').getBoundingClientRect().height;
    el.scrollTop = Math.max(0, i * rowH - el.clientHeight / 2);
  }, index);
}

// Clicks a row of the action tree and returns the detail pane's text once it shows that action.
// The pane keeps the previously selected action until the new one's detail has been fetched,
// so waiting for text that both could have (e.g. "Failed attempts (1)") would read the old one.
async function openDetail(page, row) {
  const id = await row.getAttribute('data-action');
  assert.ok(id, 'a tree row with an action id');
  await row.click();
  await page.locator('#detail > .mono', { hasText: new RegExp(`^${id}$`) }).waitFor();
  return page.locator('#detail').innerText();
}

test('runs page lists runs with counts and filters by status and name', async () => {
  const page = await newPage();
  await page.goto(`${BASE}/#/`);
  await page.locator('tr[data-run="demo"]').waitFor();
  const demo = page.locator('tr[data-run="demo"]');
  assert.match(await demo.innerText(), /succeeded/);
  assert.match(await demo.innerText(), /failed/, 'demo has failed children, shown in its counts');
  assert.ok(await page.locator('tr[data-run="doomed"]').count() === 1);
  await page.screenshot({ path: join(SHOTS, 'runs.png') });

  await page.selectOption('#status-filter', 'failed');
  await page.locator('tr[data-run="demo"]').waitFor({ state: 'detached' });
  await page.locator('tr[data-run="doomed"]').waitFor();
  await page.selectOption('#status-filter', '');
  // Wait for the unfiltered list before filtering by name (the name filter is debounced).
  await page.locator('tr[data-run="demo"]').waitFor();
  await page.fill('#name-filter', 'tin');
  await page.locator('tr[data-run="demo"]').waitFor({ state: 'detached' });
  await page.locator('tr[data-run="tiny"]').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 1, null, { timeout: 5000 });
  assert.equal(await page.locator('tbody tr').count(), 1);
  await page.fill('#name-filter', '');
  await page.locator('tr[data-run="demo"]').waitFor();
  await page.close();
  noPageErrors();
});

test('run page: tree with a folded map group, expand, detail pane, timeline', async () => {
  const page = await newPage();
  await page.goto(`${BASE}/#/`);
  await page.locator('tr[data-run="demo"] a').click();
  const group = page.locator('[data-group="square_map"]');
  await group.waitFor();
  const groupText = await group.innerText();
  assert.match(groupText, /× 2,000/, 'the 2 000-child map is one folded row');
  assert.match(groupText, /1,979 succeeded · 21 failed/, 'with counts by status');
  assert.equal(await page.locator('[data-group="scoring"]').count(), 1);
  await page.screenshot({ path: join(SHOTS, 'run-demo.png') });

  await group.click();
  await page.locator('.trow[data-action]', { hasText: 'etl.square' }).first().waitFor();
  // virtualized: only about a screenful of rows exists in the DOM
  const rows = await page.locator('.trow').count();
  assert.ok(rows < 60, `virtualized tree renders ${rows} rows`);
  // scroll to the end of the group: its last members get fetched and shown
  await page.locator('#tree').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await page.waitForFunction(() => [...document.querySelectorAll('.trow[data-action]')].some((r) => r.innerText.includes('ml.')));

  // a failed member's detail: inputs, error, attempts, no logs. Members are listed in the order
  // the engine recorded them, which under load is not the order of the map's inputs: item 13 may
  // be anywhere in the group, so find its place and scroll the virtualized tree there.
  const failed = await groupMember('demo', 'square_map', (a) => a.error === 'item 13 is malformed');
  await scrollTreeTo(page, 2 + failed.index); // rows: the root, the group, then its members
  const detail = await openDetail(page, page.locator(`.trow[data-action="${failed.id}"]`));
  assert.match(detail, /^error$/im, 'an Error section (the h3 is upper-cased by CSS)');
  assert.match(detail, /item 13 is malformed/);
  assert.match(detail, /inputs[\s\S]*"x": 13/i);
  assert.match(detail, /no logs captured/);
  assert.match(detail, /queue wait/);
  await page.screenshot({ path: join(SHOTS, 'run-demo-detail.png') });

  // the retried action (after the folded group again) shows its failed attempt
  // (the failed square above has one failed attempt too: wait for this action's own detail)
  await scrollTreeTo(page, 0);
  await group.click();
  const flaky = await openDetail(page, page.locator('.trow[data-action]', { hasText: 'ml.flaky_train' }));
  assert.match(flaky, /failed attempts \(1\)/i);
  assert.match(flaky, /GPU fell off the bus/);
  // an input whose JSON is over 64 KiB: a preview, marked truncated with the payload's size
  const big = await openDetail(page, page.locator('.trow[data-action]', { hasText: 'ml.summarize' }));
  assert.match(big, /truncated \([\d,]+ bytes\)/);
  assert.match(big, /\{"blob":\[0,100000,200000,/);

  await page.locator('#tab-timeline').click();
  await page.waitForFunction(() => document.body.dataset.ready === 'timeline');
  // each task's phases drawn under its lanes once the tasks' summary is in
  await page.waitForFunction(() => document.body.dataset.phases === 'drawn');
  const legend = await page.locator('#env-legend').innerText();
  assert.match(legend, /etl: /);
  assert.match(legend, /ml: /);
  await page.screenshot({ path: join(SHOTS, 'timeline-demo.png'), fullPage: true });
  await page.close();
  noPageErrors();
});

test('data passed by reference: URI, size and hash, and a DataFrame with its schema and first rows', async () => {
  const page = await newPage();
  await page.goto(`${BASE}/#/runs/frames`);
  const detail = await openDetail(page, page.locator('.trow[data-action="a0"]'));
  assert.match(detail, /\[0\] · file · 4,096 bytes/);
  assert.match(detail, /\[1\] · dataframe · [\d,]+ bytes · 3 rows/);
  assert.match(detail, /file:\/\/\S+\/blobs\/raw\/[0-9a-f]{64}/);
  assert.match(detail, /blake3 [0-9a-f]{64}/);
  const head = await page.locator('.ref-head').innerText();
  assert.match(head, /city: Utf8\s+temp: Float64\?/);
  assert.match(head, /Oslo\s+-3\.5/);
  assert.match(head, /Lima\s+null/);
  assert.match(head, /Pune\s+31\.25/);
  await page.screenshot({ path: join(SHOTS, 'references.png') });
  await page.close();
  noPageErrors();
});

test('tasks tab: where the time went per task, and the advice for the run', async () => {
  const page = await newPage();
  await page.goto(`${BASE}/#/runs/demo/tasks`);
  await page.waitForFunction(() => document.body.dataset.ready === 'tasks');
  const square = await page.locator('tr[data-task="etl.square"]').innerText();
  assert.match(square, /2,000/, 'its 2 000 actions');
  assert.match(square, /\d+%/, 'an overhead share');
  assert.ok(await page.locator('.phasebar').count() >= 2, 'a stacked bar per task');
  // Each square sleeps for milliseconds: long against what it costs, no advice.
  await page.locator('#no-advice').waitFor();
  await page.screenshot({ path: join(SHOTS, 'tasks-demo.png'), fullPage: true });
  // 300 children that only double a number, each costing more than it runs: batch them.
  await page.goto(`${BASE}/#/runs/chatty/tasks`);
  await page.waitForFunction(() => document.body.dataset.ready === 'tasks' && location.hash.includes('chatty'));
  const advice = await page.locator('li[data-rule="batch"]').first().innerText();
  assert.match(advice, /batch bench\.double/);
  assert.match(advice, /\.batch\(\d+\)/);
  assert.match(advice, /estimated run time .* -> /);
  await page.screenshot({ path: join(SHOTS, 'tasks-chatty.png'), fullPage: true });
  // An action's pane shows its own phases.
  await page.goto(`${BASE}/#/runs/tiny`);
  const detail = await openDetail(page, page.locator('.trow[data-action="a0"]'));
  assert.match(detail, /upload \S+ · queue \S+ · start \S+ · download \S+ · exec \S+ · output \S+ · deliver \S+/);
  await page.close();
  noPageErrors();
});

test('unknown run shows the API message', async () => {
  const page = await newPage();
  await page.goto(`${BASE}/#/runs/no-such-run`);
  await page.locator('.error-box').waitFor();
  assert.match(await page.locator('.error-box').innerText(), /unknown run "no-such-run"/);
  await page.close();
  noPageErrors();
});

test('live run updates without reloading', { skip: !process.env.WEIR_UI_SLOW }, async () => {
  const page = await newPage();
  // the runs page is open before the run starts: the run appears in it on its own (polling)
  await page.goto(`${BASE}/#/`);
  await page.locator('tr[data-run="demo"]').waitFor();
  // The run lasts a few seconds, while the list polls every 2 s: on a busy machine the page could
  // open it only after it ended, with nothing live left to see. So its process (in a group of its
  // own) is paused as soon as the run is running, until the page has shown it running.
  const child = spawn('sh', ['-c', process.env.WEIR_UI_SLOW], { stdio: 'inherit', detached: true });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const signal = (sig) => { try { process.kill(-child.pid, sig); } catch { /* it has exited */ } };
  try {
    await until(async () => (await apiJson('/runs/slow'))?.status === 'running', 20000, 'the run "slow" to be running');
    signal('SIGSTOP');
    await page.locator('tr[data-run="slow"] a').click({ timeout: 20000 });
    await page.locator('.runhead .badge.running').waitFor({ timeout: 10000 });
    await page.evaluate(() => { window.__noReload = true; });
    const first = await page.locator('.runhead').innerText();
    signal('SIGCONT');
    await page.locator('.runhead .badge.succeeded').first().waitFor({ timeout: 30000 });
    const last = await page.locator('.runhead').innerText();
    assert.notEqual(first, last);
    assert.equal(await page.evaluate(() => window.__noReload), true, 'no page reload happened');
    assert.match(last, /succeeded \d/);
    await page.close();
  } finally {
    signal('SIGCONT');
    await exited;
  }
});

test('1 000 000-action run opens fast and scrolls smoothly', { skip: !BIG }, async () => {
  // cold: a server that has computed nothing yet, straight onto the run page
  const coldUrl = process.env.WEIR_UI_COLD_URL;
  if (coldUrl) {
    const cold = await newPage();
    const t = Date.now();
    await cold.goto(`${coldUrl}/#/runs/w1m`);
    await cold.locator('[data-group="batch_map"]').waitFor({ timeout: 30000 });
    metrics.w1m_cold_server_open_ms = Date.now() - t;
    await cold.close();
  }
  const page = await newPage();
  await page.goto(`${BASE}/#/`); // the runs page computes (and caches) the counts first, as a person would see it
  await page.locator('tr[data-run="w1m"]').waitFor({ timeout: 60000 });
  const t0 = Date.now();
  await page.locator('tr[data-run="w1m"] a').click();
  await page.locator('[data-group="batch_map"]').waitFor({ timeout: 30000 });
  metrics.w1m_open_ms = Date.now() - t0;
  metrics.w1m_ready_in_page_ms = Math.round(await page.evaluate(() => window.__weirRunReadyMs));
  assert.match(await page.locator('.runhead').innerText(), /1,001,001 actions/);

  // a fresh tab straight onto the run page (the server has the run's counts cached)
  const cold = await newPage();
  const t1 = Date.now();
  await cold.goto(`${BASE}/#/runs/w1m`);
  await cold.locator('[data-group="batch_map"]').waitFor({ timeout: 30000 });
  metrics.w1m_direct_open_ms = Date.now() - t1;
  await cold.close();

  await page.locator('[data-group="batch_map"]').click();
  await page.locator('.trow[data-action]', { hasText: 'bench.batch' }).first().waitFor();
  await page.locator('.trow[data-action] .tog').nth(1).click();
  await page.locator('[data-group="double_map"]').first().click();
  await page.locator('.trow[data-action]', { hasText: 'bench.double' }).first().waitFor();
  await page.screenshot({ path: join(SHOTS, 'run-w1m.png') });

  const t2 = Date.now();
  await page.locator('#tab-timeline').click();
  await page.waitForFunction(() => document.body.dataset.ready === 'timeline', null, { timeout: 60000 });
  metrics.w1m_timeline_ms = Date.now() - t2;
  await page.screenshot({ path: join(SHOTS, 'timeline-w1m.png'), fullPage: true });
  await page.close();

  // scrolling: the flat run is one map of 100 000 children; scroll through it and time frames
  const flat = await newPage();
  await flat.goto(`${BASE}/#/runs/flat`);
  await flat.locator('[data-group="double_map"]').click();
  await flat.locator('.trow[data-action]', { hasText: 'bench.double' }).first().waitFor();
  const frames = await flat.locator('#tree').evaluate(async (el) => {
    const times = [];
    let last = performance.now();
    for (let i = 0; i < 120; i++) {
      el.scrollTop = (el.scrollHeight - el.clientHeight) * (i / 119);
      await new Promise((r) => requestAnimationFrame(r));
      const now = performance.now();
      times.push(now - last);
      last = now;
    }
    return times;
  });
  frames.sort((a, b) => a - b);
  metrics.flat_scroll_frames = { n: frames.length, median_ms: +frames[60].toFixed(1), p95_ms: +frames[113].toFixed(1), max_ms: +frames[119].toFixed(1) };
  await flat.waitForFunction(() => [...document.querySelectorAll('.trow[data-action]')].length > 10);
  await flat.screenshot({ path: join(SHOTS, 'run-flat-scrolled.png') });
  await flat.close();
});

// weir UI: plain JS, no build step. Routes live in the URL fragment:
//   #/                      runs
//   #/runs/NAME             a run: action tree + detail, or timeline (#/runs/NAME/timeline)
// Everything comes from the JSON API under api/ (relative: the UI may be mounted under a path,
// as `weir serve` mounts it under /ui/; see crates/weir-server/API.md), which never
// answers more than a page: the tree is virtualized and fetches pages of rows on demand.
'use strict';

const STATUSES = ['queued', 'leased', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'];
const COLORS = {
  queued: '#9aa5b1', leased: '#9b7fd1', running: '#2f80ed', retrying: '#f2994a',
  succeeded: '#27ae60', failed: '#eb5757', cancelled: '#7b8794', aborted: '#7b8794',
};
const ENV_COLORS = ['#2f80ed', '#27ae60', '#f2994a', '#9b51e0', '#eb5757', '#56ccf2', '#219653', '#f2c94c'];
const ROW_H = 26;        // keep in sync with --row in app.css
const PAGE = 200;        // rows per request in the tree
const MAX_SPACER = 8e6;  // px; beyond this the scrollbar is scaled (browsers cap element heights)

const $app = document.getElementById('app');
const $crumbs = document.getElementById('crumbs');
const $live = document.getElementById('live');
const $tip = document.getElementById('tooltip');

// ---------- helpers ----------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const enc = encodeURIComponent;
const fmtN = (n) => (n ?? 0).toLocaleString('en-US');
// What each attempt printed (cluster workers capture it); a note where nothing was captured.
function logs(d) {
  if (!Array.isArray(d.logs) || !d.logs.length) return h('div', { class: 'muted', id: 'logs' }, d.logs_note || 'no logs captured');
  return h('div', { id: 'logs' }, d.logs.map((l) => [
    h('div', { class: 'muted' }, `attempt #${l.attempt} on worker ${l.worker} (pid ${l.pid}, ${l.env}) ${l.ok ? 'succeeded' : 'failed'}`
      + (l.dropped_bytes ? ` — ${fmtN(l.dropped_bytes)} earlier bytes not shown (get logs --server has what was kept)` : '')
      + (l.overlapping ? ` — ${l.overlapping} other attempts ran on the worker meanwhile; their lines may be mixed in` : '')),
    h('pre', { class: 'log' }, l.text)]));
}
const PHASES = ['upload', 'queue', 'start', 'download', 'exec', 'output', 'deliver'];
// As the .ph-* classes of app.css (the timeline draws on a canvas).
const PHASE_COLORS = ['#99bbcc', '#cccccc', '#ee99aa', '#77aadd', '#33aa66', '#ffbb55', '#aa77dd'];
function fmtDur(us) {
  if (us == null || us < 0) return '';
  if (us < 1000) return `${Math.round(us)}µs`;
  if (us < 1e6) return `${(us / 1e3).toFixed(us < 1e4 ? 2 : 1)}ms`;
  const s = us / 1e6;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
function fmtTime(us) {
  if (us == null) return '';
  const d = new Date(us / 1000);
  const today = new Date().toDateString() === d.toDateString();
  const t = d.toLocaleTimeString('en-GB', { hour12: false });
  return today ? t : `${d.toISOString().slice(0, 10)} ${t}`;
}
function badge(status) { return h('span', { class: `badge ${status}` }, status); }
function countBar(counts, total) {
  const bar = h('span', { class: 'countbar' });
  for (const s of STATUSES) {
    const n = counts[s] || 0;
    if (n) bar.append(h('span', { style: `width:${(100 * n) / Math.max(total, 1)}%;background:${COLORS[s]}`, title: `${s}: ${fmtN(n)}` }));
  }
  return bar;
}
function chips(counts) {
  return h('span', { class: 'chips' }, STATUSES.filter((s) => counts[s]).map((s) =>
    h('span', { class: 'chip' }, h('i', { style: `background:${COLORS[s]}` }), `${s} ${fmtN(counts[s])}`)));
}
async function api(path) {
  const res = await fetch(`api${path}`);
  let body;
  try { body = await res.json(); } catch { body = { error: `HTTP ${res.status}` }; }
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}
function showError(where, e) {
  where.replaceChildren(h('div', { class: 'error-box' }, String(e.message || e)));
}
function tip(ev, text) {
  if (!text) { $tip.hidden = true; return; }
  $tip.textContent = text;
  $tip.hidden = false;
  $tip.style.left = `${Math.min(ev.clientX + 12, window.innerWidth - 430)}px`;
  $tip.style.top = `${ev.clientY + 14}px`;
}

// ---------- router ----------
let page = null; // current page object with a stop() method
function route() {
  if (page && page.stop) page.stop();
  page = null;
  $live.hidden = true;
  const hash = location.hash.replace(/^#/, '') || '/';
  const m = hash.match(/^\/runs\/([^/]+)(\/timeline|\/tasks)?$/);
  if (m) page = new RunPage(decodeURIComponent(m[1]), m[2] ? m[2].slice(1) : 'tree');
  else page = new RunsPage();
}
window.addEventListener('hashchange', route);

// ---------- runs page ----------
class RunsPage {
  constructor() {
    this.status = sessionStorage.getItem('runs.status') || '';
    this.name = sessionStorage.getItem('runs.name') || '';
    this.offset = 0;
    this.limit = 50;
    $crumbs.replaceChildren('runs');
    const statusSel = h('select', { id: 'status-filter', onchange: (e) => { this.status = e.target.value; this.offset = 0; this.save(); this.load(); } },
      ['', 'running', 'succeeded', 'failed', 'aborted'].map((s) => h('option', { value: s, selected: s === this.status }, s || 'any status')));
    let timer;
    const nameInput = h('input', { id: 'name-filter', placeholder: 'name contains…', value: this.name, oninput: (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => { this.name = e.target.value; this.offset = 0; this.save(); this.load(); }, 250);
    } });
    this.body = h('div', {}, h('div', { class: 'empty' }, 'loading…'));
    this.pager = h('div', { class: 'pager' });
    $app.replaceChildren(h('div', { class: 'panel', style: 'overflow:auto' },
      h('div', { class: 'filters' }, statusSel, nameInput), this.body, this.pager));
    this.load();
    this.timer = setInterval(() => this.load(), 2000);
  }
  save() { sessionStorage.setItem('runs.status', this.status); sessionStorage.setItem('runs.name', this.name); }
  stop() { clearInterval(this.timer); this.stopped = true; }
  async load() {
    const q = new URLSearchParams({ offset: this.offset, limit: this.limit });
    if (this.status) q.set('status', this.status);
    if (this.name) q.set('name', this.name);
    const ticket = (this.ticket = (this.ticket || 0) + 1); // a newer load wins over a slower older one
    let data;
    try { data = await api(`/runs?${q}`); } catch (e) { if (!this.stopped && ticket === this.ticket) showError(this.body, e); return; }
    if (this.stopped || ticket !== this.ticket) return;
    if (!data.runs.length) {
      this.body.replaceChildren(h('div', { class: 'empty' }, 'No runs match.'));
    } else {
      const now = Date.now() * 1000;
      this.body.replaceChildren(h('table', { class: 'runs' },
        h('thead', {}, h('tr', {}, ['run', 'status', 'task', 'started', 'duration', 'actions'].map((c) => h('th', {}, c)))),
        h('tbody', {}, data.runs.map((r) => h('tr', { 'data-run': r.name },
          h('td', {}, h('a', { href: `#/runs/${enc(r.name)}` }, r.name)),
          h('td', {}, badge(r.status)),
          h('td', { class: 'mono' }, r.task),
          h('td', {}, fmtTime(r.created_at)),
          h('td', { class: 'num' }, fmtDur((r.ended_at ?? now) - r.created_at)),
          h('td', {}, countBar(r.counts, r.total), fmtN(r.total), ' ',
            r.counts.failed ? h('span', { style: 'color:var(--failed)' }, `· ${fmtN(r.counts.failed)} failed`) : '',
            r.counts.running ? h('span', { style: 'color:var(--running)' }, ` · ${fmtN(r.counts.running)} running`) : ''))))));
    }
    const last = Math.min(this.offset + data.runs.length, data.total);
    this.pager.replaceChildren(
      h('button', { disabled: this.offset === 0, onclick: () => { this.offset = Math.max(0, this.offset - this.limit); this.load(); } }, '‹ newer'),
      h('span', { class: 'muted' }, data.total ? `${fmtN(this.offset + 1)}–${fmtN(last)} of ${fmtN(data.total)}` : ''),
      h('button', { disabled: last >= data.total, onclick: () => { this.offset += this.limit; this.load(); } }, 'older ›'));
  }
}

// ---------- the action tree model ----------
// An ActionNode is one action; expanded, it holds a Block: its named groups (GroupNodes, folded
// by default) and a Seq of its ungrouped children. A Seq is `total` rows fetched by pages of
// PAGE; the few members that are expanded are ActionNodes in `kids` (member index -> node).
let seqIds = 0;
class Seq {
  constructor(fetchPage, total, depth) {
    this.id = ++seqIds;
    this.fetchPage = fetchPage; // (offset, limit) => Promise<{actions, total}>
    this.total = total;
    this.depth = depth;
    this.pages = new Map();     // page number -> {rows, gen}
    this.pending = new Set();
    this.kids = new Map();      // member index -> ActionNode
  }
  size() {
    let n = this.total;
    for (const k of this.kids.values()) n += k.size() - 1;
    return n;
  }
  locate(i) {
    let extra = 0;
    for (const [m, node] of [...this.kids.entries()].sort((a, b) => a[0] - b[0])) {
      const start = m + extra;
      if (i < start) break;
      const sz = node.size();
      if (i < start + sz) return node.locate(i - start);
      extra += sz - 1;
    }
    return { seq: this, member: i - extra, depth: this.depth };
  }
  row(member) {
    const p = this.pages.get(Math.floor(member / PAGE));
    return p ? p.rows[member % PAGE] : undefined;
  }
}

class ActionNode {
  constructor(tree, row, depth) {
    this.tree = tree; this.row = row; this.depth = depth;
    this.expanded = false; this.block = null;
  }
  size() { return 1 + (this.expanded && this.block ? this.block.size() : 0); }
  locate(i) {
    if (i === 0) return { node: this, depth: this.depth };
    return this.block.locate(i - 1);
  }
  async toggle() {
    if (this.expanded) { this.expanded = false; this.tree.render(); return; }
    this.expanded = true;
    if (!this.block) { this.block = new Block(this); this.tree.render(); await this.block.load(); }
    this.tree.render();
  }
}

class Block {
  constructor(node) {
    this.node = node; this.groups = []; this.loaded = false;
    const t = node.tree;
    this.ungrouped = new Seq(async (offset, limit) => {
      const d = await api(`/runs/${enc(t.run)}/actions/${node.row.id}/children?offset=${offset}&limit=${limit}`);
      return { actions: d.actions, total: d.ungrouped };
    }, 0, node.depth + 1);
  }
  async load() {
    const d = await api(`/runs/${enc(this.node.tree.run)}/actions/${this.node.row.id}/children?offset=0&limit=${PAGE}`);
    const old = new Map(this.groups.map((g) => [g.name, g]));
    this.groups = d.groups.map((g) => {
      const prev = old.get(g.group);
      if (prev) { prev.update(g); return prev; }
      return new GroupNode(this.node, g);
    });
    this.ungrouped.total = d.ungrouped;
    this.ungrouped.pages.set(0, { rows: d.actions, gen: this.node.tree.gen });
    this.loaded = true;
  }
  size() {
    if (!this.loaded) return 1; // a "loading" row
    let n = this.ungrouped.size();
    for (const g of this.groups) n += g.size();
    return n;
  }
  locate(i) {
    if (!this.loaded) return { loading: true, depth: this.node.depth + 1 };
    for (const g of this.groups) {
      const sz = g.size();
      if (i < sz) return g.locate(i);
      i -= sz;
    }
    return this.ungrouped.locate(i);
  }
}

class GroupNode {
  constructor(parent, g) {
    this.parent = parent; this.tree = parent.tree; this.depth = parent.depth + 1;
    this.name = g.group; this.expanded = false;
    this.seq = new Seq(async (offset, limit) => {
      const d = await api(`/runs/${enc(this.tree.run)}/actions/${parent.row.id}/groups/${enc(this.name)}?offset=${offset}&limit=${limit}`);
      this.update(d);
      return { actions: d.actions, total: d.total };
    }, 0, this.depth + 1);
    this.update(g);
  }
  update(g) { this.total = g.total; this.counts = g.counts; this.seq.total = g.total; }
  size() { return 1 + (this.expanded ? this.seq.size() : 0); }
  locate(i) { return i === 0 ? { group: this, depth: this.depth } : this.seq.locate(i - 1); }
  toggle() { this.expanded = !this.expanded; this.tree.render(); }
}

// ---------- the virtualized tree view ----------
class Tree {
  constructor(run, rootRow, onSelect) {
    this.run = run; this.onSelect = onSelect; this.gen = 0; this.selected = null;
    this.root = new ActionNode(this, rootRow, 0);
    this.view = h('div', { class: 'treeview', id: 'tree' });
    this.spacer = h('div', { style: 'height:0' });
    this.win = h('div', { class: 'treewin' });
    this.view.append(this.spacer, this.win);
    this.view.addEventListener('scroll', () => this.render(), { passive: true });
    new ResizeObserver(() => this.render()).observe(this.view);
    this.fetchTimer = null;
    this.needed = new Map();
  }
  async expandRoot() { await this.root.toggle(); }
  total() { return this.root.size(); }
  render() {
    const total = this.total();
    const viewH = this.view.clientHeight || 400;
    const fullH = total * ROW_H;
    const spacerH = Math.min(fullH, MAX_SPACER);
    this.spacer.style.height = `${spacerH}px`;
    const top = this.view.scrollTop;
    let firstExact;
    if (fullH <= MAX_SPACER) firstExact = top / ROW_H;
    else {
      const maxScroll = Math.max(1, spacerH - viewH);
      firstExact = (Math.min(top, maxScroll) / maxScroll) * Math.max(0, total - viewH / ROW_H);
    }
    const first = Math.floor(firstExact);
    const count = Math.min(total - first, Math.ceil(viewH / ROW_H) + 2);
    this.win.style.transform = `translateY(${top - (firstExact - first) * ROW_H}px)`;
    const rows = [];
    this.needed.clear();
    for (let i = first; i < first + count; i++) rows.push(this.renderRow(this.root.locate(i)));
    this.win.replaceChildren(...rows);
    if (this.needed.size) this.scheduleFetch();
  }
  scheduleFetch() {
    clearTimeout(this.fetchTimer);
    const needed = [...this.needed.values()];
    this.fetchTimer = setTimeout(() => needed.forEach(({ seq, p }) => this.fetch(seq, p)), 40);
  }
  async fetch(seq, p) {
    const key = p;
    if (seq.pending.has(key)) return;
    seq.pending.add(key);
    const gen = this.gen;
    try {
      const d = await seq.fetchPage(p * PAGE, PAGE);
      seq.total = d.total;
      seq.pages.set(p, { rows: d.actions, gen });
      if (seq.pages.size > 60) { // keep memory bounded when scrolling far
        for (const k of seq.pages.keys()) { if (k !== p) { seq.pages.delete(k); break; } }
      }
    } catch (e) {
      console.warn('page fetch failed', e);
    } finally {
      seq.pending.delete(key);
    }
    this.render();
  }
  indent(depth) { return h('span', { style: `display:inline-block;width:${depth * 16}px` }); }
  renderRow(loc) {
    if (loc.loading) return h('div', { class: 'trow loading' }, h('span', {}, this.indent(loc.depth), 'loading…'));
    if (loc.group) {
      const g = loc.group;
      return h('div', { class: 'trow group', 'data-group': g.name, onclick: () => g.toggle() },
        h('span', { class: 'name' }, this.indent(g.depth), h('span', { class: 'tog' }, g.expanded ? '▾' : '▸'),
          `${g.name} `, h('span', { class: 'muted' }, `× ${fmtN(g.total)}`)),
        h('span', {}, h('span', { class: 'badge', style: 'background:#5c6ac4' }, 'group')),
        h('span', { class: 'groupcounts' }, countBar(g.counts, g.total), h('span', { class: 'muted' }, summary(g.counts))));
    }
    let node = loc.node;
    let row;
    if (!node) {
      row = loc.seq.row(loc.member);
      const p = Math.floor(loc.member / PAGE);
      const page = loc.seq.pages.get(p);
      if (!page || page.gen < this.gen) this.needed.set(`${loc.seq.id}:${p}`, { seq: loc.seq, p });
      if (!row) return h('div', { class: 'trow loading' }, h('span', {}, this.indent(loc.depth), `#${fmtN(loc.member + 1)} …`));
      node = loc.seq.kids.get(loc.member);
      if (node) node.row = row;
    } else row = node.row;
    const now = Date.now() * 1000;
    const run_us = row.started_at != null ? (row.ended_at ?? now) - row.started_at : null;
    const queue_us = (row.started_at ?? (row.ended_at ?? now)) - row.queued_at;
    const seq = loc.seq, member = loc.member, depth = loc.depth;
    const expand = (ev) => {
      ev.stopPropagation();
      let n = node;
      if (!n) { n = new ActionNode(this, row, depth); seq.kids.set(member, n); }
      n.toggle();
    };
    return h('div', { class: `trow${this.selected === row.id ? ' selected' : ''}`, 'data-action': row.id,
      onclick: () => { this.selected = row.id; this.onSelect(row); this.render(); } },
      h('span', { class: 'name', title: `${row.task} (${row.id})` }, this.indent(depth),
        h('span', { class: 'tog', onclick: row.has_children ? expand : null }, row.has_children ? (node && node.expanded ? '▾' : '▸') : '·'),
        row.task, h('span', { class: 'muted mono' }, ` ${row.id}`), row.kind === 'trace' ? h('span', { class: 'trace', title: 'trace' }, 'trace') : ''),
      h('span', {}, badge(row.status)),
      h('span', { class: 'num', title: 'attempts' }, row.attempts),
      h('span', { class: 'num', title: 'queue wait' }, fmtDur(queue_us)),
      h('span', { class: 'num', title: 'run time' }, fmtDur(run_us)),
      h('span', { title: 'cache hit, or recovered from an earlier run' },
        row.cache_hit ? h('span', { class: 'hit' }, 'hit')
          : row.recovered ? h('span', { class: 'hit' }, 'recovered') : ''),
      h('span', { class: 'err', title: row.error || '' }, row.error || ''));
  }
  // Live update: keep what is shown, refetch group counts of expanded blocks and visible pages.
  async refresh() {
    this.gen++;
    const blocks = [];
    const walk = (n) => {
      if (!n.block) return;
      if (n.expanded) blocks.push(n.block);
      for (const k of n.block.ungrouped.kids.values()) walk(k);
      for (const g of n.block.groups) for (const k of g.seq.kids.values()) walk(k);
    };
    walk(this.root);
    await Promise.all(blocks.slice(0, 20).map((b) => b.load().catch(() => {})));
    this.render();
  }
}
function summary(counts) {
  return STATUSES.filter((s) => counts[s]).map((s) => `${fmtN(counts[s])} ${s}`).join(' · ');
}

// ---------- run page ----------
class RunPage {
  constructor(run, tab) {
    this.run = run; this.tab = tab; this.stopped = false;
    $crumbs.replaceChildren(h('a', { href: '#/' }, 'runs'), ' / ', run);
    this.head = h('div', { class: 'panel runhead' }, h('span', { class: 'muted' }, 'loading…'));
    this.body = h('div', { class: 'split' });
    $app.replaceChildren(this.head, this.body);
    this.start();
  }
  stop() {
    this.stopped = true;
    if (this.events) this.events.close();
    clearInterval(this.clock);
    clearTimeout(this.chartTimer);
  }
  async start() {
    const t0 = performance.now();
    let info;
    try { info = await api(`/runs/${enc(this.run)}`); } catch (e) { showError(this.body, e); this.head.remove(); return; }
    if (this.stopped) return;
    this.info = info;
    this.renderHead();
    if (this.tab === 'timeline') this.showTimeline();
    else if (this.tab === 'tasks') await this.showTasks();
    else await this.showTree();
    window.__weirRunReadyMs = performance.now() - t0; // read by the end-to-end test
    if (this.tab === 'tree') document.body.dataset.ready = 'run';
    this.clock = setInterval(() => { if (this.info.status === 'running') this.renderHead(); }, 1000);
    this.listen();
  }
  renderHead() {
    const r = this.info;
    const now = Date.now() * 1000;
    const tabs = h('span', { class: 'tabs' },
      h('button', { class: this.tab === 'tree' ? 'active' : '', onclick: () => { location.hash = `#/runs/${enc(this.run)}`; } }, 'Actions'),
      h('button', { id: 'tab-timeline', class: this.tab === 'timeline' ? 'active' : '', onclick: () => { location.hash = `#/runs/${enc(this.run)}/timeline`; } }, 'Timeline'),
      h('button', { id: 'tab-tasks', class: this.tab === 'tasks' ? 'active' : '', onclick: () => { location.hash = `#/runs/${enc(this.run)}/tasks`; } }, 'Tasks'));
    this.head.replaceChildren(
      h('h1', {}, r.name), badge(r.status), h('span', { class: 'mono' }, r.task),
      h('span', { class: 'muted' }, `started ${fmtTime(r.created_at)}`),
      h('span', { class: 'muted' }, `duration ${fmtDur((r.ended_at ?? now) - r.created_at)}`),
      h('span', {}, `${fmtN(r.total)} actions `, chips(r.counts)),
      r.error ? h('span', { style: 'color:var(--failed)' }, r.error.message) : '',
      h('span', { style: 'margin-left:auto' }, tabs));
  }
  async showTree() {
    const wrap = h('div', { class: 'panel treewrap' },
      h('div', { class: 'treehead' }, ['action', 'status', 'tries', 'queue', 'run', 'cache', 'error / counts'].map((c, i) => h('span', { class: i >= 2 && i <= 4 ? 'num' : '' }, c))));
    this.detail = h('div', { class: 'panel detail', id: 'detail' }, h('div', { class: 'muted' }, 'Select an action to see its inputs, output, error and attempts.'));
    this.body.replaceChildren(wrap, this.detail);
    if (!this.info.root) { wrap.append(h('div', { class: 'empty' }, 'This run has no actions.')); return; }
    this.tree = new Tree(this.run, this.info.root, (row) => this.showDetail(row.id));
    wrap.append(this.tree.view);
    await this.tree.expandRoot();
  }
  async showDetail(id) {
    const pane = this.detail;
    pane.dataset.action = id;
    let d;
    try { d = await api(`/runs/${enc(this.run)}/actions/${id}`); } catch (e) { showError(pane, e); return; }
    if (pane.dataset.action !== id) return;
    const now = Date.now() * 1000;
    const payload = (p) => {
      if (!p) return h('div', { class: 'muted' }, 'none');
      const where = p.offloaded ? ` · offloaded to ${p.offloaded}` : '';
      const meta = h('div', { class: 'muted' }, p.truncated
        ? `truncated (${fmtN(p.size)} bytes)${where} · the beginning is shown; \`weir get io\` prints it all`
        : `${fmtN(p.size)} bytes${where}`);
      if (p.note) return h('div', {}, meta, h('div', { class: 'muted' }, p.note));
      return h('div', {}, meta, h('pre', {}, p.truncated ? p.preview : JSON.stringify(p.value, null, 2)),
        ...(p.references || []).map(reference));
    };
    // Data passed by reference (weir::File, Dir, DataFrame): where it is, its size and hash,
    // and a frame's schema and first rows, as the reference carries them (nothing is read).
    const reference = (r) => {
      const at = h('span', { class: 'mono' }, r.at || '(the value)');
      if (r.kind === 'dir') {
        return h('div', { class: 'ref' }, at, ` · dir of ${fmtN(r.files)} files, ${fmtN(r.size)} bytes`);
      }
      const head = h('div', { class: 'ref' }, at, ` · ${r.kind} · ${fmtN(r.size)} bytes`,
        r.rows !== undefined ? ` · ${fmtN(r.rows)} rows` : '',
        h('div', { class: 'mono muted ref-uri' }, r.uri),
        h('div', { class: 'mono muted' }, `blake3 ${r.hash}`));
      if (r.kind !== 'dataframe') return head;
      const cols = r.columns || [];
      const table = h('table', { class: 'ref-head' },
        h('thead', {}, h('tr', {}, ...cols.map((c) => h('th', {}, `${c.name}: ${c.type}${c.nullable ? '?' : ''}`)))),
        h('tbody', {}, ...(r.head || []).map((row) => h('tr', {}, ...row.map((v) => h('td', {}, v))))));
      head.append(table);
      return head;
    };
    const o = d.overhead;
    pane.replaceChildren(
      h('h2', {}, d.task, ' ', d.kind === 'trace' ? h('span', { class: 'trace' }, 'trace') : ''),
      h('div', { class: 'mono muted' }, d.id),
      h('dl', { class: 'facts' },
        h('dt', {}, 'status'), h('dd', {}, badge(d.status)),
        h('dt', {}, 'group'), h('dd', {}, d.group || '—'),
        h('dt', {}, 'parent'), h('dd', { class: 'mono' }, d.id === d.parent ? '— (root)' : d.parent),
        h('dt', {}, 'children'), h('dd', {}, fmtN(d.children)),
        h('dt', {}, 'attempts'), h('dd', {}, d.attempts),
        h('dt', {}, 'cache'), h('dd', {}, d.cache_hit ? h('span', { class: 'hit' }, 'hit')
          : d.recovered ? h('span', { class: 'hit' }, 'recovered from an earlier run') : 'miss'),
        h('dt', {}, 'queued'), h('dd', {}, fmtTime(d.queued_at)),
        h('dt', {}, 'started'), h('dd', {}, fmtTime(d.started_at) || '—'),
        h('dt', {}, 'ended'), h('dd', {}, fmtTime(d.ended_at) || '—')),
      h('h3', {}, 'Overhead'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'queue wait'), h('dd', {}, fmtDur(o.queue_wait_us ?? (d.started_at == null ? now - d.queued_at : null)) || '—'),
        h('dt', {}, 'run'), h('dd', {}, fmtDur(o.run_us ?? (d.started_at != null ? now - d.started_at : null)) || '—'),
        ...(o.phases ? [h('dt', {}, 'phases'), h('dd', { id: 'phases' },
          h('div', { class: 'phasebar' }, ...PHASES.map((n) => h('span', { class: `ph ph-${n}`, title: `${n} ${fmtDur(o.phases[`${n}_us`])}`,
            style: `width:${(100 * (o.phases[`${n}_us`] ?? 0) / (PHASES.reduce((a, m) => a + (o.phases[`${m}_us`] ?? 0), 0) || 1)).toFixed(2)}%` }))),
          h('div', { class: 'muted' }, PHASES.map((n) => `${n} ${o.phases[`${n}_us`] == null ? '—' : (fmtDur(o.phases[`${n}_us`]) || '0µs')}`).join(' · ')))]
          : [h('dt', {}, 'phases'), h('dd', { class: 'muted' }, 'none recorded (not run, a cache hit, or recorded by an older weir)')])),
      h('h3', {}, 'Inputs'), payload(d.inputs),
      ...(d.error ? [h('h3', {}, 'Error'), h('pre', { style: 'color:var(--failed)' }, `[${d.error.kind}] ${d.error.message}${(d.error.chain || []).map((c) => `\n  caused by: ${c}`).join('')}`)]
        : [h('h3', {}, 'Output'), payload(d.output)]),
      h('h3', {}, `Failed attempts (${d.failed_attempts.length})`),
      d.failed_attempts.length ? h('table', { class: 'runs' }, h('tbody', {}, d.failed_attempts.map((a) => h('tr', {},
        h('td', {}, `#${a.attempt}`), h('td', {}, fmtDur(a.ended_at - a.started_at)), h('td', { style: 'white-space:normal;color:var(--failed)' }, `[${a.error.kind}] ${a.error.message}`)))))
        : h('div', { class: 'muted' }, 'none'),
      h('h3', {}, 'Logs'), logs(d));
  }
  listen() {
    if (this.info.status !== 'running' && this.info.ended_at && Date.now() * 1000 - this.info.ended_at > 5e6) return;
    $live.hidden = false;
    const es = new EventSource(`api/runs/${enc(this.run)}/events`);
    this.events = es;
    let lastRefresh = 0;
    let pending = null;
    es.addEventListener('summary', (ev) => {
      const s = JSON.parse(ev.data);
      const changed = s.max_seq !== this.info.max_seq || JSON.stringify(s.counts) !== JSON.stringify(this.info.counts) || s.status !== this.info.status;
      Object.assign(this.info, s);
      this.renderHead();
      if (!changed) return;
      const doRefresh = () => {
        lastRefresh = Date.now(); pending = null;
        if (this.tree) this.tree.refresh();
        if (this.charts) this.charts.load();
      };
      if (Date.now() - lastRefresh > 1000) doRefresh();
      else if (!pending) pending = setTimeout(doRefresh, 1000);
    });
    es.addEventListener('end', () => { es.close(); $live.hidden = true; });
    es.addEventListener('error', () => { if (es.readyState === EventSource.CLOSED) $live.hidden = true; });
  }
  // Per task: where its actions' time went (p50 of each phase as a stacked bar, p50/p95 in
  // figures, overhead share), and the advice `weir advise` gives for the run.
  async showTasks() {
    let d;
    try { d = await api(`/runs/${enc(this.run)}/tasks`); } catch (e) { showError(this.body, e); return; }
    const names = d.phase_names;
    const rows = d.tasks.map((t) => {
      const p50 = t.phases.map(([, s]) => s.p50);
      const total = p50.reduce((a, b) => a + b, 0) || 1;
      const bar = h('div', { class: 'phasebar', title: names.map((n, i) => `${n} ${fmtDur(p50[i])}`).join(' · ') },
        ...p50.map((v, i) => h('span', { class: `ph ph-${names[i]}`, style: `width:${(100 * v / total).toFixed(2)}%` })));
      return h('tr', { 'data-task': t.task },
        h('td', { class: 'mono' }, t.task), h('td', { class: 'num' }, fmtN(t.count)),
        h('td', { style: 'min-width:160px' }, bar),
        ...t.phases.map(([, s]) => h('td', { class: 'num' }, s.recorded ? `${fmtDur(s.p50) || '0µs'} / ${fmtDur(s.p95) || '0µs'}` : '—')),
        h('td', { class: 'num' }, `${Math.round(t.overhead_share * 100)}%`));
    });
    const legend = h('div', { class: 'muted phaselegend' }, ...names.map((n) => h('span', {}, h('span', { class: `ph ph-${n}` }), n)));
    const advice = d.advice.length
      ? h('ul', { class: 'advice' }, ...d.advice.map((a) => h('li', { 'data-rule': a.rule }, h('b', {}, a.rule), ' ', a.message)))
      : h('div', { class: 'muted', id: 'no-advice' }, d.tasks.length ? 'No advice: every task runs long against its overhead.' : 'No phase timings recorded in this run.');
    this.body.replaceChildren(h('div', { class: 'panel', id: 'tasks' },
      h('h3', {}, 'Advice'), advice,
      h('h3', {}, 'Where the time went (per task, p50 / p95 of each phase)'), legend,
      h('table', { class: 'runs' },
        h('thead', {}, h('tr', {}, ...['task', 'actions', 'p50 phases', ...names, 'overhead'].map((c) => h('th', {}, c)))),
        h('tbody', {}, ...rows))));
    document.body.dataset.ready = 'tasks';
  }
  showTimeline() {
    this.charts = new Charts(this.run);
    this.body.replaceChildren(this.charts.el);
    this.charts.load();
  }
}

// ---------- timeline and utilization ----------
class Charts {
  constructor(run) {
    this.run = run; this.offset = 0; this.limit = 100;
    this.gantt = h('canvas', { id: 'gantt' });
    this.util = h('canvas', { id: 'util' });
    this.ganttInfo = h('span', { class: 'muted' });
    this.pager = h('span', { class: 'tabs' },
      h('button', { onclick: () => { this.offset = Math.max(0, this.offset - this.limit); this.load(); } }, '‹'),
      h('button', { onclick: () => { if (this.offset + this.limit < this.lanesTotal) { this.offset += this.limit; this.load(); } } }, '›'));
    this.legend = h('span', { class: 'legend', id: 'env-legend' });
    this.el = h('div', { class: 'charts' },
      h('div', { class: 'panel chart' }, h('h3', {}, 'Utilization by environment', h('span', { class: 'muted' }, 'mean running actions per time bucket'), this.legend), this.util),
      h('div', { class: 'panel chart' }, h('h3', {}, 'Timeline', this.ganttInfo, this.pager,
        h('span', { class: 'legend' }, STATUSES.map((s) => h('span', {}, h('i', { style: `background:${COLORS[s]}` }), s)))), this.gantt));
    this.gantt.addEventListener('mousemove', (ev) => this.hoverGantt(ev));
    this.gantt.addEventListener('mouseleave', () => tip(null, ''));
    this.util.addEventListener('mousemove', (ev) => this.hoverUtil(ev));
    this.util.addEventListener('mouseleave', () => tip(null, ''));
  }
  async load() {
    const buckets = 200;
    try {
      const [tl, ut] = await Promise.all([
        api(`/runs/${enc(this.run)}/timeline?offset=${this.offset}&limit=${this.limit}&buckets=${buckets}`),
        api(`/runs/${enc(this.run)}/utilization?buckets=${buckets}`)]);
      this.tl = tl; this.ut = ut; this.lanesTotal = tl.lanes_total;
    } catch (e) { showError(this.el, e); return; }
    this.ganttInfo.textContent = `lanes ${fmtN(this.offset + 1)}–${fmtN(Math.min(this.offset + this.limit, this.lanesTotal))} of ${fmtN(this.lanesTotal)} · ${fmtN(this.tl.total)} actions · ${fmtDur(this.tl.t1 - this.tl.t0)}`;
    this.draw();
    document.body.dataset.ready = 'timeline';
    // Then where each task's time goes (its p50 phases), under its lanes' bars.
    if (!this.taskPhases) {
      api(`/runs/${enc(this.run)}/tasks`).then((d) => {
        this.taskPhases = new Map(d.tasks.map((t) => [t.task, t.phases.map(([, s]) => s.p50)]));
        this.draw();
        document.body.dataset.phases = 'drawn';
      }).catch(() => {});
    }
  }
  setup(canvas, height) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 800;
    canvas.width = w * dpr; canvas.height = height * dpr; canvas.style.height = `${height}px`;
    const ctx = canvas.getContext('2d');
    ctx.scale(dpr, dpr);
    ctx.font = '11px system-ui, sans-serif';
    return { ctx, w };
  }
  draw() {
    const tl = this.tl, LANE = 18, LABEL = 260, TOP = 18;
    const { ctx, w } = this.setup(this.gantt, TOP + Math.max(1, tl.lanes.length) * LANE + 4);
    const span = Math.max(1, tl.t1 - tl.t0);
    const x = (t) => LABEL + ((t - tl.t0) / span) * (w - LABEL - 8);
    ctx.fillStyle = '#6b7785';
    for (let i = 0; i <= 5; i++) {
      const t = tl.t0 + (span * i) / 5;
      ctx.fillText(`+${fmtDur(t - tl.t0)}`, Math.min(x(t), w - 50), 11);
      ctx.fillStyle = '#eef0f3'; ctx.fillRect(x(t), TOP - 4, 1, tl.lanes.length * LANE + 4); ctx.fillStyle = '#6b7785';
    }
    this.lanes = tl.lanes.map((l, i) => {
      const y = TOP + i * LANE;
      const label = l.group ? `${l.group} × ${fmtN(l.total)}` : l.total > 1 ? `${fmtN(l.total)} calls: ${l.task || 'mixed'}` : (l.task || '');
      const under = l.parent_task ? ` ← ${l.parent === 'a0' ? 'a0' : l.parent.slice(0, 8)}` : '';
      ctx.fillStyle = '#1f2933';
      const text = label.length > 30 ? `${label.slice(0, 29)}…` : label;
      ctx.fillText(text, 4, y + 12);
      ctx.fillStyle = '#9aa5b1';
      ctx.fillText(under, 8 + ctx.measureText(text).width, y + 12);
      const s = l.started_at ?? l.queued_at;
      const e = l.ended_at && (!l.counts.running && !l.counts.queued && !l.counts.retrying && !l.counts.leased) ? l.ended_at : tl.t1;
      const x0 = x(s), x1 = Math.max(x0 + 2, x(e));
      let cx = x0;
      for (const st of STATUSES) {
        const n = l.counts[st] || 0;
        if (!n) continue;
        const wd = ((x1 - x0) * n) / l.total;
        ctx.fillStyle = COLORS[st];
        ctx.fillRect(cx, y + 3, Math.max(wd, 1), LANE - 6);
        cx += wd;
      }
      // The lane's task's p50 phases as a thin stacked bar along the bottom of its bar.
      const p50 = l.task && this.taskPhases && this.taskPhases.get(l.task);
      if (p50) {
        const total = p50.reduce((a, b) => a + b, 0) || 1;
        let px = x0;
        p50.forEach((v, i) => {
          const wd = ((x1 - x0) * v) / total;
          ctx.fillStyle = PHASE_COLORS[i];
          ctx.fillRect(px, y + LANE - 3, wd, 2);
          px += wd;
        });
      }
      return { y, l, x0, x1 };
    });
    this.drawUtil();
  }
  drawUtil() {
    const ut = this.ut, H = 160, LEFT = 40, BOTTOM = 16;
    const { ctx, w } = this.setup(this.util, H);
    const n = ut.envs.length ? ut.envs[0].mean_running.length : 0;
    const stacked = new Array(n).fill(0);
    let max = 0;
    for (const e of ut.envs) e.mean_running.forEach((v, i) => { stacked[i] += v; max = Math.max(max, stacked[i]); });
    max = Math.max(max, 1);
    const bw = (w - LEFT - 8) / Math.max(n, 1);
    const y = (v) => H - BOTTOM - (v / max) * (H - BOTTOM - 8);
    ctx.fillStyle = '#6b7785';
    ctx.fillText(max.toFixed(max < 10 ? 1 : 0), 4, 12);
    ctx.fillText('0', 4, H - BOTTOM);
    ctx.fillText(`+${fmtDur(ut.t1 - ut.t0)}`, w - 60, H - 3);
    const base = new Array(n).fill(0);
    ut.envs.forEach((e, k) => {
      ctx.fillStyle = ENV_COLORS[k % ENV_COLORS.length];
      e.mean_running.forEach((v, i) => {
        if (v <= 0) return;
        ctx.fillRect(LEFT + i * bw, y(base[i] + v), Math.max(bw - 0.5, 1), y(base[i]) - y(base[i] + v));
        base[i] += v;
      });
    });
    this.legend.replaceChildren(...ut.envs.map((e, k) => h('span', {}, h('i', { style: `background:${ENV_COLORS[k % ENV_COLORS.length]}` }),
      `${e.env}: ${fmtN(e.actions)} actions, peak ${e.peak_running}, busy ${fmtDur(e.busy_us)}`)));
    this.utilGeom = { LEFT, bw, n };
  }
  hoverGantt(ev) {
    if (!this.lanes) return;
    const r = this.gantt.getBoundingClientRect();
    const yy = ev.clientY - r.top;
    const hit = this.lanes.find((a) => yy >= a.y && yy < a.y + 18);
    if (!hit) return tip(ev, '');
    const l = hit.l;
    tip(ev, `${l.group ? `group ${l.group}` : l.task || ''}${l.parent_task ? `\nunder ${l.parent_task} (${l.parent})` : ''}\n${fmtN(l.total)} action(s): ${summary(l.counts)}\nstart +${fmtDur((l.started_at ?? l.queued_at) - this.tl.t0)} · end ${l.ended_at ? `+${fmtDur(l.ended_at - this.tl.t0)}` : '—'}`);
  }
  hoverUtil(ev) {
    if (!this.utilGeom) return;
    const r = this.util.getBoundingClientRect();
    const i = Math.floor((ev.clientX - r.left - this.utilGeom.LEFT) / this.utilGeom.bw);
    if (i < 0 || i >= this.utilGeom.n) return tip(ev, '');
    tip(ev, `+${fmtDur(i * this.ut.bucket_us)} … +${fmtDur((i + 1) * this.ut.bucket_us)}\n` + this.ut.envs.map((e) => `${e.env}: ${e.mean_running[i]} running`).join('\n'));
  }
}

route();

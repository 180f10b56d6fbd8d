/* Velostream error console.
 *
 * Polls the server's JSON API once a second and updates the page in place: error
 * groups come from /errors with a cursor, so a poll carries only the groups that
 * changed, and each group keeps its table row (keyed by job and fingerprint) for
 * the page's life. Every value from the server is set as text, never as HTML.
 */
"use strict";

(() => {
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;
  const FULL_SYNC_EVERY = 60; // polls: a safety net (a server restarted, say)
  const RATE_WINDOW = 300;
  const RATE_STEP = 5;
  const MAX_LETTERS = 500;
  const LETTERS_REFRESH_MS = 2000;
  // Chart lines: mostly Okabe-Ito hues, each at least 3:1 against both card colours.
  const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#b38600", "#7d5fc0", "#888888"];
  const SEP = "\u001f";

  const $ = (id) => document.getElementById(id);
  const nf = new Intl.NumberFormat("en-US");

  const ui = {
    status: $("status"),
    updated: $("updated"),
    node: $("node"),
    token: $("token"),
    jobsBody: $("jobs-table").tBodies[0],
    jobsEmpty: $("jobs-empty"),
    jobsCount: $("jobs-count"),
    chart: $("chart"),
    legend: $("chart-legend"),
    chartSummary: $("chart-summary"),
    recentBody: $("recent-table").tBodies[0],
    recentEmpty: $("recent-empty"),
    recentCount: $("recent-count"),
    groupsBody: $("groups-table").tBodies[0],
    groupsEmpty: $("groups-empty"),
    groupsCount: $("groups-count"),
    filterJob: $("filter-job"),
    filterStage: $("filter-stage"),
    filterText: $("filter-text"),
    detailEmpty: $("detail-empty"),
    detailBody: $("detail-body"),
    detailHeading: $("detail-heading"),
    facts: $("group-facts"),
    message: $("group-message"),
    replay: $("replay"),
    replayStatus: $("replay-status"),
    lettersBody: $("letters-table").tBodies[0],
    lettersEmpty: $("letters-empty"),
    announcer: $("announcer"),
  };

  const state = {
    groups: new Map(), // job SEP fingerprint -> {g, row, cells}
    cursor: null,
    polls: 0,
    orderDirty: false,
    jobs: new Map(), // name -> {j, row, cells}
    jobList: null,
    jobsAvailable: true,
    jobOptions: new Set(),
    jobColors: new Map(),
    rates: null,
    recentKey: "",
    selected: null,
    letters: [],
    lettersLoadedAt: 0,
    lettersTimer: null,
    connected: null,
    filters: { job: "", stage: "", text: "" },
  };

  // --- helpers -------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");

  function when(ts) {
    if (ts === null || ts === undefined) return "";
    const d = new Date(ts * 1000);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  const iso = (ts) => (ts ? new Date(ts * 1000).toISOString() : "");
  const firstLine = (text) => String(text || "").split("\n", 1)[0];

  function setText(node, text) {
    const value = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function announce(text) {
    ui.announcer.textContent = "";
    // A new text node after clearing makes screen readers read it even if unchanged.
    window.setTimeout(() => {
      ui.announcer.textContent = text;
    }, 50);
  }

  async function api(path, options = {}) {
    // With a token set on the server, job SQL and dead-letter payloads need it too.
    const token = ui.token ? ui.token.value.trim() : "";
    const auth = token ? { Authorization: `Bearer ${token}` } : {};
    const headers = { Accept: "application/json", ...auth, ...(options.headers || {}) };
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    let doc = null;
    try {
      doc = await response.json();
    } catch {
      doc = null;
    }
    if (!response.ok) {
      const error = new Error((doc && (doc.detail || doc.title)) || response.statusText);
      error.status = response.status;
      throw error;
    }
    return doc;
  }

  function badge(kind, text) {
    return make("span", `badge badge-${kind}`, text);
  }

  // --- keyboard navigation of table rows (one tab stop per table) ----------------

  function visibleSibling(row, step) {
    let next = step > 0 ? row.nextElementSibling : row.previousElementSibling;
    while (next && next.hidden) {
      next = step > 0 ? next.nextElementSibling : next.previousElementSibling;
    }
    return next;
  }

  function edgeRow(tbody, step) {
    let row = step > 0 ? tbody.firstElementChild : tbody.lastElementChild;
    while (row && row.hidden) row = step > 0 ? row.nextElementSibling : row.previousElementSibling;
    return row;
  }

  function setTabStop(tbody, row) {
    const current = tbody.querySelector('tr[tabindex="0"]');
    if (current && current !== row) current.tabIndex = -1;
    if (row) row.tabIndex = 0;
  }

  function focusRow(tbody, row) {
    setTabStop(tbody, row);
    row.focus();
  }

  /** Keep exactly one visible row of `tbody` reachable by Tab. */
  function ensureTabStop(tbody) {
    const current = tbody.querySelector('tr[tabindex="0"]');
    if (current && !current.hidden) return;
    if (current && document.activeElement === current) return;
    setTabStop(tbody, edgeRow(tbody, 1));
  }

  function navigable(tbody, activate) {
    tbody.addEventListener("keydown", (event) => {
      const row = event.target.closest("tr");
      if (!row || row.parentNode !== tbody || event.altKey || event.ctrlKey || event.metaKey)
        return;
      let next = null;
      switch (event.key) {
        case "ArrowDown":
          next = visibleSibling(row, 1);
          break;
        case "ArrowUp":
          next = visibleSibling(row, -1);
          break;
        case "PageDown":
        case "PageUp": {
          const step = event.key === "PageDown" ? 1 : -1;
          next = row;
          for (let i = 0; i < 10; i++) next = visibleSibling(next, step) || next;
          break;
        }
        case "Home":
          next = edgeRow(tbody, 1);
          break;
        case "End":
          next = edgeRow(tbody, -1);
          break;
        case "Enter":
        case " ":
          event.preventDefault();
          if (activate) activate(row);
          return;
        default:
          return;
      }
      event.preventDefault();
      if (next) focusRow(tbody, next);
    });
    tbody.addEventListener("click", (event) => {
      const row = event.target.closest("tr");
      if (!row || row.parentNode !== tbody) return;
      focusRow(tbody, row);
      if (activate) activate(row);
    });
    tbody.addEventListener("focusin", (event) => {
      const row = event.target.closest("tr");
      if (row && row.parentNode === tbody) setTabStop(tbody, row);
    });
  }

  // --- filters ---------------------------------------------------------------------

  function matches(g) {
    const f = state.filters;
    return (
      (!f.job || g.job === f.job) &&
      (!f.stage || g.stage === f.stage) &&
      (!f.text || g.message.toLowerCase().includes(f.text))
    );
  }

  function applyFilters() {
    for (const entry of state.groups.values()) entry.row.hidden = !matches(entry.g);
    updateGroupsCount();
    ensureTabStop(ui.groupsBody);
  }

  function readFilters() {
    state.filters.job = ui.filterJob.value;
    state.filters.stage = ui.filterStage.value;
    state.filters.text = ui.filterText.value.trim().toLowerCase();
    const params = new URLSearchParams();
    if (state.filters.job) params.set("job", state.filters.job);
    if (state.filters.stage) params.set("stage", state.filters.stage);
    const hash = params.toString();
    history.replaceState(null, "", hash ? `#${hash}` : window.location.pathname);
    applyFilters();
  }

  function addJobOption(name) {
    if (!name || state.jobOptions.has(name)) return;
    state.jobOptions.add(name);
    const option = make("option", "", name);
    option.value = name;
    // Keep the options sorted after "All jobs".
    let before = null;
    for (const existing of ui.filterJob.options) {
      if (existing.value && existing.value.localeCompare(name) > 0) {
        before = existing;
        break;
      }
    }
    ui.filterJob.insertBefore(option, before);
  }

  function setJobFilter(name) {
    addJobOption(name);
    ui.filterJob.value = name;
    readFilters();
    announce(
      name ? `Showing the error groups of ${name}` : "Showing the error groups of every job",
    );
  }

  function updateGroupsCount() {
    let shown = 0;
    for (const entry of state.groups.values()) if (!entry.row.hidden) shown++;
    const total = state.groups.size;
    setText(
      ui.groupsCount,
      shown === total ? `(${nf.format(total)})` : `(${nf.format(shown)} of ${nf.format(total)})`,
    );
    ui.groupsEmpty.hidden = shown > 0;
    setText(
      ui.groupsEmpty,
      total ? "No error groups match the filters." : "No errors recorded yet.",
    );
  }

  // --- error groups -----------------------------------------------------------------

  const GROUP_FIELDS = [
    "last_seen",
    "count",
    "job",
    "stage",
    "kind",
    "severity",
    "message",
    "first_seen",
    "node_id",
    "region",
    "version",
  ];

  function groupEntry(key, g) {
    const row = document.createElement("tr");
    row.tabIndex = -1;
    row.dataset.key = key;
    row.dataset.job = g.job;
    row.dataset.fingerprint = g.fingerprint;
    const cells = {};
    for (const field of GROUP_FIELDS) {
      const td = make("td", `c-${field}`);
      row.appendChild(td);
      cells[field] = td;
    }
    cells.count.classList.add("num");
    cells.severity.appendChild(badge(g.severity, g.severity));
    return { g, row, cells };
  }

  function fillGroup(entry) {
    const { g, cells, row } = entry;
    row.dataset.count = String(g.count);
    setText(cells.last_seen, when(g.last_seen));
    cells.last_seen.title = iso(g.last_seen);
    setText(cells.count, nf.format(g.count));
    setText(cells.job, g.job);
    setText(cells.stage, g.stage);
    setText(cells.kind, g.kind);
    const sev = cells.severity.firstChild;
    sev.className = `badge badge-${g.severity}`;
    setText(sev, g.severity);
    setText(cells.message, firstLine(g.message));
    cells.message.title = g.message;
    setText(cells.first_seen, when(g.first_seen));
    cells.first_seen.title = iso(g.first_seen);
    setText(cells.node_id, g.node_id || "");
    cells.node_id.title = g.node_name || "";
    setText(cells.region, g.region || "");
    setText(cells.version, g.version || "");
  }

  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

  function flash(row) {
    if (!row.animate || reducedMotion.matches) return;
    row.animate(
      [{ boxShadow: "inset 4px 0 0 var(--accent)" }, { boxShadow: "inset 4px 0 0 transparent" }],
      {
        duration: 1500,
        easing: "ease-out",
      },
    );
  }

  /** Newest first, by the server's change sequence. */
  function reorderGroups() {
    const entries = [...state.groups.values()].sort((a, b) => b.g.seq - a.g.seq);
    const fragment = document.createDocumentFragment();
    for (const entry of entries) fragment.appendChild(entry.row);
    ui.groupsBody.appendChild(fragment);
    state.orderDirty = false;
  }

  function applyGroups(groups, full) {
    const started = performance.now();
    const body = ui.groupsBody;
    // Rows do not move under a keyboard user: they are re-sorted when focus leaves.
    const holdOrder = body.contains(document.activeElement);
    const seen = full ? new Set() : null;
    const fresh = [];
    let selectedChanged = false;
    // `groups` is newest first; putting the oldest at the top first leaves the newest there.
    for (let i = groups.length - 1; i >= 0; i--) {
      const g = groups[i];
      const key = g.job + SEP + g.fingerprint;
      if (seen) seen.add(key);
      let entry = state.groups.get(key);
      const isNew = entry === undefined;
      if (isNew) {
        entry = groupEntry(key, g);
        state.groups.set(key, entry);
        fresh.push(g);
        addJobOption(g.job);
      } else if (entry.g.seq === g.seq && entry.g.count === g.count) {
        continue;
      }
      entry.g = g;
      fillGroup(entry);
      entry.row.hidden = !matches(g);
      if (isNew || !holdOrder) body.insertBefore(entry.row, body.firstElementChild);
      else state.orderDirty = true;
      if (!isNew) flash(entry.row);
      if (key === state.selected) selectedChanged = true;
    }
    if (seen) removeGroups([...state.groups.keys()].filter((key) => !seen.has(key)));
    updateGroupsCount();
    ensureTabStop(body);
    if (fresh.length && state.polls > 0) {
      const first = fresh[fresh.length - 1];
      announce(
        fresh.length === 1
          ? `New error group in ${first.job}: ${firstLine(first.message)}`
          : `${fresh.length} new error groups`,
      );
    }
    if (selectedChanged) {
      renderFacts();
      refreshLetters();
    }
    window.veloConsole.lastApplyMs = performance.now() - started;
  }

  async function pollGroups() {
    const full = state.cursor === null || state.polls % FULL_SYNC_EVERY === 0;
    const params = new URLSearchParams({ limit: "10000" });
    if (!full) params.set("cursor", String(state.cursor));
    const doc = await api(`/errors?${params}`);
    applyGroups(doc.groups, full);
    state.cursor = doc.cursor;
    if (state.groups.size > doc.total_groups) {
      // The catalog evicts its least recently seen groups: so does the page.
      const oldest = [...state.groups.values()].sort((a, b) => a.g.seq - b.g.seq);
      removeGroups(
        oldest.slice(0, state.groups.size - doc.total_groups).map((e) => e.row.dataset.key),
      );
    } else if (state.groups.size < doc.total_groups) {
      state.cursor = null; // something was missed: the whole list next time
    }
  }

  function removeGroups(keys) {
    for (const key of keys) {
      const entry = state.groups.get(key);
      if (!entry) continue;
      entry.row.remove();
      state.groups.delete(key);
      if (key === state.selected) clearSelection();
    }
    updateGroupsCount();
    ensureTabStop(ui.groupsBody);
  }

  // --- jobs -----------------------------------------------------------------------------

  const JOB_FIELDS = [
    "name",
    "state",
    "version",
    "records_in",
    "records_out",
    "records_failed",
    "dead_letters",
    "rate",
    "last_error",
  ];
  const NUMERIC = new Set(["records_in", "records_out", "records_failed", "dead_letters", "rate"]);

  function jobEntry(name) {
    const row = document.createElement("tr");
    row.tabIndex = -1;
    row.dataset.job = name;
    const cells = {};
    for (const field of JOB_FIELDS) {
      const td = make(
        field === "name" ? "th" : "td",
        `c-${field}${NUMERIC.has(field) ? " num" : ""}`,
      );
      if (field === "name") td.scope = "row";
      row.appendChild(td);
      cells[field] = td;
    }
    cells.state.appendChild(badge("state", ""));
    cells.parts = make("span", "parts"); // a job whose state is partitioned: what this node holds
    cells.state.appendChild(cells.parts);
    return { row, cells, j: null };
  }

  function lastErrorOf(job) {
    let latest = null;
    for (const entry of state.groups.values()) {
      if (entry.g.job === job && (!latest || entry.g.last_seen > latest.last_seen))
        latest = entry.g;
    }
    return latest;
  }

  function renderJobs(jobs) {
    const rates = (state.rates && state.rates.records_in_per_second) || {};
    const names = new Set();
    for (const j of jobs) {
      names.add(j.name);
      addJobOption(j.name);
      let entry = state.jobs.get(j.name);
      if (!entry) {
        entry = jobEntry(j.name);
        state.jobs.set(j.name, entry);
      }
      entry.j = j;
      const c = entry.cells;
      entry.row.dataset.state = j.state;
      setText(c.name, j.name);
      const stateBadge = c.state.firstChild;
      stateBadge.className = `badge badge-${j.state}`;
      setText(stateBadge, j.state);
      c.state.title = j.reason || "";
      const ps = j.partitioned_state;
      const held = ps ? (ps.partitions.length ? ps.partitions.join(", ") : "none") : "";
      const restoring = ps && ps.restoring.length ? ` (restoring ${ps.restoring.join(", ")})` : "";
      setText(c.parts, ps ? `partitions ${held}${restoring}` : "");
      c.parts.title = ps
        ? `the state of ${ps.topic}'s partitions ${held} is on ${ps.node || "this node"}; ` +
          `changelog ${ps.changelog}`
        : "";
      setText(c.version, j.version || "");
      setText(c.records_in, nf.format(j.records_in));
      setText(c.records_out, nf.format(j.records_out));
      setText(c.records_failed, nf.format(j.records_failed));
      setText(c.dead_letters, nf.format(j.dead_letters));
      const rate = rates[j.name];
      setText(c.rate, rate === undefined ? "" : `${rate.toFixed(rate < 10 ? 1 : 0)}/s`);
      const last = lastErrorOf(j.name);
      setText(c.last_error, last ? `${when(last.last_seen)} ${firstLine(last.message)}` : "");
      c.last_error.title = last ? last.message : "";
    }
    for (const [name, entry] of state.jobs) {
      if (!names.has(name)) {
        // Undeployed: the server forgot the job's error groups, and so does the page.
        entry.row.remove();
        state.jobs.delete(name);
        removeGroups(
          [...state.groups.values()].filter((e) => e.g.job === name).map((e) => e.row.dataset.key),
        );
      }
    }
    // Jobs sorted by name; append only when the order is off.
    const sorted = [...state.jobs.keys()].sort();
    const rows = ui.jobsBody.rows;
    const inOrder =
      rows.length === sorted.length && sorted.every((n, i) => rows[i].dataset.job === n);
    if (!inOrder) for (const name of sorted) ui.jobsBody.appendChild(state.jobs.get(name).row);
    ensureTabStop(ui.jobsBody);
    ui.jobsEmpty.hidden = state.jobs.size > 0;
    setText(ui.jobsCount, state.jobs.size ? `(${state.jobs.size})` : "");
  }

  async function pollJobs() {
    if (!state.jobsAvailable) return;
    try {
      state.jobList = (await api("/jobs")).jobs;
    } catch (error) {
      if (error.status !== 404) throw error;
      state.jobsAvailable = false; // a server without a job manager
      setText(ui.jobsEmpty, "This server runs no jobs.");
      ui.jobsEmpty.hidden = false;
    }
  }

  // --- recent errors ---------------------------------------------------------------------

  async function pollRecent() {
    const doc = await api("/errors/recent");
    const key = JSON.stringify([doc.total_errors, doc.entries]);
    if (key === state.recentKey) return;
    state.recentKey = key;
    const focusedIndex = [...ui.recentBody.rows].indexOf(document.activeElement);
    const fragment = document.createDocumentFragment();
    for (const e of doc.entries) {
      const row = make("tr");
      row.tabIndex = -1;
      const time = make("td", "c-time", when(e.timestamp));
      time.title = iso(e.timestamp);
      row.append(
        time,
        make("td", "num", nf.format(e.count)),
        make("td", "c-message", firstLine(e.message)),
      );
      row.lastChild.title = e.message;
      fragment.appendChild(row);
    }
    ui.recentBody.replaceChildren(fragment);
    if (focusedIndex >= 0 && ui.recentBody.rows.length) {
      focusRow(
        ui.recentBody,
        ui.recentBody.rows[Math.min(focusedIndex, ui.recentBody.rows.length - 1)],
      );
    }
    ensureTabStop(ui.recentBody);
    ui.recentEmpty.hidden = doc.entries.length > 0;
    setText(
      ui.recentCount,
      doc.total_errors ? `(${nf.format(doc.total_errors)} errors in all)` : "",
    );
  }

  // --- error-rate chart --------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function colorOf(job) {
    if (!state.jobColors.has(job))
      state.jobColors.set(job, PALETTE[state.jobColors.size % PALETTE.length]);
    return state.jobColors.get(job);
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * magnitude >= value) return m * magnitude;
    return 10 * magnitude;
  }

  function drawChart(doc) {
    const W = 640;
    const H = 220;
    const left = 48;
    const right = 12;
    const top = 10;
    const bottom = 26;
    const plotW = W - left - right;
    const plotH = H - top - bottom;
    const series = Object.entries(doc.jobs)
      .map(([job, values]) => ({ job, values, total: values.reduce((a, v) => a + (v || 0), 0) }))
      .filter((s) => s.total > 0)
      .sort((a, b) => b.total - a.total);
    const shown = series.slice(0, PALETTE.length);
    const peak = Math.max(0, ...shown.flatMap((s) => s.values.map((v) => v || 0)));
    const yMax = niceMax(peak);
    const n = doc.points;
    const x = (i) => left + (plotW * (i + 1)) / n;
    const y = (v) => top + plotH - (plotH * v) / yMax;

    const nodes = [];
    for (let k = 0; k <= 4; k++) {
      const value = (yMax * k) / 4;
      const yy = y(value);
      nodes.push(svg("line", { x1: left, x2: W - right, y1: yy, y2: yy, class: "grid" }));
      nodes.push(
        svg(
          "text",
          { x: left - 6, y: yy + 4, class: "axis", "text-anchor": "end" },
          `${+value.toFixed(2)}`,
        ),
      );
    }
    const minutes = Math.round((n * doc.step) / 60);
    for (let m = minutes; m >= 0; m--) {
      const xx = left + plotW - (plotW * m * 60) / (n * doc.step);
      nodes.push(
        svg(
          "text",
          {
            x: xx,
            y: H - 8,
            class: "axis",
            "text-anchor": m === minutes ? "start" : m ? "middle" : "end",
          },
          m ? `−${m}m` : "now",
        ),
      );
    }
    for (const s of shown) {
      let points = [];
      const flush = () => {
        if (points.length > 1) {
          nodes.push(
            svg("polyline", { points: points.join(" "), class: "line", stroke: colorOf(s.job) }),
          );
        } else if (points.length === 1) {
          const [px, py] = points[0].split(",");
          nodes.push(svg("circle", { cx: px, cy: py, r: 2.5, fill: colorOf(s.job) }));
        }
        points = [];
      };
      s.values.forEach((v, i) => {
        if (v === null) flush();
        else points.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      });
      flush();
    }
    ui.chart.replaceChildren(...nodes);

    const legend = document.createDocumentFragment();
    const summary = [];
    for (const s of shown) {
      const now = s.values[s.values.length - 1] || 0;
      const peakOf = Math.max(...s.values.map((v) => v || 0));
      const item = make("li");
      const swatch = make("span", "swatch");
      swatch.style.background = colorOf(s.job);
      item.append(
        swatch,
        make("span", "", `${s.job}: ${now.toFixed(2)}/s now, peak ${peakOf.toFixed(2)}/s`),
      );
      legend.appendChild(item);
      summary.push(`${s.job}: ${now.toFixed(2)} errors per second now, peak ${peakOf.toFixed(2)}`);
    }
    if (series.length > shown.length)
      legend.appendChild(make("li", "", `and ${series.length - shown.length} more jobs`));
    if (!shown.length) legend.appendChild(make("li", "", "No errors in the last 5 minutes."));
    ui.legend.replaceChildren(legend);
    setText(
      ui.chartSummary,
      summary.length ? summary.join(". ") : "No errors in the last 5 minutes.",
    );
  }

  async function pollRates() {
    const params = new URLSearchParams({ window: String(RATE_WINDOW), step: String(RATE_STEP) });
    state.rates = await api(`/console/rates?${params}`);
    drawChart(state.rates);
  }

  // --- selected group: facts and dead letters -------------------------------------------------

  function clearSelection() {
    state.selected = null;
    state.letters = [];
    ui.detailBody.hidden = true;
    ui.detailEmpty.hidden = false;
    setText(ui.detailHeading, "Dead letters");
  }

  function selectGroup(row) {
    const key = row.dataset.key;
    const entry = state.groups.get(key);
    if (!entry) return;
    const previous = state.selected && state.groups.get(state.selected);
    if (previous) previous.row.removeAttribute("aria-current");
    row.setAttribute("aria-current", "true");
    state.selected = key;
    state.letters = [];
    ui.lettersBody.replaceChildren();
    setText(ui.replayStatus, "");
    ui.detailEmpty.hidden = true;
    ui.detailBody.hidden = false;
    setText(ui.detailHeading, `Dead letters: ${entry.g.kind} in ${entry.g.job}`);
    renderFacts();
    loadLetters();
    announce(`Selected ${entry.g.kind} in ${entry.g.job}; its dead letters are below the groups`);
  }

  function renderFacts() {
    const entry = state.selected && state.groups.get(state.selected);
    if (!entry) return;
    const g = entry.g;
    const facts = [
      ["Job", g.job],
      ["Stage", g.stage],
      ["Kind", g.kind],
      ["Severity", g.severity],
      ["Count", nf.format(g.count)],
      ["First seen", `${when(g.first_seen)}`],
      ["Last seen", `${when(g.last_seen)}`],
      ["Node", [g.node_id, g.node_name && `(${g.node_name})`].filter(Boolean).join(" ")],
      ["Region", g.region],
      ["Version", g.version],
      ["Last record", g.last_record_ref],
      ["Fingerprint", g.fingerprint],
    ];
    const fragment = document.createDocumentFragment();
    for (const [name, value] of facts) {
      const div = make("div");
      div.append(make("dt", "", name), make("dd", "", value || "—"));
      fragment.appendChild(div);
    }
    ui.facts.replaceChildren(fragment);
    setText(ui.message, g.message);
  }

  /** Reload the selected group's dead letters, at most every LETTERS_REFRESH_MS. */
  function refreshLetters() {
    if (state.lettersTimer) return;
    const wait = Math.max(0, state.lettersLoadedAt + LETTERS_REFRESH_MS - Date.now());
    state.lettersTimer = window.setTimeout(() => {
      state.lettersTimer = null;
      loadLetters();
    }, wait);
  }

  async function loadLetters() {
    const key = state.selected;
    const entry = key && state.groups.get(key);
    if (!entry) return;
    state.lettersLoadedAt = Date.now();
    const { job, fingerprint } = entry.g;
    const letters = [];
    let next = 0;
    try {
      for (let page = 0; page < 50 && next !== null && letters.length < MAX_LETTERS; page++) {
        const params = new URLSearchParams({ fingerprint, offset: String(next), limit: "1000" });
        const doc = await api(`/jobs/${encodeURIComponent(job)}/dlq?${params}`);
        letters.push(...doc.letters);
        next = doc.next_offset ?? null;
      }
    } catch (error) {
      if (state.selected !== key) return;
      renderLetters(
        [],
        error.status === 404
          ? `Job ${job} is not deployed here, so its dead letters cannot be read.`
          : `Cannot read dead letters: ${error.message}`,
      );
      return;
    }
    if (state.selected !== key) return; // another group was selected meanwhile
    const jobInfo = state.jobs.get(job);
    let emptyText = "No dead letters for this group.";
    if (jobInfo && jobInfo.j && jobInfo.j.failure_strategy !== "SendToDLQ") {
      emptyText = `No dead letters: job ${job} uses ${jobInfo.j.failure_strategy}, which keeps none.`;
    }
    renderLetters(
      letters.slice(0, MAX_LETTERS),
      emptyText,
      next !== null || letters.length > MAX_LETTERS,
    );
  }

  function contextOf(d) {
    const parts = [];
    if (d.source) parts.push(`source ${d.source}`);
    if (d.app) parts.push(`app ${d.app}`);
    if (d.version) parts.push(`version ${d.version}`);
    if (d.node_id || d.node_name)
      parts.push(`node ${[d.node_id, d.node_name].filter(Boolean).join(" / ")}`);
    if (d.region) parts.push(`region ${d.region}`);
    return parts.join(", ");
  }

  function renderLetters(letters, emptyText, truncated) {
    state.letters = letters;
    const focusedId =
      document.activeElement &&
      document.activeElement.dataset &&
      document.activeElement.dataset.letter;
    const fragment = document.createDocumentFragment();
    let refocus = null;
    for (const d of [...letters].reverse()) {
      const row = make("tr");
      row.tabIndex = -1;
      row.dataset.letter = d.id;
      const time = make("td", "", when(d.timestamp));
      time.title = iso(d.timestamp);
      const payload = make("td", "c-payload");
      const text = d.payload ?? null;
      let pre;
      if (d.redacted) {
        // The server has a token: a record is raw data, shown only with it.
        pre = make("pre", "payload redacted", "hidden: enter the API token above to see it");
      } else {
        pre = make("pre", "payload", text !== null ? text : d.payload_base64 || "");
        if (text === null && d.payload_base64) pre.title = "base64: the record is not UTF-8 text";
      }
      payload.appendChild(pre);
      row.append(
        make("td", "c-position", d.position || ""),
        time,
        payload,
        make("td", "c-error", `${d.kind} at ${d.stage}: ${d.message}`),
        make("td", "c-context", contextOf(d)),
        make("td", "", d.replayed ? "yes" : "no"),
      );
      if (d.id === focusedId) refocus = row;
      fragment.appendChild(row);
    }
    ui.lettersBody.replaceChildren(fragment);
    if (refocus) focusRow(ui.lettersBody, refocus);
    ensureTabStop(ui.lettersBody);
    const pending = letters.filter((d) => !d.replayed).length;
    ui.lettersEmpty.hidden = letters.length > 0 && !truncated;
    setText(
      ui.lettersEmpty,
      letters.length ? `Showing the first ${nf.format(letters.length)} dead letters.` : emptyText,
    );
    setText(
      ui.replay,
      pending
        ? `Replay ${nf.format(pending)} dead letter${pending === 1 ? "" : "s"}`
        : "Nothing to replay",
    );
    ui.replay.disabled = pending === 0;
  }

  async function replaySelected() {
    const entry = state.selected && state.groups.get(state.selected);
    if (!entry) return;
    const ids = state.letters.filter((d) => !d.replayed).map((d) => d.id);
    if (!ids.length) return;
    const headers = { "Content-Type": "application/json" };
    const token = ui.token.value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    ui.replay.disabled = true;
    setText(ui.replayStatus, "Replaying…");
    try {
      const doc = await api(`/jobs/${encodeURIComponent(entry.g.job)}/dlq/replay`, {
        method: "POST",
        headers,
        body: JSON.stringify({ ids }),
      });
      setText(
        ui.replayStatus,
        `Replayed ${doc.replayed} dead letter${doc.replayed === 1 ? "" : "s"}; ${doc.rows_out} rows written.`,
      );
    } catch (error) {
      let text = `Replay failed: ${error.message}`;
      if (error.status === 401)
        text = "The server needs an API token: enter it above, then replay again.";
      if (error.status === 422)
        text = `Not replayed: ${error.message}. Fix the job (deploy a new version), then replay.`;
      setText(ui.replayStatus, text);
    }
    await loadLetters();
  }

  // --- the poll loop ----------------------------------------------------------------------

  function setConnected(ok, error) {
    if (ok !== state.connected) {
      state.connected = ok;
      ui.status.dataset.state = ok ? "live" : "down";
      setText(ui.status, ok ? "Live" : "Disconnected, retrying");
    }
    if (ok) setText(ui.updated, `updated ${when(Date.now() / 1000)}`);
    else ui.updated.title = error ? String(error.message || error) : "";
  }

  async function poll() {
    const started = performance.now();
    const results = await Promise.allSettled([pollGroups(), pollJobs(), pollRecent(), pollRates()]);
    const failed = results.find((r) => r.status === "rejected");
    setConnected(!failed, failed && failed.reason);
    // After all four: a job's rate and last error come from the other polls.
    if (state.jobsAvailable && state.jobList) renderJobs(state.jobList);
    state.polls++;
    window.veloConsole.polls = state.polls;
    window.veloConsole.lastPollMs = performance.now() - started;
    const interval = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    window.setTimeout(poll, Math.max(100, interval - (performance.now() - started)));
  }

  async function loadNode() {
    try {
      const response = await fetch("/health", { headers: { Accept: "application/json" } });
      const doc = await response.json();
      const n = doc.node || {};
      const node = [n.node_id, n.node_name && `(${n.node_name})`].filter(Boolean).join(" ");
      const parts = [node, n.region, doc.version && `Velostream ${doc.version}`];
      setText(ui.node, parts.filter(Boolean).join(" · "));
    } catch {
      /* the header line is optional */
    }
  }

  function restoreFilters() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    const job = params.get("job") || "";
    const stage = params.get("stage") || "";
    if (job) addJobOption(job);
    ui.filterJob.value = job;
    if ([...ui.filterStage.options].some((o) => o.value === stage)) ui.filterStage.value = stage;
    state.filters.job = ui.filterJob.value;
    state.filters.stage = ui.filterStage.value;
  }

  function followHash() {
    restoreFilters();
    applyFilters();
  }

  function start() {
    window.veloConsole = {
      loadId: Math.random().toString(36).slice(2),
      polls: 0,
      lastApplyMs: 0,
      lastPollMs: 0,
    };
    try {
      ui.token.value = window.sessionStorage.getItem("velo.token") || "";
    } catch {
      /* storage may be disabled */
    }
    ui.token.addEventListener("input", () => {
      try {
        window.sessionStorage.setItem("velo.token", ui.token.value);
      } catch {
        /* kept in the field only */
      }
      refreshLetters(); // a token shows the records it hid
    });
    restoreFilters();
    window.addEventListener("hashchange", followHash);
    for (const control of [ui.filterJob, ui.filterStage])
      control.addEventListener("change", readFilters);
    ui.filterText.addEventListener("input", readFilters);
    ui.filterText.form.addEventListener("submit", (event) => event.preventDefault());
    navigable(ui.jobsBody, (row) => setJobFilter(row.dataset.job));
    navigable(ui.groupsBody, selectGroup);
    navigable(ui.recentBody, null);
    navigable(ui.lettersBody, null);
    ui.groupsBody.addEventListener("focusout", (event) => {
      if (state.orderDirty && !ui.groupsBody.contains(event.relatedTarget)) reorderGroups();
    });
    ui.replay.addEventListener("click", replaySelected);
    loadNode();
    poll();
  }

  start();
})();

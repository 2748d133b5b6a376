// The IIR admin UI: plain DOM, no dependencies, every call to this gateway's own admin API.
// Data is only ever put in the page as text (never as HTML).
"use strict";

const KEY = "iir-admin-key";
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children.flat(Infinity)) node.append(child instanceof Node ? child : String(child));
  return node;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) { /* CSV */ }
  if (!resp.ok) throw new Error(data?.error?.message || `${resp.status} ${resp.statusText}`);
  return data;
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function table(columns, rows, id) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, columns.map(([title]) => el("th", {}, title)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map(([, cell]) => el("td", {}, cell(row)))))));
}

function field(label, input) { return el("label", {}, label, input); }
const money = (v) => `$${Number(v || 0).toFixed(6).replace(/0{1,4}$/, "")}`;
const limit = (v) => (v ? String(v) : "–");
const value = (id) => $(id).value.trim();
const number = (id) => Number(value(id) || 0);

function barChart(rows, id) {
  const width = 640, barH = 22, pad = 160;
  const max = Math.max(...rows.map((r) => r.cost), 1e-12);
  return svg("svg", { id, class: "chart", width, height: rows.length * barH + 10, role: "img" },
    rows.map((r, i) => [
      svg("text", { x: 0, y: i * barH + 15 }, (r.name || r.group || "(none)").slice(0, 24)),
      svg("rect", { class: "bar", x: pad, y: i * barH + 4, height: barH - 8, width: Math.max(1, (width - pad - 90) * r.cost / max) }),
      svg("text", { x: width - 85, y: i * barH + 15 }, money(r.cost)),
    ]));
}

function lineChart(rows, id) {
  const width = 640, height = 160, pad = 30;
  if (!rows.length) return el("p", { id }, "No spend yet.");
  const max = Math.max(...rows.map((r) => r.cost), 1e-12);
  const x = (i) => pad + (rows.length === 1 ? 0 : (i * (width - 2 * pad)) / (rows.length - 1));
  const y = (v) => height - pad - (v / max) * (height - 2 * pad);
  return svg("svg", { id, class: "chart", width, height, role: "img" },
    svg("polyline", { fill: "none", stroke: "#2f6fed", "stroke-width": 2, points: rows.map((r, i) => `${x(i)},${y(r.cost)}`).join(" ") }),
    rows.map((r, i) => svg("circle", { cx: x(i), cy: y(r.cost), r: 3, fill: "#2f6fed" })),
    svg("text", { x: pad, y: height - 8 }, rows[0].group),
    svg("text", { x: width - pad - 70, y: height - 8 }, rows[rows.length - 1].group),
    svg("text", { x: 0, y: 12 }, money(max)));
}

const views = {
  async keys(view) {
    const [keys, teams] = await Promise.all([api("GET", "/api/v1/apikeys"), api("GET", "/api/v1/teams")]);
    const teamName = Object.fromEntries(teams.data.map((t) => [t.id, t.name]));
    const act = (k, action, label) => el("button", { class: "small", on: { click: () => run(async () => {
      if (!window.confirm(`${label} the key "${k.name}" (${k.prefix}…)?`)) return;
      if (action === "revoke") await api("DELETE", `/api/v1/apikeys/${k.id}`);
      else if (action === "regenerate") {
        const made = await api("POST", `/api/v1/apikeys/${k.id}/regenerate`, { grace_period_s: 3600 });
        return showSecret(made.key, "The new secret (the old one works for an hour more):");
      } else await api("POST", `/api/v1/apikeys/${k.id}/${action}`);
      await show("keys");
    }) } }, label);
    view.append(
      el("h2", {}, "API keys"),
      el("form", { class: "inline", id: "key-form", on: { submit: (e) => { e.preventDefault(); run(createKey); } } },
        field("Name", el("input", { id: "key-name", required: true })),
        field("Team", el("select", { id: "key-team" }, el("option", { value: "" }, "(none)"),
          teams.data.map((t) => el("option", { value: t.id }, t.name)))),
        field("User id", el("input", { id: "key-user" })),
        field("Budget (USD)", el("input", { id: "key-budget", type: "number", step: "any", min: 0 })),
        field("Per", el("select", { id: "key-duration" }, ["", "1d", "7d", "30d"].map((d) => el("option", { value: d }, d || "all time")))),
        field("RPM", el("input", { id: "key-rpm", type: "number", min: 0 })),
        field("TPM", el("input", { id: "key-tpm", type: "number", min: 0 })),
        field("Models", el("input", { id: "key-models", placeholder: "all, or local/*, openai/gpt-4o" })),
        field("Expires in days", el("input", { id: "key-expiry", type: "number", min: 0 })),
        field("Log bodies", el("input", { id: "key-bodies", type: "checkbox" })),
        el("button", { id: "key-create", class: "primary", type: "submit" }, "Create key")),
      el("div", { id: "secret-box" }),
      table([
        ["Name", (k) => (k.admin ? [k.name, " ", el("span", { class: "badge" }, "admin")] : k.name)], ["Prefix", (k) => k.prefix], ["Team", (k) => teamName[k.team_id] || "–"],
        ["User", (k) => k.user_id || "–"], ["RPM", (k) => limit(k.rpm_limit)], ["TPM", (k) => limit(k.tpm_limit)],
        ["Budget", (k) => (k.max_budget ? `${money(k.max_budget)} / ${k.budget_duration || "all time"}` : "–")],
        ["Models", (k) => (k.allowed_models || []).join(", ") || "all"],
        ["Expires", (k) => (k.expires_at ? String(k.expires_at).slice(0, 10) : "never")],
        ["State", (k) => (k.blocked ? "blocked" : "active")], ["Last used", (k) => k.last_used_at || "never"],
        ["", (k) => [el("button", { class: "small", on: { click: () => editKey(k) } }, "Edit"), act(k, "regenerate", "Regenerate"), act(k, k.blocked ? "unblock" : "block", k.blocked ? "Unblock" : "Block"), act(k, "revoke", "Revoke")]],
      ], keys.data, "keys-table"));
  },

  async teams(view) {
    const teams = await api("GET", "/api/v1/teams");
    view.append(
      el("h2", {}, "Teams"),
      el("form", { class: "inline", id: "team-form", on: { submit: (e) => { e.preventDefault(); run(createTeam); } } },
        field("Name", el("input", { id: "team-name", required: true })),
        field("Budget (USD)", el("input", { id: "team-budget", type: "number", step: "any", min: 0 })),
        field("Per", el("select", { id: "team-duration" }, ["30d", "7d", "1d", ""].map((d) => el("option", { value: d }, d || "all time")))),
        field("RPM", el("input", { id: "team-rpm", type: "number", min: 0 })),
        field("Models", el("input", { id: "team-models", placeholder: "local/*, openai/gpt-4o" })),
        el("button", { id: "team-create", class: "primary", type: "submit" }, "Create team")),
      table([
        ["Name", (t) => t.name], ["Id", (t) => t.id],
        ["Budget", (t) => (t.max_budget ? `${money(t.max_budget)} / ${t.budget_duration || "all time"}` : "–")],
        ["RPM", (t) => limit(t.rpm_limit)], ["TPM", (t) => limit(t.tpm_limit)],
        ["Models", (t) => t.allowed_models.join(", ") || "all"], ["Members", (t) => t.members.length],
        ["Alerts", (t) => (t.budget_alert_thresholds || []).map((p) => `${p}%`).join(" ") || "–"],
        ["Bodies", (t) => (t.log_bodies ? "logged" : "–")],
        ["", (t) => [el("button", { class: "small", on: { click: () => editTeam(t) } }, "Edit"),
          el("button", { class: "small", on: { click: () => run(async () => {
            if (!window.confirm(`Delete the team "${t.name}"?`)) return;
            await api("DELETE", `/api/v1/teams/${t.id}`);
            await show("teams");
          }) } }, "Delete")]],
      ], teams.data, "teams-table"), el("div", { id: "secret-box" }));
  },

  async users(view) {
    const [users, teams] = await Promise.all([api("GET", "/api/v1/users"), api("GET", "/api/v1/teams")]);
    const teamName = Object.fromEntries(teams.data.map((t) => [t.id, t.name]));
    view.append(
      el("h2", {}, "Users"),
      el("form", { class: "inline", id: "user-form", on: { submit: (e) => { e.preventDefault(); run(createUser); } } },
        field("Email or id", el("input", { id: "user-email", required: true })),
        field("Team", el("select", { id: "user-team" }, el("option", { value: "" }, "(none)"),
          teams.data.map((t) => el("option", { value: t.id }, t.name)))),
        field("Budget (USD)", el("input", { id: "user-budget", type: "number", step: "any", min: 0 })),
        el("button", { id: "user-create", class: "primary", type: "submit" }, "Create user")),
      table([
        ["Id", (u) => u.id], ["Email", (u) => u.email], ["Teams", (u) => u.team_ids.map((t) => teamName[t] || t).join(", ") || "–"],
        ["Budget", (u) => (u.max_budget ? `${money(u.max_budget)} / ${u.budget_duration || "all time"}` : "–")],
        ["", (u) => [el("button", { class: "small", on: { click: () => editUser(u, teams.data) } }, "Edit"),
          el("button", { class: "small", on: { click: () => run(async () => {
            if (!window.confirm(`Delete the user "${u.email || u.id}"?`)) return;
            await api("DELETE", `/api/v1/users/${encodeURIComponent(u.id)}`);
            await show("users");
          }) } }, "Delete")]],
      ], users.data, "users-table"), el("div", { id: "secret-box" }));
  },

  async spend(view) {
    const group = sessionStorage.getItem("iir-spend-group") || "team";
    const range = JSON.parse(sessionStorage.getItem("iir-spend-range") || "{}");
    const dates = new URLSearchParams(Object.entries(range).filter(([, v]) => v));
    const [grouped, daily] = await Promise.all([
      api("GET", `/api/v1/spend?group_by=${group}&${dates}`), api("GET", `/api/v1/spend?group_by=day&${dates}`),
    ]);
    const between = el("form", { class: "inline", id: "spend-range", on: { submit: (e) => { e.preventDefault(); run(() => {
      sessionStorage.setItem("iir-spend-range", JSON.stringify({ since: value("spend-since"), until: value("spend-until") }));
      return show("spend");
    }); } } },
      field("From", el("input", { id: "spend-since", type: "date", value: range.since || "" })),
      field("To", el("input", { id: "spend-until", type: "date", value: range.until || "" })),
      el("button", { id: "spend-apply", type: "submit" }, "Show"));
    const drill = (r) => run(() => {  // a group's requests, one by one, in the request log
      const filter = { team: "team_id", user: "user_id", key: "key_id", model: "model" }[group];
      sessionStorage.setItem("iir-log-filters", JSON.stringify({ [filter]: r.group, since: range.since || "", until: range.until || "" }));
      return show("logs");
    });
    const picker = el("select", { id: "spend-group", on: { change: (e) => { sessionStorage.setItem("iir-spend-group", e.target.value); show("spend"); } } },
      ["team", "user", "key", "model"].map((g) => el("option", { value: g, selected: g === group }, `by ${g}`)));
    const csv = el("button", { id: "spend-csv", on: { click: () => run(async () => {
      const text = await api("GET", `/api/v1/spend?group_by=${group}&format=csv`);
      const link = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: `spend-by-${group}.csv` });
      link.click();
    }) } }, "Export CSV");
    const spendTable = table([["Name", (r) => r.name || r.group || "(none)"], ["Cost", (r) => money(r.cost)], ["Requests", (r) => r.requests],
      ["Prompt tokens", (r) => r.prompt_tokens], ["Completion tokens", (r) => r.completion_tokens]], grouped.data, "spend-table");
    spendTable.querySelectorAll("tbody tr").forEach((tr, i) => {
      tr.classList.add("clickable");
      tr.title = "Its requests";
      tr.addEventListener("click", () => drill(grouped.data[i]));
    });
    view.append(
      el("h2", {}, "Spend ", el("small", { id: "spend-total" }, money(grouped.total_cost))), between, picker, csv,
      el("h3", {}, `By ${group}`), barChart(grouped.data, "spend-chart"), spendTable,
      el("h3", {}, "Over time"), lineChart(daily.data, "spend-daily"));
  },

  async models(view) {
    const status = await api("GET", "/v1/registry/status");
    const models = status.models || [];
    const nodes = status.nodes || [];
    view.append(
      el("h2", {}, "Models"),
      table([
        ["Model", (m) => m.name], ["Provider", (m) => m.provider], ["State", (m) => el("span", { class: `state-${m.phase}` }, m.phase || "–")],
        ["Replicas", (m) => `${m.ready_replicas ?? m.readyReplicas ?? 0} / ${m.replicas ?? 0}`],
        ["Endpoints and load", (m) => (m.endpoints || []).map((e) => el("div", {}, `${e.url}${e.ready ? "" : " (not ready)"}`,
          e.load ? ` · ${e.load.in_flight} in flight, ${e.load.running} running, ${e.load.waiting} waiting, KV ${Math.round(100 * e.load.kv_cache_usage)}%` : ""))],
        ["GPUs per replica", (m) => m.gpus_per_replica ?? m.gpusPerReplica ?? 0],
      ], models, "models-table"),
      el("h2", {}, "GPU nodes"),
      nodes.length ? table([["Node", (n) => n.name], ["GPU", (n) => n.product], ["Free", (n) => `${n.free ?? 0} / ${n.allocatable ?? 0}`]], nodes, "nodes-table")
        : el("p", {}, "No GPU nodes (outside Kubernetes, or none labelled)."));
  },

  async batches(view) {
    const keys = await api("GET", "/api/v1/apikeys");
    const chosen = sessionStorage.getItem("iir-jobs-key") || keys.data[0]?.id || "";
    const picker = el("select", { id: "jobs-key", on: { change: (e) => { sessionStorage.setItem("iir-jobs-key", e.target.value); show("batches"); } } },
      keys.data.map((k) => el("option", { value: k.id, selected: k.id === chosen }, `${k.name} (${k.prefix}…)`)));
    view.append(el("h2", {}, "Jobs and batches of a key"), picker);
    if (!chosen) return;
    const work = await api("GET", `/api/v1/apikeys/${chosen}/jobs`);
    view.append(
      el("h3", {}, "Async jobs"),
      table([["Id", (j) => j.job_id], ["Status", (j) => j.status], ["Model", (j) => j.model],
        ["Created", (j) => new Date(j.created_at * 1000).toISOString()]], work.jobs, "jobs-table"),
      el("h3", {}, "Batches"),
      table([["Id", (b) => b.id], ["Status", (b) => b.status], ["Endpoint", (b) => b.endpoint],
        ["Done", (b) => `${b.request_counts?.completed ?? 0} / ${b.request_counts?.total ?? 0}`],
        ["Created", (b) => new Date(b.created_at * 1000).toISOString()]], work.batches, "batches-table"));
  },

  async me(view) {
    const [who, spend, logs] = await Promise.all([api("GET", "/api/v1/session"), api("GET", "/api/v1/key/spend?group_by=model"),
      api("GET", "/api/v1/key/logs?limit=50")]);
    view.append(
      el("h2", {}, `My usage: ${who.name || ""}`),
      el("p", { id: "me-spend" }, `Spent ${money(spend.total_cost)}`, who.team_name ? ` · team ${who.team_name}` : ""),
      table([["Model", (r) => r.name || r.group], ["Cost", (r) => money(r.cost)], ["Requests", (r) => r.requests]], spend.data, "me-spend-table"),
      el("h3", {}, "My requests"),
      logs.data.length ? logTable(logs.data) : el("p", { id: "logs-table" }, "No requests logged yet."),
      el("div", { id: "logs-detail" }));
  },

  async logs(view) {
    const keys = await api("GET", "/api/v1/apikeys");
    const filters = JSON.parse(sessionStorage.getItem("iir-log-filters") || "{}");
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    const page = await api("GET", `/api/v1/logs?limit=50&${query}`);
    const rows = [...page.data];
    const input = (id, name, attrs = {}) => el("input", { id, value: filters[name] || "", ...attrs });
    const apply = () => {
      sessionStorage.setItem("iir-log-filters", JSON.stringify({ ...filters, key_id: value("logs-key"), model: value("logs-model"),
        since: value("logs-since"), until: value("logs-until"), errors: $("logs-errors").checked ? "true" : "" }));
      return show("logs");
    };
    const more = el("button", { id: "logs-more", hidden: !page.has_more, on: { click: () => run(async () => {
      const next = await api("GET", `/api/v1/logs?limit=50&${query}&after=${encodeURIComponent(more.dataset.next)}`);
      rows.push(...next.data);
      $("logs-table").replaceWith(logTable(rows));
      more.dataset.next = next.next || "";
      more.hidden = !next.has_more;
    }) } }, "More");
    more.dataset.next = page.next || "";
    view.append(
      el("h2", {}, "Request log"),
      el("form", { class: "inline", id: "logs-form", on: { submit: (e) => { e.preventDefault(); run(apply); } } },
        field("Key", el("select", { id: "logs-key" }, el("option", { value: "" }, "(all)"),
          keys.data.map((k) => el("option", { value: k.id, selected: k.id === filters.key_id }, `${k.name} (${k.prefix}…)`)))),
        field("Model", input("logs-model", "model", { placeholder: "local/…" })),
        field("From", input("logs-since", "since", { type: "date" })),
        field("To", input("logs-until", "until", { type: "date" })),
        field("Errors only", el("input", { id: "logs-errors", type: "checkbox", checked: filters.errors === "true" })),
        el("button", { id: "logs-apply", class: "primary", type: "submit" }, "Show")),
      rows.length ? logTable(rows) : el("p", { id: "logs-table" }, "No requests logged yet."), more,
      el("div", { id: "logs-detail" }));
  },

  async audit(view) {
    const [entries, keys, teams] = await Promise.all([api("GET", "/api/v1/audit?limit=200"), api("GET", "/api/v1/apikeys?include_revoked=true"), api("GET", "/api/v1/teams")]);
    const names = Object.fromEntries([...keys.data.map((k) => [`key:${k.id}`, `key ${k.name}`]), ...teams.data.map((t) => [`team:${t.id}`, `team ${t.name}`])]);
    const change = (e) => el("details", {}, el("summary", {}, "before / after"),
      el("pre", {}, JSON.stringify({ before: e.before, after: e.after }, null, 1)));
    view.append(el("h2", {}, "Audit log"),
      table([["When", (e) => new Date(e.at_ms).toISOString()], ["Who", (e) => names[`key:${e.actor}`] || e.actor], ["What", (e) => e.action],
        ["Target", (e) => names[e.target] || e.target], ["Change", (e) => (e.before || e.after ? change(e) : "–")]],
        entries.data, "audit-table"));
  },
};

const LOG_COLUMNS = [
  ["When", (e) => new Date(e.at_ms).toISOString().replace("T", " ").slice(0, 19)],
  ["Key", (e) => e.key_name || e.key_id], ["Team", (e) => e.team_name || "–"],
  ["Model", (e) => (e.answered_by && e.answered_by !== e.model ? `${e.model} → ${e.answered_by}` : e.model)],
  ["Status", (e) => (e.error_code ? `${e.status} ${e.error_code}` : e.status)],
  ["Tokens", (e) => `${e.prompt_tokens} + ${e.completion_tokens}`], ["Cost", (e) => money(e.cost)],
  ["Latency", (e) => `${Math.round(e.latency_ms)} ms`], ["TTFT", (e) => (e.ttft_ms === null ? "–" : `${Math.round(e.ttft_ms)} ms`)],
  ["Cache", (e) => (e.cache_hit ? "hit" : "–")],
];

function logTable(rows) {
  const t = table(LOG_COLUMNS, rows, "logs-table");
  t.querySelectorAll("tbody tr").forEach((tr, i) => {
    tr.classList.add("clickable");
    tr.addEventListener("click", () => run(() => showLog(rows[i])));
  });
  return t;
}

async function showLog(e) {
  // Every field of the entry, as text; its bodies too where its key or team logs them.
  const own = ROLE === "key" ? "/api/v1/key/logs" : "/api/v1/logs";
  const full = e.request_id ? (await api("GET", `${own}?request_id=${encodeURIComponent(e.request_id)}&include=bodies`).catch(() => null))?.data?.find((x) => x.id === e.id) : null;
  const shown = { ...(full || e), at: new Date(e.at_ms).toISOString() };
  $("logs-detail").replaceChildren(el("h3", {}, `Request ${e.request_id || e.id}`),
    el("dl", { id: "log-fields" }, Object.entries(shown).map(([name, v]) => [el("dt", {}, name),
      el("dd", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? "–"))])));
}

function showSecret(secret, text = "The key's secret, shown once; store it now:") {
  const box = $("secret-box");
  if (box) box.replaceChildren(el("p", {}, text), el("div", { class: "secret", id: "new-secret" }, secret));
}

function editKey(k) {
  // The key's settings in a form; Save sends what the form holds (PATCH: the secret stays).
  const input = (id, v, type = "number") => el("input", { id, type, value: v ?? "", step: "any", min: 0 });
  const form = el("form", { class: "inline", id: "edit-form", on: { submit: (e) => { e.preventDefault(); run(async () => {
    const change = { name: value("edit-name"), rpm_limit: number("edit-rpm"), tpm_limit: number("edit-tpm"),
      max_budget: number("edit-budget"), max_parallel_requests: number("edit-parallel"), allowed_models: models("edit-models") };
    if (number("edit-expiry")) change.expires_in_days = number("edit-expiry");
    await api("PATCH", `/api/v1/apikeys/${k.id}`, change);
    await show("keys");
  }); } } },
    el("strong", {}, `Edit ${k.prefix}…`),
    field("Name", input("edit-name", k.name, "text")), field("RPM", input("edit-rpm", k.rpm_limit)),
    field("TPM", input("edit-tpm", k.tpm_limit)), field("Budget (USD)", input("edit-budget", k.max_budget)),
    field("Parallel", input("edit-parallel", k.max_parallel_requests)),
    field("Models", input("edit-models", (k.allowed_models || []).join(", "), "text")),
    field("Expires in days", input("edit-expiry", "")),
    el("button", { id: "edit-save", class: "primary", type: "submit" }, "Save"));
  $("secret-box").replaceChildren(form);
}

const models = (id) => value(id).split(",").map((m) => m.trim()).filter(Boolean);

async function createKey() {
  const body = { name: value("key-name"), team_id: value("key-team"), user_id: value("key-user"),
    max_budget: number("key-budget"), budget_duration: value("key-duration"), rpm_limit: number("key-rpm"), tpm_limit: number("key-tpm"),
    allowed_models: models("key-models"), log_bodies: $("key-bodies").checked };
  if (number("key-expiry")) body.expires_in_days = number("key-expiry");
  const made = await api("POST", "/api/v1/apikeys", body);
  await show("keys");
  showSecret(made.key);
}

function editForm(id, title, fields, save) {
  // A form of `fields` ([label, input id, value, type]); Save sends what it holds.
  const form = el("form", { class: "inline", id, on: { submit: (e) => { e.preventDefault(); run(save); } } },
    el("strong", {}, title),
    fields.map(([label, inputId, v, type = "number"]) => field(label, el("input", { id: inputId, type, value: v ?? "", step: "any", min: 0 }))),
    el("button", { id: `${id}-save`, class: "primary", type: "submit" }, "Save"));
  $("secret-box").replaceChildren(form);
}

function editTeam(t) {
  editForm("team-edit", `Edit team ${t.name}`, [["Name", "team-edit-name", t.name, "text"], ["Budget (USD)", "team-edit-budget", t.max_budget],
    ["RPM", "team-edit-rpm", t.rpm_limit], ["Models", "team-edit-models", t.allowed_models.join(", "), "text"],
    ["Alerts at % of budget", "team-edit-alerts", (t.budget_alert_thresholds || []).join(", "), "text"]], async () => {
    await api("PATCH", `/api/v1/teams/${t.id}`, { name: value("team-edit-name"), max_budget: number("team-edit-budget"),
      rpm_limit: number("team-edit-rpm"), allowed_models: models("team-edit-models"),
      budget_alert_thresholds: models("team-edit-alerts").map(Number), log_bodies: $("team-edit-bodies").checked });
    await show("teams");
  });
  $("team-edit").insertBefore(field("Log bodies", el("input", { id: "team-edit-bodies", type: "checkbox", checked: t.log_bodies })), $("team-edit-save"));
}

function editUser(u, teams) {
  const byName = Object.fromEntries(teams.map((t) => [t.name, t.id]));
  const names = u.team_ids.map((id) => teams.find((t) => t.id === id)?.name || id).join(", ");
  editForm("user-edit", `Edit user ${u.email || u.id}`, [["Email", "user-edit-email", u.email, "text"],
    ["Budget (USD)", "user-edit-budget", u.max_budget], ["Teams", "user-edit-teams", names, "text"]], async () => {
    await api("PATCH", `/api/v1/users/${encodeURIComponent(u.id)}`, { email: value("user-edit-email"), max_budget: number("user-edit-budget"),
      team_ids: models("user-edit-teams").map((n) => byName[n] || n) });
    await show("users");
  });
}

async function createTeam() {
  const models = value("team-models").split(",").map((m) => m.trim()).filter(Boolean);
  await api("POST", "/api/v1/teams", { name: value("team-name"), max_budget: number("team-budget"),
    budget_duration: value("team-duration"), rpm_limit: number("team-rpm"), allowed_models: models });
  await show("teams");
}

async function createUser() {
  const team = value("user-team");
  await api("POST", "/api/v1/users", { id: value("user-email"), email: value("user-email").includes("@") ? value("user-email") : "",
    team_ids: team ? [team] : [], max_budget: number("user-budget") });
  await show("users");
}

async function run(action) {
  try { showError(null); await action(); } catch (err) { showError(err); }
}

async function show(name) {
  for (const b of document.querySelectorAll("nav button[data-view]")) b.classList.toggle("active", b.dataset.view === name);
  const view = $("view");
  const fresh = el("section", { id: "view", "data-view": name });
  await views[name](fresh);
  view.replaceWith(fresh);
}

// The views each role may open (the API enforces the same; the UI only leaves out what would be refused).
const ROLE_VIEWS = {
  admin: ["keys", "teams", "users", "spend", "logs", "models", "batches", "audit"],
  viewer: ["keys", "teams", "users", "spend", "logs", "models", "batches", "audit"],
  team_admin: ["keys", "spend", "logs"],
  key: ["me"],
};

let ROLE = "";

function loggedIn(who) {
  $("login").hidden = Boolean(who);
  $("nav").hidden = !who;
  $("view").hidden = !who;
  if (!who) return null;
  ROLE = who.role;
  const allowed = ROLE_VIEWS[who.role] || [];
  for (const b of document.querySelectorAll("nav button[data-view]")) b.hidden = !allowed.includes(b.dataset.view);
  const role = { admin: "admin", viewer: "viewer (read only)", team_admin: `team admin of ${who.team_name}`, key: "key" }[who.role];
  $("who").textContent = `${who.email || who.name || ""} · ${role}`;
  return allowed[0];
}

async function enter() {
  // Who the stored key or session is decides the pages shown; a refused one is forgotten.
  let who;
  try { who = await api("GET", "/api/v1/session"); } catch (err) { sessionStorage.removeItem(KEY); throw err; }
  await show(loggedIn(who));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("nav button[data-view]")) b.addEventListener("click", () => run(() => show(b.dataset.view)));
  $("logout").addEventListener("click", () => {
    // Nothing of the session stays: the key, the field it was typed in, the filters, the page; a signed-in
    // session ends on the gateway too.
    const token = sessionStorage.getItem(KEY) || "";
    sessionStorage.clear();
    $("admin-key").value = "";
    $("view").replaceChildren();
    showError(null);
    loggedIn(null);
    if (token.startsWith("iir-session-")) {
      fetch("/api/v1/session", { method: "DELETE", headers: { Authorization: `Bearer ${token}` } }).catch(() => null);
    }
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("admin-key").value.trim());
    run(enter);
  });
  // Back from single sign-on: the session (or why there is none) is in the fragment, never sent anywhere.
  const back = new URLSearchParams(location.hash.slice(1));
  if (back.has("session") || back.has("sso_error")) {
    history.replaceState(null, "", location.pathname);
    if (back.get("session")) sessionStorage.setItem(KEY, back.get("session"));
    if (back.get("sso_error")) showError(new Error(back.get("sso_error")));
  }
  fetch("/ui/sso").then((r) => r.json()).then((sso) => { $("sso").hidden = !sso.enabled; }).catch(() => null);
  if (sessionStorage.getItem(KEY)) run(enter);
});

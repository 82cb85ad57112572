// The live consensus page: it reads who is watching from /v1/me, follows the
// run over Server-Sent Events from /v1/consensus/{id}/events, and renders
// each state it receives: status and answer first, the step in progress
// with its running time, a chart of each round's score against the
// threshold, and every step's placement, model, tokens, cost and time.
// Viewer guests watch read-only; editor guests, editors and owners may ask.
"use strict";

const $ = (id) => document.getElementById(id);
const id = decodeURIComponent(location.pathname.split("/").pop());
const pct = (x) => (x * 100).toFixed(0) + "%";
const SVG = "http://www.w3.org/2000/svg";

// dollars formats integer micro-dollars as dollars and cents, with more
// decimals only when the sub-cent part is not zero (the rule of money.Dollars).
function dollars(micros) {
  const neg = micros < 0;
  const m = Math.abs(Math.trunc(micros));
  let frac = String(m % 1e6).padStart(6, "0").replace(/0+$/, "");
  while (frac.length < 2) frac += "0";
  return (neg ? "-$" : "$") + Math.floor(m / 1e6) + "." + frac;
}

function text(el, s) { el.textContent = s == null ? "" : String(s); }
function title(agent) { return agent ? agent[0].toUpperCase() + agent.slice(1) : ""; }
function seconds(ms) { return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + " s"; }
function where(step) {
  if (step.hub) return `hub ${step.hub}`;
  if (step.queue && step.queue.startsWith("hub.")) return `hub ${step.queue.slice(4)}`;
  return "cloud";
}
function stepName(s) {
  if (s.agent === "pathos") return "Pathos";
  return `Round ${s.round} · ${title(s.agent)}` + (s.sample ? ` · sample ${s.sample}` : "");
}

// strategyText names how the run answers, for the header.
function strategyText(st) {
  const t = st.temperature != null ? ` at temperature ${st.temperature}` : "";
  const from = st.continued_from ? ` · continued from ${st.continued_from}` : "";
  if (st.strategy === "vote") return `vote of ${st.samples} samples${t}${from}`;
  if (st.strategy === "single") return `single answer${t}${from}`;
  return `debate${from}`;
}

function renderVotes(st) {
  const votes = st.votes || [];
  $("votes").hidden = !votes.length;
  const list = $("vote-list");
  list.replaceChildren();
  for (const v of votes) {
    const li = document.createElement("li");
    li.className = "vote" + (v.sample === st.winner ? " winner" : "");
    li.dataset.sample = v.sample;
    text(li, `${v.answer} (confidence ${pct(v.confidence)})` + (v.sample === st.winner ? ` · the majority, ${st.winner_votes} of ${votes.length}` : ""));
    list.append(li);
  }
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json().catch(() => ({}));
  return { status: r.status, body };
}

let me = null;
let project = null;
let mayAsk = false;

async function whoAmI() {
  const { status, body } = await getJSON("/v1/me");
  if (status === 401) {
    $("signin").hidden = false;
    text($("viewer"), "not signed in");
    return false;
  }
  me = body;
  if (me.kind === "guest") {
    const g = me.guest;
    const writes = g.role === "editor" || g.role === "owner";
    $("viewer").innerHTML = "";
    $("viewer").append(`guest (${g.role}${writes ? "" : ", read-only"}) of ${g.host} · quota remaining `);
    const b = document.createElement("b");
    b.id = "remaining";
    text(b, dollars(g.remaining_micros));
    $("viewer").append(b, ` of ${dollars(g.quota_micros)}`);
    if (writes && g.remaining_micros > 0) showAsk();
  } else {
    text($("viewer"), `signed in as ${me.account}`);
  }
  return true;
}

function showAsk() { mayAsk = true; $("ask").hidden = false; }

async function showGuests() {
  if (!project || !me || me.kind !== "account") return;
  if (project === "default") { showAsk(); return; }
  const { status, body } = await getJSON(`/v1/projects/${encodeURIComponent(project)}/guests`);
  if (status !== 200) return; // only the project's owners and editors list its guests
  text($("guests-project"), project);
  const rows = $("guest-rows");
  rows.replaceChildren();
  for (const g of body.guests) {
    const tr = document.createElement("tr");
    for (const v of [g.session, g.role, dollars(g.quota_micros), dollars(g.remaining_micros)]) {
      const td = document.createElement("td");
      text(td, v);
      tr.append(td);
    }
    rows.append(tr);
  }
  $("guests").hidden = false;
  showAsk();
}

function renderRound(r, threshold) {
  let el = document.querySelector(`.round[data-round="${r.round}"]`);
  if (!el) {
    el = $("round-template").content.firstElementChild.cloneNode(true);
    el.dataset.round = r.round;
    text(el.querySelector(".n"), r.round);
    $("rounds").append(el);
  }
  if (r.solution) {
    const s = el.querySelector(".solution");
    s.classList.remove("muted");
    text(s, `${r.solution.answer} (confidence ${pct(r.solution.confidence)})`);
  }
  if (r.verification) {
    const v = r.verification;
    const sc = el.querySelector(".scores");
    sc.classList.remove("muted");
    text(sc, `accuracy ${pct(v.scores.accuracy)} · relevance ${pct(v.scores.relevance)} · safety ${pct(v.scores.safety)}` +
      (v.violations && v.violations.length ? ` · violations: ${v.violations.join(", ")}` : ""));
    text(el.querySelector(".feedback"), v.feedback ? `Feedback: ${v.feedback}` : "");
    const rs = el.querySelector(".round-score");
    text(rs, `score ${r.score.toFixed(3)}`);
    rs.className = "round-score " + (r.score >= threshold ? "pass" : "fail");
  }
}

function svg(tag, attrs, content) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (content != null) el.textContent = content;
  return el;
}

// renderChart draws each scored round's score (0 to 1) against the
// threshold, one slot per round the run may take.
function renderChart(st) {
  const scored = (st.rounds || []).filter((r) => r.verification);
  const chart = $("chart");
  if (!scored.length) { chart.hidden = true; return; }
  chart.hidden = false;
  const first = st.rounds[0].round;
  const slots = Math.max(st.last_round - first + 1, st.rounds.length, 1);
  const W = 600, H = 180, L = 40, R = 40, T = 12, B = 28;
  const x = (round) => L + (slots === 1 ? (W - L - R) / 2 : (round - first) * (W - L - R) / (slots - 1));
  const y = (score) => T + (1 - score) * (H - T - B);
  const g = $("chart-svg");
  g.replaceChildren();
  for (const v of [0, 0.5, 1]) {
    g.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    g.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, v.toFixed(1)));
  }
  g.append(svg("line", { x1: L, x2: W - R, y1: y(st.threshold), y2: y(st.threshold), class: "threshold" }));
  g.append(svg("text", { x: W - R, y: y(st.threshold) - 4, "text-anchor": "end", class: "axis threshold-label" }, `threshold ${st.threshold}`));
  for (let round = first; round < first + slots; round++) {
    g.append(svg("text", { x: x(round), y: H - 8, "text-anchor": "middle", class: "axis" }, `round ${round}`));
  }
  g.append(svg("polyline", { points: scored.map((r) => `${x(r.round)},${y(r.score)}`).join(" "), class: "score-line" }));
  for (const r of scored) {
    const c = svg("circle", { cx: x(r.round), cy: y(r.score), r: 5, class: "point " + (r.score >= st.threshold ? "pass" : "fail") });
    c.append(svg("title", {}, `round ${r.round}: ${r.score.toFixed(3)}`));
    g.append(c);
  }
}

let current = null;   // the step in progress
let clockSkew = 0;    // server time minus this browser's time, in ms

function tick() {
  if (!current) return;
  const ms = Date.now() + clockSkew - Date.parse(current.started_at);
  text($("current-elapsed"), seconds(Math.max(ms, 0)));
}
setInterval(tick, 100);

function renderCurrent(st) {
  current = st.status === "running" ? st.current || null : null;
  $("current").hidden = !current;
  if (!current) return;
  const adapter = current.adapter ? ` with adapter ${current.adapter}` : "";
  text($("current-what"), `${stepName(current)} is working${adapter} on ${where(current)}`);
  tick();
}

function renderSteps(st) {
  const log = st.step_log || [];
  $("steps-section").hidden = !log.length;
  const rows = $("step-rows");
  rows.replaceChildren();
  const costs = st.step_costs_micros || {};
  for (const s of log) {
    const tr = document.createElement("tr");
    tr.className = "step" + (s.failed ? " failed" : "");
    tr.dataset.step = s.id;
    const cost = costs[s.id];
    const model = s.adapter ? `adapter ${s.adapter}` : s.model;
    const cells = [stepName(s) + (s.failed ? " (failed, billed)" : ""), where(s), model,
      `${s.prompt_tokens + s.completion_tokens} (${s.prompt_tokens} in, ${s.completion_tokens} out)` +
        (s.usage_estimated ? " estimated" : ""),
      cost == null ? "—" : dollars(cost), seconds(s.duration_ms)];
    cells.forEach((v, i) => {
      const td = document.createElement("td");
      if (i >= 3) td.className = "num";
      text(td, v);
      tr.append(td);
    });
    rows.append(tr);
  }
}

// failureSentence says in one sentence what failed; the details hold the rest.
function failureSentence(st) {
  const msg = (st.error || "").trim();
  const m = /^round (\d+): (.*)$/s.exec(msg);
  let s = m ? `Round ${m[1]} failed: ${m[2]}` : msg ? `The run failed: ${msg}` : "The run failed.";
  s = s.split("\n")[0];
  return /[.!?]$/.test(s) ? s : s + ".";
}

function renderFailure(st) {
  const failed = st.status === "failed";
  $("failure").hidden = !failed;
  if (!failed) return;
  text($("error"), failureSentence(st));
  const facts = $("error-facts");
  facts.replaceChildren();
  const last = (st.step_log || []).slice(-1)[0];
  const items = [["error type", st.error_type || "unknown"], ["round", st.round || "before the first round"],
    ["last step that ended", last ? stepName(last) : "none"], ["run", id]];
  for (const [k, v] of items) {
    const dt = document.createElement("dt"); text(dt, k);
    const dd = document.createElement("dd"); text(dd, v);
    facts.append(dt, dd);
  }
}

function render(st) {
  $("run").hidden = false;
  text($("run-id"), id);
  text($("question"), st.question);
  text($("placement"), st.placement_note || st.placement || "");
  text($("strategy-line"), strategyText(st));
  const status = $("status");
  text(status, st.status.replace("_", " "));
  status.className = "status " + st.status;
  const scored = (st.rounds || []).filter((r) => r.verification).length;
  text($("score-line"), scored ? `score ${st.score.toFixed(3)} · threshold ${st.threshold} · round ${st.round} of ${st.last_round}` : `threshold ${st.threshold}`);
  text($("cost-line"), st.cost_micros != null ? `· cost ${dollars(st.cost_micros)}` : "");
  if (st.now) clockSkew = Date.parse(st.now) - Date.now();
  // The Temporal Web UI is the operator's; guests are not shown the way there.
  const tl = $("temporal-link");
  tl.hidden = !st.temporal_url || !me || me.kind === "guest";
  if (st.temporal_url) tl.href = st.temporal_url;
  if (st.project && st.project !== project) {
    project = st.project;
    const a = $("project-link");
    text(a, `SuperInstance · ${project}`);
    a.href = `/p/${encodeURIComponent(project)}`;
    showGuests();
  }
  if (st.answer) {
    $("final").hidden = false;
    text($("answer"), st.answer);
    text($("answer-note"), st.strategy === "vote" && st.status === "consensus" ?
      `Sample ${st.winner}'s answer, given by ${st.winner_votes} of ${(st.votes || []).length} samples; Ethos scored it ${st.score.toFixed(3)}.` :
      st.strategy === "single" && st.status === "consensus" ? "One answer from Logos, unchecked." :
      st.status === "consensus" ? `Agreed in round ${st.round} (score ${st.score.toFixed(3)}).` :
      st.status === "arbiter_resolved" ? "No round reached the threshold; the Arbiter decided." : "");
  }
  renderCurrent(st);
  renderFailure(st);
  renderChart(st);
  renderSteps(st);
  renderVotes(st);
  if (st.manifest) {
    $("pathos").hidden = false;
    text($("intent"), st.manifest.intent);
    text($("intent-meta"), `domain ${st.manifest.domain} · confidence ${pct(st.manifest.confidence)}` +
      (st.manifest.constraints && st.manifest.constraints.length ? ` · constraints: ${st.manifest.constraints.join("; ")}` : ""));
  }
  for (const r of st.rounds || []) renderRound(r, st.threshold);
  if (st.arbiter) {
    $("arbiter").hidden = false;
    text($("arbiter-answer"), st.arbiter.answer);
    text($("arbiter-note"), st.arbiter.note || "(none given)");
    text($("arbiter-confidence"), `confidence ${pct(st.arbiter.confidence)}`);
  }
  document.body.dataset.status = st.status;
}

// finish reads the final state once more (the last steps' charges may have
// landed after the final event) and marks the page done.
async function finish() {
  const { status, body } = await getJSON(`/v1/consensus/${encodeURIComponent(id)}`);
  if (status === 200) render(body);
  else if (status === 404 && !document.body.dataset.status) { location.reload(); return; } // the server's page says why
  else if (!document.body.dataset.status) showProblem(body, status);
  document.body.dataset.done = "true";
  if (me && me.kind === "guest") whoAmI();
  showGuests();
}

function showProblem(body, status) {
  $("run").hidden = false;
  $("failure").hidden = false;
  $("failure").querySelector("h2").textContent = "This run cannot be shown";
  text($("error"), (body.error && body.error.message) || `The page could not read this run (HTTP ${status}); reload it.`);
}

function follow() {
  const es = new EventSource(`/v1/consensus/${encodeURIComponent(id)}/events`);
  es.addEventListener("state", (e) => render(JSON.parse(e.data)));
  es.addEventListener("end", () => { es.close(); finish(); });
  es.addEventListener("error", (e) => {
    if (es.readyState === EventSource.CLOSED || e.data) {
      es.close();
      if (!document.body.dataset.done) finish();
    }
  });
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/v1/session", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }) });
  if (r.ok) { location.reload(); return; }
  const body = await r.json().catch(() => ({}));
  text($("signin-error"), (body.error && body.error.message) || "sign-in failed");
});

$("ask-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!mayAsk) return;
  const r = await fetch("/v1/consensus", { method: "POST", headers: { "Content-Type": "application/json" },
    credentials: "same-origin", body: JSON.stringify({ prompt: $("prompt").value, project: project || undefined,
      strategy: $("strategy").value, continue: $("continue").checked ? id : undefined }) });
  const body = await r.json().catch(() => ({}));
  if (r.status === 202) { location.href = body.page_url; return; }
  text($("ask-error"), (body.error && body.error.message) || `error ${r.status}`);
});

whoAmI().then((ok) => { if (ok) follow(); });
